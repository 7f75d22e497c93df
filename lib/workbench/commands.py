"""Subcommands beyond generation: finetune, eval, pipeline. (Speed and the quality frontier are measured by the
tools beside the library: ``python -m benchmarks.bench`` and ``python -m benchmarks.frontier``.)"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import tempfile
import traceback
from pathlib import Path

import torch
import yaml
from roberta_diffusion import data, defaults, evaluate, models, paths, train
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, max_canvas_len
from roberta_diffusion.sampler import POLICIES
from roberta_diffusion.sampling import Sampling
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args
from torch.distributed.run import run as launch

from . import checks, runs, settings
from .pipeline import ORDER, load_profile, run_pipeline, train_params
from .runs import RunFailed, redirect_runs, staged_run

WORKER = "ROBERTA_DIFFUSION_WORKER"  # set in the processes _launch starts
WORKER_ERRORS = "ROBERTA_DIFFUSION_WORKER_ERRORS"  # the folder where they leave their error line, one file per rank


def add_subcommands(sub) -> None:
    ft = sub.add_parser("finetune", help="train with a profile's 02_finetune settings (train.train(TrainConfig))")
    ft.add_argument("--profile", default="smoke", help="profile name in profiles/ or a YAML path")
    ft.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override parameters (JSON values)")
    ft.add_argument("--num-processes", type=int, default=1,
                    help="data-parallel processes on this host (accelerate launch: one per GPU, or CPU processes)")
    ft.set_defaults(handler=run_finetune)

    ev = sub.add_parser("eval", help="held-out perplexities and sample quality -> eval.json")
    ev.add_argument("--mlm", default="weights/roberta-diffusion-small", help="masked LM folder (diffusion) to score")
    ev.add_argument("--ar", default="weights/gpt2-small-baseline", help="causal LM folder (the autoregressive baseline)")
    ev.add_argument("--judge", default=None, help="causal LM judging samples (default: weights/judge, the independent "
                    "judge, where it reads the masked LM's vocabulary; else the AR baseline, said in eval.json)")
    ev.add_argument("--prompts", type=int, default=64, help="held-out prompts to generate samples from")
    ev.add_argument("--steps", default="10,32,64,128", help="comma list of diffusion steps to sample with")
    ev.add_argument("--policies", default=f"{Sampling.readable().policy},confidence",
                    help=f"comma list of diffusion policies to sample with ({', '.join(POLICIES)}); every other "
                         "setting is Sampling.readable()'s")
    ev.add_argument("--elbo-samples", type=int, default=8, help="noise levels per held-out block for the ELBO bound")
    ev.add_argument("--max-blocks", type=int, default=None, help="cap the held-out blocks per corpus (quick runs)")
    ev.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU) | cpu | cuda | mps")
    ev.add_argument("--out", type=Path, required=True, help="eval.json to write")
    ev.set_defaults(handler=run_eval)

    pl = sub.add_parser("pipeline", help="run the four notebooks headless with papermill")
    pl.add_argument("--profile", default="smoke", help="profile name in profiles/ or a YAML path")
    pl.add_argument("--only", nargs="*", help="a subset of the notebooks, e.g. 03_generate 04_compare")
    pl.set_defaults(handler=run_pipeline_command)


def run_finetune(args) -> int:
    """``train.train(TrainConfig(**params))`` with the profile's 02_finetune settings (notebook 02's own call) on
    a staged copy of ``runs/<run_name>`` under the name's lock; the results replace the previous ones only when training
    and export finished. With ``--num-processes N`` the training runs in N processes (``_launch``), which write
    into the staged copy; the lock and the swap stay with this process."""
    if args.num_processes < 1:
        raise ValueError(f"--num-processes {args.num_processes}: use 1 or more")
    profile = load_profile(args.profile)  # checked whole
    sets = parse_sets(args.set)
    known = settings.train_settings()  # TrainConfig's fields: the one owner of training settings
    settings.parameters(sets, known, "--set")
    # TrainConfig's defaults under the profile's values (its `common` ones that are training settings), under --set
    params = {**train_params(profile), **sets}
    settings.parameters(params, known, "--set with the profile")
    cfg = train.TrainConfig(**params)
    settings.train_config(cfg, args.num_processes)  # all of it before the lock: a refusal leaves nothing behind
    if os.environ.get(WORKER) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # one of several processes (ours from _launch, or accelerate launch's on several hosts): the launcher holds
        # the lock and the staging, or there is none to hold across hosts; the main process alone writes
        _as_worker(lambda: _train(cfg))
        return 0
    for key in ("train_data", "valid_data"):  # a binary or missing corpus fails here, not after the set-up
        data.check_text(paths.corpus(getattr(cfg, key)))
    name = cfg.run_name
    with runs.lock(name), staged_run(name) as root, redirect_runs(root):
        if args.num_processes > 1:
            _launch(args)
        else:
            _train(cfg)
    print(f"finetune outputs: {paths.RUNS / name}")
    return 0


def _train(cfg) -> None:
    """``train.train(cfg)``; on a failure, the progress bar the loop left open is closed before the error line is
    printed: it closes when its frame goes, and would otherwise print its last state after the error line."""
    try:
        train.train(cfg)
    except Exception as err:
        traceback.clear_frames(err.__traceback__)
        raise


def parse_sets(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs: JSON values (``40``, ``null``, ``[1, 2]``), anything else as a string."""
    out = {}
    for pair in pairs:
        if "=" not in pair or not pair.split("=", 1)[0]:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. max_steps=100")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            out[key] = value
        if isinstance(out[key], float) and not math.isfinite(out[key]):
            raise ValueError(f"--set {pair!r}: {key} must be a finite number")
    return out


