"""Token sampling and the reveal schedule, vectorised over every row (batch x position) at once.

Sampling is inverse-CDF in float64 over the candidate set that top-k / top-p leave: exact at any
temperature (a low-precision Gumbel trick would silently sharpen the distribution), and with top-k it
only ever sorts k entries per row.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine")


def candidate_set(scaled: torch.Tensor, top_k: int, top_p: float):
    """The tokens top-k then top-p keep. ``scaled [N, V]`` -> ``(values [N, K], ids [N, K])``.

    Values are sorted descending; dropped entries within the K columns are ``-inf``. ``ids`` is None
    when nothing is filtered (the full vocabulary, unsorted).
    """
    vocab = scaled.shape[-1]
    if top_k and top_k < vocab:
        values, ids = scaled.topk(top_k, dim=-1)
    elif top_p < 1:
        values, ids = scaled.sort(dim=-1, descending=True)
    else:
        return scaled, None
    if top_p < 1:
        probs = values.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        values = values.masked_fill(mass_before >= top_p, float("-inf"))  # the first token always survives
    return values, ids


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits ``[..., V]`` with everything top-k/top-p drop set to ``-inf`` (same shape)."""
    flat = logits.reshape(-1, logits.shape[-1])
    values, ids = candidate_set(flat, top_k, top_p)
    if ids is None:
        return logits.clone()
    out = torch.full_like(flat, float("-inf")).scatter(-1, ids, values)
    return out.view(logits.shape)


def sample_tokens(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, generator=None, uniforms=None):
    """Draw one token per row. ``logits [N, V]`` -> ``tokens [N]``, ``scaled [N, V]`` (tempered, unfiltered, fp32),
    ``drawn [N]`` (float64: the probability the token had under the distribution it was drawn from, tempered and
    filtered: what exact importance weights need, ``guided.py``).

    The draw is inverse-CDF: one uniform per row, from ``uniforms [N]`` (float64) when given, else from
    ``generator``. Drawing the uniforms up front is what lets a CUDA graph replay the loop with no RNG
    inside it and still give the same tokens as the eager loop. ``scaled`` is what the decoding policies
    read their confidences from (``chosen_probability``, ``policies.py``); no full softmax is kept.
    """
    scaled = logits.float() / temperature
    values, ids = candidate_set(scaled, top_k, top_p)
    weights = values.double().softmax(dim=-1)
    cdf = weights.cumsum(dim=-1)
    if uniforms is None:
        uniforms = torch.rand(cdf.shape[0], dtype=torch.float64, device=cdf.device, generator=generator)
    choice = torch.searchsorted(cdf, uniforms.view(-1, 1) * cdf[:, -1:]).clamp(max=cdf.shape[-1] - 1)
    # guard against landing on a zero-weight column at the top edge of the cdf
    choice = torch.minimum(choice, (weights > 0).sum(dim=-1, keepdim=True) - 1) if ids is not None else choice
    tokens = (ids.gather(-1, choice) if ids is not None else choice).squeeze(-1)
    return tokens, scaled, weights.gather(-1, choice).squeeze(-1)


def chosen_probability(scaled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``scaled [N, V]`` (tempered logits), ``tokens [N]`` -> the probability each drawn token had, ``[N]``."""
    return (scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - scaled.logsumexp(dim=-1)).exp()


def still_masked_fraction(schedule: str, progress: float) -> float:
    """Share of a block still masked after ``progress`` in [0, 1] of its steps."""
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return math.cos(math.pi / 2 * progress)
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def still_masked_counts(n_masked: torch.Tensor, steps: int, schedule: str) -> torch.Tensor:
    """``n_masked [B]`` -> ``[steps + 1, B]``: how many positions of each row are still masked after ``s`` steps
    (``s`` = 0 … steps), from ``n_masked`` down to 0, never rising."""
    fractions = torch.tensor([still_masked_fraction(schedule, s / steps) for s in range(steps + 1)],
                             dtype=torch.float64, device=n_masked.device)
    left = torch.round(n_masked.double().unsqueeze(0) * fractions.unsqueeze(1)).long()
    left[-1] = 0
    left[0] = n_masked
    return torch.minimum(left, left[0:1])


def reveal_counts(n_masked: torch.Tensor, steps: int, schedule: str) -> torch.Tensor:
    """How many positions each row commits at each step. ``n_masked [B]`` -> ``[steps, B]``.

    Rows sum to ``n_masked``; the last step takes whatever is left.
    """
    left = still_masked_counts(n_masked, steps, schedule)
    return left[:-1] - left[1:]


def top_count_mask(scores: torch.Tensor, eligible: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: the ``counts[b]`` highest-scoring eligible positions of each row."""
    # an eligible -inf/NaN score must still rank above every ineligible position, or a row gets fewer than
    # counts[b] even when enough positions are eligible
    lowest = torch.finfo(scores.dtype).min
    scores = scores.nan_to_num(nan=lowest, neginf=lowest).masked_fill(~eligible, float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return (rank < counts.unsqueeze(1)) & eligible


def make_generator(seed: int | None, device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy for this generator only: torch.seed() would reseed the global RNG
    else:
        generator.manual_seed(seed)
    return generator


def sync(device) -> None:
    """Wait for queued GPU work, so that host timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
