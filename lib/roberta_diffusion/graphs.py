"""CUDA graph capture for the samplers' fixed-shape steps.

A step of a small model on a big GPU is launch-bound: hundreds of kernels of a few microseconds each, each
queued by Python. A CUDA graph records the kernels of one call once and replays them with one launch. That
works when every call has the same shapes and reads its inputs from the same buffers (static), and when
nothing in the step waits on the host (no ``.item()``, no boolean indexing) — which is how the samplers'
step functions are written.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def capture(step, warmup: int = 2) -> torch.cuda.CUDAGraph:
    """Warm ``step()`` up on a side stream (lazy cuBLAS/attention set-up must not happen during capture), then
    record one call. ``step`` must only touch buffers it closes over. The warm-up calls *run*, so callers
    reset their buffers before replaying."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


CACHE = "_roberta_diffusion_graphs"  # the attribute on a model where samplers keep what they captured
COMPILED = "compiled_step"  # first item of the cache keys of compiled steps (the rest are graphs + buffers)


def model_cache(model) -> dict:
    """Where the samplers keep a model's captured graphs, their static buffers and compiled steps."""
    return model.__dict__.setdefault(CACHE, {})


def release(model, keep_compiled: bool = False) -> None:
    """Drop the graphs and static buffers the samplers keep on ``model`` (each captured graph holds its own
    memory pool), and the compiled steps unless ``keep_compiled``: call it after sweeping many shapes."""
    cache = model_cache(model)
    for key in [k for k in cache if not (keep_compiled and k[0] == COMPILED)]:
        del cache[key]
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_graph_device(device) -> None:
    if device.type != "cuda":
        raise ValueError(f"graph=True needs a CUDA device, the model is on {device.type}: set graph=False")


def repeatable_attention(device):
    """A context holding SDPA to kernels that give the same result on every run (CUDA; elsewhere nothing changes).

    The GPT-2 decoders attend with a boolean mask over a cache. The kernel SDPA picks for that by default on a GPU
    need not be repeatable at larger batches: the same seed can give another text on a second run, graphed or not.
    The memory-efficient kernel (math as the fallback) repeats exactly, at some cost per token
    (``benchmarks/ar_graph_check.py`` measures both).
    """
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
