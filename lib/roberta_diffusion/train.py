"""Training: the masked LM as a diffusion model (with DiffusionCollator) and the GPT-2 baseline, on blocks.

``TrainConfig`` is a whole recipe (notebook 02's parameters cell, field for field; a profile's ``02_finetune``
section); ``train(cfg)`` loads the tokenizer and the blocks and trains each of ``cfg.objectives`` into
``runs/<run_name>/<objective>`` with ``fit``, a loop of named steps (``loop.setup``, ``loop.train_step``, then
log, evaluate, checkpoint, export) on ``accelerate`` (``accelerate launch`` spreads it over GPUs unchanged): bf16
autocast on GPU, fused AdamW, warm-up + cosine rate, a fixed held-out evaluation.

Resumable (``checkpoints``): a rerun with the same config continues from the newest intact checkpoint. The batch
order and the noise of step N are functions of (seed, N) and the dropout noise comes from the saved random state,
so a run killed and resumed on a CPU gives the losses and weights of an unbroken one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import corpus, data, paths
from .bpe import train_tokenizer
from .checkpoints import save_checkpoint, set_rng_state
from .collator import DiffusionCollator  # noqa: F401 (read here by tests)
from .defaults import PROMPT_LEN
from .export import export_model, write_model_card
from .history import History
from .loop import (  # noqa: F401 (the loop's parts under the names train.py had them by: tests read them here)
    Run,
    WeightAverage,
    _lr_lambda,
    _make_batch,
    any_process,
    batch_indices,
    build_model,
    check_fresh_model,
    config_tokenizer,
    load_trained,
    make_collator,
    setup,
    train_step,
)
from .models import model_summary
from .paths import atomic_write_text
from .speed import progress_fields

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
    locality_init: float = 0.0  # > 0: sinusoidal positions of this amplitude, query = key = identity (plateau.locality_init)
    plateau_escape: bool = False  # fresh RoBERTa started with plateau.plateau_escape_init (with escape_lr 2e-4)
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
    compile: bool = False  # CUDA: torch.compile the step (compile_scope says how much of it)
    compile_scope: str = "body"  # "body": the transformer body | "step": the whole loss | "graphed": that, CUDA graphs
    deterministic: bool = False  # deterministic kernels: a GPU resume bit-identical, at 1.8x the step (results.md)
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
def train(cfg: TrainConfig, progress: bool = True, say=print) -> dict[str, History]:
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
            say(f"{objective}: best held-out bound {history.best_bound} nats/token at step {history.best_step}")
    return histories


def recipe_tokenizer(cfg: TrainConfig):
    """The init model's (or a student's teacher's) tokenizer, ``tokenizer_path``'s, or a fresh BPE trained on the
    training lines."""
    if cfg.new_tokenizer_vocab and not cfg.init:
        lines = data.iter_lines(paths.corpus(cfg.train_data), max_lines=cfg.max_train_lines)
        return train_tokenizer(lines, vocab_size=cfg.new_tokenizer_vocab,
                               save_to=paths.run_dir(cfg.run_name) / "tokenizer")
    return config_tokenizer(cfg)


def write_training_card(cfg: TrainConfig, history: History, train_blocks: torch.Tensor) -> None:
    """``<out>/model/README.md``: what the model is, its data and licence, how long it trained, how well it did."""
    folder = Path(cfg.out_dir) / "model"
    model = load_trained(cfg, folder)
    facts = {"architecture": model_summary(model),
             "objective": "masked diffusion (DiffusionCollator)" if cfg.objective == "mlm" else "next-token prediction",
             "data": f"{cfg.train_data} ({train_blocks.numel() / 1e6:.1f}M tokens, blocks of {cfg.block_size})",
             "licence of the data": "CC BY-SA (Wikipedia text)" if "wiki" in str(cfg.train_data) else "see the data source",
             "tokens seen": f"{history.tokens / 1e6:.1f}M", "steps": history.step[-1] if history.step else 0,
             "wall time (s)": round(history.seconds, 1),
             "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
             "final held-out loss": history.eval_loss[-1],
             "hyperparameters": json.dumps({k: v for k, v in vars(cfg).items() if k != "out_dir"})}
    write_model_card(folder, f"{cfg.objective.upper()} · run {cfg.run_name}", "Trained by roberta_diffusion.train.", facts)


# -- one objective: the loop --------------------------------------------------------------------------------
def fit(cfg: TrainConfig, train_blocks: torch.Tensor, valid_blocks: torch.Tensor, tokenizer=None,
        progress: bool = True, on_step=None) -> History:
    """Train ``cfg.objective`` into ``cfg.out_dir`` (or resume) and return the history; the model with the best
    held-out bound goes to ``<out>/model``.

    ``cfg.batch_size`` is the global batch: with ``accelerate launch --num_processes N`` every process draws the
    same blocks and noise for step k (from ``(seed, k)``) and keeps rows ``rank::N``, so a run is the same
    whatever N is, and a resumed run the same as one never stopped. ``on_step(step)``, if given, is called after
    every optimizer step (benchmarks.profile_train hangs a profiler and a clock on it).
    """
    run = setup(cfg, train_blocks, valid_blocks, tokenizer)
    bar = tqdm(total=cfg.max_steps, initial=run.step, disable=not (progress and run.main),
               desc=f"train {cfg.objective}", mininterval=1 if sys.stderr.isatty() else 30)
    run.step_module.train()
    set_rng_state(run.rng)  # last thing before the first step: a resumed run draws the dropout noise an unbroken one would
    while run.step < cfg.max_steps:
        loss = train_step(run, train_blocks)
        bar.update(1)
        if on_step is not None:
            on_step(run.step)
        # every process must stop at the same step (one that stops alone leaves the others waiting in DDP forever)
        over_time = (cfg.max_minutes is not None and run.step % cfg.log_every == 0
                     and any_process(time.time() - run.run_started > 60 * cfg.max_minutes, run.accelerator.device))
        last = run.step == cfg.max_steps or over_time
        if run.step % cfg.log_every == 0 or last:
            log(run, loss, bar)
        if run.step % cfg.eval_every == 0 or last:
            evaluate(run)
        if run.main and (run.step % cfg.save_every == 0 or last):
            checkpoint(run)
        run.accelerator.wait_for_everyone()
        if over_time:
            run.accelerator.print(f"stopping at step {run.step}: max_minutes={cfg.max_minutes} reached")
            break
    bar.close()
    export(run)
    return run.history


def log(run: Run, loss: torch.Tensor, bar) -> None:
    """The step's training loss into the history; loss, rate, speed and time left on the bar."""
    history = run.history
    history.step.append(run.step)
    history.train_loss.append(round(loss.item(), 5))
    bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.1e}",
                    **progress_fields(history.tokens - run.tokens_at_start, time.time() - run.started,
                                      history.parameters, run.cfg.max_steps - run.step, run.step - run.steps_at_start,
                                      run.peak))