def _as_worker(work) -> None:
    """Run ``work`` in a process ``_launch`` started: its error goes to the launcher as one line in a file (which
    the launcher reports once), not to stderr (where every rank would print it beside torch's own report)."""
    folder = os.environ.get(WORKER_ERRORS)
    if not folder:
        work()
        return
    try:
        work()
    except Exception as err:  # noqa: BLE001 - handed to the launcher whatever it is
        # the classes cli.error_line maps to status 2 (cli imports this module: it cannot be imported here)
        usage = isinstance(err, (ValueError, OSError, MemoryError, yaml.YAMLError))
        if isinstance(err, OSError) and err.strerror and err.filename:
            text = f"{err.filename}: {err.strerror} (check the path, its permissions and the free space)"
        else:
            text = str(err) if usage else f"unexpected {type(err).__name__}: {err}"
        Path(folder, f"rank-{int(os.environ.get('RANK', '0')):05d}").write_text(f"{2 if usage else 1}\n{text}")
        raise SystemExit(2 if usage else 1) from None


def _launch(args) -> None:
    """The same command in N processes on this host, through torch's launcher (what ``accelerate launch
    --multi_gpu`` runs): DDP over NCCL on the GPUs, or over gloo between CPU processes where there is no GPU
    (``accelerate launch`` has no multi-process CPU mode without MPI). Several hosts: accelerate's own config.

    The launcher runs in this process, so a failed worker is one exception here, reported as one line: the
    first rank's own error (``_as_worker``), or its exit status when it died without one (killed, out of
    memory); the launcher's logs (a traceback and a report per rank) are silenced."""
    saved = dict(os.environ)
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    with tempfile.TemporaryDirectory(prefix="rd-workers-") as errors:
        os.environ.update({WORKER: "1", WORKER_ERRORS: errors})
        if not torch.cuda.is_available():
            os.environ["ACCELERATE_USE_CPU"] = "true"
            os.environ.setdefault("OMP_NUM_THREADS", "1")
        elastic.setLevel(logging.CRITICAL)
        try:
            worker = ["-m", "workbench.cli", "finetune", "--profile", str(args.profile), "--set", *args.set]
            if getattr(args, "threads", None) is not None:  # each worker sets its own threads
                worker += ["--threads", str(args.threads)]
            launch(parse_args(["--standalone", "--nproc_per_node", str(args.num_processes), *worker]))
        except ChildFailedError as err:
            reports = sorted(Path(errors).glob("rank-*"))
            if reports:
                status, line = reports[0].read_text().split("\n", 1)
                text = f"training process {int(reports[0].name[5:])} of {args.num_processes}: {' '.join(line.split())}"
                raise (ValueError if int(status) == 2 else RunFailed)(text) from None
            rank, failure = err.get_first_failure()
            how = f"by {failure.signal_name()}" if failure.exitcode < 0 else f"with exit status {failure.exitcode}"
            raise RunFailed(f"training process {rank} of {args.num_processes} ended {how} without an error line of its "
                            "own (killed, out of memory, or a crash before the command ran): the previous results are "
                            "kept; rerun with --num-processes 1 to see the failure") from None
        finally:
            elastic.setLevel(level)
            os.environ.clear()
            os.environ.update(saved)


