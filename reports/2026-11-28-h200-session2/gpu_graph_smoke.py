"""On the GPU: do the CUDA-graph paths capture, and do they give the plain paths' tokens? (tiny and base sizes,
random weights, bf16). Prints one JSON line per check; runs next to training, so its timings are not benchmarks."""

import json
import time
import traceback

import torch
from roberta_diffusion import models
from roberta_diffusion.evaluate import prompt_canvas_from_blocks
from roberta_diffusion.sampler import generate_ar, generate_diffusion


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


tok = models.load_tokenizer("weights/tokenizer")
device = torch.device("cuda")
for size in ("tiny", "base"):
    for batch in (1, 8):
        blocks = torch.randint(5, len(tok), (batch, 256), generator=torch.Generator().manual_seed(0))
        canvas = prompt_canvas_from_blocks(blocks, 16, tok.mask_token_id)
        try:
            mlm = models.fresh_mlm(tok, size).to(device, torch.bfloat16)
            for strategy in ("confidence", "seed-remask", "random"):
                plain, t_plain = timed(lambda: generate_diffusion(mlm, tok, canvas=canvas, steps=10, strategy=strategy))  # noqa: B023
                first, t_first = timed(lambda: generate_diffusion(mlm, tok, canvas=canvas, steps=10, strategy=strategy, graph=True))  # noqa: B023
                again, t_again = timed(lambda: generate_diffusion(mlm, tok, canvas=canvas, steps=10, strategy=strategy, graph=True, seed=0))  # noqa: B023
                print(json.dumps({"check": "diffusion", "size": size, "batch": batch, "strategy": strategy,
                                  "tokens_equal": bool(torch.equal(plain.ids, first.ids) and torch.equal(plain.ids, again.ids)),
                                  "token_agreement": float((plain.final == again.final).float().mean()),
                                  "plain_s": round(t_plain, 4), "first_graph_call_s": round(t_first, 4),
                                  "graph_s": round(t_again, 4)}), flush=True)
        except Exception:
            print(json.dumps({"check": "diffusion", "size": size, "batch": batch, "error": traceback.format_exc()[-2000:]}), flush=True)
        try:
            ar = models.fresh_causal_lm(tok, size).to(device, torch.bfloat16)
            prefix = blocks[:, :16].to(device)
            plain, t_plain = timed(lambda: generate_ar(ar, tok, prefix, max_len=256))  # noqa: B023
            static, t_static = timed(lambda: generate_ar(ar, tok, prefix, max_len=256, static_cache=True))  # noqa: B023
            graph1, t_first = timed(lambda: generate_ar(ar, tok, prefix, max_len=256, graph=True))  # noqa: B023
            graph2, t_graph = timed(lambda: generate_ar(ar, tok, prefix, max_len=256, graph=True))  # noqa: B023
            first_diff = (plain.final != graph2.final).any(dim=0).nonzero()
            print(json.dumps({"check": "ar", "size": size, "batch": batch,
                              "static_equals_plain": bool(torch.equal(plain.final, static.final)),
                              "graph_equals_static": bool(torch.equal(static.final, graph2.final) and torch.equal(graph1.final, graph2.final)),
                              "first_position_differing_from_plain": int(first_diff[0]) if len(first_diff) else None,
                              "plain_s": round(t_plain, 4), "static_s": round(t_static, 4),
                              "first_graph_call_s": round(t_first, 4), "graph_s": round(t_graph, 4)}), flush=True)
        except Exception:
            print(json.dumps({"check": "ar", "size": size, "batch": batch, "error": traceback.format_exc()[-2000:]}), flush=True)
