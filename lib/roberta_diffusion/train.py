"""Training: the masked LM as a diffusion model (with DiffusionCollator) and the GPT-2 baseline, on blocks.

``TrainConfig`` is a whole recipe (notebook 02's parameters cell, field for field; a profile's ``02_finetune``
section); ``train(cfg)`` loads the tokenizer and the blocks and trains each of ``cfg.objectives`` into
``runs/<run_name>/<objective>`` with ``fit``, one plain loop on ``accelerate`` (``accelerate launch`` spreads it
over GPUs unchanged): bf16 autocast on GPU, fused AdamW, warm-up + cosine rate, a fixed held-out evaluation.

Resumable (``checkpoints``): a rerun with the same config continues from the newest intact checkpoint. The batch
order and the noise of step N are functions of (seed, N) and the dropout noise comes from the saved random state,
so a run killed and resumed on a CPU gives the losses and weights of an unbroken one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from . import corpus, data, paths
from .checkpoints import (
    export_model,
    load_extra,
    restore_best,
    resume,
    save_checkpoint,
    set_rng_state,
    write_model_card,
)
from .collator import DiffusionCollator
from .defaults import PROMPT_LEN
from .distill import distill_batch, distillation
from .losses import HeldOutScorer, LossModule, bounded_head_loss, causal_lm_loss, masked_lm_loss, noisy_batch
from .models import (
    fresh_causal_lm,
    fresh_mlm,
    load_causal_lm,
    load_mlm,
    load_tokenizer,
    model_summary,
    plateau_escape_init,
    train_tokenizer,
)
from .paths import atomic_write_text
from .speed import peak_flops, progress_fields

# fields that mean something for the masked LM only: the GPT-2 baseline keeps their defaults (a fresh start
# included), unless `ar` sets them
MLM_ONLY = ("init", "arch", "locality_init", "plateau_escape", "escape_lr", "escape_steps", "max_prefix_len",
            "span_prob", "teacher", "distill_steps")


@dataclass
class TrainConfig:
    # The defaults are the quick CPU run (tiny models, a little data: about a minute on 2 cores), so notebook 02 and
    # `finetune` run as they stand; profiles/*.yaml override them for real runs. Notebook 02's parameters cell
    # restates these fields as literals for papermill, in this order (tests/test_train.py holds them equal).
    run_name: str = "scratch"  # outputs go to runs/<run_name>/<objective>/
    objectives: list = field(default_factory=lambda: ["mlm", "ar"])  # "mlm": the diffusion model, "ar": GPT-2
    ar: dict = field(default_factory=dict)  # the GPT-2 baseline's own values, e.g. {"lr": 1e-3, "warmup_steps": 200}
    init: str | None = None  # hub name or folder to fine-tune; None = fresh weights of `size`
    size: str = "tiny"  # fresh model size (models.SIZES)
    arch: str = "roberta"  # fresh MLM: models.MLM_ARCHS
    locality_init: float = 0.0  # > 0: sinusoidal positions of this amplitude, query = key = identity (models.locality_init)
    plateau_escape: bool = False  # fresh RoBERTa started with models.plateau_escape_init (with escape_lr 2e-4)
    tokenizer_path: str = "weights/tokenizer"  # fresh models' tokenizer; fine-tuning uses the init model's
    new_tokenizer_vocab: int = 0  # > 0: a fresh byte-level BPE of this size trained on train_data instead
    train_data: str = "wikipedia-train"  # corpus alias, text file or folder, hub name, or a .pt of blocks
    valid_data: str = "wikipedia-valid"
    max_train_lines: int | None = 2000  # None: the whole corpus
    block_size: int = 128  # tokens per training block (256 for the shipped models)
    prefix_len: int = PROMPT_LEN  # the shortest prompt: never masked
    max_prefix_len: int | None = None  # prompt length drawn per row in [prefix_len, max_prefix_len]; None: fixed
    span_prob: float = 0.0  # share of rows that also pin one random span (infilling in distribution)
    ratio_mode: str = "levels"  # collator mode: "levels" (seed) | "continuous" (MDLM) | "stratified"
    n_levels: int = 10
    weighting: str = "none"  # "none" | "elbo"
    batch_size: int = 8  # the global batch, split over the processes
    max_steps: int = 40
    lr: float = 1e-3
    weight_decay: float = 0.01
    adam_eps: float = 1e-8  # not RoBERTa's 1e-6: at init the query/key gradients are ~1e-8 per weight, and a
    # larger eps freezes them, leaving attention uniform and the MLM stuck at the unigram loss
    warmup_steps: int = 10
    escape_lr: float | None = None  # two-phase rate: warm up to this, hold it until `escape_steps`, then ramp
    escape_steps: int = 0  # to `lr` over `warmup_steps` (RoBERTa leaves the unigram plateau only at a low rate)
    dropout: float = 0.1
    ema_decay: float = 0.0  # > 0: also keep an average of the weights, scored and exported instead of the last
    eval_every: int = 20
    eval_batches: int = 8
    save_every: int = 20
    log_every: int = 10
    seed: int = 0
    compile: bool = False
    max_minutes: float | None = None  # stop (and save) after this long, whatever max_steps says
    teacher: str | None = None  # masked LM to distil (SDTT, distill.py): the student learns its two steps in one
    distill_steps: int = 0  # with a teacher: the student's number of steps (the teacher's is twice that)
    objective: str = "mlm"  # what `fit` trains: `train` sets it from `objectives`
    out_dir: str | None = None  # where `fit` writes (checkpoints/, model/, history.json): `train` sets it

    def for_objective(self, objective: str) -> TrainConfig:
        """The config ``fit`` trains ``objective`` with, into ``runs/<run_name>/<objective>``: the baseline gets
        the defaults of the masked-LM-only fields, then ``ar``'s values."""
        if objective not in ("mlm", "ar"):
            raise ValueError(f"objectives={self.objectives!r}: use a list of 'mlm' and/or 'ar'")
        own = dict(self.ar) if objective == "ar" else {}
        unknown = sorted(set(own) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"ar={self.ar!r}: {unknown} are not TrainConfig fields")
        reset = {k: TrainConfig.__dataclass_fields__[k].default for k in MLM_ONLY} if objective == "ar" else {}
        # the folder is named, not made: a config is checked whole before anything is written (fit makes it)
        cfg = dataclasses.replace(self, objective=objective, objectives=[objective], ar={},
                                  out_dir=str(paths.RUNS / paths.run_name(self.run_name) / objective), **{**reset, **own})
        return dataclasses.replace(cfg, init=paths.resolve(cfg.init))

    def save(self, path: Path) -> None:
        """The config as JSON, ``out_dir`` as its final place (``runs/<name>/<objective>``): a staged run's
        absolute staging folder is gone once the run is swapped in."""
        fields = dataclasses.asdict(self)
        if fields["out_dir"] is not None:
            fields["out_dir"] = paths.portable(fields["out_dir"])
        atomic_write_text(path, json.dumps(fields, indent=2))


