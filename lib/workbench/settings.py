"""Notebook and training settings checked before any work: each notebook's ``parameters`` cell read without running
it, ``TrainConfig``'s fields as the training settings, every value's type and range, the settings that bound each other,
and what ``train`` would refuse (so a profile or ``--set`` is refused before a run's lock or staging folder exist)."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import re
from pathlib import Path

from roberta_diffusion import collator, models, policies, sampler, train
from roberta_diffusion.compiling import COMPILE_SCOPES, check_compile
from roberta_diffusion.draws import SCHEDULES
from roberta_diffusion.paths import run_name
from roberta_diffusion.train import TrainConfig

from .checks import finite, finite_positive, in_range, seed

# -- notebook parameters ------------------------------------------------------------------------------------
# Every numeric parameter of the four notebooks has a range here (a test checks that none is missed).
# integer parameters that count something and must be at least 1 (0 or less would train or sample nothing)
POSITIVE = {"max_steps", "batch_size", "block_size", "eval_every", "save_every", "steps", "max_len", "n_levels",
            "n_draws", "loss_blocks", "n_prompts", "n_heldout", "elbo_samples", "policy_steps", "cpu_threads",
            "max_train_lines", "eval_batches", "log_every", "panel_max_len", "max_prefix_len"}
NON_NEGATIVE = {"prefix_len", "warmup_steps", "escape_steps", "top_k", "new_tokenizer_vocab", "weight_decay",
                "locality_init", "distill_steps", "corrections"}
POSITIVE_FLOAT = {"lr", "escape_lr", "temperature", "top_p", "max_minutes", "adam_eps"}
# shares and decays: (low, high, whether high itself is allowed)
UNIT = {"dropout": (0, 1, False), "ema_decay": (0, 1, False), "span_prob": (0, 1, True)}
# TrainConfig fields that `train` sets for each objective: not settings a profile or --set gives
SET_BY_TRAIN = ("objective", "out_dir")
# lists of numbers: each element's range
LISTS = {"ratios": (0, 1, "a masked share in (0, 1]"), "steps_sweep": (1, None, "a number of steps >= 1")}


def _choices() -> dict[str, tuple]:
    """The names a string parameter may take, from the modules that own them."""
    return {"policy": (*sampler.POLICIES, *policies.RENAMED), "schedule": SCHEDULES, "ratio_mode": collator.RATIO_MODES,
            "weighting": collator.WEIGHTINGS, "size": tuple(models.SIZES), "arch": models.MLM_ARCHS,
            "compile_scope": COMPILE_SCOPES}


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


_CELL = re.compile(r"^# %%(.*)$", re.MULTILINE)


def py_cells(source: str) -> list[tuple[str, str]]:
    """Split a py:percent file into ``(header, code)`` cells; markdown cells come back with header 'markdown'."""
    cells, marks = [], list(_CELL.finditer(source))
    for i, mark in enumerate(marks):
        body = source[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(source)]
        header = mark.group(1).strip()
        line = source.count("\n", 0, mark.end())  # pad so tracebacks show the file's own line numbers
        cells.append(("markdown" if header.startswith("[markdown]") else header, "\n" * line + body))
    return cells


def notebook_parameters(path: Path) -> dict[str, tuple[str, object]]:
    """``name -> (annotation, default)`` of a py:percent notebook's ``parameters`` cell, read without running it."""
    for header, body in py_cells(Path(path).read_text()):
        if "parameters" in header:
            out = {}
            for node in ast.parse(body).body:
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                    note = node.annotation
                    text = note.value if isinstance(note, ast.Constant) else ast.unparse(note)
                    out[node.target.id] = (str(text), ast.literal_eval(node.value) if node.value else None)
            return out
    raise ValueError(f"{path} has no parameters cell")


