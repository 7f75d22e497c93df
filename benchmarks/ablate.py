"""Ablations of a training recipe: named variants, each trained alone on one GPU, compared on held-out bounds.

python -m benchmarks.ablate base lr-8e-4 --gpus 2 --set max_steps=5000 eval_every=500 --out ablations.json
python -m benchmarks.ablate --summarise-only base lr-8e-4 --out ablations.json   # runs already trained

Variants live in ``benchmarks/ablations.txt`` (name, then ``key=value`` settings). The GPUs run their share of
the variants one after another (variant i on GPU i mod N); ``--gpus 0`` runs them one after another on the CPU.
Each variant is ``roberta-diffusion finetune --profile P --set run_name="ablate-<name>" ...`` (the masked LM
alone), so it is the same code as any training run, resumable and staged. The summary ranks the variants by their
best bound (picked on Wikipedia valid, as checkpoints are) and names the settings that beat ``--base``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

from roberta_diffusion import paths
from workbench import cli

from .scaling import describe

VARIANTS = Path(__file__).with_name("ablations.txt")


def read_variants(path: Path = VARIANTS) -> dict[str, list[str]]:
    """``{name: ["key=value", ...]}`` from a file of ``name key=value ...`` lines (``#`` starts a comment)."""
    variants = {}
    for line in path.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            variants[words[0]] = words[1:]
    return variants


def commands(names: list[str], variants: dict, profile: str, common: list[str]) -> dict[str, list[str]]:
    """The finetune command line of each named variant (its settings after ``common``, so they win)."""
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise ValueError(f"unknown variants {unknown}: choose from {', '.join(variants)} (benchmarks/ablations.txt)")
    return {name: [sys.executable, "-m", "workbench.cli", "finetune", "--profile", profile, "--set",
                   f'run_name="ablate-{name}"', 'objectives=["mlm"]', *common, *variants[name]] for name in names}


def train_all(lines: dict[str, list[str]], gpus: int, logs: Path) -> dict[str, int]:
    """Run the commands, GPU ``i`` taking every ``gpus``-th one in order; the exit status of each."""
    logs.mkdir(parents=True, exist_ok=True)
    queues = [list(lines)[i :: max(1, gpus)] for i in range(max(1, gpus))]
    status = {}

    def work(gpu: int, names: list[str]) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu) if gpus else "", "ROBERTA_DIFFUSION_RUNS": str(paths.RUNS)}
        for name in names:
            with open(logs / f"ablate-{name}.log", "w") as log:
                status[name] = subprocess.run(lines[name], env=env, stdout=log, stderr=subprocess.STDOUT).returncode

    threads = [threading.Thread(target=work, args=(gpu, names)) for gpu, names in enumerate(queues)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return status


def summarise(names: list[str], variants: dict, base: str | None) -> dict:
    """One row per trained variant: its settings, held-out perplexity by evaluation (of the average and of the
    weights themselves), best point, speed and MFU; ranked by best bound; ``pick``: the settings that beat base."""
    rows = []
    for name in names:
        run = paths.run_dir(f"ablate-{name}") / "mlm"
        if not (run / "history.json").exists():
            rows.append({"name": name, "settings": variants[name], "error": f"no finished run in {run}"})
            continue
        history = json.loads((run / "history.json").read_text())
        ppl = [round(math.exp(b), 2) for b in history["eval_bound"]]
        rows.append({"name": name, "settings": variants[name], "eval_step": history["eval_step"],
                     "eval_epoch": history["eval_epoch"], "ppl": ppl,
                     "ppl_raw": [round(math.exp(b), 2) for b in history.get("eval_bound_raw", [])],
                     "best_ppl": round(math.exp(history["best_bound"]), 2), "best_step": history["best_step"],
                     "tokens": history["tokens"], "seconds": round(history["seconds"], 1), **speed(run)})
    trained = sorted((r for r in rows if "error" not in r), key=lambda r: r["best_ppl"])
    return {"rows": trained + [r for r in rows if "error" in r], "base": base, "pick": pick(trained, base)}


def speed(run: Path) -> dict:
    facts = describe(run)
    return {k: facts[k] for k in ("tokens_per_s", "mfu", "global_batch", "device")}


def pick(rows: list[dict], base: str | None) -> list[str]:
    """Base's settings with those of every variant better than it (best first) that differ from base's, each skipped
    where it sets a key a better one already changed: one candidate recipe from the winners, to confirm by
    training it (effects need not add up). A fresh start (``init``) is another recipe, not a setting to add."""
    by_name = {r["name"]: r for r in rows}
    if base not in by_name:
        return []
    recipe = dict(s.split("=", 1) for s in by_name[base]["settings"])
    changed = set()
    for row in rows:
        if row["best_ppl"] >= by_name[base]["best_ppl"]:
            break
        own = dict(s.split("=", 1) for s in row["settings"] if s not in by_name[base]["settings"])
        if "init" in own or set(own) & changed:
            continue
        recipe.update(own)
        changed |= set(own)
    return [f"{k}={v}" for k, v in recipe.items()]


def run(args) -> int:
    variants = read_variants(args.variants)
    lines = commands(args.names, variants, args.profile, args.set)
    status = {}
    if not args.summarise_only:
        status = train_all(lines, args.gpus, paths.RUNS / "logs")
        print(json.dumps(status))
    result = summarise(args.names, variants, args.base)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        paths.atomic_write_text(args.out, text)
    failed = [name for name, code in status.items() if code]
    if failed:
        raise RuntimeError(f"variants {failed} failed: their logs are in {paths.RUNS / 'logs'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="variants of benchmarks/ablations.txt")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs to share the variants over (0: the CPU)")
    parser.add_argument("--profile", default="converge")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings for every variant")
    parser.add_argument("--base", default="base", help="the variant the others are measured against")
    parser.add_argument("--variants", type=Path, default=VARIANTS)
    parser.add_argument("--summarise-only", action="store_true", help="summarise runs already trained")
    parser.add_argument("--out", type=Path, help="JSON to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
