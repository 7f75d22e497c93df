"""The fast sampler equals the readable one (``roberta_diffusion.reference``), token for token.

Covered: every policy (with and without blocks, top-k/top-p, temperature, both schedules). ``entropy`` joined
once its score stopped being NaN where ``<mask>`` has probability 0 (``0 * -inf``; ``xlogy`` now): before, every
position tied and it committed left to right.
"""

from __future__ import annotations

import pytest
import torch
from roberta_diffusion.canvas import infill_canvas, prompt_canvas
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.reference import reference_generate
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling

PROMPTS = ["The cat sat on the mat and", "A"]
CASES = {
    "redraw": {"policy": "redraw"},
    "random": {"policy": "random", "seed": 3},
    "random-block": {"policy": "random", "semi_ar_block": 5, "steps": 8},
    "confidence": {"policy": "confidence"},
    "confidence-cosine": {"policy": "confidence", "schedule": "cosine", "temperature": 0.7, "seed": 2},
    "confidence-block": {"policy": "confidence", "semi_ar_block": 4, "steps": 8},
    "margin": {"policy": "margin", "top_k": 0, "top_p": 1.0, "seed": 1},
    "threshold": {"policy": "threshold", "threshold": 0.05},
    "entropy": {"policy": "entropy"},
    "remdm": {"policy": "remdm", "remask": 0.3, "steps": 8},
    "remdm-block": {"policy": "remdm", "remask": 0.5, "semi_ar_block": 6, "steps": 9, "seed": 4},
    "calibrated": {"policy": "calibrated", "position_decay": 0.1},
    "calibrated-flat": {"policy": "calibrated", "temperature": 0.8, "top_k": 0, "top_p": 1.0, "seed": 5},
    "sampled": {"policy": "sampled", "order_temperature": 2.0, "seed": 6},
    "sampled-block": {"policy": "sampled", "order_temperature": 0.5, "semi_ar_block": 4, "steps": 8, "top_k": 0},
}


def test_every_registered_policy_has_a_reference_case():
    assert {case["policy"] for case in CASES.values()} == set(POLICIES)


@pytest.mark.parametrize("infill", [False, True], ids=["prompt", "infill"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_sampler_equals_the_reference(mlm, tokenizer, case, infill):
    sampling = Sampling(**{"steps": 6, **case})
    canvas = infill_canvas(tokenizer, ["The <mask*5> sat down.", "A <mask*7> on the <mask*3> mat"]) if infill \
        else prompt_canvas(tokenizer, PROMPTS, None, 20)
    salience = None
    if POLICIES[sampling.policy].reads_corpus:  # a made-up corpus: any frequencies will do for equality
        salience = torch.rand(len(tokenizer), generator=torch.Generator().manual_seed(0)) * 12
    fast = generate_diffusion(mlm, tokenizer, sampling=sampling, canvas=canvas, salience=salience).final
    with torch.no_grad():
        slow = reference_generate(mlm, tokenizer, canvas, sampling, salience=salience)
    assert (fast != tokenizer.mask_token_id).all(), "the fast sampler left a <mask>"
    assert torch.equal(fast, slow)
