"""Checks that run before any work: numbers, devices, seeds, prompts, output paths, run names and notebook
parameters. Each failure is a ``ValueError`` whose text names the culprit (flag, file or key) and the fix; the
CLI prints it as one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import json
import math
import os
import re
import sys
from pathlib import Path

from roberta_diffusion import collator, models, policies, sampler, train
from roberta_diffusion.compiling import COMPILE_SCOPES
from roberta_diffusion.draws import SCHEDULES
from roberta_diffusion.models import max_canvas_len
from roberta_diffusion.paths import run_name
from roberta_diffusion.sampling import Sampling
from roberta_diffusion.train import TrainConfig

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes 64 bits; keep to the signed range numpy also accepts
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_MASK_RUN = re.compile(r"<mask\*(\d+)>")


def finite_positive(flag: str, value: float) -> float:
    """``value`` > 0 and finite: inf/nan pass a plain ``> 0`` test but make the sampler emit noise."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{flag} {value}: give a finite number above 0")
    return value


def finite(flag: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{flag} {value}: give a finite number")
    return value


def in_range(flag: str, value, low=None, high=None, what: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{flag} {value}: give a finite number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(b for b in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if b)
        raise ValueError(f"{flag} {value}: must be {bounds}{what}")


def seed(flag: str, value: int) -> int:
    in_range(flag, value, 0, SEED_MAX, " (a 64-bit seed)")
    return value


def device(flag: str, value: str) -> str:
    """A device name the CLI knows; availability is checked by ``models.pick_device``."""
    if not _DEVICE.match(str(value)):
        raise ValueError(f"{flag} {value!r}: use auto, cpu, cuda, cuda:N or mps")
    return value


def prompt_text(text: str, where: str = "the prompt") -> str:
    """Text that encodes as UTF-8: a non-UTF-8 argv arrives as lone surrogates and breaks the tokenizer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} is not valid UTF-8: pass text in UTF-8 (check the terminal's locale)") from None
    return text


def infill_masks(text: str, limit: int, flag: str = "--max-len") -> None:
    """``<mask*N>`` runs must fit the canvas: a huge N would otherwise try to build the string first."""
    total = sum(int(m) for m in _MASK_RUN.findall(text)) + text.count("<mask>")
    if total > limit:
        raise ValueError(f"the infill text asks for {total} masked tokens but the canvas holds {limit} ({flag}): "
                         "use fewer <mask*N> blanks")


def model_folder(flag: str, value: str | None) -> None:
    """A model is a folder (or a hub name); a file is a common slip, e.g. pointing at model.safetensors."""
    if value is not None and Path(value).is_file():
        raise ValueError(f"{flag} {value} is a file: give the model's folder (the one holding config.json)")


def canvas_fits(flag: str, max_len: int, model) -> None:
    """A canvas no longer than the model's positions, checked before one is built: a huge ``--max-len`` would
    otherwise allocate first (10**12 tokens) and fail as out of memory, or not at all."""
    if max_len > max_canvas_len(model):
        raise ValueError(f"{flag} {max_len} is longer than the model's {max_canvas_len(model)} positions (the longest "
                         f"max_len it takes): use at most {max_canvas_len(model)}")


# -- output paths -----------------------------------------------------------------------------------------
def output_path(flag: str, path: Path | None, suffix: str) -> None:
    """Refuse an output path that could only fail after the work: wrong suffix, a directory, a path under a
    file, or a folder this process may not write to."""
    if path is None:
        return
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path} must end in {suffix}")
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory: give a file name ending in {suffix}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} exists and is read-only: choose another file or make it writable")
    parent = path.parent
    while not parent.exists():  # the nearest existing ancestor decides whether the folders can be made
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path} lies under {parent}, which is a file: choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: no permission to write in {parent}: choose a writable folder")


# -- notebook parameters ------------------------------------------------------------------------------------
# Every numeric parameter of the four notebooks has a range here (a test checks that none is missed).
# integer parameters that count something and must be at least 1 (0 or less would train or sample nothing)
POSITIVE = {"max_steps", "batch_size", "block_size", "eval_every", "save_every", "steps", "max_len", "n_levels",
            "n_draws", "loss_blocks", "n_prompts", "n_heldout", "elbo_samples", "policy_steps", "cpu_threads",
            "max_train_lines", "eval_batches", "log_every", "panel_max_len", "max_prefix_len"}
NON_NEGATIVE = {"prefix_len", "warmup_steps", "escape_steps", "top_k", "new_tokenizer_vocab", "weight_decay",
                "locality_init", "distill_steps"}
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
        train.check_compile(one)


class Store(argparse._StoreAction):
    """argparse's plain store for a flag declared as ``"--current-name", "--old-name"``: the old spelling still works
    for one release, answered with one deprecation line naming the current one."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = self.option_strings[0]
        if option_string != current:
            print(f"warning: {option_string} is deprecated and goes in the next release: use {current}",
                  file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def current_policy(flag: str, name: str) -> str:
    """A policy named on the command line, by its current name (an old one says so on stderr, once per use)."""
    if name in policies.RENAMED:
        print(f"warning: {flag} {name} is deprecated and goes in the next release: use {flag} "
              f"{policies.RENAMED[name]}", file=sys.stderr)
        return policies.RENAMED[name]
    return name


def policy_list(flag: str, text: str, allowed=None) -> list[str]:
    """``text``, a comma list of registered policies (of ``allowed`` when given), by their current names."""
    allowed = list(allowed or policies.POLICIES)
    names = list(dict.fromkeys(current_policy(flag, name) for name in text.split(",") if name))
    if not names or set(names) - set(allowed):
        raise ValueError(f"{flag} {text}: use a comma list of {', '.join(allowed)}")
    return names


def sampling_from(args) -> Sampling:
    """The ``Sampling`` that ``args`` (flags named as its fields) ask for; its error names the flag. A policy knob
    left unset (None) is off, except the chosen policy's own, which starts at its measured default."""
    settings = {k: v for k, v in vars(args).items() if not (k in policies.KNOBS and v is None)}
    if "policy" in settings:
        settings["policy"] = current_policy("--policy", settings["policy"])
    rule = policies.POLICIES.get(settings.get("policy"))
    if rule is not None and rule.knob and rule.knob not in settings:
        settings[rule.knob] = rule.knob_default
    try:
        return Sampling.of(settings)
    except ValueError as err:
        names = "|".join(sorted(Sampling.__dataclass_fields__, key=len, reverse=True))
        text = re.sub(rf"\b({names})=", lambda m: f"--{m.group(1).replace('_', '-')} ", str(err))
        raise ValueError(text) from None