def train_settings() -> dict[str, tuple[str, object]]:
    """``name -> (annotation, default)`` of the training settings (what ``finetune --set`` and a profile's
    ``02_finetune`` section may give): ``TrainConfig``'s fields, its one owner, less ``SET_BY_TRAIN``."""
    return {f.name: (str(f.type), f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(TrainConfig) if f.name not in SET_BY_TRAIN}


def _type_ok(annotation: str, value) -> bool:
    # the notebooks' cells write "Optional[int]" (a literal papermill reads), the dataclasses "int | None"
    optional = annotation.startswith("Optional[") or annotation.endswith(" | None")
    base = annotation[len("Optional["):-1] if annotation.startswith("Optional[") else annotation.removesuffix(" | None")
    if value is None:
        return optional
    kind = _TYPES.get(base)
    if kind is None:
        return True  # an annotation this checker does not know: leave it to the notebook
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def parameter(key: str, value, known: dict, where: str) -> None:
    """One notebook parameter: a known name (closest one suggested), the annotated type, a sane range."""
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        raise ValueError(f"{where}: unknown parameter {key!r}: {hint}")
    annotation, default = known[key]
    if not _type_ok(annotation, value):
        raise ValueError(f"{where}: {key}={json.dumps(value, default=str)} is not {annotation} "
                         f"(the default is {json.dumps(default)})")
    if value is None or isinstance(value, bool):
        return
    if key in POSITIVE:
        in_range(f"{where}: {key}", value, 1)
    elif key in NON_NEGATIVE:
        in_range(f"{where}: {key}", value, 0)
    elif key in POSITIVE_FLOAT:
        finite_positive(f"{where}: {key}", value)
    elif key in UNIT:
        low, high, closed = UNIT[key]
        finite(f"{where}: {key}", value)
        if not (low <= value <= high if closed else low <= value < high):
            raise ValueError(f"{where}: {key}={value} must be in [{low}, {high}{']' if closed else ')'}")
    elif key in LISTS:
        low, high, what = LISTS[key]
        for item in value:
            ok = isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item)
            if not ok or (key == "ratios" and not low < item <= high) or (key != "ratios" and item < low) \
                    or (key == "steps_sweep" and not isinstance(item, int)):
                raise ValueError(f"{where}: {key}={json.dumps(value)}: {item!r} is not {what}")
        if not value:
            raise ValueError(f"{where}: {key}=[]: give at least one value")
    elif key == "objectives":
        if not value or any(o not in ("mlm", "ar") for o in value) or len(set(value)) < len(value):
            raise ValueError(f"{where}: objectives={json.dumps(value)}: use a list of 'mlm' and/or 'ar', each once")
    elif isinstance(value, str) and key in _choices() and value not in _choices()[key]:
        raise ValueError(f"{where}: {key}={value!r}: use one of {', '.join(_choices()[key])}")
    elif key in ("seed",):
        seed(f"{where}: {key}", value)
    elif key == "run_name":
        run_name(value, f"{where}: run_name")
    elif key == "ar":  # the GPT-2 baseline's own values of other parameters
        for name, own in value.items():
            parameter(name, own, known, f"{where}: ar")


def parameters(params: dict, known: dict, where: str) -> dict:
    """Every one of ``params`` checked against ``known`` (``notebook_parameters`` or ``train_settings``), then
    the settings that bound each other."""
    for key, value in params.items():
        parameter(key, value, known, where)
    _cross_checks(params, where)
    return params


def _cross_checks(params: dict, where: str) -> None:
    for short, long in (("prefix_len", "block_size"), ("prefix_len", "max_len"), ("max_prefix_len", "block_size")):
        if params.get(short) is not None and long in params and params[short] >= params[long]:
            raise ValueError(f"{where}: {short}={params[short]} must be below {long}={params[long]} (the prompt "
                             "must leave positions to mask)")
    if params.get("max_prefix_len") is not None and params["max_prefix_len"] < params.get("prefix_len", 0):
        raise ValueError(f"{where}: max_prefix_len={params['max_prefix_len']} is below prefix_len="
                         f"{params['prefix_len']}: the prompt length is drawn between them; raise it or use null")
    if params.get("top_p", 0.5) > 1:
        raise ValueError(f"{where}: top_p={params['top_p']} must be in (0, 1]")


def train_config(cfg, processes: int = 1, where: str = "--set with the profile") -> None:
    """What ``train.train(cfg)`` on ``processes`` processes would refuse, checked without writing anything (so
    before a run's lock or staging folder exist): each objective's config, its rate schedule, the fresh-model
    settings, the batch split over the processes."""
    in_range("--num-processes", processes, 1)
    if cfg.batch_size % processes:
        raise ValueError(f"{where}: batch_size={cfg.batch_size} is the global batch and must split evenly over "
                         f"--num-processes {processes}: use a multiple of {processes}")
    if not isinstance(cfg.objectives, list) or not cfg.objectives:
        raise ValueError(f"{where}: objectives={cfg.objectives!r}: use a list of 'mlm' and/or 'ar'")
    for objective in cfg.objectives:
        one = cfg.for_objective(objective)  # checks `ar` and names the folder without making it
        train._lr_lambda(one)  # the two-phase rate's own conditions
        train.check_fresh_model(one)
        check_compile(one)
