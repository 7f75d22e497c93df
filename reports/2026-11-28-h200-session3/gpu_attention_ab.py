"""A/B of the SDPA kernels the samplers allow, and of an odd vs a padded vocabulary (issue 5, session 3).

roberta-base shapes, random weights, bf16, canvas 256 (no padding, so no attention mask), 10 steps. For each
choice of ``graphs.CUDA_ATTENTION_BACKENDS`` (None = torch's own pick) and vocabulary (50265 as roberta-base,
50304 = the next multiple of 64): the step loop's ms per step, eager and graph-replayed, and whether the graph
gives the eager loop's tokens.

    PYTHONPATH=lib python3 reports/2026-11-28-h200-session3/gpu_attention_ab.py

It ran on commit 9087f51 (whose sampler gave unpadded canvases no attention mask) plus an uncommitted knob,
``graphs.CUDA_ATTENTION_BACKENDS``: the SDPA backends allowed through ``torch.nn.attention.sdpa_kernel`` around the
step loop. Both went after this A/B (the sampler passes its 4D mask again), so the script records how
attention_ab.jsonl was made and no longer runs as is.
"""

import json
import statistics

import torch
from roberta_diffusion import graphs
from roberta_diffusion.evaluate import prompt_canvas_from_blocks
from roberta_diffusion.models import fallback_tokenizer, fresh_mlm
from roberta_diffusion.sampler import generate_diffusion

tok = fallback_tokenizer()
blocks = torch.randint(5, len(tok), (64, 256), generator=torch.Generator().manual_seed(0))
STEPS = 10
CHOICES = {"torch default": None, "flash": ("FLASH_ATTENTION",), "efficient": ("EFFICIENT_ATTENTION",),
           "flash,efficient,math": ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")}


def loop_ms(mlm, canvas, strategy, graph, repeats=5):
    times, final = [], None
    for _ in range(repeats + 1):
        trace = generate_diffusion(mlm, tok, canvas=canvas, steps=STEPS, strategy=strategy, seed=0, graph=graph)
        times.append(trace.total_time / STEPS * 1e3)
        final = trace.final
    return statistics.median(times[1:]), final


for vocab in (50265, 50304):
    mlm = fresh_mlm(tok, "base", max_len=256)
    mlm.resize_token_embeddings(vocab, mean_resizing=False)
    mlm = mlm.to("cuda", torch.bfloat16)
    for name, backends in CHOICES.items():
        graphs.CUDA_ATTENTION_BACKENDS = backends
        for batch in (1, 64):
            canvas = prompt_canvas_from_blocks(blocks[:batch], 16, tok.mask_token_id)
            for strategy in ("confidence", "random"):
                row = {"vocab": vocab, "attention": name, "batch": batch, "strategy": strategy}
                try:
                    eager, eager_final = loop_ms(mlm, canvas, strategy, graph=False, repeats=2)
                    graphed, graph_final = loop_ms(mlm, canvas, strategy, graph=True)
                    row |= {"eager_ms_per_step": round(eager, 4), "graph_ms_per_step": round(graphed, 4),
                            "graph_equals_eager": bool(torch.equal(eager_final, graph_final))}
                except Exception as err:  # a backend that cannot run this shape is a result too
                    row["error"] = f"{type(err).__name__}: {err}"[:200]
                finally:
                    graphs.release(mlm)
                print(json.dumps(row), flush=True)
