"""Byte-identity guard: every policy, a block case, an infill case and the AR baseline give exactly the token
ids recorded in ``recorded_ids.json`` (tiny random models from conftest, fixed seeds, CPU, one thread).

A refactor that changes any token, in any intermediate step, fails here. The ids were recorded from the code
before the library was slimmed (issue 17); rerecord only for a deliberate change of behaviour, and say so in
the commit: ``.venv/bin/python tests/test_recorded_ids.py --record``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from roberta_diffusion.autoregressive import generate_ar
from roberta_diffusion.canvas import infill_canvas
from roberta_diffusion.sampler import generate_diffusion

RECORDED = Path(__file__).with_name("recorded_ids.json")
PROMPTS = ["The cat sat on the mat and", "A"]  # different lengths: the second row is left-padded
BASE = {"steps": 6, "max_len": 20, "top_k": 50, "top_p": 0.95}
POLICIES = ("redraw", "random", "confidence", "margin", "entropy", "threshold")

# name -> the settings of one run
CASES = {
    **{f"{p}-seed{s}": {"policy": p, "seed": s} for p in POLICIES for s in (0, 1)},
    "threshold-low": {"policy": "threshold", "threshold": 0.05, "seed": 0},
    "confidence-cosine-t0.7": {"policy": "confidence", "schedule": "cosine", "temperature": 0.7, "seed": 2},
    "random-no-filter": {"policy": "random", "top_k": 0, "top_p": 1.0, "seed": 3},
    "confidence-block4": {"policy": "confidence", "semi_ar_block": 4, "steps": 8, "seed": 0},
    "random-block5": {"policy": "random", "semi_ar_block": 5, "steps": 8, "seed": 0},
    "entropy-prefix12": {"policy": "entropy", "prefix_len": 12, "seed": 0},
    "margin-infill": {"policy": "margin", "infill": True, "seed": 0},
    "random-infill": {"policy": "random", "infill": True, "seed": 4},
}
AR_CASES = {
    "ar-seed0": {"seed": 0},
    "ar-seed1-t0.7": {"seed": 1, "temperature": 0.7},
    "ar-static-cache": {"seed": 0, "static_cache": True},
}
INFILL = ["The <mask*5> sat down.", "A <mask*7> on the <mask*3> mat"]


def _settings(case: dict) -> dict:
    settings = {**BASE, **case}
    settings.pop("infill", None)
    return settings


def diffusion_ids(mlm, tokenizer, case: dict) -> list:
    if case.get("infill"):
        settings = {k: v for k, v in _settings(case).items() if k not in ("max_len", "prefix_len")}
        trace = generate_diffusion(mlm, tokenizer, canvas=infill_canvas(tokenizer, INFILL), **settings)
    else:
        trace = generate_diffusion(mlm, tokenizer, PROMPTS, **_settings(case))
    return trace.ids.tolist()  # [S+1, B, L]: every intermediate canvas, not only the last


def ar_ids(causal_lm, tokenizer, case: dict) -> list:
    return generate_ar(causal_lm, tokenizer, PROMPTS, max_len=BASE["max_len"], **case).ids.tolist()


@pytest.fixture(scope="module")
def recorded():
    return json.loads(RECORDED.read_text())


def test_the_record_covers_every_case(recorded):
    assert set(recorded) == set(CASES) | set(AR_CASES)


@pytest.mark.parametrize("name", CASES)
def test_diffusion_ids_equal_the_record(mlm, tokenizer, recorded, name):
    assert diffusion_ids(mlm, tokenizer, CASES[name]) == recorded[name]


@pytest.mark.parametrize("name", AR_CASES)
def test_ar_ids_equal_the_record(causal_lm, tokenizer, recorded, name):
    assert ar_ids(causal_lm, tokenizer, AR_CASES[name]) == recorded[name]


def _record() -> None:
    from roberta_diffusion import bpe, models

    torch.set_num_threads(1)  # as conftest: the tests run on one thread
    tokenizer = bpe.fallback_tokenizer()
    mlm, causal_lm = models.fresh_mlm(tokenizer, "tiny"), models.fresh_causal_lm(tokenizer, "tiny")
    out = {name: diffusion_ids(mlm, tokenizer, case) for name, case in CASES.items()}
    out |= {name: ar_ids(causal_lm, tokenizer, case) for name, case in AR_CASES.items()}
    # one case a line: a diff shows which case changed
    RECORDED.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in out.items()) + "\n}\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: tests/test_recorded_ids.py --record  (rewrites tests/recorded_ids.json)")
    _record()
