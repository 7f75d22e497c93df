"""``roberta-diffusion bench``: speed of diffusion sampling, autoregressive decoding and training, as JSON.

On the current device, for a size preset (``tiny``/``small``/``base`` = random weights of those configs; ``base``
is roberta-base / gpt2 sized) or ``shipped`` weights, with warm-up and medians of repeated runs:
- diffusion: ms per step and per sample at each batch size and step count, generated tokens/s;
- AR: ms per token and per sample, with HF ``generate`` as-is and with this project's KV-cache loop;
- training: masked-LM tokens/s and MFU (model FLOPs over the measured dense matmul rate of the device).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from .evaluate import environment, prompt_canvas_from_blocks
from .models import fallback_tokenizer, fresh_causal_lm, fresh_mlm, load_causal_lm, load_mlm, load_tokenizer
from .sampler import generate_ar, generate_diffusion


def add_bench_command(sub) -> None:
    b = sub.add_parser("bench", help="speed of diffusion, AR decoding and training -> JSON + table")
    b.add_argument("--size", default="tiny", help="tiny | small | base (random weights) | shipped")
    b.add_argument("--batch-sizes", default="1,16", help="e.g. 1,16,64,256 on a GPU")
    b.add_argument("--steps", default="10,64")
    b.add_argument("--max-len", type=int, default=256)
    b.add_argument("--prefix-len", type=int, default=16)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--train-batch", type=int, default=32)
    b.add_argument("--device", default="auto")
    b.add_argument("--out", type=Path, required=True, help="JSON file to write")
    b.set_defaults(handler=run_bench)


def _timed(fn, device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call (device-synchronised)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device, n: int = 4096, repeats: int = 5) -> float:
    """Measured dense matmul rate (bf16 on GPU, fp32 on CPU): the ceiling MFU is reported against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = _timed(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds / 1e12


def training_flops_per_token(model, seq_len: int) -> float:
    """6 N (weights, forward + backward) + attention scores 12 * layers * width * L, per token (PaLM's count)."""
    n = sum(p.numel() for p in model.parameters() if p.ndim >= 2)
    c = model.config
    return 6 * n + 12 * c.num_hidden_layers * c.hidden_size * seq_len


def _models(size: str, max_len: int, device):
    if size == "shipped":
        from .paths import SHIPPED_AR, SHIPPED_MLM

        return (load_mlm(SHIPPED_MLM, device=device), load_causal_lm(SHIPPED_AR, device=device),
                load_tokenizer(SHIPPED_MLM))
    tokenizer = fallback_tokenizer()
    mlm = fresh_mlm(tokenizer, size, max_len=max_len)
    ar = fresh_causal_lm(tokenizer, size, max_len=max_len)
    if size == "base":  # roberta-base / gpt2 vocabularies, so the output layers cost what they cost there
        mlm.resize_token_embeddings(50265)
        ar.resize_token_embeddings(50257)
    return mlm.to(device), ar.to(device), tokenizer


def run_bench(args) -> int:
    from .collator import DiffusionCollator
    from .models import pick_device
    from .train import masked_lm_loss

    device = pick_device(args.device)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    step_counts = [int(s) for s in args.steps.split(",")]
    if min(batch_sizes) < 1 or min(step_counts) < 1 or args.repeats < 1:
        raise ValueError("--batch-sizes, --steps and --repeats must be positive")
    if args.out.suffix != ".json":
        raise ValueError(f"--out {args.out} must end in .json")
    mlm, ar, tok = _models(args.size, args.max_len, device)
    vocab = mlm.config.vocab_size
    new = args.max_len - args.prefix_len
    result = {"environment": environment(), "size": args.size, "max_len": args.max_len, "prefix_len": args.prefix_len,
              "diffusion": [], "ar": [], "train": {}}
    gen = torch.Generator().manual_seed(0)
    for batch in batch_sizes:
        blocks = torch.randint(5, min(vocab, len(tok)), (batch, args.max_len), generator=gen)
        canvas = prompt_canvas_from_blocks(blocks, args.prefix_len, tok.mask_token_id)
        for steps in step_counts:
            seconds = _timed(lambda: generate_diffusion(mlm, tok, canvas=canvas, steps=steps, strategy="confidence"),  # noqa: B023 (called at once)
                             device, args.repeats)
            result["diffusion"].append({"batch": batch, "steps": steps, "ms_per_sample_batch": round(1e3 * seconds, 3),
                                        "ms_per_step": round(1e3 * seconds / steps, 3),
                                        "tokens_per_s": round(batch * new / seconds, 1)})
        prefix = blocks[:, : args.prefix_len].to(device)
        ours = _timed(lambda: generate_ar(ar, tok, prefix, max_len=args.max_len), device, args.repeats)  # noqa: B023
        hf = _timed(lambda: ar.generate(prefix, attention_mask=torch.ones_like(prefix), do_sample=True, top_k=50,  # noqa: B023
                                        top_p=0.95, max_new_tokens=new, min_new_tokens=new,
                                        pad_token_id=tok.pad_token_id), device, args.repeats)
        for impl, seconds in (("kv-cache loop", ours), ("hf generate", hf)):
            result["ar"].append({"batch": batch, "impl": impl, "new_tokens": new, "ms_per_sample_batch": round(1e3 * seconds, 3),
                                 "ms_per_token": round(1e3 * seconds / new, 3), "tokens_per_s": round(batch * new / seconds, 1)})
    result["train"] = _bench_training(mlm, tok, args, device, masked_lm_loss, DiffusionCollator)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    _print_table(result)
    print(f"wrote {args.out}")
    return 0


def _bench_training(mlm, tok, args, device, loss_fn, collator_class) -> dict:
    mlm.train()
    collator = collator_class(tok, args.prefix_len, "continuous")
    optimizer = torch.optim.AdamW(mlm.parameters(), lr=1e-4, fused=device.type == "cuda")
    blocks = torch.randint(5, len(tok), (args.train_batch, args.max_len))

    def step():
        batch = {k: v.to(device) for k, v in collator(blocks).items() if k != "mask_ratio"}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(mlm, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = _timed(step, device, args.repeats)
    mlm.eval()
    tokens_per_s = args.train_batch * args.max_len / seconds
    peak = matmul_tflops(device)
    achieved = training_flops_per_token(mlm, args.max_len) * tokens_per_s / 1e12
    return {"batch": args.train_batch, "seq_len": args.max_len, "ms_per_step": round(1e3 * seconds, 2),
            "tokens_per_s": round(tokens_per_s, 1), "model_tflops": round(achieved, 3),
            "matmul_peak_tflops": round(peak, 2), "mfu": round(achieved / peak, 4)}


def _print_table(result: dict) -> None:
    print(f"device: {result['environment']['device']} · size {result['size']} · L={result['max_len']}")
    print(f"{'diffusion':<12}{'batch':>7}{'steps':>7}{'ms/step':>11}{'ms/sample':>12}{'tok/s':>12}")
    for r in result["diffusion"]:
        print(f"{'':<12}{r['batch']:>7}{r['steps']:>7}{r['ms_per_step']:>11}{r['ms_per_sample_batch']:>12}{r['tokens_per_s']:>12}")
    print(f"{'AR':<12}{'batch':>7}{'impl':>16}{'ms/token':>11}{'ms/sample':>12}{'tok/s':>12}")
    for r in result["ar"]:
        print(f"{'':<12}{r['batch']:>7}{r['impl']:>16}{r['ms_per_token']:>11}{r['ms_per_sample_batch']:>12}{r['tokens_per_s']:>12}")
    t = result["train"]
    print(f"train MLM: {t['tokens_per_s']} tokens/s at B={t['batch']}, MFU {t['mfu']:.1%} of {t['matmul_peak_tflops']} TFLOP/s")
