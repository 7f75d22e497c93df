"""CPU latency of the shipped models: a 256-token canvas, 10 steps, 2 threads, median of 3 runs after a warm-up.
Prints JSON; README's results table and docs/results.md quote it.

python -m benchmarks.cpu_latency
"""

import json

import torch
from roberta_diffusion import models
from roberta_diffusion.sampler import generate_ar, generate_diffusion

from .common import timed_median

PROMPT = "The history of the city"


def median_seconds(run, repeats: int = 3) -> float:
    return round(timed_median(run, torch.device("cpu"), repeats), 3)


def latencies(mlm, ar, tok, steps: int = 10, max_len: int = 256, repeats: int = 3) -> dict:
    """Seconds per sample for every policy that scores positions differently, and for the AR twin."""
    out = {}
    for policy in ("redraw", "confidence", "random"):
        out[f"diffusion {policy}, {steps} steps, s"] = median_seconds(
            lambda policy=policy: generate_diffusion(mlm, tok, PROMPT, steps=steps, policy=policy, max_len=max_len),
            repeats)
    new = max_len - 1 - len(tok(PROMPT, add_special_tokens=False)["input_ids"])
    out[f"AR KV-cache loop, {new} tokens, s"] = median_seconds(lambda: generate_ar(ar, tok, PROMPT, max_len=max_len), repeats)
    out[f"AR static cache, {new} tokens, s"] = median_seconds(
        lambda: generate_ar(ar, tok, PROMPT, max_len=max_len, static_cache=True), repeats)
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    mlm, tok = models.default_models("mlm")
    ar, _ = models.default_models("ar")
    out = {"threads": torch.get_num_threads(), "model": models.model_summary(mlm), **latencies(mlm, ar, tok)}
    print(json.dumps(out, indent=1))
