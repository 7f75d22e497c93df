"""The training loop's parts: ``setup`` (model, optimizer, rate schedule, resume, loss, held-out scorer) and
``train_step`` (batch, forward, backward, clip, optimizer, average), with what they are built from. ``train.fit``
strings them together with logging, evaluation, checkpoints and the export; a profiler or a benchmark can call
``setup`` once and ``train_step`` as often as it likes."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from . import corpus, paths
from .average import WeightAverage
from .checkpoints import load_extra, restore_best, resume
from .collator import DiffusionCollator
from .compiling import check_compile, compile_step, deterministic_embeddings, deterministic_kernels
from .distill import distill_batch, distillation
from .history import History
from .losses import HeldOutScorer, LossModule, bounded_head_loss, causal_lm_loss, masked_lm_loss, noisy_batch
from .models import fresh_causal_lm, fresh_mlm, load_causal_lm, load_mlm, load_tokenizer
from .plateau import plateau_escape_init
from .speed import peak_flops


@dataclass
class Run:
    """What the loop reads and changes: the pieces ``setup`` builds, the history, the step and the clock."""

    cfg: Any  # a TrainConfig
    accelerator: Accelerator
    out: Path
    tokenizer: Any
    model: torch.nn.Module
    step_module: torch.nn.Module  # the loss as a module, prepared (DDP wraps it under several processes)
    optimizer: Any
    scheduler: Any
    collator: DiffusionCollator
    ema: WeightAverage | None
    scorer: HeldOutScorer
    history: History
    step: int
    rng: dict  # the random state the first step starts from (a resumed run: the checkpoint's)
    peak: float  # the device's peak FLOP/s, for the bar's MFU
    started: float = 0.0  # the clock of the current timed interval (held-out scoring is not training time)
    tokens_at_start: int = 0
    steps_at_start: int = 0
    run_started: float = 0.0  # max_minutes counts this invocation only

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def restart_clock(self) -> None:
        self.started, self.tokens_at_start, self.steps_at_start = time.time(), self.history.tokens, self.step


def config_tokenizer(cfg):
    """The tokenizer a config trains with: its init model's, a student's teacher's, else ``tokenizer_path``'s."""
    return load_tokenizer(paths.resolve(cfg.init or cfg.teacher or cfg.tokenizer_path))


def setup(cfg, train_blocks: torch.Tensor, valid_blocks: torch.Tensor, tokenizer=None) -> Run:
    """Check ``cfg``, build model, optimizer and schedule, resume from the newest checkpoint of ``cfg.out_dir``
    (its best weights back in ``<out>/best``), then the loss, the device placement and the held-out scorer."""
    if cfg.out_dir is None:
        raise ValueError("out_dir=None: give fit the folder to write into (train sets runs/<run_name>/<objective>)")
    if cfg.objective not in ("mlm", "ar"):
        raise ValueError(f"objective={cfg.objective!r}: use 'mlm' or 'ar'")
    if cfg.teacher and cfg.distill_steps < 1:
        raise ValueError(f"teacher={cfg.teacher!r} with distill_steps={cfg.distill_steps}: give the student's number of "
                         "steps (>= 1), e.g. 32 to learn a teacher's 64")
    lr_factor = _lr_lambda(cfg)  # checks the schedule before anything is written
    check_compile(cfg)
    if cfg.deterministic:
        deterministic_kernels()
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    world = accelerator.num_processes
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} is the global batch: make it a multiple of the {world} processes")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or config_tokenizer(cfg)
    model = build_model(cfg, tokenizer, train_blocks)
    if cfg.deterministic:
        deterministic_embeddings(model)
    optimizer = _optimizer(cfg, model, fused=accelerator.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    step, saved, rng, resumed = resume(out, cfg, model, optimizer, scheduler, say=accelerator.print)
    if resumed is not None:
        accelerator.print(f"resuming from {resumed} (step {step})")
    if accelerator.is_main_process:  # best/ as of that checkpoint: the final export reads it
        restore_best(resumed, out, saved)
    history = History.from_dict(saved or {})
    if cfg.ema_decay:  # a checkpoint from before raw scores were kept: its evaluations have none
        history.eval_bound_raw = [None] * (len(history.eval_step) - len(history.eval_bound_raw)) + history.eval_bound_raw
    if accelerator.is_main_process:
        cfg.save(out / "config.json")

    collator = make_collator(cfg, tokenizer)
    step_module, optimizer = accelerator.prepare(LossModule(model, _loss_fn(cfg, collator, tokenizer, accelerator)),
                                                 optimizer)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None  # on the device, where prepare put the model
    extra = load_extra(resumed) if ema is not None and resumed is not None else {}
    if "ema" in extra:  # read once: it holds the optimizer's and the average's tensors
        ema.load_state_dict(extra["ema"])
    if cfg.compile and accelerator.device.type == "cuda":
        compile_step(step_module, cfg.compile_scope)
    scorer = HeldOutScorer(cfg, make_collator(cfg, tokenizer), valid_blocks, accelerator.device)
    history.parameters = sum(p.numel() for p in model.parameters())
    history.train_blocks, history.world_size = len(train_blocks), world
    run = Run(cfg, accelerator, out, tokenizer, model, step_module, optimizer, scheduler, collator, ema, scorer,
              history, step, rng, peak_flops(accelerator.device))
    run.restart_clock()
    run.run_started = run.started
    return run


def train_step(run: Run, train_blocks: torch.Tensor) -> torch.Tensor:
    """One optimizer step on global step ``run.step``'s batch (this process's rows ``rank::world``); returns the
    loss. The batch and its noise are functions of (seed, step), so the step is the same after a resume."""
    cfg, accelerator = run.cfg, run.accelerator
    ids = train_blocks[batch_indices(run.step, len(train_blocks), cfg.batch_size, cfg.seed)]
    batch = _make_batch(cfg, run.collator, ids, seed=cfg.seed * 1_000_003 + run.step,
                        rows=slice(accelerator.process_index, None, accelerator.num_processes), device=accelerator.device)
    with accelerator.autocast():
        loss = run.step_module(batch)
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(run.step_module.parameters(), 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model, run.step)
    run.step += 1
    run.history.tokens += ids.numel()
    return loss


def _optimizer(cfg, model, fused: bool) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim >= 2]  # matrices decay; biases and norms do not
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98),
                             eps=cfg.adam_eps, fused=fused)


def _loss_fn(cfg, collator: DiffusionCollator, tokenizer, accelerator: Accelerator):
    if cfg.teacher:
        return distillation(paths.resolve(cfg.teacher), cfg.distill_steps, tokenizer.mask_token_id, accelerator.device)
    if cfg.objective == "mlm" and cfg.ratio_mode == "stratified":
        # the masked count has a fixed bound: the head runs on that many rows every step (one shape to compile)
        return bounded_head_loss(collator, cfg.batch_size // accelerator.num_processes, cfg.block_size)
    return masked_lm_loss if cfg.objective == "mlm" else causal_lm_loss


def batch_indices(step: int, n_blocks: int, batch_size: int, seed: int) -> torch.Tensor:
    """Block indices of global ``step``: epoch-wise shuffles that depend only on (seed, epoch)."""
    per_epoch = max(1, n_blocks // batch_size)
    epoch, offset = divmod(step, per_epoch)
    return epoch_order(n_blocks, seed, epoch)[offset * batch_size : (offset + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def epoch_order(n_blocks: int, seed: int, epoch: int) -> torch.Tensor:
    """One epoch's shuffle, drawn once per epoch instead of at every step of the loop (callers only slice it)."""
    return torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _make_batch(cfg, collator, ids, seed, rows, device):
    """The batch of global step ``seed`` (noise drawn for all its rows, so it does not depend on the number of
    processes), of which this process keeps ``rows``."""
    if cfg.teacher:
        return distill_batch(ids, cfg.prefix_len, cfg.distill_steps, collator.mask_id, seed, device, rows)
    if cfg.objective == "mlm":
        return noisy_batch(collator, ids, seed, device, rows)
    return {"input_ids": ids[rows].to(device, non_blocking=True)}


