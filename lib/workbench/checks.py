"""Checks that run before any work: numbers, devices, seeds, prompts, output paths, policies and the flags' `Sampling`
(notebook and training settings: settings.py). Each failure is a ``ValueError`` whose text names the culprit (flag, file or key) and the fix; the
CLI prints it as one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from roberta_diffusion import policies
from roberta_diffusion.models import max_canvas_len
from roberta_diffusion.sampling import Sampling

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
