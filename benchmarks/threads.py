"""Torch threads on this CPU: ``generate`` timed at 1, 2 and the default thread count, idle and beside a
CPU-burning process, as ratios to the best setting -> JSON.

Each run is the real command (``python -m workbench.cli generate ... --json``) in a fresh process, without
``OMP_NUM_THREADS``, so the default is chosen as a user meets it (``roberta_diffusion.threads``); the time is the
generation's own (``seconds``: the model load and imports do not depend on threads), the count is the one the
process used (``torch_threads``). Settings take turns within each repeat, so slow drift in the background load
falls on all of them alike. The target (issue 25): the default within 10 % of the best setting in both conditions.

    python -m benchmarks.threads --out benchmarks/results/threads-cpu-<date>.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from roberta_diffusion import paths, threads
from workbench import checks, cli

PROMPT = "The history of the city"
TARGET = 1.10  # the default may be at most 10 % slower than the best setting


def time_generate(setting: str, steps: int, folder: Path) -> dict:
    """One ``generate`` in a fresh process: its generation seconds and the threads it ran on."""
    out = folder / f"{setting}.json"
    command = [sys.executable, "-m", "workbench.cli", "generate", PROMPT, "--steps", str(steps), "--device", "cpu",
               "--quiet", "--json", str(out)] + ([] if setting == "default" else ["--threads", setting])
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the default must measure, not read it
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=paths.ROOT)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"generate with threads={setting} failed: {done.stderr.strip()[-300:]}")
    summary = json.loads(out.read_text())
    return {"seconds": summary["seconds"], "threads": summary["torch_threads"], "wall_s": round(wall, 2)}


def burner() -> subprocess.Popen:
    """A competing process: one core spinning in pure Python until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def condition(settings: list[str], steps: int, repeats: int, folder: Path) -> dict:
    runs = {s: [] for s in settings}
    busy_before = []
    for _ in range(repeats):
        for s in settings:
            busy_before.append(round(threads.busy_cpus(), 2))
            runs[s].append(time_generate(s, steps, folder))
    medians = {s: statistics.median(r["seconds"] for r in rows) for s, rows in runs.items()}
    best = min(medians.values())
    ratios = {s: round(m / best, 3) for s, m in medians.items()}
    return {"median_s": {s: round(m, 4) for s, m in medians.items()}, "ratio_to_best": ratios,
            "default_threads": [r["threads"] for r in runs["default"]],
            "default_within_target": ratios["default"] <= TARGET,
            "busy_cpus_before_each_run": busy_before, "runs": runs}


def run(args) -> int:
    checks.output_path("--out", args.out, ".json")
    checks.in_range("--steps", args.steps, 1)
    checks.in_range("--repeats", args.repeats, 1)
    cores = threads.physical_cores()
    settings = [str(n) for n in sorted({1, 2, cores})] + ["default"]
    result = {"command": " ".join(["python -m benchmarks.threads", *sys.argv[1:]]),
              "what": f"generate {PROMPT!r} --steps {args.steps} --device cpu (shipped model, 256-token canvas): "
                      "generation seconds, median of the repeats; ratio_to_best: each setting over the fastest",
              "date": datetime.date.today().isoformat(), "torch": torch.__version__, "physical_cores": cores,
              "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "target_ratio": TARGET,
              "steps": args.steps, "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="rd-threads-") as folder:
        result["idle"] = condition(settings, args.steps, args.repeats, Path(folder))
        competitor = burner()
        try:
            time.sleep(1.0)  # let it reach full speed before the first measurement
            result["beside a CPU-burning process"] = condition(settings, args.steps, args.repeats, Path(folder))
        finally:
            competitor.kill()
            competitor.wait()
    for name in ("idle", "beside a CPU-burning process"):
        row = result[name]
        print(f"{name:<30} " + "  ".join(f"{s}: {r:.2f}x" for s, r in row["ratio_to_best"].items())
              + f"  (default chose {row['default_threads']})")
    paths.atomic_write_text(args.out, json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="diffusion steps of each timed generate")
    p.add_argument("--repeats", type=int, default=3, help="runs of each setting per condition (the median counts)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
