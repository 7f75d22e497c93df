"""``Sampling``: every generation setting in one frozen dataclass. Bad values are refused with one line naming the
fix, the settings round-trip through a trace, JSON and ``Sampling(**saved)``, and the keyword arguments of
``generate_diffusion`` are the same settings."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace

import pytest
import torch
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling
from roberta_diffusion.trace import Trace

BAD = {
    "unknown policy": ({"policy": "greedy"}, "policy"),
    "unknown schedule": ({"schedule": "exponential"}, "schedule"),
    "no steps": ({"steps": 0}, "steps=0"),
    "steps not whole": ({"steps": 2.5}, "steps=2.5"),
    "steps a bool": ({"steps": True}, "steps=True"),
    "temperature 0": ({"temperature": 0.0}, "temperature=0.0"),
    "temperature nan": ({"temperature": float("nan")}, "temperature=nan"),
    "temperature inf": ({"temperature": float("inf")}, "temperature=inf"),
    "top_k < 0": ({"top_k": -1}, "top_k=-1"),
    "top_p 0": ({"top_p": 0.0}, "top_p=0.0"),
    "top_p > 1": ({"top_p": 1.01}, "top_p=1.01"),
    "threshold 0": ({"threshold": 0.0}, "threshold=0.0"),
    "semi_ar_block 0": ({"semi_ar_block": 0}, "semi_ar_block=0"),
    "semi_ar_block with redraw": ({"policy": "redraw", "semi_ar_block": 4}, "semi_ar_block"),
    "remask 1": ({"policy": "remdm", "remask": 1.0}, "remask=1.0"),
    "remask for another policy": ({"remask": 0.1}, "policy remdm"),
    "position_decay < 0": ({"policy": "calibrated", "position_decay": -1.0}, "position_decay=-1.0"),
    "position_decay for another policy": ({"position_decay": 0.5}, "policy calibrated"),
    "order_temperature < 0": ({"policy": "sampled", "order_temperature": -1.0}, "order_temperature=-1.0"),
    "order_temperature nan": ({"policy": "sampled", "order_temperature": float("nan")}, "order_temperature=nan"),
    "order_temperature for another policy": ({"policy": "confidence", "order_temperature": 2.0}, "policy sampled"),
    "seed not whole": ({"seed": 1.5}, "seed=1.5"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_setting_is_one_line_naming_it(case):
    changes, expect = BAD[case]
    with pytest.raises(ValueError) as err:
        Sampling(**changes)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_the_readable_default_is_the_dataclass_and_the_redraw_decoder_differs_only_where_named():
    assert Sampling.readable() == Sampling()
    differs = {f.name for f in fields(Sampling) if getattr(Sampling.redraw_decoder(), f.name) != getattr(Sampling(), f.name)}
    assert differs == {"policy", "steps"}


def test_it_is_frozen_and_round_trips_through_json():
    sampling = Sampling(policy="remdm", remask=0.2, semi_ar_block=8, steps=16, seed=None)
    with pytest.raises(AttributeError):
        sampling.steps = 3
    assert Sampling(**json.loads(json.dumps(asdict(sampling)))) == sampling


@pytest.mark.parametrize("policy", list(POLICIES))
def test_with_policy_keeps_only_the_knobs_that_policy_reads(policy):
    start = Sampling(policy="calibrated", position_decay=0.3, steps=12, temperature=0.8)
    moved = start.with_policy(policy)
    assert moved.policy == policy and (moved.steps, moved.temperature) == (12, 0.8)
    assert moved.remask == (0.05 if policy == "remdm" else 0.0)  # remdm's measured default share
    assert moved.position_decay == (0.3 if policy == "calibrated" else 0.0)  # calibrated's own, kept
    assert moved.order_temperature == (4.0 if policy == "sampled" else 0.0)  # sampled's measured default


def test_keyword_arguments_are_the_same_settings(mlm, tokenizer, tmp_path):
    """The thin keyword form and a Sampling give the same ids; the trace records the Sampling whole, and it comes back
    from a saved trace."""
    sampling = Sampling(policy="confidence", steps=5, schedule="cosine", temperature=0.7, top_k=0, seed=2)
    by_object = generate_diffusion(mlm, tokenizer, "The cat", sampling, max_len=20)
    by_keywords = generate_diffusion(mlm, tokenizer, "The cat", max_len=20, policy="confidence", steps=5,
                                     schedule="cosine", temperature=0.7, top_k=0, seed=2)
    over_a_base = generate_diffusion(mlm, tokenizer, "The cat", replace(sampling, seed=9), max_len=20, seed=2)
    assert torch.equal(by_object.ids, by_keywords.ids) and torch.equal(by_object.ids, over_a_base.ids)
    assert Sampling.of(by_object.settings) == sampling
    assert Sampling.of(Trace.load(by_object.save(tmp_path / "t.pt")).settings) == sampling
    bare = generate_diffusion(mlm, tokenizer, "The cat", max_len=20)
    assert Sampling.of(bare.settings) == Sampling.redraw_decoder()  # a bare call keeps the original project's decoder


def test_unknown_keyword_and_a_misplaced_sampling_are_refused(mlm, tokenizer):
    with pytest.raises(TypeError, match="block_size"):
        generate_diffusion(mlm, tokenizer, "The cat", max_len=20, block_size=4)
    with pytest.raises(TypeError, match="sampling="):
        generate_diffusion(mlm, tokenizer, Sampling(), max_len=20)


def test_a_trace_saved_with_the_old_field_name_loads(mlm, tokenizer, tmp_path):
    trace = generate_diffusion(mlm, tokenizer, "The cat", max_len=20, steps=3)
    state = {**trace.__dict__, "_texts": trace.texts, "_completions": trace.completions, "tokenizer": None}
    state["fixed"] = state.pop("pinned")
    torch.save(state, tmp_path / "old.pt")
    assert torch.equal(Trace.load(tmp_path / "old.pt").pinned, trace.pinned)


def test_settings_saved_under_the_old_policy_name_load_as_the_current_one():
    saved = {**asdict(Sampling.redraw_decoder()), "policy": "seed-remask"}
    with pytest.warns(FutureWarning, match="'seed-remask' is now 'redraw'"):
        loaded = Sampling(**saved)
    assert loaded == Sampling.redraw_decoder() and loaded.policy == "redraw"
