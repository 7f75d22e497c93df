"""DiffusionCollator: the training-time noise of a masked diffusion language model.

Each example is a block of token ids ``[L]``. The collator picks a mask ratio, masks that share of the
*maskable* positions (never the pinned ones, never special or pad tokens) with ``<mask>``, and returns labels
equal to the original ids where masked and -100 elsewhere.

Pinned positions: the first ``prefix_len`` of every row; with ``max_prefix_len`` a prompt length drawn per row,
uniform in ``[prefix_len, max_prefix_len]``, so a model sees prompts of any length in that range; with
``span_prob`` a row also pins one random span (length up to ``max_span_len``) after its prompt, so infilling
(text on both sides of the gap) is in distribution too.

Ratio modes
- ``"levels"`` (the seed's): one ratio per batch, drawn uniformly from ``{1/N, 2/N, ..., 1}``.
- ``"continuous"`` (MDLM's): one ``t ~ U(eps, 1)`` per sample. With ``weighting="elbo"`` each sample's
  loss is weighted by ``1/t``: the masked-diffusion ELBO (MDLM, eq. 10) for the linear schedule.
- ``"stratified"``: ``"continuous"`` with the batch's ratios spread evenly, ``t_i = eps + (1 - eps) * ((u + i/B)
  mod 1)`` (MDLM's low-discrepancy sampler): each ``t_i`` is still uniform, the batch mean varies less, and the
  number of masked tokens of a batch has a fixed bound (``max_masked``), so a loss can use a fixed shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .defaults import PROMPT_LEN

RATIO_MODES = ("levels", "continuous", "stratified")
WEIGHTINGS = ("none", "elbo")


class DiffusionCollator:
    def __init__(
        self,
        tokenizer,
        prefix_len: int = PROMPT_LEN,
        mode: str = "levels",
        n_levels: int = 10,
        eps: float = 1e-3,
        weighting: str = "none",
        generator: torch.Generator | None = None,
        max_prefix_len: int | None = None,
        span_prob: float = 0.0,
        max_span_len: int = 32,
    ):
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token: diffusion needs one (e.g. RoBERTa's <mask>)")
        if mode not in RATIO_MODES:
            raise ValueError(f"unknown ratio mode {mode!r}: choose one of {', '.join(RATIO_MODES)}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
        if prefix_len < 0 or n_levels < 1 or not 0 < eps < 1:
            raise ValueError(f"need prefix_len >= 0, n_levels >= 1, 0 < eps < 1 (got {prefix_len}, {n_levels}, {eps})")
        if max_prefix_len is not None and max_prefix_len < prefix_len:
            raise ValueError(f"max_prefix_len={max_prefix_len} is below prefix_len={prefix_len}: the prompt length is "
                             "drawn from [prefix_len, max_prefix_len]; raise it or leave it None (a fixed prefix)")
        if not 0 <= span_prob <= 1 or max_span_len < 1:
            raise ValueError(f"need 0 <= span_prob <= 1 and max_span_len >= 1 (got {span_prob}, {max_span_len})")
        self.tokenizer = tokenizer
        self.prefix_len = prefix_len
        self.max_prefix_len = prefix_len if max_prefix_len is None else max_prefix_len
        self.span_prob = span_prob
        self.max_span_len = max_span_len
        self.mode = mode
        self.n_levels = n_levels
        self.eps = eps
        self.weighting = weighting
        self.generator = generator
        self.mask_id = tokenizer.mask_token_id
        self.pad_id = tokenizer.pad_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)

    @property
    def noise_device(self) -> torch.device:
        """Where the noise is drawn: the generator's device (a CUDA generator keeps the batch off the host)."""
        return self.generator.device if self.generator is not None else torch.device("cpu")

    # -- the pieces, each testable on its own -------------------------------------------------------
    def pinned(self, shape: tuple[int, int]) -> torch.Tensor:
        """``[B, L]`` bool: the prompt of each row (its length drawn in ``[prefix_len, max_prefix_len]``) and, with
        probability ``span_prob``, one span after it. Draws nothing when both are off (the seed's fixed prefix)."""
        b, length = shape
        g, device = self.generator, self.noise_device
        position = torch.arange(length, device=device)
        if self.max_prefix_len == self.prefix_len:
            prompt = torch.full((b, 1), self.prefix_len, device=device)
        else:
            prompt = torch.randint(self.prefix_len, self.max_prefix_len + 1, (b, 1), generator=g, device=device)
        pinned = position < prompt
        if self.span_prob > 0:
            has_span = torch.rand(b, 1, generator=g, device=device) < self.span_prob
            span_len = torch.randint(1, self.max_span_len + 1, (b, 1), generator=g, device=device)
            start = prompt + (torch.rand(b, 1, generator=g, device=device) * (length - prompt).clamp(min=0)).long()
            pinned |= has_span & (position >= start) & (position < start + span_len)
        return pinned

    def maskable(self, input_ids: torch.Tensor, pinned: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L]`` bool: positions the noise may touch (not pinned, not special, not pad). Without ``pinned``, the
        fixed prefix of ``prefix_len`` tokens is the pinned part."""
        allowed = ~torch.isin(input_ids, self.special_ids.to(input_ids.device))
        if pinned is None:
            allowed[:, : self.prefix_len] = False
        else:
            allowed &= ~pinned.to(allowed.device)
        return allowed

    def sample_ratios(self, batch_size: int) -> torch.Tensor:
        """``[B]`` mask ratios in (0, 1] for one batch, by the collator's mode."""
        g, device = self.generator, self.noise_device
        if self.mode == "levels":
            level = torch.randint(1, self.n_levels + 1, (1,), generator=g, device=device).item()
            return torch.full((batch_size,), level / self.n_levels, device=device)
        if self.mode == "stratified":
            u = torch.rand(1, generator=g, device=device)
            return self.eps + (1 - self.eps) * torch.remainder(u + torch.arange(batch_size, device=device) / batch_size, 1.0)
        return self.eps + (1 - self.eps) * torch.rand(batch_size, generator=g, device=device)

    def max_masked(self, batch_size: int, block_len: int) -> int:
        """In ``"stratified"`` mode, a bound on the masked tokens of a batch of ``[batch_size, block_len]`` blocks.

        The ratios are ``eps + (1 - eps) (k + v) / B`` for k = 0..B-1 and one v in [0, 1), so they sum to less than
        ``(B + 1) / 2 + eps (B - 1) / 2``; a row masks ``round(t n)`` of its ``n <= block_len - prefix_len`` maskable
        positions (``prefix_len`` is the shortest prompt drawn), at least 1: at most ``t n + 1``. Any every-k-th
        subset of a stratified batch is stratified too, so a process of k takes this bound for ``batch_size / k``.
        """
        if self.mode != "stratified":
            raise ValueError(f"max_masked needs ratio mode 'stratified' (this collator's is {self.mode!r})")
        n = max(0, block_len - self.prefix_len)
        return min(batch_size * n, math.ceil(n * ((batch_size + 1) / 2 + self.eps * (batch_size - 1) / 2)) + batch_size)

    def mask(self, input_ids: torch.Tensor, ratios: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L]`` bool: exactly ``max(1, round(ratio * n_maskable))`` maskable positions per row.

        An exact count (not a coin per token) makes every batch's noise level the one that was drawn and
        guarantees a loss term in every row that has anything maskable.
        """
        allowed = self.maskable(input_ids) if allowed is None else allowed
        n_allowed = allowed.sum(dim=1)
        n_mask = torch.clamp(torch.round(ratios.to(n_allowed.device) * n_allowed), min=1)
        n_mask = torch.minimum(n_mask, n_allowed)
        scores = torch.rand(input_ids.shape, generator=self.generator, device=self.noise_device).to(input_ids.device)
        scores = scores.masked_fill(~allowed, 2.0)  # never chosen: uniform scores are < 1
        rank = scores.argsort(dim=1).argsort(dim=1)
        return rank < n_mask.unsqueeze(1)

    def audit(self, input_ids: torch.Tensor, ratios=(0.1, 0.5, 0.9, 1.0)) -> dict[str, int]:
        """How often the noise broke its rules on ``input_ids [B, L]`` at each ratio (every count should be 0): a
        pinned prefix or special token masked, a row with the wrong number of masks, unmasked text changed, a target
        that is not ``<mask>``, padding attended. Notebook 01 shows it; the tests hold it at 0."""
        special = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        n_maskable = self.maskable(input_ids).sum(dim=1)
        report = {"prefix masked": 0, "special masked": 0, "rows with a wrong count": 0}
        for ratio in ratios:
            masked = self.mask(input_ids, torch.full((len(input_ids),), float(ratio)))
            report["prefix masked"] += int(masked[:, : self.prefix_len].sum())
            report["special masked"] += int(masked[special].sum())
            expected = torch.clamp(torch.round(ratio * n_maskable), min=1).minimum(n_maskable)
            report["rows with a wrong count"] += int((masked.sum(dim=1) != expected).sum())
        batch = self(input_ids)
        kept = batch["labels"] == -100
        report["unmasked text changed"] = int((batch["input_ids"][kept] != input_ids[kept]).sum())
        report["targets not <mask>"] = int((batch["input_ids"][~kept] != self.mask_id).sum())
        if self.pad_id is not None:
            report["padding attended"] = int(batch["attention_mask"][input_ids == self.pad_id].sum())
        return report

    # -- the collator protocol ----------------------------------------------------------------------
    def __call__(self, examples) -> dict[str, torch.Tensor]:
        input_ids = _stack(examples)
        ratios = self.sample_ratios(input_ids.shape[0]).to(input_ids.device)
        allowed = self.maskable(input_ids, self.pinned(tuple(input_ids.shape)))  # no draws for a fixed prefix
        masked = self.mask(input_ids, ratios, allowed)
        labels = torch.where(masked, input_ids, torch.full_like(input_ids, -100))
        noisy = input_ids.masked_fill(masked, self.mask_id)
        attention_mask = (input_ids != self.pad_id).long() if self.pad_id is not None else torch.ones_like(input_ids)
        batch = {"input_ids": noisy, "attention_mask": attention_mask, "labels": labels, "mask_ratio": ratios}
        if self.weighting == "elbo":
            # 1/t, and 1/n so that sum_b-mean of the weighted sums is a per-token negative ELBO
            batch["loss_weight"] = 1.0 / (ratios * allowed.sum(dim=1).clamp(min=1))
        return batch


def _stack(examples) -> torch.Tensor:
    if isinstance(examples, torch.Tensor):
        return examples.long()
    if isinstance(examples, Sequence) and examples and isinstance(examples[0], dict):
        return torch.stack([torch.as_tensor(e["input_ids"]) for e in examples]).long()
    return torch.stack([torch.as_tensor(e) for e in examples]).long()


def diffusion_loss(logits: torch.Tensor, labels: torch.Tensor, loss_weight: torch.Tensor | None = None):
    """Cross-entropy on masked positions. ``logits [B, L, V]``, ``labels [B, L]``, ``loss_weight [B]``.

    Without weights: the mean over all masked tokens of the batch (the seed's loss). With the collator's
    ELBO weights ``1/(t_b n_b)``: the batch mean of ``sum_masked CE / (t_b n_b)``, an unbiased estimate of
    the per-token negative ELBO (MDLM's continuous-time bound for the linear schedule).
    """
    ce = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="none"
    ).view(labels.shape)
    return reduce_masked_ce(ce, labels, loss_weight)


def reduce_masked_ce(ce: torch.Tensor, labels: torch.Tensor, loss_weight: torch.Tensor | None = None):
    """``diffusion_loss`` from the per-token cross-entropy ``ce [B, L]`` (0 where ``labels`` is -100)."""
    if loss_weight is None:
        return ce.sum() / (labels != -100).sum().clamp(min=1)
    return (ce.sum(dim=1) * loss_weight.to(ce.dtype)).mean()
