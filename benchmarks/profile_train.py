"""Where the real training recipe spends its time, and the batch that fills the GPU.

python -m benchmarks.profile_train --profile converge --set init="..." train_data="..." --out DIR

1. **Profile**: ``train.fit`` on the recipe's own batch with ``torch.profiler`` over ``--active`` steps after the
   compiled warm-up; the trace goes to ``DIR/trace.json.gz`` and its summary (``trace_summary``) says how much of
   the time the GPU is busy (the rest: waiting on the host, launches), the kinds of kernel that fill it and the top
   kernels.
2. **Batch sweep**: the same recipe at each ``--batches`` size, timed between two synchronised points after the
   warm-up: tokens/s and MFU against the measured matmul rate and against the data sheet.

Everything lands in ``DIR/profile.json`` (and a table on stdout). The held-out scoring and checkpoints stay out of
the timed steps (``eval_every`` and ``save_every`` are set past them).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gzip
import json
import shutil
import time
from pathlib import Path

import torch
from roberta_diffusion import compiling, data, paths, train
from roberta_diffusion.losses import LossModule, bounded_head_loss, noisy_batch
from roberta_diffusion.train import make_collator
from workbench import cli, commands, pipeline
from workbench.cli import Parser

from .common import int_list, matmul_tflops, spec_peak_tflops, training_flops_per_token
from .scaling import masked_share


def recipe(profile: str, settings: list[str]) -> train.TrainConfig:
    """The masked LM's config of ``profile`` with ``key=value`` overrides (JSON values, as ``finetune --set``)."""
    fields = train.TrainConfig.__dataclass_fields__
    sets = commands.parse_sets(settings)  # finetune's own reading of --set
    unknown = [key for key in sets if key not in fields]
    if unknown:
        raise ValueError(f"--set: {unknown[0]!r} is not a TrainConfig field")
    params = {**pipeline.train_params(pipeline.load_profile(profile)), **sets}
    return train.TrainConfig(**params).for_objective("mlm")


class Clock:
    """``on_step`` for fit: synchronised times at two steps only, so the host keeps running ahead in between."""

    def __init__(self, start: int, stop: int, profiler=None):
        self.start, self.stop, self.profiler, self.marks = start, stop, profiler, {}

    def __call__(self, step: int) -> None:
        if self.profiler is not None:
            self.profiler.step()
        if step in (self.start, self.stop):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.marks[step] = time.perf_counter()

    def seconds_per_step(self) -> float:
        return (self.marks[self.stop] - self.marks[self.start]) / (self.stop - self.start)


def run_fit(cfg: train.TrainConfig, blocks, valid, tokenizer, steps: int, clock: Clock, out: Path) -> None:
    cfg = dataclasses.replace(cfg, max_steps=steps, eval_every=10**9, save_every=10**9, max_minutes=None,
                              out_dir=str(out))
    shutil.rmtree(out, ignore_errors=True)  # never a resume: each timing starts from step 0
    train.fit(cfg, blocks, valid, tokenizer, progress=False, on_step=clock)


KERNEL_KINDS = (  # the first pattern a kernel's name contains names its kind
    ("matmul", ("nvjet", "gemm", "cutlass")), ("attention", ("sdpa", "flash", "fmha", "cudnn")),
    ("softmax and loss (head)", ("softmax", "cross_entropy", "nll")),
    ("optimizer and EMA", ("multi_tensor", "adam", "foreach", "lerp")),
    ("fused elementwise: dropout, layer norm, GELU, residual (Triton)", ("triton",)),
    ("copies and fills", ("copy", "fill")), ("reductions", ("reduce",)))


def step_equality(cfg: train.TrainConfig, tokenizer, blocks, model) -> dict:
    """One batch of the recipe through the eager step and through ``compile_scope``'s compiled one: the loss and the
    gradients' relative difference (dropout off: inductor draws its own masks). The body-only compile, what the
    recipe ran before, is measured beside it: the yardstick of how far two bf16 steps of one model differ."""
    collator = make_collator(cfg, tokenizer)
    batch = noisy_batch(collator, blocks[: cfg.batch_size], seed=0, device="cuda")
    out = {}
    for name in dict.fromkeys(("eager", "body", cfg.compile_scope)):
        module = LossModule(copy.deepcopy(model).cuda().eval(), bounded_head_loss(collator, cfg.batch_size,
                                                                               cfg.block_size))
        if name != "eager":
            compiling.compile_step(module, name)
        for _ in range(1 if name == "eager" else 3):  # graphed: the first calls warm up and record, the third replays
            module.zero_grad(set_to_none=True)
            torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast("cuda", torch.bfloat16):
                loss = module(batch)
            loss.backward()
        out[name] = (float(loss), torch.cat([p.grad.flatten().float() for p in module.parameters()
                                             if p.grad is not None]))
    eager, grad = out.pop("eager")
    return {scope: {"loss_eager": eager, "loss_compiled": loss, "loss_rel_diff": abs(loss - eager) / abs(eager),
                    "grad_rel_diff": float((g - grad).norm() / grad.norm())} for scope, (loss, g) in out.items()}


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, patterns in KERNEL_KINDS if any(p in lowered for p in patterns)), "other")