# -- the recipe: tokenizer, blocks, every objective -----------------------------------------------------------
def train(cfg: TrainConfig, progress: bool = True, say=print) -> dict[str, dict]:
    """Train every objective of ``cfg`` into ``runs/<run_name>/<objective>``, each model with a card; returns the
    histories. Under ``accelerate launch`` every process runs it; the main process alone writes."""
    if not isinstance(cfg.objectives, list) or not cfg.objectives:
        raise ValueError(f"objectives={cfg.objectives!r}: use a list of 'mlm' and/or 'ar'")
    configs = {objective: cfg.for_objective(objective) for objective in cfg.objectives}  # checked before any work
    tokenizer = recipe_tokenizer(cfg)
    train_blocks = data.cached_blocks(paths.corpus(cfg.train_data), tokenizer, cfg.block_size, paths.CACHE,
                                      cfg.max_train_lines)
    valid_blocks = data.cached_blocks(paths.corpus(cfg.valid_data), tokenizer, cfg.block_size, paths.CACHE)
    main = os.environ.get("RANK", "0") == "0"
    if main:
        say(f"tokenizer: {len(tokenizer)} tokens; train: {tuple(train_blocks.shape)} = "
            f"{train_blocks.numel() / 1e6:.2f}M tokens; valid: {tuple(valid_blocks.shape)}")
    histories = {}
    for objective, one in configs.items():
        histories[objective] = history = fit(one, train_blocks, valid_blocks, tokenizer, progress)
        if main and objective == "mlm":  # the corpus counts beside the model: what policy calibrated divides out
            corpus.save_counts(Path(one.out_dir) / "model", corpus.count_tokens(train_blocks, len(tokenizer)),
                               f"{cfg.train_data} as the training blocks")
        if main:
            write_training_card(one, history, train_blocks)
            say(f"{objective}: best held-out bound {history['best_bound']} nats/token at step {history['best_step']}")
    return histories


