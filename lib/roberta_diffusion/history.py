"""``History``: what a training run records and writes to ``history.json`` (each checkpoint keeps it too, so a
resumed run goes on with it). The JSON keys are the field names, so every ``history.json`` written before the class
existed loads; a key it does not know is refused, naming it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .paths import atomic_write_text


@dataclass
class History:
    step: list = field(default_factory=list)  # the steps the training loss was logged at (every log_every, the last)
    train_loss: list = field(default_factory=list)  # that step's batch loss
    eval_step: list = field(default_factory=list)  # the held-out evaluations (every eval_every, the last step)
    eval_loss: list = field(default_factory=list)  # the training objective on the held-out blocks
    eval_bound: list = field(default_factory=list)  # the held-out bound, nats/token (losses.elbo; GPT-2: exact NLL)
    eval_bound_raw: list = field(default_factory=list)  # with ema_decay: the weights' own bound (eval_bound: their
    # average's), None for evaluations from before it was kept
    eval_epoch: list = field(default_factory=list)  # epochs of the training blocks seen at each evaluation
    speed_step: list = field(default_factory=list)  # the end of each timed interval (an evaluation)
    speed: list = field(default_factory=list)  # training tokens/s over that interval, held-out scoring left out
    tokens: int = 0  # training tokens seen (the global batch, once whatever the number of processes)
    seconds: float = 0.0  # training time, held-out scoring left out
    best_step: int | None = None  # the evaluation with the lowest bound: the weights exported to model/
    best_bound: float | None = None
    tokens_per_second: int = 0  # the last interval's speed
    parameters: int = 0
    train_blocks: int = 0
    world_size: int = 1
    # the lineage of a run that continued another's exported weights (curves.continued, scripts/ship_models.py)
    prior_tokens: int = 0  # the tokens those weights had seen
    earlier: dict = field(default_factory=lambda: {"tokens": [], "eval_bound": []})  # the runs before: their points
    branches: list = field(default_factory=list)  # evaluations after the weights carried on, from their branch point
    discarded_tokens: int = 0  # the training those branches cost
    # a distilled student (scripts/ship_models.py --student): each SDTT round that led to it, teacher and steps
    rounds: list = field(default_factory=list)

    def __getitem__(self, key: str):
        """``history["eval_bound"]``: code written against history.json's keys reads a History unchanged."""
        return getattr(self, key)

    @classmethod
    def from_dict(cls, saved: dict) -> History:
        unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"history keys {unknown} are not History fields: a history.json of another program?")
        return cls(**saved)

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))
