"""The evaluation behind ``eval.json``: held-out perplexities and sample quality of both models.

- Held-out text: AR perplexity (exact) and the MLM's perplexity bound (Monte-Carlo masked-diffusion ELBO)
  on the same blocks and tokens, for each corpus given.
- Samples: ``n_prompts`` prompts = the first ``prefix_len`` tokens of held-out blocks; the rest of each block
  is the real continuation. Diffusion at several step counts and policies, AR with the same sampling knobs;
  generative perplexity under a judge, unigram entropy and distinct-2, next to the real continuations'.
"""

from __future__ import annotations

import platform
import time

import torch

from . import metrics
from .canvas import Canvas
from .sampler import generate_ar, generate_diffusion


def spread_blocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` blocks evenly spaced through ``blocks`` (many articles, not the first few)."""
    if n > len(blocks):
        raise ValueError(f"asked for {n} held-out blocks but the text gives {len(blocks)}: lower the count")
    return blocks[torch.linspace(0, len(blocks) - 1, n).round().long()]


def prompt_canvas_from_blocks(blocks: torch.Tensor, prefix_len: int, mask_id: int) -> Canvas:
    ids = blocks.clone()
    ids[:, prefix_len:] = mask_id
    fixed = torch.zeros_like(ids, dtype=torch.bool)
    fixed[:, :prefix_len] = True
    return Canvas(ids, fixed, torch.ones_like(ids))


def heldout_scores(mlm, ar, tokenizer, blocks: torch.Tensor, prefix_len: int, elbo_samples: int, batch_size: int) -> dict:
    out = {"blocks": len(blocks)}
    if ar is not None:
        out["ar"] = metrics.ar_nll(ar, blocks, prefix_len, batch_size)
    if mlm is not None:
        out["mlm_elbo"] = metrics.mlm_elbo(mlm, tokenizer, blocks, prefix_len, elbo_samples, batch_size)
    if ar is not None and mlm is not None:
        out["elbo_ppl_over_ar_ppl"] = round(out["mlm_elbo"]["ppl"] / out["ar"]["ppl"], 4)
    return out


def sample_scores(mlm, ar, tokenizer, prompts: torch.Tensor, judge, prefix_len: int, steps_list, policies,
                  sampling: dict, seed: int = 0, batch_size: int = 64) -> dict:
    """Quality of real continuations, AR samples and diffusion samples for the same prompt blocks."""
    out = {"real": metrics.text_quality(prompts, prefix_len, judge)}
    max_len = prompts.shape[1]

    def in_batches(fn):
        rows, seconds = [], 0.0
        for start in range(0, len(prompts), batch_size):
            trace = fn(prompts[start : start + batch_size])
            rows.append(trace.final)
            seconds += trace.total_time
        return torch.cat(rows), seconds

    if ar is not None:
        seqs, seconds = in_batches(lambda p: generate_ar(ar, tokenizer, p[:, :prefix_len], max_len=max_len, seed=seed, **sampling))
        out["ar"] = metrics.text_quality(seqs, prefix_len, judge) | {"seconds": round(seconds, 3)}
    if mlm is not None:
        out["diffusion"] = {}
        for policy in policies:
            for steps in steps_list:
                canvas_of = lambda p: prompt_canvas_from_blocks(p, prefix_len, tokenizer.mask_token_id)  # noqa: E731
                seqs, seconds = in_batches(lambda p: generate_diffusion(  # noqa: B023
                    mlm, tokenizer, canvas=canvas_of(p), steps=steps, strategy=policy, seed=seed, **sampling))  # noqa: B023
                out["diffusion"][f"{policy}@{steps}"] = metrics.text_quality(seqs, prefix_len, judge) | {
                    "policy": policy, "steps": steps, "seconds": round(seconds, 3)}
    return out


def environment() -> dict:
    import transformers

    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def evaluate(mlm, ar, tokenizer, heldout: dict[str, torch.Tensor], prompt_blocks: torch.Tensor, judge=None,
             judge_name: str = "", prefix_len: int = 16, steps_list=(10, 32, 64, 128), policies=("seed-remask",),
             elbo_samples: int = 8, sampling: dict | None = None, batch_size: int = 16, seed: int = 0) -> dict:
    """Everything ``eval.json`` holds. ``heldout``: name -> blocks ``[N, L]``."""
    sampling = sampling or {"temperature": 1.0, "top_k": 50, "top_p": 0.95}
    start = time.time()
    result = {"environment": environment(), "prefix_len": prefix_len,
              "heldout": {name: heldout_scores(mlm, ar, tokenizer, blocks, prefix_len, elbo_samples, batch_size)
                          for name, blocks in heldout.items()},
              "samples": {"prompts": len(prompt_blocks), "judge": judge_name, "sampling": sampling,
                          **sample_scores(mlm, ar, tokenizer, prompt_blocks, judge, prefix_len, steps_list, policies,
                                          sampling, seed)}}
    result["seconds"] = round(time.time() - start, 1)
    return result
