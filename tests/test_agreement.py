"""The teacher-forced comparison behind the compiled sampler's documented tolerance (``agreement``)."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion.evaluate import prompt_canvas_from_blocks

from benchmarks.agreement import (
    plain_step,
    step_tolerance,
    teacher_forced_agreement,
    within_tolerance,
)

SETTINGS = dict(steps=6, seed=4)


@pytest.fixture(scope="module")
def canvas(tokenizer):
    blocks = torch.randint(5, len(tokenizer), (3, 48), generator=torch.Generator().manual_seed(0))
    return prompt_canvas_from_blocks(blocks, 8, tokenizer.mask_token_id)


@pytest.mark.parametrize("policy", ["random", "confidence"])
def test_the_plain_step_agrees_with_itself_exactly(mlm, tokenizer, canvas, policy):
    result = teacher_forced_agreement(mlm, tokenizer, canvas, plain_step(mlm), policy=policy, **SETTINGS)
    assert result["draws"] == 3 * 40  # every generated position is drawn once along the trajectory
    assert result["token_agreement"] == 1.0
    assert result["max_probability_gap"] == 0.0


def test_another_attention_kernel_is_within_the_tolerance(mlm, tokenizer, canvas):
    """The eager attention implementation instead of SDPA: other kernels, the same maths; it must stay within the
    tolerance that the working precision sets (float32 against float64 here)."""
    other = copy.deepcopy(mlm)
    other.set_attn_implementation("eager")
    result = step_tolerance(mlm, tokenizer, canvas, plain_step(other), **SETTINGS)
    fast, precision = result["fast"], result["precision"]
    assert 0 < fast["max_probability_gap"] < 1e-4, "other kernels: different last bits, tiny gaps"
    assert within_tolerance(fast, precision), (fast, precision)


def test_a_different_model_is_outside_the_tolerance(mlm, tokenizer, canvas):
    """The check can fail: perturbed weights draw other tokens far more often than precision does."""
    other = copy.deepcopy(mlm)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    result = step_tolerance(mlm, tokenizer, canvas, plain_step(other), **SETTINGS)
    fast, precision = result["fast"], result["precision"]
    assert fast["token_agreement"] < 0.9
    assert not within_tolerance(fast, precision)


def test_teacher_forcing_reads_the_given_context(causal_lm, tokenizer):
    """Forced along run A, a run with another seed draws what it would draw after A's tokens: its first draw is its
    own free run's first token (same prefix, same uniform), and the plain loop and the static decoder, forced alike,
    draw the same tokens."""
    from roberta_diffusion.sampler import generate_ar

    prefix = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    a = generate_ar(causal_lm, tokenizer, prefix, max_len=20, seed=0)
    b = generate_ar(causal_lm, tokenizer, prefix, max_len=20, seed=1)
    forced = generate_ar(causal_lm, tokenizer, prefix, max_len=20, seed=1, teacher_forced=a.final)
    static = generate_ar(causal_lm, tokenizer, prefix, max_len=20, seed=1, teacher_forced=a.final, static_cache=True)
    assert torch.equal(forced.final[:, 6], b.final[:, 6])
    assert not torch.equal(forced.final, b.final), "later draws follow A's context, not B's"
    assert torch.equal(forced.final, static.final)
    with pytest.raises(ValueError, match="teacher_forced"):
        generate_ar(causal_lm, tokenizer, prefix, max_len=20, teacher_forced=a.final[:, :10])


def test_the_static_decoder_is_within_the_tolerance_of_the_plain_loop(causal_lm, tokenizer):
    from benchmarks.agreement import ar_teacher_forced

    prefix = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    result = ar_teacher_forced(causal_lm, tokenizer, prefix, max_len=24)
    assert result["fast"]["draws"] == 2 * 18
    assert result["fast"]["token_agreement"] == 1.0  # fp32 on CPU: the same tokens
    assert result["within_tolerance"] is True


class _UncopyableGraph:
    """Stand-in for a captured CUDA graph, which (a pybind object) cannot be deep-copied."""

    def __init__(self, step):
        self.step = step

    def replay(self):
        self.step()

    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle 'CUDAGraph' object")


def test_the_graphed_decoder_is_compared_although_its_graph_cannot_be_copied(monkeypatch, causal_lm, tokenizer):
    """The float32 yardstick copies the model after the graphed run, which left a captured graph on it."""
    from roberta_diffusion import graphs

    from benchmarks.agreement import ar_teacher_forced

    def fake_capture(step, warmup=2):
        for _ in range(warmup):
            step()
        return _UncopyableGraph(step)

    monkeypatch.setattr(graphs, "capture", fake_capture)
    monkeypatch.setattr("roberta_diffusion.autoregressive.check_graph_device", lambda device: None)
    model = copy.deepcopy(causal_lm)
    prefix = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    result = ar_teacher_forced(model, tokenizer, prefix, graph=True, max_len=24)
    assert result["fast"]["token_agreement"] == 1.0 and result["within_tolerance"] is True
    assert graphs.model_cache(model), "the model keeps its captured decoder"


def test_several_decoders_share_one_plain_run_and_one_wider_pass(monkeypatch, causal_lm, tokenizer):
    from benchmarks import agreement

    calls = []
    real = agreement.generate_ar

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(agreement, "generate_ar", counting)
    prefix = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    found = agreement.ar_teacher_forced_all(causal_lm, tokenizer, prefix, {"a": {}, "b": {}}, max_len=24)
    assert len(calls) == 4, "one plain run, one forced run per decoder, one wider-dtype run"
    assert found["a"]["precision"] is found["b"]["precision"]
    assert all(f["fast"]["token_agreement"] == 1.0 for f in found.values())