def trace_summary(events: list[dict], steps: int, top: int = 12) -> dict:
    """From a Chrome trace's events: the GPU's busy time per step (the union of kernel intervals, so overlapping
    kernels count once) against the span the steps took there, the kinds of kernel that fill it, the top kernels."""
    kernels = [e for e in events if e.get("cat") == "kernel"]
    if not kernels:
        raise ValueError("the trace holds no kernels: profile on a GPU (ProfilerActivity.CUDA)")
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels)
    busy, (start, end) = 0.0, spans[0]
    for s, e in spans[1:]:
        if s > end:
            busy, start = busy + end - start, s
        end = max(end, e)
    busy += end - start
    span = end - spans[0][0]  # the merge above leaves the latest end in `end`
    kinds, names = {}, {}
    for e in kernels:
        names[e["name"]] = names.get(e["name"], 0.0) + e["dur"]
    for name, us in names.items():  # one lookup per kernel name, not per launch
        kind = kernel_kind(name)
        kinds[kind] = kinds.get(kind, 0.0) + us
    total = sum(kinds.values())
    ms = lambda us: round(us / 1e3 / steps, 3)  # noqa: E731 - trace times are microseconds
    return {"steps": steps, "gpu_span_ms_per_step": ms(span), "kernel_busy_ms_per_step": ms(busy),
            "gpu_busy_share": round(busy / span, 3), "kernels_per_step": round(len(kernels) / steps, 1),
            "kinds": {k: {"ms_per_step": ms(v), "share": round(v / total, 3)}
                      for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:120], "ms_per_step": ms(v)}
                            for n, v in sorted(names.items(), key=lambda kv: -kv[1])[:top]]}


def main(args) -> int:
    if not torch.cuda.is_available():
        raise ValueError("benchmarks.profile_train times the CUDA path: run it on a machine with a GPU")
    cfg = recipe(args.profile, args.set)
    tokenizer = train.recipe_tokenizer(cfg)
    blocks = data.cached_blocks(paths.corpus(cfg.train_data), tokenizer, cfg.block_size, paths.CACHE, cfg.max_train_lines)
    valid = data.cached_blocks(paths.corpus(cfg.valid_data), tokenizer, cfg.block_size, paths.CACHE)
    device = torch.device("cuda")
    model = train.build_model(cfg, tokenizer, blocks)  # cfg.init loaded on the CPU, or fresh weights
    per_token = training_flops_per_token(model, cfg.block_size, masked_share(cfg, tokenizer))
    measured, spec = matmul_tflops(device), spec_peak_tflops(torch.cuda.get_device_name())
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "recipe": args.profile,
              "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out_dir"},
              "flops_per_token": per_token, "matmul_tflops_measured": round(measured, 1), "spec_tflops": spec}
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = paths.RUNS / "profile-train"
    if cfg.compile:
        result["equality"] = step_equality(cfg, tokenizer, blocks, model)
        print(json.dumps(result["equality"]))

    warm, active = args.warmup, args.active
    schedule = torch.profiler.schedule(wait=warm - 2, warmup=2, active=active, repeat=1)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
                                schedule=schedule) as profiler:
        clock = Clock(warm, warm + active, profiler)
        run_fit(cfg, blocks, valid, tokenizer, warm + active + 1, clock, scratch / "profiled")
    trace = args.out / "trace.json"
    profiler.export_chrome_trace(str(trace))
    with open(trace, "rb") as raw, gzip.open(f"{trace}.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)
    trace.unlink()
    result["profile"] = {"batch_size": cfg.batch_size, "host_ms_per_step_profiled": round(1e3 * clock.seconds_per_step(), 2),
                         **summarise(Path(f"{trace}.gz"), active)}

    result["sweep"] = []
    for batch in args.batches:
        clock = Clock(warm, warm + args.timed)
        one = dataclasses.replace(cfg, batch_size=batch)
        run_fit(one, blocks, valid, tokenizer, warm + args.timed, clock, scratch / f"batch-{batch}")
        rate = batch * cfg.block_size / clock.seconds_per_step()
        row = {"batch_size": batch, "step_ms": round(1e3 * clock.seconds_per_step(), 2), "tokens_per_s": round(rate),
               "mfu_measured": round(rate * per_token / (measured * 1e12), 3),
               "mfu_spec": round(rate * per_token / (spec * 1e12), 3) if spec else None,
               "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}
        torch.cuda.reset_peak_memory_stats()
        result["sweep"].append(row)
        print(json.dumps(row))
    shutil.rmtree(scratch, ignore_errors=True)
    paths.atomic_write_text(args.out / "profile.json", json.dumps(result, indent=1))
    print_profile(result["profile"])
    print(f"wrote {args.out / 'profile.json'} and {trace}.gz")
    return 0


def summarise(trace: Path, steps: int) -> dict:
    with gzip.open(trace, "rt") as f:
        data = json.load(f)
    return trace_summary(data["traceEvents"] if isinstance(data, dict) else data, steps)


def print_profile(p: dict) -> None:
    print(f"profile at B={p['batch_size']}: the GPU busy {p['kernel_busy_ms_per_step']} ms of every "
          f"{p['gpu_span_ms_per_step']} ms ({p['gpu_busy_share']:.0%}), {p['kernels_per_step']} kernels/step")
    for kind, row in p["kinds"].items():
        print(f"  {row['ms_per_step']:8.3f} ms {row['share']:6.1%}  {kind}")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.profile_train", description="profile the training recipe; sweep its batch")
    p.add_argument("--profile", default="converge", help="training profile (default: %(default)s)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="TrainConfig overrides (JSON values)")
    p.add_argument("--batches", type=lambda s: int_list("--batches", s), default=[256, 512, 1024],
                   help="global batch sizes to time (default: 256,512,1024)")
    p.add_argument("--warmup", type=int, default=15, help="steps before timing: compilation and allocator warm-up")
    p.add_argument("--active", type=int, default=10, help="steps the profiler records (default: %(default)s)")
    p.add_argument("--timed", type=int, default=40, help="steps timed per batch size (default: %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="folder for profile.json and trace.json.gz")
    return p


if __name__ == "__main__":
    raise SystemExit(cli.run(build_parser(), main))
