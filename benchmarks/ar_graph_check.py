"""Is the static-cache GPT-2 decoder repeatable at B >= 16 (bf16, CUDA), and which attention kernel decides it?

Run `-v` found the graphed decoder keeping the eager decoder's token in only 42-50 % of positions at B = 16 / 64 /
256 (exact at B=1); a first version of this script then showed that the eager decoder does not even repeat itself
there (47 % / 43 %): the numbers drift by 1e-8 to 1e-6 from the first steps, and a near-tie flips a token around
step 50-60. For each SDPA setting this prints, per batch size, eager-against-eager and eager-against-graphed token
agreement and the graphed decoder's ms per token. Result (H200, torch 2.11, 2026-11-29): default 1.0 / 0.50 / 0.44
eager-against-eager at B = 1 / 16 / 64; math and efficient 1.0 everywhere, graphed = eager; graphed ms per token
0.905 / 0.985 / 1.211 (default), 1.022 / 1.128 / 1.466 (efficient), 1.233 / 1.675 / 2.959 (math). `decode_static` and
the plain loop now hold SDPA to efficient-then-math (`graphs.repeatable_attention`).

python -m benchmarks.ar_graph_check   (CUDA)
"""

import contextlib
import json

import torch
from roberta_diffusion import bpe, graphs
from roberta_diffusion.fast_ar import _decode_static
from torch.nn.attention import SDPBackend, sdpa_kernel

from .common import preset_model

SETTINGS = {"default": contextlib.nullcontext, "math": lambda: sdpa_kernel(SDPBackend.MATH),
            "efficient": lambda: sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION)}


def decode(model, batch, graph):
    prefix = torch.randint(5, 50000, (batch, 16), generator=torch.Generator().manual_seed(0)).cuda()
    uniforms = torch.rand((240, batch), dtype=torch.float64, generator=torch.Generator().manual_seed(1)).cuda()
    # the decoder without the kernel choice `decode_static` makes (graphs.repeatable_attention): each SETTINGS row's
    ids, _, seconds = _decode_static(model, prefix, torch.ones_like(prefix), 256, uniforms, 1.0, 50, 0.95, graph)
    return ids[:, 16:], seconds


if __name__ == "__main__":
    tok = bpe.fallback_tokenizer()
    model = preset_model("ar", tok, "base", 256, vocab_multiple=64).to("cuda", torch.bfloat16).eval()
    for name, setting in SETTINGS.items():
        graphs.release(model)  # capture again under this setting
        with setting():
            for batch in (1, 16, 64):
                first, _ = decode(model, batch, graph=False)
                again, _ = decode(model, batch, graph=False)
                decode(model, batch, graph=True)  # capture
                graphed, seconds = decode(model, batch, graph=True)
                print(json.dumps({"sdpa": name, "batch": batch,
                                  "eager_vs_eager": round(float((first == again).float().mean()), 4),
                                  "eager_vs_graph": round(float((first == graphed).float().mean()), 4),
                                  "graph_ms_per_token": round(1e3 * seconds, 3)}), flush=True)
