"""``python -m benchmarks.bench``: speed of diffusion sampling, autoregressive decoding and training, as JSON.

On the current device, for a size preset (``tiny``/``small``/``base`` = random weights of those configs; ``base``
is roberta-base / gpt2 sized), ``shipped`` weights, or ``--mlm``/``--ar`` folders, with warm-up and medians:
- diffusion: ms per step and per sample at each batch size and step count, tokens/s, and the share of the
  FLOP-limited rate (the step's FLOPs at the measured dense bf16 matmul rate). Implementations: ``eager``
  (the plain loop), ``graph`` (the step replayed as a CUDA graph) and ``compile+graph`` (the whole step, model
  and sampling, compiled by inductor, then graphed); tokens of each fast path are compared with the eager loop's.
- AR: ms per token and per sample with HF ``generate`` as-is, the plain KV-cache loop, the static-cache decoder,
  and the static-cache decoder replayed as a CUDA graph; again with token agreement.
- training: masked-LM tokens/s and MFU (model FLOPs over the measured matmul rate), eager and compiled.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict
from pathlib import Path

import torch
from roberta_diffusion import graphs, models
from roberta_diffusion.draws import reveal_counts
from roberta_diffusion.evaluate import environment, prompt_canvas_from_blocks
from roberta_diffusion.paths import atomic_path
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_ar, generate_diffusion
from roberta_diffusion.sampling import Sampling
from workbench import checks, cli
from workbench.cli import Parser

from .agreement import ar_teacher_forced_all, fast_step, step_tolerance
from .bench_training import TRAIN_VARIANTS, bench_training, train_variants
from .common import (
    bench_model,
    bench_tokenizer,
    diffusion_step_flops,
    error_row,
    int_list,
    matmul_tflops,
    spec_peak_tflops,
    timed_median,
)


def build_parser() -> argparse.ArgumentParser:
    b = Parser(prog="python -m benchmarks.bench", description="speed of diffusion, AR decoding and training -> JSON + table")
    b.add_argument("--size", default="tiny", help="tiny | small | base (random weights) | shipped")
    b.add_argument("--mlm", type=Path, help="a masked LM folder (instead of --size)")
    b.add_argument("--ar", type=Path, help="a causal LM folder with the same tokenizer (instead of --size)")
    b.add_argument("--batch-sizes", default="1,16", help="e.g. 1,16,64,256 on a GPU")
    b.add_argument("--steps", default="10,64")
    b.add_argument("--ar-batch-sizes", default=None, help="AR batch sizes (default: --batch-sizes)")
    b.add_argument("--max-len", type=int, default=256)
    b.add_argument("--prefix-len", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--train-batch", type=int, default=32)
    b.add_argument("--compile", default="", help="batch sizes (e.g. 1,64) to also time with the encoder compiled by "
                   "torch.compile, and the training step compiled; each shape compiles for a minute or so")
    b.add_argument("--policies", "--strategies", action=checks.Store, default="confidence",
                   help="diffusion policies to time, e.g. confidence,random (random draws only at the positions each "
                        "step commits); every other setting is Sampling()'s")
    b.add_argument("--vocab-multiple", type=int, default=1, help="base size: round the vocabularies (50265 / 50257) "
                   "up to a multiple of this, e.g. 64 (50304, as nanoGPT does): an odd vocabulary leaves cuBLAS only "
                   "slow kernels for the output layer")
    b.add_argument("--compile-mode", default=None, help="torch.compile mode of the diffusion step, e.g. max-autotune-no-cudagraphs")
    b.add_argument("--train-variants", default="", help="training paths to time (default: eager, and with --compile "
                   "all on CUDA): " + ", ".join(TRAIN_VARIANTS))
    b.add_argument("--skip", default="", help="comma list of sections to skip: diffusion,ar,train")
    b.add_argument("--device", default="auto")
    b.add_argument("--out", type=Path, required=True, help="JSON file to write")
    return b


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run_bench, argv)


def _policy_list(text: str) -> list[str]:
    timed = [s for s in POLICIES if not POLICIES[s].adaptive]  # it stops early: no fixed step count to time
    return checks.policy_list("--policies", text, timed)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float((a == b).float().mean()), 6)


def run_bench(args) -> int:
    checks.output_path("--out", args.out, ".json")
    checks.device("--device", args.device)
    checks.in_range("--prefix-len", args.prefix_len, 1)
    checks.in_range("--max-len", args.max_len, args.prefix_len + 1, what=" (above --prefix-len)")
    checks.in_range("--train-batch", args.train_batch, 1)
    device = models.pick_device(args.device)  # read at call time: tests stand in for it
    batch_sizes = int_list("--batch-sizes", args.batch_sizes)
    ar_batch_sizes = int_list("--ar-batch-sizes", args.ar_batch_sizes or args.batch_sizes)
    step_counts = int_list("--steps", args.steps)
    if not batch_sizes or not step_counts:
        raise ValueError("--batch-sizes and --steps need at least one number each")
    if min(batch_sizes + ar_batch_sizes) < 1 or min(step_counts) < 1 or args.repeats < 1 or args.vocab_multiple < 1:
        raise ValueError("--batch-sizes, --steps, --repeats and --vocab-multiple must be positive")
    policies = _policy_list(args.policies)
    skip = {s for s in args.skip.split(",") if s}
    if skip - {"diffusion", "ar", "train"}:
        raise ValueError(f"--skip {args.skip}: use a comma list of diffusion, ar, train")
    train_variants(args, device)  # refuses unknown names before anything runs
    if (args.mlm is None) != (args.ar is None):
        raise ValueError("give both --mlm and --ar (they must share a tokenizer)")
    tok = bench_tokenizer(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    env = environment()
    peak = matmul_tflops(device)
    spec = spec_peak_tflops(env["device"])
    result = {"environment": env, "size": str(args.mlm or args.size), "max_len": args.max_len,
              "compile_mode": args.compile_mode, "prefix_len": args.prefix_len, "dtype": str(dtype).replace("torch.", ""),
              "vocab_multiple": args.vocab_multiple, "matmul_peak_tflops": round(peak, 1), "spec_peak_tflops": spec, "diffusion": [], "ar": [], "train": []}
    blocks = torch.randint(5, len(tok), (max(batch_sizes + ar_batch_sizes), args.max_len),
                           generator=torch.Generator().manual_seed(0))
    sections = {
        "diffusion": lambda: _bench_diffusion(bench_model("mlm", args, tok, device).to(dtype), tok, blocks, batch_sizes,
                                              step_counts, policies, args, device, peak),
        "ar": lambda: _bench_ar(bench_model("ar", args, tok, device).to(dtype), tok, blocks, ar_batch_sizes, args, device),
        "train": lambda: bench_training(tok, args, device, peak, spec),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.stem}.partial.json")  # a run cut short keeps what it measured here,
    for name, run in sections.items():  # and --out itself changes only when every section ran
        if name in skip:
            continue
        result[name] = run()
        result["ratios"] = _latency_ratios(result)
        with atomic_path(partial) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    partial.unlink(missing_ok=True)
    _print_table(result)
    print(f"wrote {args.out}")
    return 0


def _variants(device, compile_batches: list[int]) -> list[str]:
    if device.type != "cuda":
        return ["eager"]  # graphs and the compiled step are CUDA paths
    return ["eager", "graph"] + (["compile+graph"] if compile_batches else [])


def _bench_diffusion(mlm, tok, blocks, batch_sizes, step_counts, policies, args, device, peak) -> list[dict]:
    rows, eager_final = [], {}
    new = args.max_len - args.prefix_len
    compile_batches = int_list("--compile", args.compile)
    for variant, policy in [(v, s) for v in _variants(device, compile_batches) for s in policies]:
        compiled = variant.startswith("compile")
        flags = {"graph": variant.endswith("graph"), "compile": (args.compile_mode or True) if compiled else False}
        for batch in batch_sizes:
            if compiled and batch not in compile_batches:
                continue  # each shape compiles anew: only the batch sizes asked for
            canvas = prompt_canvas_from_blocks(blocks[:batch], args.prefix_len, tok.mask_token_id)
            for steps in step_counts[:1] if compiled else step_counts:
                loops = []  # seconds of each call's step loop alone (no plan, no copies to the host, no text)
                sampling = Sampling(steps=steps).with_policy(policy)  # its own knob at its measured default

                def run(canvas=canvas, sampling=sampling, flags=flags, loops=loops):
                    trace = generate_diffusion(mlm, tok, sampling=sampling, canvas=canvas, **flags)
                    loops.append(trace.total_time)
                    return trace

                where = dict(impl=variant, policy=policy, batch=batch, steps=steps)
                try:
                    seconds = timed_median(run, device, args.repeats)
                    final = run().final
                except Exception as err:
                    rows.append(error_row(err, **where))
                    continue
                finally:
                    graphs.release(mlm, keep_compiled=True)
                flops = diffusion_step_flops(mlm, batch, args.max_len, drawn_positions(policy, new, steps)) * steps
                loop = statistics.median(loops[1 : 1 + args.repeats])  # the timed calls, not the warm-up or the last
                row = {**where, "ms_per_sample_batch": round(1e3 * seconds, 3),
                       "ms_per_step": round(1e3 * seconds / steps, 4), "ms_per_step_loop": round(1e3 * loop / steps, 4),
                       "tokens_per_s": round(batch * new / seconds, 1),
                       "flop_limited_share": round(flops / seconds / 1e12 / peak, 4),
                       "flop_limited_share_loop": round(flops / loop / 1e12 / peak, 4),
                       "masks_left": int((final == tok.mask_token_id).sum())}  # 0 unless a fast path is broken
                if variant == "eager":
                    eager_final[policy, batch, steps] = final
                elif (policy, batch, steps) in eager_final:
                    row["token_agreement_with_eager"] = _agreement(final, eager_final[policy, batch, steps])
                if compiled:  # other kernels: the documented tolerance, teacher-forced (agreement.py)
                    row["teacher_forced"] = _teacher_forced(mlm, tok, canvas, sampling, args.compile_mode)
                rows.append(row)
    return rows


def _teacher_forced(mlm, tok, canvas, sampling: Sampling, compile_mode) -> dict:
    """The compiled step against the plain one on the plain run's canvases, next to what the working precision
    alone does (``agreement.step_tolerance``), under the settings that were timed."""
    try:
        return step_tolerance(mlm, tok, canvas, fast_step(mlm, compile_mode), name="compiled",
                              **asdict(sampling))
    except Exception as err:
        return error_row(err)


def _ar_teacher_forced(ar, tok, prefix, impls: list[str], max_len: int) -> dict:
    """impl -> the static decoder's teacher-forced comparison, all ``impls`` along one plain run and one float32 pass."""
    try:
        return ar_teacher_forced_all(ar, tok, prefix, {impl: AR_FAST[impl] for impl in impls}, max_len=max_len)
    except Exception as err:
        return dict.fromkeys(impls, error_row(err))
    finally:
        graphs.release(ar)