def make_collator(cfg, tokenizer) -> DiffusionCollator:
    return DiffusionCollator(tokenizer, cfg.prefix_len, cfg.ratio_mode, cfg.n_levels, weighting=cfg.weighting,
                             max_prefix_len=cfg.max_prefix_len, span_prob=cfg.span_prob)


def check_fresh_model(cfg, train_blocks: torch.Tensor | None = None, blocks_known: bool = False) -> None:
    """``build_model``'s conditions on the config (checked before a run starts); ``blocks_known``: also that
    plateau_escape has its training blocks."""
    if cfg.plateau_escape and (cfg.init or cfg.objective != "mlm" or cfg.arch != "roberta"
                               or (blocks_known and train_blocks is None)):
        raise ValueError("plateau_escape=True starts a fresh RoBERTa masked LM from its training blocks: use it with "
                         "objective 'mlm', arch 'roberta', no init, and pass train_blocks")
    if cfg.plateau_escape and cfg.locality_init:
        raise ValueError("plateau_escape=True sets its own local attention: leave locality_init at 0")


def build_model(cfg, tokenizer, train_blocks: torch.Tensor | None = None):
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


def load_trained(cfg, name_or_path):
    """The model of ``cfg.objective`` saved in a folder (or a hub name), on the CPU."""
    return (load_mlm if cfg.objective == "mlm" else load_causal_lm)(name_or_path, device="cpu")


def _lr_lambda(cfg):
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


def any_process(flag: bool, device) -> bool:
    """True on every process if ``flag`` is True on any of them (one all-reduce; just ``flag`` without
    torch.distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    votes = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(votes, op=torch.distributed.ReduceOp.MAX)
    return bool(votes.item())