def _int_list(flag: str, text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: give a comma list of whole numbers, e.g. 10,32,64") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag} {text!r}: every number must be at least 1")
    return values


def check_eval(args) -> tuple[list[int], list[str]]:
    steps = _int_list("--steps", args.steps)
    policies = checks.policy_list("--policies", args.policies)
    checks.in_range("--prompts", args.prompts, 1)
    checks.in_range("--elbo-samples", args.elbo_samples, 1, what=" (noise levels per block for the ELBO bound)")
    if args.max_blocks is not None:
        checks.in_range("--max-blocks", args.max_blocks, 1)
    checks.device("--device", args.device)
    checks.output_path("--out", args.out, ".json")
    for flag, value in (("--mlm", args.mlm), ("--ar", args.ar), ("--judge", args.judge)):
        checks.model_folder(flag, value)
    return steps, policies


def run_eval(args) -> int:
    steps, policies = check_eval(args)
    device = models.pick_device(args.device)
    mlm = load_mlm(paths.resolve(args.mlm), device=device)
    ar = load_causal_lm(paths.resolve(args.ar), device=device)
    tokenizer = load_tokenizer(paths.resolve(args.mlm))
    judge_path = args.judge or evaluate.shipped_judge_for(tokenizer)
    judge = load_causal_lm(paths.resolve(judge_path), device=device) if judge_path else ar
    judge_name = judge_path or f"{args.ar} (the AR baseline itself: favours AR samples; no judge for this vocabulary)"
    cache = paths.CACHE
    block = min(max_canvas_len(mlm), 256)  # the shipped recipe's canvas, or less for a smaller model
    prefix = defaults.PROMPT_LEN  # evaluate.evaluate's prompt length
    if max(steps) > block - prefix:
        raise ValueError(f"--steps {max(steps)} is more than the {block - prefix} positions each sample fills "
                         f"(canvas {block} - prompt {prefix}): use at most that many")
    heldout = {"wikipedia-valid": data.cached_blocks(paths.WIKI_VALID, tokenizer, block, cache),
               "wikitext2-valid (detokenised)": data.cached_blocks(paths.WIKITEXT2_VALID, tokenizer, block, cache, detokenize=True)}
    if args.max_blocks:
        heldout = {k: v[: args.max_blocks] for k, v in heldout.items()}
    prompts = evaluate.spread_blocks(heldout["wikipedia-valid"], args.prompts)
    sampling = Sampling.readable()
    print(f"sampling: {sampling} under each of --policies and --steps")
    result = evaluate.evaluate(mlm, ar, tokenizer, heldout, prompts, judge, judge_name, steps_list=steps,
                               policies=policies, elbo_samples=args.elbo_samples, sampling=sampling)
    result["command"] = command_line("eval", args)
    paths.atomic_write_text(args.out, json.dumps(result, indent=2))  # one rename: the old file or the new
    print(json.dumps(result["heldout"], indent=2))
    print(f"wrote {args.out}")
    return 0


def command_line(name: str, args) -> str:
    """The ``roberta-diffusion`` line that reproduces ``args``: flags set to True alone, False and None left out."""
    words = ["roberta-diffusion", name]
    for key, value in vars(args).items():
        if key in ("handler", "command", "debug") or value is None or value is False:
            continue
        words += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return shlex.join(words)


def run_pipeline_command(args) -> int:
    if args.only is not None and not args.only:  # `--only` alone would otherwise run nothing, or everything
        raise ValueError(f"--only needs notebook names, e.g. --only 03_generate 04_compare (one or more of "
                         f"{', '.join(ORDER)}); leave --only out to run all")
    run = run_pipeline(args.profile, args.only)  # checks the run before swapping it in; raises RunFailed if not
    print(f"pipeline outputs: {run}")
    return 0