def evaluate(run: Run) -> None:
    """Close the timed interval (speed, training time), score the held-out blocks on the main process and keep
    the best weights, then restart the clock: held-out scoring is not training time."""
    history, elapsed = run.history, time.time() - run.started
    history.seconds += elapsed
    history.speed_step.append(run.step)
    history.speed.append(round((history.tokens - run.tokens_at_start) / max(1e-9, elapsed)))
    history.tokens_per_second = history.speed[-1]
    if run.main:
        record_eval(history, run.step, run.scorer, run.model, run.ema, run.out, run.tokenizer)
    run.accelerator.wait_for_everyone()
    run.step_module.train()
    run.restart_clock()


def record_eval(history: History, step: int, scorer, model, ema, out: Path, tokenizer) -> None:
    """Score the held-out blocks (with the averaged weights when there are some) and keep the best weights.

    With an average, the weights themselves are scored too, on the same noise: the run measures what the average
    gains without a second run."""
    if ema is not None:
        history.eval_bound_raw.append(round(scorer.score(model, objective=False)[1], 5))
    with (ema.swapped_in(model) if ema is not None else contextlib.nullcontext()):
        loss, bound = scorer.score(model)
        history.eval_step.append(step)
        history.eval_loss.append(round(loss, 5))
        history.eval_bound.append(round(bound, 5))
        history.eval_epoch.append(round(history.tokens / (history.train_blocks * scorer.block_size), 3))
        if history.best_bound is None or bound < history.best_bound:
            history.best_step, history.best_bound = step, round(bound, 5)
            export_model(out / "best", model, tokenizer)


def checkpoint(run: Run) -> None:
    """Model, optimizer, schedule, history and random state (the average too) into ``<out>/checkpoints``, with
    the best weights so far; the config with its final paths (no staging folder)."""
    config = {**dataclasses.asdict(run.cfg), "out_dir": paths.portable(run.cfg.out_dir)}
    save_checkpoint(run.out, run.model, run.optimizer, run.scheduler, run.step, run.history.to_dict(), config=config,
                    extra={"ema": run.ema.state_dict()} if run.ema is not None else None, best=run.out / "best")


def export(run: Run) -> None:
    """``<out>/model`` and ``<out>/history.json``, on the main process. The weights with the best held-out bound,
    not the last ones; a distilled student gives up some bound for fewer steps, so it keeps its last (averaged)
    weights (judge its samples to choose between rounds)."""
    if run.main:
        cfg, out, model = run.cfg, run.out, run.model
        if cfg.teacher:  # the weights scored at the end: the average where there is one
            with run.ema.swapped_in(model) if run.ema is not None else contextlib.nullcontext():
                export_model(out / "model", model, run.tokenizer)
        else:
            best = out / "best"
            export_model(out / "model", load_trained(cfg, best) if best.exists() else model, run.tokenizer)
        run.history.save(out / "history.json")
    run.accelerator.wait_for_everyone()