def drawn_positions(policy: str, new: int, steps: int) -> int:
    """Positions per row where a step computes logits: every generated one, except for ``random``, which draws
    only where it commits (the most any step of the linear schedule commits)."""
    if not POLICIES[policy].planned:
        return new
    return int(reveal_counts(torch.tensor([new]), steps, "linear").max())


# the fast AR decoders (``generate_ar`` options), timed and checked against the plain loop
AR_FAST = {"static cache": dict(static_cache=True), "static cache + graph": dict(static_cache=True, graph=True)}


def _bench_ar(ar, tok, blocks, batch_sizes, args, device) -> list[dict]:
    rows = []
    new = args.max_len - args.prefix_len
    for batch in batch_sizes:
        prefix = blocks[:batch, : args.prefix_len].to(device)
        first = len(rows)  # this batch size's rows
        impls = {
            "hf generate": lambda prefix=prefix: ar.generate(
                prefix, attention_mask=torch.ones_like(prefix), do_sample=True, top_k=50, top_p=0.95,
                max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id),
            "kv-cache loop": lambda prefix=prefix: generate_ar(ar, tok, prefix, max_len=args.max_len).final,
        }
        for impl, how in AR_FAST.items():
            if device.type == "cuda" or not how.get("graph"):
                impls[impl] = lambda prefix=prefix, how=how: generate_ar(ar, tok, prefix, max_len=args.max_len, **how).final
        finals = {}
        for impl, fn in impls.items():
            try:
                seconds = timed_median(fn, device, args.repeats)
                finals[impl] = fn().cpu()
            except Exception as err:
                rows.append(error_row(err, impl=impl, batch=batch))
                continue
            finally:
                graphs.release(ar)
            row = {"impl": impl, "batch": batch, "new_tokens": new, "ms_per_sample_batch": round(1e3 * seconds, 3),
                   "ms_per_token": round(1e3 * seconds / new, 4), "tokens_per_s": round(batch * new / seconds, 1)}
            # the fast decoders against the plain loop, and the captured decoder against the same one eager
            for field, other in (("token_agreement_with_kv_cache_loop", "kv-cache loop"),
                                 ("token_agreement_with_static_cache", "static cache")):
                if impl.startswith("static cache") and impl != other and other in finals:
                    row[field] = _agreement(finals[impl], finals[other])
            rows.append(row)
        # where tokens drift apart: the same tolerance as the compiled step, one plain run for every fast decoder
        fast_rows = {row["impl"]: row for row in rows[first:] if row["impl"] in AR_FAST and "error" not in row}
        if fast_rows:
            for impl, found in _ar_teacher_forced(ar, tok, prefix, list(fast_rows), args.max_len).items():
                fast_rows[impl]["teacher_forced"] = found
    return rows


