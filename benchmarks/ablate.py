"""Ablations of a training recipe: named variants, each trained alone on one GPU, compared on held-out bounds.

python -m benchmarks.ablate base lr-8e-4 --gpus 2 --set max_steps=5000 eval_every=500 --out ablations.json
python -m benchmarks.ablate --summarise-only base lr-8e-4 --out ablations.json   # runs already trained

Variants live in ``benchmarks/ablations.txt`` (name, then ``key=value`` settings). The GPUs run their share of
the variants one after another (variant i on GPU i mod N); ``--gpus 0`` runs them one after another on the CPU.
Each variant is ``roberta-diffusion finetune --profile P --set run_name="ablate-<name>" ...`` (the masked LM
alone), so it is the same code as any training run, resumable and staged.

The summary compares the variants at equal training tokens: the largest token count at which every variant has an
evaluation (runs stopped by a time limit, or with another batch size, reach different steps, and a run further
down its rate decay looks better for that alone). It ranks them there (on Wikipedia valid, as checkpoints are
picked) and names the settings that beat ``--base`` by more than ``--margin``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import torch
from roberta_diffusion import paths
from roberta_diffusion.history import History
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


def queues(names: list[str], gpus: int) -> list[list[str]]:
    """The variants each GPU trains in turn (variant i on GPU i mod ``gpus``); one queue for the CPU."""
    return [names[i :: max(1, gpus)] for i in range(max(1, gpus))]


def visible_gpus(gpus: int) -> list[str]:
    """The device ids to pin each queue to, honouring a ``CUDA_VISIBLE_DEVICES`` this process already has."""
    if gpus == 0:
        return [""]
    available = torch.cuda.device_count()
    if gpus > available:
        raise ValueError(f"--gpus {gpus}: this machine shows {available} GPUs; use at most that, or 0 for the CPU")
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = mask.split(",") if mask else [str(i) for i in range(available)]
    return ids[:gpus]


def train_all(lines: dict[str, list[str]], gpus: int, logs: Path) -> dict[str, int]:
    """Run the commands, each GPU taking its queue in order; the exit status of each. Every run folder gets the
    command that trained it (``command.txt``, read by ``scripts/ship_models.py`` for the model card)."""
    logs.mkdir(parents=True, exist_ok=True)
    status = {}

    def work(device: str, names: list[str]) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": device, "ROBERTA_DIFFUSION_RUNS": str(paths.RUNS)}
        for name in names:
            with open(logs / f"ablate-{name}.log", "w") as log:
                status[name] = subprocess.run(lines[name], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            shown = ["python", *lines[name][1:]]
            paths.atomic_write_text(paths.run_dir(f"ablate-{name}") / "command.txt", shlex.join(shown) + "\n")

    threads = [threading.Thread(target=work, args=(device, names))
               for device, names in zip(visible_gpus(gpus), queues(list(lines), gpus), strict=False)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return status


def summarise(names: list[str], variants: dict, base: str | None, margin: float, failed=()) -> dict:
    """One row per variant: its settings, held-out perplexity by evaluation (of the average and of the weights
    themselves), best point, speed and MFU; then ``rank``."""
    rows = []
    for name in names:
        run = paths.RUNS / f"ablate-{name}" / "mlm"
        if name in failed or not (run / "history.json").exists():
            why = "its training failed (see its log)" if name in failed else f"no finished run in {run}"
            rows.append({"name": name, "settings": variants[name], "error": why})
            continue
        history = History.load(run / "history.json")
        rows.append({"name": name, "settings": variants[name], "eval_step": history.eval_step,
                     "eval_epoch": history.eval_epoch, "ppl": [round(math.exp(b), 2) for b in history.eval_bound],
                     "ppl_raw": [round(math.exp(b), 2) for b in history.eval_bound_raw],
                     "best_ppl": round(math.exp(history.best_bound), 2), "best_step": history.best_step,
                     "tokens": history.tokens, "seconds": round(history.seconds, 1), **speed(run)})
    return rank(rows, base, margin)


def speed(run: Path) -> dict:
    facts = describe(run)
    return {k: facts[k] for k in ("tokens_per_s", "mfu", "global_batch", "block", "device")}


def rank(rows: list[dict], base: str | None, margin: float = 0.005) -> dict:
    """Rows ranked by perplexity at ``common_tokens`` (the largest count every trained row has an evaluation at);
    ``pick``: base's settings with those of the variants that beat it there by more than ``margin`` (a share)."""
    trained = [r for r in rows if "error" not in r]
    for row in trained:
        row["eval_tokens"] = [step * row["global_batch"] * row["block"] for step in row["eval_step"]]
    shared = set.intersection(*(set(r["eval_tokens"]) for r in trained)) if trained else set()
    common = max(shared) if shared else None
    for row in trained:
        row["ppl_at_common"] = row["ppl"][row["eval_tokens"].index(common)] if common else None
    if common:
        trained.sort(key=lambda r: r["ppl_at_common"])
    return {"common_tokens": common, "rows": trained + [r for r in rows if "error" in r], "base": base,
            "margin": margin, "pick": pick(trained, base, margin) if common else []}


def pick(rows: list[dict], base: str | None, margin: float) -> list[str]:
    """Base's settings with those of every variant better than it by more than ``margin`` at the common tokens
    (best first) that differ from base's, each skipped where it sets a key a better one already changed: one
    candidate recipe from the winners, to confirm by training it (effects need not add up). A fresh start
    (``init``) is another recipe, not a setting to add."""
    by_name = {r["name"]: r for r in rows}
    if base not in by_name:
        return []
    bar = by_name[base]["ppl_at_common"] * (1 - margin)
    recipe = dict(s.split("=", 1) for s in by_name[base]["settings"])
    changed = set()
    for row in rows:
        if row["ppl_at_common"] >= bar:
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
    status = {} if args.summarise_only else train_all(lines, args.gpus, paths.RUNS / "logs")
    failed = [name for name, code in status.items() if code]
    result = summarise(args.names, variants, args.base, args.margin, failed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        paths.atomic_write_text(args.out, text)
    if failed:
        raise RuntimeError(f"variants {failed} failed: their logs are in {paths.RUNS / 'logs'}")
    return 0


def build_parser() -> cli.Parser:
    parser = cli.Parser(prog="python -m benchmarks.ablate", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="variants of benchmarks/ablations.txt")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs to share the variants over (0: the CPU)")
    parser.add_argument("--profile", default="converge")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings for every variant")
    parser.add_argument("--base", default="base", help="the variant the others are measured against")
    parser.add_argument("--margin", type=float, default=0.005,
                        help="share by which a variant must beat base to count as a win (default 0.5 %%)")
    parser.add_argument("--variants", type=Path, default=VARIANTS)
    parser.add_argument("--summarise-only", action="store_true", help="summarise runs already trained")
    parser.add_argument("--out", type=Path, help="JSON to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