def recipe_tokenizer(cfg: TrainConfig):
    """The init model's (or a student's teacher's) tokenizer, ``tokenizer_path``'s, or a fresh BPE trained on the
    training lines."""
    if cfg.new_tokenizer_vocab and not cfg.init:
        lines = data.iter_lines(paths.corpus(cfg.train_data), max_lines=cfg.max_train_lines)
        return train_tokenizer(lines, vocab_size=cfg.new_tokenizer_vocab,
                               save_to=paths.run_dir(cfg.run_name) / "tokenizer")
    return load_tokenizer(paths.resolve(cfg.init or cfg.teacher or cfg.tokenizer_path))


def write_training_card(cfg: TrainConfig, history: dict, train_blocks: torch.Tensor) -> None:
    """``<out>/model/README.md``: what the model is, its data and licence, how long it trained, how well it did."""
    folder = Path(cfg.out_dir) / "model"
    model = load_trained(cfg, folder)
    facts = {"architecture": model_summary(model),
             "objective": "masked diffusion (DiffusionCollator)" if cfg.objective == "mlm" else "next-token prediction",
             "data": f"{cfg.train_data} ({train_blocks.numel() / 1e6:.1f}M tokens, blocks of {cfg.block_size})",
             "licence of the data": "CC BY-SA (Wikipedia text)" if "wiki" in str(cfg.train_data) else "see the data source",
             "tokens seen": f"{history['tokens'] / 1e6:.1f}M", "steps": history["step"][-1] if history["step"] else 0,
             "wall time (s)": round(history["seconds"], 1),
             "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
             "final held-out loss": history["eval_loss"][-1],
             "hyperparameters": json.dumps({k: v for k, v in vars(cfg).items() if k != "out_dir"})}
    write_model_card(folder, f"{cfg.objective.upper()} · run {cfg.run_name}", "Trained by roberta_diffusion.train.", facts)