def _latency_ratios(result: dict) -> list[dict]:
    """One sample (the batch of 1): the fastest AR path's time over each diffusion path's, per step count."""
    ar = [r for r in result["ar"] if r.get("batch") == 1 and "error" not in r and r["impl"] != "hf generate"]
    if not ar:
        return []
    best_ar = min(ar, key=lambda r: r["ms_per_sample_batch"])
    out = []
    for r in result["diffusion"]:
        if r.get("batch") == 1 and "error" not in r:
            out.append({"diffusion_impl": r["impl"], "policy": r.get("policy"), "steps": r["steps"], "ar_impl": best_ar["impl"],
                        "ar_ms": best_ar["ms_per_sample_batch"], "diffusion_ms": r["ms_per_sample_batch"],
                        "ar_over_diffusion": round(best_ar["ms_per_sample_batch"] / r["ms_per_sample_batch"], 2)})
    return out


def _print_rows(title: str, rows: list[dict], label: str, columns: list[tuple[str, str, str]]) -> None:
    """One table: ``label`` names the row; ``columns`` are (heading, key, format); failed rows show their error."""
    print(f"{title:<22}" + "".join(f"{heading:>12}" for heading, _, _ in columns))
    for r in rows:
        name = f"{r[label]:<22}"
        if "error" in r:
            print(f"{name}  error: {r['error'][:70]}")
        else:
            print(name + "".join(f"{r[key]:>12{fmt}}" for _, key, fmt in columns))


