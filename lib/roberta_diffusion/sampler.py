"""The diffusion sampler (one loop, many policies) and the autoregressive baseline; both return a Trace.

Diffusion step: one forward pass -> sample a token for every candidate position -> commit some of them
(which ones: the policy; how many: the schedule) -> the rest stay ``<mask>``. Policies:

- ``seed-remask``: the seed's decoder. Resample every generated position, then re-mask a random share
  that falls with the schedule ((N-1)/N, ..., 1/N, 0 for ``linear``).
- ``random`` (MDLM ancestral), ``confidence`` (MaskGIT/LLaDA), ``margin`` (top1 - top2), ``entropy``
  (lowest first): commit the scheduled number per step, best-scored first.
- ``threshold``: commit every position whose probability is >= ``threshold``, at least the best one;
  a block's last step commits all that is left, and the loop stops early once nothing is masked.

``block_size`` fills the canvas block by block (semi-autoregressive, as in LLaDA), splitting the steps
evenly between blocks.
"""

from __future__ import annotations

import time

import torch

from .autoregressive import generate_ar  # re-exported: one import for both samplers
from .canvas import Canvas, prompt_canvas
from .models import is_masked_lm, masked_lm_logits, max_canvas_len
from .sampling import (
    SCHEDULES,
    check_sampling_args,
    chosen_probability,
    make_generator,
    policy_scores,
    reveal_counts,
    sample_tokens,
    still_masked_fraction,
    sync,
    top_count_mask,
)
from .trace import Trace

STRATEGIES = ("seed-remask", "random", "confidence", "margin", "entropy", "threshold")


def check_diffusion_model(model, tokenizer) -> None:
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    if not is_masked_lm(model):
        raise ValueError(f"{type(model).__name__} is not a masked LM: pass e.g. RobertaForMaskedLM (a causal LM goes to `ar`)")


def _check_args(steps, strategy, schedule, temperature, top_k, top_p, block_size, threshold):
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (or None for the whole canvas)")
    if block_size is not None and strategy == "seed-remask":
        raise ValueError("seed-remask resamples the whole canvas each step: drop block_size or pick another strategy")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1]")
    check_sampling_args(temperature, top_k, top_p)


def _block_ids(free: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """``[B, L]`` block index of each free position (-1 elsewhere), counting free positions left to right."""
    if block_size is None:
        return torch.where(free, 0, -1)
    order = free.long().cumsum(dim=1) - 1
    return torch.where(free, order // block_size, -1)


@torch.no_grad()
def generate_diffusion(
    model,
    tokenizer,
    prompts: str | list[str] | None = None,
    *,
    canvas: Canvas | None = None,
    steps: int = 10,
    strategy: str = "seed-remask",
    schedule: str = "linear",
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 0.95,
    prefix_len: int = 16,
    max_len: int = 256,
    block_size: int | None = None,
    threshold: float = 0.9,
    seed: int | None = 0,
    on_step=None,
) -> Trace:
    """Generate by iterative unmasking. Give ``prompts`` (seed layout) or a ready ``canvas`` (infilling).

    ``on_step(step, ids_cpu [B, L])`` is called after every step (live terminal progress).
    """
    check_diffusion_model(model, tokenizer)
    _check_args(steps, strategy, schedule, temperature, top_k, top_p, block_size, threshold)
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        if max_len > max_canvas_len(model):
            raise ValueError(f"max_len={max_len} is longer than the model's {max_canvas_len(model)} positions: lower --max-len")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, max_len)
    elif canvas.ids.shape[1] > max_canvas_len(model):
        raise ValueError(f"the canvas is {canvas.ids.shape[1]} tokens, longer than the model's {max_canvas_len(model)}")
    device = next(model.parameters()).device
    canvas = canvas.to(device)
    mask_id = tokenizer.mask_token_id
    generator = make_generator(seed, device)

    x = canvas.ids.clone()
    free = ~canvas.fixed & canvas.attention.bool()
    x[free] = mask_id
    blocks = _block_ids(free, block_size)
    n_blocks = int(blocks.max().item()) + 1 if free.any() else 0
    if n_blocks > steps:
        raise ValueError(f"{n_blocks} blocks of {block_size} need at least {n_blocks} steps: raise steps or block_size")
    steps_per_block = [steps // n_blocks + (i < steps % n_blocks) for i in range(n_blocks)] if n_blocks else []
    confidence = torch.full(x.shape, float("nan"), device=device)
    history, step_times = [x.cpu()], []

    for block, block_steps in enumerate(steps_per_block):
        in_block = blocks == block
        counts = reveal_counts((in_block & (x == mask_id)).sum(dim=1), block_steps, schedule)
        for j in range(block_steps):
            start = time.perf_counter()
            masked = (x == mask_id) & in_block
            if strategy == "threshold" and not masked.any():
                break
            rows = in_block if strategy == "seed-remask" else masked
            logits = masked_lm_logits(model, x, canvas.attention, rows)  # [N, V]: only where a token is drawn
            # never draw <mask> itself: "== mask_id" is how the loop tells masked from committed, so a drawn
            # <mask> would be re-generated (breaking the per-step counts) or survive the last step
            logits[..., mask_id] = float("-inf")
            tokens, probs = sample_tokens(logits, temperature, top_k, top_p, generator)
            drawn = torch.zeros_like(x).masked_scatter(rows, tokens)
            chosen_conf = torch.zeros(x.shape, device=device).masked_scatter(rows, chosen_probability(probs, tokens))
            if strategy == "seed-remask":
                confidence = torch.where(rows, chosen_conf, confidence)
                x = _seed_remask_step(x, drawn, rows, schedule, (j + 1) / block_steps, mask_id, generator)
            else:
                score = torch.full(x.shape, float("-inf"), device=device).masked_scatter(
                    rows, policy_scores(strategy, probs, tokens, generator).float())
                if j == block_steps - 1:
                    commit = masked
                elif strategy == "threshold":
                    commit = masked & (score >= threshold)
                    commit |= top_count_mask(score, masked, (masked.any(dim=1)).long())
                else:
                    commit = top_count_mask(score, masked, counts[j])
                confidence = torch.where(commit, chosen_conf, confidence)
                x = torch.where(commit, drawn, x)
            sync(device)
            step_times.append(time.perf_counter() - start)
            history.append(x.cpu())
            if on_step is not None:
                on_step(len(history) - 1, history[-1])

    settings = dict(steps=steps, strategy=strategy, schedule=schedule, temperature=temperature, top_k=top_k,
                    top_p=top_p, prefix_len=prefix_len, max_len=int(x.shape[1]), block_size=block_size,
                    threshold=threshold, seed=seed)
    return Trace.from_history(history, canvas, confidence, step_times, mask_id, tokenizer, "diffusion", settings)


def _seed_remask_step(x, drawn, rows, schedule, progress, mask_id, generator):
    """Write every drawn token, then re-mask the scheduled share of the free positions at random."""
    n_free = rows.sum(dim=1)
    n_remask = torch.round(n_free.double() * still_masked_fraction(schedule, progress)).long()
    noise = torch.rand(x.shape, device=x.device, generator=generator)
    remask = top_count_mask(noise, rows, n_remask)
    return torch.where(rows, drawn, x).masked_fill(remask, mask_id)



__all__ = ["generate_diffusion", "generate_ar", "STRATEGIES", "SCHEDULES", "Trace"]
