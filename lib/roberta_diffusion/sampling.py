"""``Sampling``: every setting of one diffusion generation, checked in one place. The library, CLI, panel, notebooks
03-04, ``eval`` and the benchmarks take one and record it whole (``asdict``; ``Sampling(**saved)`` gives it back).
The canvas (prompt, ``prefix_len``, ``max_len``) and the speed switches (``graph``, ``compile``) stay outside: they
say what a run starts from and how it is computed, not what it samples.

The defaults are the readable default (``Sampling.readable()``), where the CLI, panel, notebooks and ``eval`` start:
``random`` (MDLM's ancestral order) read best on the shipped models (README, "Readable by default";
``python -m benchmarks.frontier`` measures it again). A bare ``generate_diffusion`` keeps ``redraw_decoder()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from . import policies
from .draws import SCHEDULES


@dataclass(frozen=True)
class Sampling:
    policy: str = "random"  # which masked positions a step commits (policies.POLICIES)
    steps: int = 32  # forward passes; within 10 % of 64 steps' generative perplexity at half the passes
    schedule: str = "linear"  # how many positions stay masked after each step: linear | cosine
    temperature: float = 1.0
    top_k: int = 50  # 0 turns top-k off
    top_p: float = 0.95  # 1 turns top-p off
    threshold: float = 0.9  # policy threshold: commit every draw at least this probable
    semi_ar_block: int | None = None  # fill the canvas this many free positions at a time (LLaDA); None: at once
    remask: float = 0.0  # policy remdm: share of the committed tokens each step sends back to <mask>
    position_decay: float = 0.0  # policy calibrated: left-to-right pull, weight exp(-decay x distance)
    order_temperature: float = 0.0  # policy sampled: positions drawn ~ p ** (1 / it); 0 = confidence order
    seed: int | None = 0  # the random seed: the same seed gives the same ids; None draws fresh entropy

    def __post_init__(self):
        if self.policy in policies.RENAMED:  # saved under an old name: the same policy under its current one
            object.__setattr__(self, "policy", policies.current_name(self.policy, stacklevel=4))
        rule = policies.get(self.policy)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        whole = {"steps": self.steps, "top_k": self.top_k, "semi_ar_block": self.semi_ar_block or 0,
                 "seed": self.seed or 0}
        for name, value in whole.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a whole number")
        for name in ("temperature", "top_p", "threshold", *policies.KNOBS):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)} must be a finite number")
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1")
        if self.semi_ar_block is not None and self.semi_ar_block < 1:
            raise ValueError(f"semi_ar_block={self.semi_ar_block} must be >= 1 (or None for the whole canvas)")
        if self.semi_ar_block is not None and rule.remask == "resample":
            raise ValueError("redraw resamples the whole canvas each step: drop semi_ar_block or pick another "
                             "policy")
        if not 0 <= self.remask < 1:
            raise ValueError(f"remask={self.remask} must be in [0, 1) (the share of committed tokens re-masked per step)")
        if not self.position_decay >= 0:
            raise ValueError(f"position_decay={self.position_decay} must be >= 0 (0: no left-to-right pull)")
        if not self.order_temperature >= 0:
            raise ValueError(f"order_temperature={self.order_temperature} must be >= 0 (0: confidence order)")
        for knob, owner in policies.KNOBS.items():
            if getattr(self, knob) and rule.knob != knob:
                raise ValueError(f"{knob}={getattr(self, knob)} is for policy {owner}, not {self.policy!r}: set "
                                 f"{knob}=0 or policy={owner!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} must be in (0, 1]")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (use a small value such as 0.01 for near-greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 turns top-k off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 turns top-p off)")

    @classmethod
    def readable(cls) -> Sampling:
        """Where the CLI, the panel, the notebooks and ``eval`` start (the dataclass's defaults)."""
        return cls()

    @classmethod
    def distilled(cls) -> Sampling:
        """Where the distilled model (``paths.SHIPPED_FAST``, ``--fast``) starts: the readable settings at 16 steps.
        There, at matched entropy, its samples beat the shipped model's at 32 (judge perplexity 78.8 against 86.7,
        docs/results.md, "The distilled few-step model") in half the forward passes."""
        return cls(steps=16)

    @classmethod
    def redraw_decoder(cls) -> Sampling:
        """The original project's decoder (policy ``redraw``): a bare ``generate_diffusion`` call's settings."""
        return cls(policy="redraw", steps=10)

    @classmethod
    def of(cls, settings: dict) -> Sampling:
        """The ``Sampling`` inside a wider record (``Trace.settings``, a JSON summary), its other keys left out."""
        return cls(**{f.name: settings[f.name] for f in fields(cls) if f.name in settings})

    def with_policy(self, policy: str) -> Sampling:
        """These settings under ``policy``, with the knobs only another policy reads set back to off, and the
        policy's own knob at its measured default when none is set (a view switching policies offers each its own
        knob)."""
        policy = policies.current_name(policy)
        rule = policies.get(policy)
        knobs = {knob: (getattr(self, knob) or rule.knob_default) if knob == rule.knob else 0.0
                 for knob in policies.KNOBS}
        return replace(self, policy=policy, semi_ar_block=None if rule.remask == "resample" else self.semi_ar_block,
                       **knobs)
