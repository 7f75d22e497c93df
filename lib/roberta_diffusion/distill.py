"""Self-distillation through time (SDTT, Deschenaux and Gulcehre 2024): a student that takes in one step what its
teacher takes in two, so a round halves the steps a sampler needs; rounds repeat with the student as the next teacher.

A training row: a clean block, a time ``t`` on the student's grid ``{1/N, ..., 1}`` and ``x_t`` (each position past the
prompt masked with probability ``t``). The student's one ancestral step goes from ``t`` to ``t - 1/N``; the teacher's
two go through ``t - 1/(2N)``. Of a masked position that one of the two steps reveals, half the chance falls on each
(``1/(2Nt)`` each), so the token the teacher would write there is drawn from ``(p1 + p2) / 2``: ``p1`` its prediction
at ``x_t``, ``p2`` its prediction after its first step revealed some other positions (drawn from ``p1``). The student,
reading ``x_t`` alone, is trained to match that mixture (KL) at the masked positions the first step left masked.
Positions the first step revealed are left out of the loss: their ``p2`` cannot be read (they are no longer masked),
and given that a position stays masked, the others' reveals do not depend on it, so one draw of them is an unbiased
sample of the mixture's second half (the KL is linear in its target).
"""

from __future__ import annotations

import functools

import torch

from .models import load_mlm


def distill_batch(ids: torch.Tensor, prefix_len: int, steps: int, mask_id: int, seed: int, device,
                  rows=slice(None)) -> dict:
    """The noise of one training step, drawn for every row (``seed``) and then cut to ``rows``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    ids = ids.to(device, non_blocking=True)
    batch, length = ids.shape
    t = torch.randint(1, steps + 1, (batch, 1), generator=generator, device=device).float() / steps
    past_prompt = torch.arange(length, device=device) >= prefix_len
    masked = (torch.rand(batch, length, generator=generator, device=device) < t) & past_prompt
    out = {"noisy": ids.masked_fill(masked, mask_id), "masked": masked, "t": t,
           "reveal": torch.rand(batch, length, generator=generator, device=device),
           "draw": torch.rand(batch, length, generator=generator, device=device, dtype=torch.float64)}
    return {k: v[rows] for k, v in out.items()}


def _probs(model, ids: torch.Tensor, mask_id: int) -> torch.Tensor:
    logits = model(input_ids=ids).logits.float()
    logits[..., mask_id] = float("-inf")  # the sampler never draws <mask>: neither does the target
    return logits.softmax(dim=-1)


@torch.no_grad()
def two_step_target(teacher, batch: dict, steps: int, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(target [B, L, V], scored [B, L])``: what the teacher's two half-steps from ``batch["noisy"]`` write at each
    position (module docstring), and where the loss reads it: the masked positions its first step left masked."""
    x, masked, t = batch["noisy"], batch["masked"], batch["t"]
    half = 1.0 / (2 * steps)
    p1 = _probs(teacher, x, mask_id)
    revealed = masked & (batch["reveal"] < half / t)  # the ancestral step from t to t - 1/(2N)
    cdf = p1[revealed].double().cumsum(dim=-1)  # inverse-CDF draws, only where something is revealed
    drawn = torch.searchsorted(cdf, batch["draw"][revealed].unsqueeze(-1) * cdf[:, -1:]).clamp(max=cdf.shape[-1] - 1)
    p2 = _probs(teacher, x.masked_scatter(revealed, drawn.squeeze(-1)), mask_id)
    return 0.5 * (p1 + p2), masked & ~revealed


def distill_loss(student, batch: dict, teacher, steps: int, mask_id: int) -> torch.Tensor:
    """KL(teacher's two steps || student's one step), averaged over the positions it is read at."""
    target, scored = two_step_target(teacher, batch, steps, mask_id)
    logits = student(input_ids=batch["noisy"]).logits.float()
    logits[..., mask_id] = float("-inf")
    log_q = logits.log_softmax(dim=-1).clamp(min=-1e4)  # 0 x log 0 = 0 where the target rules a token out
    kl = (torch.xlogy(target, target) - target * log_q).sum(dim=-1)  # [B, L]
    return (kl * scored).sum() / scored.sum().clamp(min=1)


def distillation(teacher_path: str, steps: int, mask_id: int, device):
    """The loss of a distillation run: the teacher loaded once, frozen, on ``device``."""
    if steps < 1:
        raise ValueError(f"distill_steps={steps}: give the student's number of steps (>= 1), e.g. 32 for a teacher "
                         "run at 64")
    teacher = load_mlm(teacher_path, device=device).eval().requires_grad_(False)
    return functools.partial(distill_loss, teacher=teacher, steps=steps, mask_id=mask_id)
