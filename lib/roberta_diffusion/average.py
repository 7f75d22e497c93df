"""The averaged weights a run evaluates and exports: an exponential moving average kept beside the model."""

from __future__ import annotations

import contextlib

import torch


class WeightAverage:
    """An exponential moving average of the weights (float32), warmed up as ``min(decay, (1 + k) / (10 + k))``."""

    def __init__(self, model, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay={decay}: use a value in (0, 1), e.g. 0.999, or 0 for none")
        self.decay = decay
        self.average = [p.detach().float().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.average, [p.detach().float() for p in model.parameters()], 1 - decay)

    @contextlib.contextmanager
    def swapped_in(self, model):
        params = list(model.parameters())
        kept = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self.average, strict=True):
                p.copy_(a)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, k in zip(params, kept, strict=True):
                    p.copy_(k)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict) -> None:
        for a, saved in zip(self.average, state["average"], strict=True):
            a.copy_(saved)