def _print_table(result: dict) -> None:
    print(f"device: {result['environment']['device']} · size {result['size']} · L={result['max_len']} · "
          f"{result['dtype']} · matmul {result['matmul_peak_tflops']} TFLOP/s")
    _print_rows("diffusion", result["diffusion"], "impl",
                [("policy", "policy", ""), ("batch", "batch", ""), ("steps", "steps", ""), ("ms/step", "ms_per_step", ""),
                 ("loop ms/step", "ms_per_step_loop", ""), ("ms/sample", "ms_per_sample_batch", ""), ("tok/s", "tokens_per_s", ""),
                 ("FLOP share", "flop_limited_share", ".1%")])
    _print_rows("AR", result["ar"], "impl",
                [("batch", "batch", ""), ("ms/token", "ms_per_token", ""), ("ms/sample", "ms_per_sample_batch", ""),
                 ("tok/s", "tokens_per_s", "")])
    for r in result.get("ratios", []):
        print(f"B=1: {r['ar_impl']} {r['ar_ms']} ms vs diffusion {r['diffusion_impl']} {r['policy']} {r['steps']} steps "
              f"{r['diffusion_ms']} ms -> {r['ar_over_diffusion']}x")
    _print_rows("train MLM", result["train"], "impl",
                [("batch", "batch", ""), ("tokens/s", "tokens_per_s", ""), ("MFU", "mfu", ".1%")])


if __name__ == "__main__":
    raise SystemExit(main())
