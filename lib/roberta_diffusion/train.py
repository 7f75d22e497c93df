"""Training: the masked LM as a diffusion model (with DiffusionCollator) or the causal baseline, on blocks.

One plain loop on ``accelerate`` (so ``accelerate launch`` spreads it over GPUs unchanged): bf16 autocast
on GPU, fused AdamW, warm-up + cosine learning rate, a fixed held-out evaluation, a tqdm bar.

Resumable: every ``save_every`` steps the full state (weights, optimiser, schedule, step, history, random
states, config) goes to ``<out>/checkpoints/step-N``, written under a temporary name with a manifest of
checksums last, then renamed, so a kill at any moment leaves the previous finished checkpoint intact; a rerun
with the same config continues from the newest intact one (a damaged one is skipped) and refuses another
config. The batch order and the noise of step N are functions of (seed, N), and the dropout noise comes from
the saved random state, so a run killed and resumed on a CPU gives the losses and weights of an unbroken one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import (  # noqa: F401 (the checkpoint API, importable from train as before)
    RESUMABLE_CHANGES,
    _load_weights,
    checkpoint_problem,
    checkpoints,
    config_changes,
    latest_checkpoint,
    load_extra,
    resume,
    rng_state,
    save_checkpoint,
    seeded_rng_state,
    set_rng_state,
)
from .collator import DiffusionCollator
from .losses import (  # noqa: F401 - the losses are part of training's interface
    HeldOutScorer,
    LossModule,
    bounded_head_loss,
    causal_lm_loss,
    masked_lm_loss,
    masked_lm_loss_dense,
    masked_lm_loss_fixed,
    noisy_batch,
)
from .models import fresh_causal_lm, fresh_mlm, load_causal_lm, load_mlm, load_tokenizer, plateau_escape_init
from .paths import atomic_path, atomic_write_text


@dataclass
class TrainConfig:
    out_dir: str  # run folder: checkpoints/, model/, history.json
    objective: str = "mlm"  # "mlm" (diffusion) | "ar" (causal baseline)
    init: str | None = None  # hub name or folder to fine-tune; None = fresh weights of `size`
    size: str = "tiny"  # fresh model size (models.SIZES)
    arch: str = "roberta"  # fresh MLM: models.MLM_ARCHS
    locality_init: float = 0.0  # > 0: sinusoidal positions of this amplitude, query = key = identity (models.locality_init)
    plateau_escape: bool = False  # fresh RoBERTa started with models.plateau_escape_init (with escape_lr 2e-4)
    tokenizer: str | None = None  # folder or hub name; default: the init model's
    block_size: int = 256
    prefix_len: int = 16  # the shortest prompt: never masked
    max_prefix_len: int | None = None  # prompt length drawn per row in [prefix_len, max_prefix_len]; None: fixed
    span_prob: float = 0.0  # share of rows that also pin one random span (infilling in distribution)
    ratio_mode: str = "levels"  # collator mode: "levels" (seed) | "continuous" (MDLM) | "stratified"
    n_levels: int = 10
    weighting: str = "none"  # "none" | "elbo"
    batch_size: int = 16  # the global batch, split over the processes
    max_steps: int = 100
    lr: float = 5e-4
    weight_decay: float = 0.01
    adam_eps: float = 1e-8  # not RoBERTa's 1e-6: at init the query/key gradients are ~1e-8 per weight, and a
    # larger eps freezes them, leaving attention uniform and the MLM stuck at the unigram loss
    warmup_steps: int = 10
    escape_lr: float | None = None  # two-phase rate: warm up to this, hold it until `escape_steps`, then ramp
    escape_steps: int = 0  # to `lr` over `warmup_steps` (RoBERTa leaves the unigram plateau only at a low rate)
    dropout: float = 0.1
    ema_decay: float = 0.0  # > 0: also keep an average of the weights, scored and exported instead of the last
    eval_every: int = 50
    eval_batches: int = 8
    save_every: int = 50
    log_every: int = 10
    seed: int = 0
    compile: bool = False
    max_minutes: float | None = None  # stop (and save) after this long, whatever max_steps says

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(dataclasses.asdict(self), indent=2))


# -- data -----------------------------------------------------------------------------------------------
def cached_blocks(source, tokenizer, block_size: int, cache_dir, max_lines=None, detokenize=False) -> torch.Tensor:
    """``data.load_blocks`` with an on-disk cache keyed by file name+size, tokenizer vocabulary and block size."""
    from .data import load_blocks, text_files

    if str(source).endswith(".pt"):  # blocks tokenised ahead of time (e.g. carried to a machine without the corpus)
        return torch.load(source).long()
    try:
        files = [(p.name, p.stat().st_size) for p in text_files(source)]
    except FileNotFoundError:
        files = [str(source)]  # a hub name
    vocab = hashlib.sha1(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:10]
    key = hashlib.sha1(json.dumps([files, vocab, block_size, max_lines, detokenize]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"blocks-{key}.pt"
    if path.exists():
        return torch.load(path).long()
    blocks = load_blocks(source, tokenizer, block_size, max_lines=max_lines, detokenize=detokenize)
    with atomic_path(path) as tmp:  # unique per process: two trainings may fill the cache at once
        torch.save(blocks.to(torch.int16 if len(tokenizer) < 2**15 else torch.int32), tmp)
    return blocks


def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Block indices of global ``step``: epoch-wise shuffles that depend only on (seed, epoch)."""
    per_epoch = max(1, n_blocks // batch_size)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return order[offset * batch_size : (offset + 1) * batch_size]


# -- model ----------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, tokenizer, train_blocks: torch.Tensor | None = None):
    """The model to train: ``cfg.init`` loaded, or fresh weights (``train_blocks`` gives plateau_escape's unigram)."""
    if cfg.plateau_escape and (cfg.init or cfg.objective != "mlm" or cfg.arch != "roberta" or train_blocks is None):
        raise ValueError("plateau_escape=True starts a fresh RoBERTa masked LM from its training blocks: use it with "
                         "objective 'mlm', arch 'roberta', no init, and pass train_blocks")
    if cfg.plateau_escape and cfg.locality_init:
        raise ValueError("plateau_escape=True sets its own local attention: leave locality_init at 0")
    if cfg.init:
        loader = load_mlm if cfg.objective == "mlm" else load_causal_lm
        return loader(cfg.init, device="cpu")
    if cfg.objective == "mlm":
        model = fresh_mlm(tokenizer, cfg.size, max_len=cfg.block_size, seed=cfg.seed, arch=cfg.arch,
                          dropout=cfg.dropout, locality=cfg.locality_init)
        if cfg.plateau_escape:
            plateau_escape_init(model, torch.bincount(train_blocks.flatten().long(), minlength=model.config.vocab_size))
        return model
    return fresh_causal_lm(tokenizer, cfg.size, max_len=cfg.block_size, seed=cfg.seed, dropout=cfg.dropout)


# -- checkpoints ------------------------------------------------------------------------------------------
# (in checkpoints.py: writing, verifying and resuming; the names stay importable from here)


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


# -- the loop -----------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, train_blocks: torch.Tensor, valid_blocks: torch.Tensor, tokenizer=None,
          progress: bool = True) -> dict:
    """Train (or resume) and return the history; the model with the best held-out bound goes to ``<out>/model``.

    ``cfg.batch_size`` is the global batch: with ``accelerate launch --num_processes N`` every process draws the
    same blocks and noise for step k (from ``(seed, k)``) and keeps rows ``rank::N``, so a run is the same
    whatever N is, and a resumed run the same as one never stopped.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    if cfg.objective not in ("mlm", "ar"):
        raise ValueError(f"objective={cfg.objective!r}: use 'mlm' or 'ar'")
    lr_factor = _lr_lambda(cfg)  # checks the schedule before anything is written
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch: make it a multiple of the {world} processes")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or load_tokenizer(cfg.tokenizer or cfg.init)
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
    history = {**new_history(), **(history or {})}
    if accelerator.is_main_process:
        cfg.save(out / "config.json")

    collator = make_collator(cfg, tokenizer)
    loss_fn = masked_lm_loss if cfg.objective == "mlm" else causal_lm_loss
    if cfg.objective == "mlm" and cfg.ratio_mode == "stratified":
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
    run_started = started  # max_minutes counts this invocation only
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
        # every process must stop at the same step (one that stops alone leaves the others waiting in DDP forever)
        over_time = (cfg.max_minutes is not None and step % cfg.log_every == 0
                     and any_process(time.time() - run_started > 60 * cfg.max_minutes, accelerator.device))
        last = step == cfg.max_steps or over_time
        if step % cfg.log_every == 0 or last:
            history["step"].append(step)
            history["train_loss"].append(round(loss.item(), 5))
            bar.set_postfix(loss=f"{history['train_loss'][-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
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
            started = time.time()  # held-out scoring is not training time
        if accelerator.is_main_process and (step % cfg.save_every == 0 or last):
            save_checkpoint(out, model, optimizer, scheduler, step, history, config=dataclasses.asdict(cfg),
                            extra={"ema": ema.state_dict()} if ema is not None else None)
        accelerator.wait_for_everyone()
        if over_time:
            accelerator.print(f"stopping at step {step}: max_minutes={cfg.max_minutes} reached")
            break
    bar.close()
    if accelerator.is_main_process:
        best = out / "best"
        if best.exists():  # the weights with the best held-out bound, not the last ones
            export_model(out / "model", load_best(cfg, best), tokenizer)
        else:
            export_model(out / "model", model, tokenizer)
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
    """What a run records: train loss by step, held-out objective and bound by step, tokens/s by interval."""
    return {"step": [], "train_loss": [], "eval_step": [], "eval_loss": [], "eval_bound": [], "eval_epoch": [],
            "speed_step": [], "speed": [], "tokens": 0, "seconds": 0.0, "best_step": None, "best_bound": None}


def record_eval(history: dict, step: int, scorer, model, ema, out: Path, tokenizer) -> None:
    """Score the held-out blocks (with the averaged weights when there are some) and keep the best weights."""
    with (ema.swapped_in(model) if ema is not None else contextlib.nullcontext()):
        loss, bound = scorer.score(model)
        history["eval_step"].append(step)
        history["eval_loss"].append(round(loss, 5))
        history["eval_bound"].append(round(bound, 5))
        history["eval_epoch"].append(round(history["tokens"] / (history["train_blocks"] * scorer.block_size), 3))
        if history["best_bound"] is None or bound < history["best_bound"]:
            history["best_step"], history["best_bound"] = step, round(bound, 5)
            export_model(out / "best", model, tokenizer)


def load_best(cfg: TrainConfig, folder: Path):
    return (load_mlm if cfg.objective == "mlm" else load_causal_lm)(folder, device="cpu")


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
    if cfg.objective == "mlm":
        return noisy_batch(collator, ids, seed, device, rows)
    return {"input_ids": ids[rows].to(device, non_blocking=True)}


def export_model(folder: Path, model, tokenizer, dtype: torch.dtype | None = None, max_shard_size: str = "15MB") -> Path:
    """``save_pretrained`` model + tokenizer into ``folder`` atomically (temp folder, then rename)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if dtype is not None:
        import copy

        to_save = copy.deepcopy(model).to(dtype)
    to_save.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