# -- one objective: the loop --------------------------------------------------------------------------------
def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Block indices of global ``step``: epoch-wise shuffles that depend only on (seed, epoch)."""
    per_epoch = max(1, n_blocks // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[offset * batch_size : (offset + 1) * batch_size]


def check_fresh_model(cfg: TrainConfig, train_blocks: torch.Tensor | None = None, blocks_known: bool = False) -> None:
    """``build_model``'s conditions on the config (checked before a run starts); ``blocks_known``: also that
    plateau_escape has its training blocks."""
    if cfg.plateau_escape and (cfg.init or cfg.objective != "mlm" or cfg.arch != "roberta"
                               or (blocks_known and train_blocks is None)):
        raise ValueError("plateau_escape=True starts a fresh RoBERTa masked LM from its training blocks: use it with "
                         "objective 'mlm', arch 'roberta', no init, and pass train_blocks")
    if cfg.plateau_escape and cfg.locality_init:
        raise ValueError("plateau_escape=True sets its own local attention: leave locality_init at 0")


def build_model(cfg: TrainConfig, tokenizer, train_blocks: torch.Tensor | None = None):
    """The model to train: ``cfg.init`` loaded, or fresh weights (``train_blocks`` gives plateau_escape's unigram)."""
    check_fresh_model(cfg, train_blocks, blocks_known=True)
    if cfg.init or cfg.teacher:  # a student starts as its teacher unless told otherwise
        return load_trained(cfg, cfg.init or paths.resolve(cfg.teacher))
    if cfg.objective == "mlm":
        model = fresh_mlm(tokenizer, cfg.size, max_len=cfg.block_size, seed=cfg.seed, arch=cfg.arch,
                          dropout=cfg.dropout, locality=cfg.locality_init)
        if cfg.plateau_escape:
            plateau_escape_init(model, corpus.count_tokens(train_blocks, model.config.vocab_size))
        return model
    return fresh_causal_lm(tokenizer, cfg.size, max_len=cfg.block_size, seed=cfg.seed, dropout=cfg.dropout)


def _lr_lambda(cfg: TrainConfig):
    """Multiplier of cfg.lr at each step: linear warm-up, then cosine decay to 10 %.

    With ``escape_lr`` and ``escape_steps`` the run first warms up to ``escape_lr`` and holds it until step
    ``escape_steps``, then ramps linearly to ``lr`` over ``warmup_steps`` and decays from there. A RoBERTa from
    scratch only leaves the unigram plateau at a low rate, but learns faster after it at a higher one.
    """
    if cfg.escape_lr is not None and not (cfg.escape_lr > 0 and cfg.escape_steps >= cfg.warmup_steps):
        raise ValueError(f"escape_lr={cfg.escape_lr}, escape_steps={cfg.escape_steps}: the two-phase rate needs "
                         f"escape_lr > 0 and escape_steps >= warmup_steps ({cfg.warmup_steps})")
    escaping = cfg.escape_lr is not None and cfg.escape_steps > 0 and cfg.escape_lr != cfg.lr
    low, held_until = (cfg.escape_lr / cfg.lr, cfg.escape_steps) if escaping else (1.0, 0)
    decay_from = held_until + cfg.warmup_steps  # without an escape phase: right after the warm-up

    def factor(step):
        if step < cfg.warmup_steps:
            return low * (step + 1) / cfg.warmup_steps
        if step < held_until:
            return low
        if step < decay_from:  # only with an escape phase: the ramp from escape_lr to lr
            return low + (1 - low) * (step - held_until + 1) / cfg.warmup_steps
        progress = (step - decay_from) / max(1, cfg.max_steps - decay_from)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit(cfg: TrainConfig, train_blocks: torch.Tensor, valid_blocks: torch.Tensor, tokenizer=None,
        progress: bool = True, on_step=None) -> dict:
    """Train ``cfg.objective`` into ``cfg.out_dir`` (or resume) and return the history; the model with the best
    held-out bound goes to ``<out>/model``.

    ``cfg.batch_size`` is the global batch: with ``accelerate launch --num_processes N`` every process draws the
    same blocks and noise for step k (from ``(seed, k)``) and keeps rows ``rank::N``, so a run is the same
    whatever N is, and a resumed run the same as one never stopped. ``on_step(step)``, if given, is called after
    every optimizer step (benchmarks.profile_train hangs a profiler and a clock on it).
    """
    if cfg.out_dir is None:
        raise ValueError("out_dir=None: give fit the folder to write into (train sets runs/<run_name>/<objective>)")
    if cfg.objective not in ("mlm", "ar"):
        raise ValueError(f"objective={cfg.objective!r}: use 'mlm' or 'ar'")
    if cfg.teacher and cfg.distill_steps < 1:
        raise ValueError(f"teacher={cfg.teacher!r} with distill_steps={cfg.distill_steps}: give the student's number of "
                         "steps (>= 1), e.g. 32 to learn a teacher's 64")
    lr_factor = _lr_lambda(cfg)  # checks the schedule before anything is written
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch: make it a multiple of the {world} processes")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or load_tokenizer(paths.resolve(cfg.init or cfg.teacher or cfg.tokenizer_path))
    model = build_model(cfg, tokenizer, train_blocks)
    fused = accelerator.device.type == "cuda"
    decay = [p for p in model.parameters() if p.ndim >= 2]  # matrices decay; biases and norms do not
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98),
                                  eps=cfg.adam_eps, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    step, history, rng, resumed = resume(out, cfg, model, optimizer, scheduler, say=accelerator.print)
    if resumed is not None:
        accelerator.print(f"resuming from {resumed} (step {step})")
    if accelerator.is_main_process:  # best/ as of that checkpoint: the final export reads it
        restore_best(resumed, out, history)
    history = {**new_history(), **(history or {})}
    if cfg.ema_decay:  # a checkpoint from before raw scores were kept: its evaluations have none
        history["eval_bound_raw"] = [None] * (len(history["eval_step"]) - len(history["eval_bound_raw"])) \
            + history["eval_bound_raw"]
    if accelerator.is_main_process:
        cfg.save(out / "config.json")

    collator = make_collator(cfg, tokenizer)
    loss_fn = masked_lm_loss if cfg.objective == "mlm" else causal_lm_loss
    if cfg.teacher:
        loss_fn = distillation(paths.resolve(cfg.teacher), cfg.distill_steps, tokenizer.mask_token_id,
                               accelerator.device)
    elif cfg.objective == "mlm" and cfg.ratio_mode == "stratified":
        # the masked count has a fixed bound: the head runs on that many rows every step (one shape to compile)
        loss_fn = bounded_head_loss(collator, cfg.batch_size // world, cfg.block_size)
    step_module, optimizer = accelerator.prepare(LossModule(model, loss_fn), optimizer)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None  # on the device, where prepare put the model
    if ema is not None and resumed is not None and "ema" in load_extra(resumed):
        ema.load_state_dict(load_extra(resumed)["ema"])
    if cfg.compile and fused:
        compile_body(model)
    scorer = HeldOutScorer(cfg, make_collator(cfg, tokenizer), valid_blocks, accelerator.device)
    history["parameters"] = sum(p.numel() for p in model.parameters())
    history["train_blocks"] = len(train_blocks)
    history["world_size"] = world
    started, tokens_at_start = time.time(), history["tokens"]
    steps_at_start, peak = step, peak_flops(accelerator.device)
    run_started = started  # max_minutes counts this invocation only
    portable_config = {**dataclasses.asdict(cfg), "out_dir": paths.portable(cfg.out_dir)}  # no staging folder
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (progress and accelerator.is_main_process),
               desc=f"train {cfg.objective}", mininterval=1 if sys.stderr.isatty() else 30)
    step_module.train()
    set_rng_state(rng)  # last thing before the first step: a resumed run draws the dropout noise an unbroken one would
    while step < cfg.max_steps:
        ids = train_blocks[batch_indices(step, len(train_blocks), cfg.batch_size, cfg.seed)]
        batch = _make_batch(cfg, collator, ids, seed=cfg.seed * 1_000_003 + step, rows=slice(rank, None, world),
                            device=accelerator.device)
        with accelerator.autocast():
            loss = step_module(batch)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(step_module.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, step)
        step += 1
        history["tokens"] += ids.numel()
        bar.update(1)
        if on_step is not None:
            on_step(step)
        # every process must stop at the same step (one that stops alone leaves the others waiting in DDP forever)
        over_time = (cfg.max_minutes is not None and step % cfg.log_every == 0
                     and any_process(time.time() - run_started > 60 * cfg.max_minutes, accelerator.device))
        last = step == cfg.max_steps or over_time
        if step % cfg.log_every == 0 or last:
            history["step"].append(step)
            history["train_loss"].append(round(loss.item(), 5))
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}",
                            **progress_fields(history["tokens"] - tokens_at_start, time.time() - started,
                                              history["parameters"], cfg.max_steps - step, step - steps_at_start,
                                              peak))
        if step % cfg.eval_every == 0 or last:
            elapsed = time.time() - started
            history["seconds"] += elapsed
            history["speed_step"].append(step)
            history["speed"].append(round((history["tokens"] - tokens_at_start) / max(1e-9, elapsed)))
            history["tokens_per_second"] = history["speed"][-1]
            tokens_at_start = history["tokens"]
            if accelerator.is_main_process:
                record_eval(history, step, scorer, model, ema, out, tokenizer)
            accelerator.wait_for_everyone()
            step_module.train()
            started, steps_at_start = time.time(), step  # held-out scoring is not training time
        if accelerator.is_main_process and (step % cfg.save_every == 0 or last):
            save_checkpoint(out, model, optimizer, scheduler, step, history, config=portable_config,
                            extra={"ema": ema.state_dict()} if ema is not None else None, best=out / "best")
        accelerator.wait_for_everyone()
        if over_time:
            accelerator.print(f"stopping at step {step}: max_minutes={cfg.max_minutes} reached")
            break
    bar.close()
    if accelerator.is_main_process:
        # the weights with the best held-out bound, not the last ones; a distilled student gives up some bound for
        # fewer steps, so it keeps its last (averaged) weights (judge its samples to choose between rounds)
        best = out / "best"
        if cfg.teacher:  # the weights scored at the end: the average where there is one
            with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
                export_model(out / "model", model, tokenizer)
        else:
            export_model(out / "model", load_trained(cfg, best) if best.exists() else model, tokenizer)
        atomic_write_text(out / "history.json", json.dumps(history, indent=2))
    accelerator.wait_for_everyone()
    return history


