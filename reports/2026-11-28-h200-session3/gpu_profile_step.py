"""Where a diffusion step's time goes on the GPU (issue 5): roberta-base shapes, random weights, bf16, canvas 256.

For B = 1 and 64 and the confidence / random policies (10 steps): the wall time per step of the graph-replayed
loop, the GPU kernel time per step from torch.profiler over an eager run (the same kernels), and the kernels
that take most of it. A step slower than its kernels' sum is bound by gaps between kernels, not by the kernels.

    PYTHONPATH=lib python3 reports/2026-11-28-h200-session3/gpu_profile_step.py > profile.txt
"""

import time

import torch
from roberta_diffusion import graphs
from roberta_diffusion.evaluate import prompt_canvas_from_blocks
from roberta_diffusion.models import fallback_tokenizer, fresh_mlm
from roberta_diffusion.sampler import generate_diffusion
from torch.profiler import ProfilerActivity, profile

tok = fallback_tokenizer()
mlm = fresh_mlm(tok, "base", max_len=256)
mlm.resize_token_embeddings(50265)
mlm = mlm.to("cuda", torch.bfloat16)
blocks = torch.randint(5, len(tok), (64, 256), generator=torch.Generator().manual_seed(0))
STEPS = 10

for batch in (1, 64):
    canvas = prompt_canvas_from_blocks(blocks[:batch], 16, tok.mask_token_id)
    for strategy in ("confidence", "random"):
        run = lambda graph, canvas=canvas, strategy=strategy: generate_diffusion(  # noqa: E731
            mlm, tok, canvas=canvas, steps=STEPS, strategy=strategy, seed=0, graph=graph)
        run(True), run(True)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            run(True)
        torch.cuda.synchronize()
        graph_ms = (time.perf_counter() - start) / 5 / STEPS * 1e3
        graphs.release(mlm)
        run(False)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(False)
            torch.cuda.synchronize()
        events = prof.key_averages()
        kernel_ms = sum(e.self_device_time_total for e in events) / 1e3 / STEPS  # the loop's kernels, per step
        print(f"\n=== B={batch} {strategy}: graph replay {graph_ms:.3f} ms/step (whole generate call / steps); "
              f"GPU kernel time {kernel_ms:.3f} ms/step (eager run, profiler)")
        print(events.table(sort_by="self_device_time_total", row_limit=18, max_name_column_width=70))
