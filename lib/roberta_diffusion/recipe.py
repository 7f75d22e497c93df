"""A training recipe (notebook 02's parameters, a profile's ``02_finetune`` section) turned into runs.

Notebook 02 calls these functions cell by cell; ``roberta-diffusion finetune`` calls ``run_recipe``, which calls
the same ones in the same order, so both train through one code path (``train.train``). Under ``accelerate
launch`` every process runs it; the data cache and the outputs are written by the main process only.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import paths, train
from .models import load_tokenizer

# per-objective settings: the GPT-2 baseline may have its own rate and warm-up; the rest is the masked LM's only
NOTEBOOK_ONLY = ("run_name", "tokenizer_path", "new_tokenizer_vocab", "train_data", "valid_data", "max_train_lines",
                 "ar_lr", "ar_warmup_steps", "ar_init", "objectives")
MLM_ONLY = ("init", "arch", "locality_init", "plateau_escape", "escape_lr", "escape_steps", "max_prefix_len",
            "span_prob")


def recipe_tokenizer(params: dict, run_dir: Path):
    """The shipped tokenizer (or ``init``'s), or a fresh BPE trained on the training lines."""
    if params.get("new_tokenizer_vocab") and not params.get("init"):
        from .data import iter_lines
        from .models import train_tokenizer

        lines = iter_lines(paths.corpus(params["train_data"]), max_lines=params.get("max_train_lines"))
        return train_tokenizer(lines, vocab_size=params["new_tokenizer_vocab"], save_to=run_dir / "tokenizer")
    return load_tokenizer(paths.resolve(params.get("init") or params.get("tokenizer_path", "weights/tokenizer")))


def recipe_data(params: dict, tokenizer):
    """``(train_blocks, valid_blocks)`` of ``block_size`` tokens, cached under ``runs/cache``. Processes that fill
    the cache at once each write a whole file under their own name (``cached_blocks``), so none reads half of one;
    on GPUs, pass blocks tokenised ahead of time (a ``.pt`` file) to skip the work."""
    cache = paths.CACHE
    block = params.get("block_size", 256)
    return (train.cached_blocks(paths.corpus(params["train_data"]), tokenizer, block, cache, params.get("max_train_lines")),
            train.cached_blocks(paths.corpus(params["valid_data"]), tokenizer, block, cache))


def recipe_configs(params: dict, run_dir: Path) -> dict[str, train.TrainConfig]:
    """One ``TrainConfig`` per objective in ``params["objectives"]``; ``ar_lr`` / ``ar_warmup_steps`` give the
    baseline its own rate, and settings that only mean something for the masked LM are left at their defaults."""
    fields = set(train.TrainConfig.__dataclass_fields__) - {"out_dir", "objective", "tokenizer"}
    configs = {}
    for objective in params.get("objectives", ["mlm", "ar"]):
        chosen = {k: v for k, v in params.items() if k in fields and not (objective == "ar" and k in MLM_ONLY)}
        if objective == "ar":
            chosen["lr"] = params.get("ar_lr") or params.get("lr", train.TrainConfig.lr)
            chosen["warmup_steps"] = params.get("ar_warmup_steps") or params.get("warmup_steps", train.TrainConfig.warmup_steps)
            chosen["init"] = params.get("ar_init")
        if chosen.get("init"):
            chosen["init"] = paths.resolve(chosen["init"])
        configs[objective] = train.TrainConfig(out_dir=str(run_dir / objective), objective=objective, **chosen)
    return configs


def run_recipe(params: dict, say=print) -> dict[str, dict]:
    """Train every objective of the recipe into ``runs/<run_name>/<objective>``; returns their histories."""
    run_dir = paths.run_dir(params.get("run_name", "scratch"))
    tokenizer = recipe_tokenizer(params, run_dir)
    train_blocks, valid_blocks = recipe_data(params, tokenizer)
    if os.environ.get("RANK", "0") == "0":
        say(f"train: {tuple(train_blocks.shape)} blocks; valid: {tuple(valid_blocks.shape)}")
    histories = {}
    for objective, cfg in recipe_configs(params, run_dir).items():
        histories[objective] = train.train(cfg, train_blocks, valid_blocks, tokenizer)
        if histories[objective]["best_step"] is not None:  # the main process scores; the others have nothing to say
            say(f"{objective}: best held-out bound {histories[objective]['best_bound']} nats/token at step "
            f"{histories[objective]['best_step']}")
    return histories
