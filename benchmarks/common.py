"""What the benchmark tools share: timing, FLOP counts, the matmul ceiling and the models they time. (Their command
lines run in ``workbench.cli.run``: one ``error:`` line and status 2 on bad input, as ``roberta-diffusion``.)"""

from __future__ import annotations

import statistics
import time

import torch
from roberta_diffusion import paths
from roberta_diffusion.bpe import fallback_tokenizer
from roberta_diffusion.models import (
    fresh_causal_lm,
    fresh_mlm,
    load_causal_lm,
    load_mlm,
    load_tokenizer,
)
from roberta_diffusion.speed import spec_peak_tflops  # noqa: F401 (the tools' one import of the data-sheet peak)


def timed_median(fn, device, repeats: int) -> float:
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


def matmul_tflops(device, n: int = 8192, repeats: int = 5) -> float:
    """Measured dense matmul rate (bf16 on GPU, fp32 on CPU): the ceiling MFU is reported against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed_median(lambda: a @ b, device, repeats)
    return 2 * n**3 / seconds / 1e12


def error_row(err: Exception, **where) -> dict:
    """A fast path that fails is a result to report, not a crash of the harness."""
    return {**where, "error": f"{type(err).__name__}: {err}"[:400]}


def int_list(flag: str, text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a comma list of integers, e.g. 1,16,64") from None


def bench_tokenizer(args):
    """The tokenizer of ``--mlm``, of the shipped model (``--size shipped``), or the small fallback one."""
    if args.mlm:
        return load_tokenizer(args.mlm)
    if args.size == "shipped":
        return load_tokenizer(paths.SHIPPED_MLM)
    return fallback_tokenizer()


def bench_model(kind: str, args, tokenizer, device, **overrides):
    """The masked LM (``kind="mlm"``) or causal LM (``"ar"``) that ``--mlm/--ar`` or ``--size`` names, in fp32.
    ``overrides`` (e.g. ``dropout=0.0``) change a preset's config; for a saved model, its dropout layers."""
    folder = args.mlm if kind == "mlm" else args.ar
    if args.size == "shipped" and folder is None:
        folder = paths.SHIPPED_MLM if kind == "mlm" else paths.SHIPPED_AR
    if folder is not None:
        model = (load_mlm if kind == "mlm" else load_causal_lm)(folder, device=device)
        if "dropout" in overrides:
            set_dropout(model, overrides["dropout"])
        return model
    return preset_model(kind, tokenizer, args.size, args.max_len, args.vocab_multiple, **overrides).to(device)


def preset_model(kind: str, tokenizer, size: str, max_len: int, vocab_multiple: int = 1, **overrides):
    """A random-weight masked LM (``kind="mlm"``) or causal LM (``"ar"``) of a size preset, on the CPU in fp32.
    ``base``: roberta-base / gpt2 with their vocabularies rounded up to ``vocab_multiple``, so that the output
    layers cost what they cost there."""
    model = (fresh_mlm if kind == "mlm" else fresh_causal_lm)(tokenizer, size, max_len=max_len, **overrides)
    if size == "base":
        vocab = 50265 if kind == "mlm" else 50257
        model.resize_token_embeddings(-(-vocab // vocab_multiple) * vocab_multiple, mean_resizing=False)
    return model


def set_dropout(model, p: float) -> None:
    """Every dropout of a loaded model: the dropout modules (RoBERTa's attention reads its module's ``p`` at each
    call) and float rates kept on attention modules (ModernBERT's ``attention_dropout``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p


# -- FLOPs: what a step of training or sampling must compute (MFU and the FLOP-limited rate divide by these) --
def matmul_weights(model) -> tuple[int, int]:
    """``(encoder matmul weights, output head matmul weights)``. Embedding tables are lookups, not matmuls; the
    vocabulary projection (tied to the input table or not) is a matmul wherever logits are computed."""
    vocab = model.get_output_embeddings().weight
    head_module = getattr(model, "lm_head", None) or getattr(model, "head", None)  # RoBERTa/GPT-2 | ModernBERT
    head_params = [vocab] + [p for p in (head_module.parameters() if head_module is not None else []) if p is not vocab]
    head_ids = {id(p) for p in head_params}
    head = sum(p.numel() for p in head_params if p.ndim >= 2)
    encoder = sum(p.numel() for name, p in model.named_parameters()
                  if p.ndim >= 2 and id(p) not in head_ids and "embed" not in name and not name.endswith(("wte.weight", "wpe.weight")))
    return encoder, head


def attention_flops(model, seq_len: int) -> float:
    """Forward FLOPs per token for the score and value products (2 x 2 x L x width per layer)."""
    c = model.config
    return 4 * c.num_hidden_layers * c.hidden_size * seq_len


def training_flops_per_token(model, seq_len: int, predicted_share: float = 1.0) -> float:
    """Forward + backward FLOPs per token: 6 x matmul weights, the head only on the predicted share of tokens,
    and the attention products (3 x forward)."""
    encoder, head = matmul_weights(model)
    return 6 * encoder + 6 * head * predicted_share + 3 * attention_flops(model, seq_len)


def diffusion_step_flops(model, batch: int, seq_len: int, candidates: int) -> float:
    """FLOPs of one sampler step: the encoder on every position, the head on the candidate positions."""
    encoder, head = matmul_weights(model)
    return batch * (seq_len * (2 * encoder + attention_flops(model, seq_len)) + candidates * 2 * head)
