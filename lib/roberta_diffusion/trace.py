"""Trace: everything a generation did, step by step. Diffusion and autoregressive runs return the same
shape, so every viewer and metric works on both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .paths import atomic_path


@dataclass
class Trace:
    ids: torch.Tensor  # [S+1, B, L] canvas after each step (step 0 = the start), on CPU
    pinned: torch.Tensor  # [B, L] bool: positions no step may change (prompt / infill context / padding)
    attention: torch.Tensor  # [B, L] 0 on padding
    confidence: torch.Tensor  # [B, L] probability of each generated token when it was drawn (NaN if pinned)
    step_times: list[float]  # seconds per step
    mask_token_id: int
    kind: str = "diffusion"  # or "ar"
    forward_passes: int = 0
    settings: dict = field(default_factory=dict)
    # [B, L] log-probability of each generated token under the distribution it was drawn from (tempered, then
    # top-k / top-p), NaN if pinned: the proposal of exact importance weights (guided.py); diffusion only
    proposal: torch.Tensor | None = None
    # texts are decoded on first access (`texts`, `completions`), not by the sampler: decoding a batch's strings
    # costs milliseconds (about 8 ms for 64 x 256 tokens on a 2-core CPU), as much as a graph-replayed 10-step
    # loop at B=1, and a caller that scores token ids never needs them
    tokenizer: object = field(default=None, repr=False, compare=False)
    _texts: list[str] | None = field(default=None, repr=False)
    _completions: list[str] | None = field(default=None, repr=False)

    @property
    def texts(self) -> list[str]:
        """Final text per sample, prompt included (padding and special tokens dropped)."""
        if self._texts is None:
            self._texts = self._decode(self.attention.bool())
        return self._texts

    @property
    def completions(self) -> list[str]:
        """The generated part of each sample only."""
        if self._completions is None:
            self._completions = self._decode(self.generated)
        return self._completions

    def _decode(self, keep: torch.Tensor) -> list[str]:
        if self.tokenizer is None:
            raise ValueError("this Trace has no tokenizer to decode its texts: build it with Trace.from_history")
        return decode_rows(self.tokenizer, [row[k].tolist() for row, k in zip(self.final, keep, strict=True)])

    @property
    def steps(self) -> int:
        return self.ids.shape[0] - 1

    @property
    def final(self) -> torch.Tensor:
        return self.ids[-1]

    @property
    def generated(self) -> torch.Tensor:
        """``[B, L]`` bool: positions the sampler filled."""
        return ~self.pinned & self.attention.bool()

    @property
    def committed_at(self) -> torch.Tensor:
        """``[B, L]`` the first step from which each position holds its final token (0 if pinned)."""
        differs = self.ids != self.ids[-1:]  # [S+1, B, L]
        steps = torch.arange(self.steps + 1).view(-1, 1, 1).expand_as(differs)
        last_differs = torch.where(differs, steps, torch.full_like(steps, -1)).amax(dim=0)
        return (last_differs + 1).masked_fill(self.pinned, 0)

    @property
    def total_time(self) -> float:
        return float(sum(self.step_times))

    @property
    def new_tokens(self) -> int:
        return int(self.generated.sum())

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.total_time if self.total_time > 0 else float("inf")

    def masked_share(self) -> torch.Tensor:
        """``[S+1]`` share of generated positions still masked after each step (``masked_share``)."""
        return masked_share(self.ids, self.generated, self.mask_token_id)

    def save(self, path) -> Path:

        # the texts are stored decoded, the tokenizer is not stored
        state = {**self.__dict__, "_texts": self.texts, "_completions": self.completions, "tokenizer": None}
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return Path(path)

    @classmethod
    def load(cls, path) -> Trace:
        state = torch.load(path, weights_only=False)
        for old, new in (("texts", "_texts"), ("completions", "_completions"), ("fixed", "pinned")):  # older names
            if old in state:
                state[new] = state.pop(old)
        return cls(**state)

    @classmethod
    def from_history(cls, history: list, canvas, confidence, step_times, mask_id, tokenizer, kind, settings,
                     proposal=None) -> Trace:
        """Assemble a Trace from a sampler's per-step canvases ``history`` (``[B, L]`` on CPU each)."""
        # copies: the texts are decoded later from these, so a caller reusing its canvas must not change them
        return cls(ids=torch.stack(history), pinned=canvas.pinned.to("cpu", copy=True),
                   attention=canvas.attention.to("cpu", copy=True),
                   confidence=confidence.float().cpu(), step_times=step_times, mask_token_id=mask_id, kind=kind,
                   forward_passes=len(step_times), settings=settings, tokenizer=tokenizer,
                   proposal=None if proposal is None else proposal.float().cpu())

    def described_steps(self) -> str:
        """"16 steps", or "16 steps + 8 correction rounds (32 passes)" (a correction round adds two frames)."""
        rounds = self.settings.get("corrections", 0)
        if not rounds:
            return f"{self.steps} steps"
        return f"{self.steps - 2 * rounds} steps + {rounds} correction rounds ({self.steps} passes)"

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "steps": self.steps,
            "batch": int(self.ids.shape[1]),
            "new_tokens": self.new_tokens,
            "seconds": round(self.total_time, 4),
            "tokens_per_second": round(self.tokens_per_second, 1),
            "forward_passes": self.forward_passes,
            **{k: v for k, v in self.settings.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }


def decode_rows(tokenizer, rows: list[list[int]]) -> list[str]:
    """``tokenizer.decode(row, skip_special_tokens=True)`` for every row, in one call to the Rust tokenizer where
    that gives the same strings (a fast tokenizer that cleans up no spaces), instead of one Python call per row:
    decoding is part of every sampler call's fixed cost, which a graph-replayed loop of a few ms makes visible."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return [tokenizer.decode(row, skip_special_tokens=True) for row in rows]
    return backend.decode_batch(rows, skip_special_tokens=True)


def masked_share(ids: torch.Tensor, generated: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The one definition of "masked share" (GIFs, the slider, the terminal): of the positions the sampler
    fills (``generated``, ``[B, L]`` or ``[L]``: not pinned, not padding), the share still masked in ``ids``
    (``[..., B, L]`` or ``[..., L]``), over the trailing dimensions that ``generated`` covers."""
    masked = (ids == mask_id) & generated
    dims = tuple(range(-generated.dim(), 0))
    return masked.sum(dim=dims).double() / generated.sum().clamp(min=1)