def any_process(flag: bool, device) -> bool:
    """True on every process if ``flag`` is True on any of them (one all-reduce; just ``flag`` without
    torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    votes = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
    return bool(votes.item())


def new_history() -> dict:
    """What a run records: train loss by step, held-out objective and bound by step (``eval_bound_raw``: of the
    weights themselves, when ``eval_bound`` is of their average), tokens/s by interval."""
    return {"step": [], "train_loss": [], "eval_step": [], "eval_loss": [], "eval_bound": [], "eval_bound_raw": [],
            "eval_epoch": [], "speed_step": [], "speed": [], "tokens": 0, "seconds": 0.0, "best_step": None,
            "best_bound": None}


def record_eval(history: dict, step: int, scorer, model, ema, out: Path, tokenizer) -> None:
    """Score the held-out blocks (with the averaged weights when there are some) and keep the best weights.

    With an average, the weights themselves are scored too, on the same noise: the run measures what the average
    gains without a second run."""
    if ema is not None:
        history["eval_bound_raw"].append(round(scorer.score(model, objective=False)[1], 5))
    with (ema.swapped_in(model) if ema is not None else contextlib.nullcontext()):
        loss, bound = scorer.score(model)
        history["eval_step"].append(step)
        history["eval_loss"].append(round(loss, 5))
        history["eval_bound"].append(round(bound, 5))
        history["eval_epoch"].append(round(history["tokens"] / (history["train_blocks"] * scorer.block_size), 3))
        if history["best_bound"] is None or bound < history["best_bound"]:
            history["best_step"], history["best_bound"] = step, round(bound, 5)
            export_model(out / "best", model, tokenizer)


def load_trained(cfg: TrainConfig, name_or_path):
    """The model of ``cfg.objective`` saved in a folder (or a hub name), on the CPU."""
    return (load_mlm if cfg.objective == "mlm" else load_causal_lm)(name_or_path, device="cpu")


class WeightAverage:
    """An exponential moving average of the weights (float32), warmed up as ``min(decay, (1 + k) / (10 + k))``."""

    def __init__(self, model, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay={decay}: use a value in (0, 1), e.g. 0.999, or 0 for none")
        self.decay = decay
        self.average = [p.detach().float().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.average, [p.detach().float() for p in model.parameters()], 1 - decay)

    @contextlib.contextmanager
    def swapped_in(self, model):
        params = list(model.parameters())
        kept = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self.average, strict=True):
                p.copy_(a)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, k in zip(params, kept, strict=True):
                    p.copy_(k)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        for a, saved in zip(self.average, state["average"], strict=True):
            a.copy_(saved)


def make_collator(cfg: TrainConfig, tokenizer) -> DiffusionCollator:
    return DiffusionCollator(tokenizer, cfg.prefix_len, cfg.ratio_mode, cfg.n_levels, weighting=cfg.weighting,
                             max_prefix_len=cfg.max_prefix_len, span_prob=cfg.span_prob)


def compile_body(model) -> None:
    """Compile the transformer body's forward (fixed shapes [B, L]); the parameters and their names stay."""
    body = getattr(model, model.base_model_prefix, model)
    body.forward = torch.compile(body.forward)


def _make_batch(cfg, collator, ids, seed, rows, device):
    """The batch of global step ``seed`` (noise drawn for all its rows, so it does not depend on the number of
    processes), of which this process keeps ``rows``."""
    if cfg.teacher:
        return distill_batch(ids, cfg.prefix_len, cfg.distill_steps, collator.mask_id, seed, device, rows)
    if cfg.objective == "mlm":
        return noisy_batch(collator, ids, seed, device, rows)
    return {"input_ids": ids[rows].to(device, non_blocking=True)}
