"""Issue 4's CPU latency check: the shipped models, a 256-token canvas, 10 steps, 2 threads, median of 3 runs
after a warm-up. Prints JSON; README.md's results section quotes it.

python scripts/cpu_latency.py
"""

import json
import statistics
import time

import torch
from roberta_diffusion import models
from roberta_diffusion.sampler import generate_ar, generate_diffusion

PROMPT = "The history of the city"


def median_seconds(run, repeats: int = 3) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


if __name__ == "__main__":
    torch.set_num_threads(2)
    mlm, tok = models.default_models("mlm")
    ar, _ = models.default_models("ar")
    out = {"threads": torch.get_num_threads(), "model": models.model_summary(mlm)}
    for strategy in ("seed-remask", "confidence", "random"):
        out[f"diffusion {strategy}, 10 steps, s"] = median_seconds(
            lambda strategy=strategy: generate_diffusion(mlm, tok, PROMPT, steps=10, policy=strategy))
    out["AR KV-cache loop, 240 tokens, s"] = median_seconds(lambda: generate_ar(ar, tok, PROMPT))
    out["AR static cache, 240 tokens, s"] = median_seconds(lambda: generate_ar(ar, tok, PROMPT, static_cache=True))
    print(json.dumps(out, indent=1))
