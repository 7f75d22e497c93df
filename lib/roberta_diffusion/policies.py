"""The unmasking policies, one small function each, registered once in ``POLICIES``.

A policy answers one question per step: of the masked positions, which to commit first. Its ``score`` reads what
the step drew (``Drawn``) and returns a priority per candidate row, higher first; the schedule says how many are
committed. Three flags say how a policy deviates from "commit the scheduled count, keep it for good":

- ``planned``: the order reads the plan's noise alone, never the model, so every step's positions are known before
  the loop and a step computes logits only there (``random``).
- ``remask``: how committed tokens go back to ``<mask>``: ``"resample"`` redraws every free position and re-masks a
  random share (the original project's decoder); ``"lowest"`` re-masks the least confident committed tokens, so a later step
  redraws them with more context (ReMDM's inference-time revision). Unlike ReMDM, which unmasks extra tokens in the
  same step, the re-masked ones are committed again by the next step, so the masked share runs above the schedule by
  what was just re-masked, and a block's last step commits those on top of its own share.
- ``adaptive``: commits every position above a bar, so a run may end early (``threshold``; no CUDA graph).

A policy with a setting of its own names it as ``knob`` (a ``Sampling`` field, refused under any other policy) with
the value a view switching to the policy starts from (``knob_default``).

CLI choices and knob flags, the generation panel, benchmarks and parametrised tests read ``POLICIES``; the readable
spec of every policy is ``reference.py``. Adding a policy is one function here, one registry line, and its branch
there (and a ``Sampling`` field if it brings a knob).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Drawn:
    """What a step drew at its ``N`` candidate rows (batch x candidate position), for the scores to read.

    scaled [N, V]     tempered logits (unfiltered)
    tokens [N]        the drawn tokens
    chosen [N]        the probability each drawn token had (``chosen_probability``)
    index [B, F]      the candidate positions (each row's free positions, in order; ``N = B * F``)
    step_noise [B, L] this step's uniform noise; ``order_key [B, L]``: the run's fixed order key
                      (``plan.random_order_key``)
    salience [V]      ``-log`` of each token's corpus frequency (``calibrated`` only; empty otherwise)
    position_decay    ``calibrated``'s left-to-right pull (weight ``exp(-decay * offset)``)
    order_temperature ``sampled``'s temperature on the order: positions drawn with probability ~ p ** (1 / it)

    ``noise``, ``order`` and ``offset`` are those read at the candidates, gathered only when a score asks: the step
    runs once per forward pass, and most policies read none of them.
    """

    scaled: torch.Tensor
    tokens: torch.Tensor
    chosen: torch.Tensor
    index: torch.Tensor
    step_noise: torch.Tensor
    order_key: torch.Tensor
    salience: torch.Tensor
    position_decay: float
    order_temperature: float

    @property
    def noise(self) -> torch.Tensor:
        return self.step_noise.gather(1, self.index).view(-1)

    @property
    def order(self) -> torch.Tensor:
        return self.order_key.gather(1, self.index).view(-1)

    @property
    def offset(self) -> torch.Tensor:
        """Each candidate's distance from its row's first free position (0, 1, ...)."""
        return (self.index - self.index[:, :1]).float().view(-1)


@dataclass(frozen=True)
class Policy:
    name: str
    score: Callable[[Drawn], torch.Tensor]
    summary: str
    planned: bool = False
    remask: str | None = None  # None | "resample" | "lowest"
    adaptive: bool = False
    reads_corpus: bool = False  # needs the tokens' corpus frequencies (``salience``)
    knob: str | None = None  # the ``Sampling`` field only this policy reads
    knob_default: float = 0.0  # where a view switching to this policy sets its knob when none is set
    knob_max: float = 0.0  # the largest value a view offers for the knob

    @property
    def counted(self) -> bool:
        """Commits exactly the scheduled count at every step (the masked share follows the schedule)."""
        return not self.adaptive and self.remask != "lowest"


# the clip on calibrated confidence x salience (PC-Sampler's alpha): past it a confident rare token scores no higher,
# so without a position pull such tokens tie and are taken left to right
SALIENCE_CLIP = 10.0


def random_order(d: Drawn) -> torch.Tensor:
    return d.order


def confidence(d: Drawn) -> torch.Tensor:
    return d.chosen


def margin(d: Drawn) -> torch.Tensor:
    top2 = (d.scaled.topk(2, dim=-1).values - d.scaled.logsumexp(dim=-1, keepdim=True)).exp()
    return top2[:, 0] - top2[:, 1]


def entropy(d: Drawn) -> torch.Tensor:
    probs = d.scaled.softmax(dim=-1)
    # xlogy: 0 log 0 = 0 where a token is ruled out (<mask>, or cut by top-k/top-p); p * log p gave NaN there,
    # every position tied and the policy committed left to right
    return torch.xlogy(probs, probs).sum(dim=-1)  # = -entropy


def fresh_noise(d: Drawn) -> torch.Tensor:
    return d.noise


def calibrated(d: Drawn) -> torch.Tensor:
    """PC-Sampler's score: confidence times the token's surprise in the corpus (clipped), so frequent filler
    ("the", ",", "of") is not committed early everywhere, which is how ``confidence`` builds its loops; times a
    weight that decays with the distance from the row's first free position (a soft left-to-right order)."""
    salience = (d.chosen * d.salience.index_select(0, d.tokens)).clamp(max=SALIENCE_CLIP)
    return torch.exp(-d.position_decay * d.offset) * salience


def sampled(d: Drawn) -> torch.Tensor:
    """Confidence order, drawn instead of sorted: ``log p + T * Gumbel`` ranks positions as a draw without
    replacement with probability ~ ``p ** (1 / T)`` (Gumbel-top-k), ``T = order_temperature``. At 0 it is
    ``confidence``, which commits its likeliest tokens first everywhere and so builds loops ("films, films,
    films"); as ``T`` grows it tends to ``random``. MaskGIT draws its order this way (its "choice temperature")."""
    # noise exactly 0 (one draw in 2**24) would give -inf, and 0 x -inf NaN at T = 0: the smallest float instead
    gumbel = -torch.log(-torch.log(d.noise.clamp(min=torch.finfo(d.noise.dtype).tiny)))
    return torch.log(d.chosen) + d.order_temperature * gumbel


POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("redraw", fresh_noise, "the original project's decoder: redraw every free position, re-mask a falling random share",
           remask="resample"),
    Policy("random", random_order, "MDLM's ancestral order: positions in a uniformly random order", planned=True),
    Policy("confidence", confidence, "MaskGIT / LLaDA: the most probable drawn tokens first"),
    Policy("margin", margin, "the largest gap between the two most probable tokens first"),
    Policy("entropy", entropy, "the lowest-entropy positions first"),
    Policy("threshold", confidence, "every drawn token with probability >= threshold, at least one", adaptive=True),
    Policy("remdm", fresh_noise, "ReMDM: ancestral order, and each step re-masks the least confident committed "
           "tokens (share `remask`) for a later step to redraw", remask="lowest", knob="remask", knob_default=0.05, knob_max=0.9),
    Policy("calibrated", calibrated, "PC-Sampler: confidence x corpus surprise of the token, weighted towards the "
           "left (`position_decay`)", reads_corpus=True, knob="position_decay", knob_max=5.0),
    Policy("sampled", sampled, "MaskGIT: confident positions first, drawn with probability ~ p ** (1 / "
           "`order_temperature`) rather than sorted", knob="order_temperature", knob_default=4.0, knob_max=20.0),
)}
KNOBS = {p.knob: p.name for p in POLICIES.values() if p.knob}  # the Sampling fields a policy owns -> that policy


# old names that still work for one release, with a deprecation warning (traces and scripts saved before the rename)
RENAMED = {"seed-remask": "redraw"}


def current_name(name: str, stacklevel: int = 3) -> str:
    """``name``, or the name a renamed policy goes by now (warning that the old one goes in the next release)."""
    if name in RENAMED:
        warnings.warn(f"policy {name!r} is now {RENAMED[name]!r}; the old name goes in the next release",
                      FutureWarning, stacklevel=stacklevel)
        return RENAMED[name]
    return name


def get(name: str) -> Policy:
    name = current_name(name)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}")
    return POLICIES[name]
