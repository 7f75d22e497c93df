"""The fast paths give the plain paths' tokens: the fixed-shape GPT-2 decoder with a static KV cache, and the
graph runners' buffer handling (on CPU a stand-in replays the step eagerly; on a GPU `bench` checks the real
CUDA graphs the same way and records the result)."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion import graphs
from roberta_diffusion.canvas import infill_canvas
from roberta_diffusion.fast_ar import StaticCacheGPT2
from roberta_diffusion.sampler import generate_ar, generate_diffusion
from roberta_diffusion.sampling import Sampling

PROMPTS = ["The cat sat on the mat and", "A", "Once upon a time in a land far"]  # left padding on short ones


class EagerGraph:
    """Stand-in for a captured CUDA graph: ``replay`` runs the step. Counts captures and replays."""

    captures = 0

    def __init__(self, step):
        self.step = step
        EagerGraph.captures += 1

    def replay(self):
        self.step()


@pytest.fixture
def graphs_on_cpu(monkeypatch):
    def fake_capture(step, warmup=2):
        for _ in range(warmup):  # the real capture runs the step this many times before recording it
            step()
        return EagerGraph(step)

    EagerGraph.captures = 0
    monkeypatch.setattr(graphs, "capture", fake_capture)
    monkeypatch.setattr("roberta_diffusion.sampler.check_graph_device", lambda device: None)
    monkeypatch.setattr("roberta_diffusion.autoregressive.check_graph_device", lambda device: None)


def test_static_cache_forward_matches_the_hf_forward(causal_lm):
    ids = torch.randint(5, causal_lm.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, :3] = 0  # left padding
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = causal_lm(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, -1]
        decoder = StaticCacheGPT2(causal_lm, batch=2, max_len=20)
        key_ok = torch.ones(2, 20, dtype=torch.bool)
        key_ok[:, :12] = attention.bool()
        got = decoder.forward(ids, positions, torch.zeros(1, dtype=torch.long), key_ok)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("knobs", [dict(), dict(temperature=0.7, top_k=0, top_p=0.9), dict(top_k=5, top_p=1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_static_cache_decoding_gives_the_plain_loops_tokens(causal_lm, tokenizer, knobs, seed):
    plain = generate_ar(causal_lm, tokenizer, PROMPTS, max_len=40, prefix_len=18, seed=seed, **knobs)
    fast = generate_ar(causal_lm, tokenizer, PROMPTS, max_len=40, prefix_len=18, seed=seed, static_cache=True, **knobs)
    assert torch.equal(fast.final, plain.final)
    assert torch.equal(fast.ids, plain.ids), "the same trace, step by step"
    assert fast.texts == plain.texts
    torch.testing.assert_close(fast.confidence, plain.confidence, equal_nan=True, atol=1e-5, rtol=1e-4)


def test_ar_graph_runner_reuses_its_capture_and_matches_the_plain_loop(causal_lm, tokenizer, graphs_on_cpu):
    model = copy.deepcopy(causal_lm)  # the runner caches its decoder on the model
    for seed in (0, 1, 2):
        plain = generate_ar(model, tokenizer, PROMPTS, max_len=32, prefix_len=18, seed=seed)
        fast = generate_ar(model, tokenizer, PROMPTS, max_len=32, prefix_len=18, seed=seed, graph=True)
        assert torch.equal(fast.ids, plain.ids), f"seed {seed}"
    assert EagerGraph.captures == 1, "one capture per shape, replayed by later calls"


def test_the_kept_decoder_holds_no_autograd_history(causal_lm):
    """The decoder's cache outlives a call; history written into it chained every later call to it (an H200 script
    calling the decoder with grad enabled ran out of 140 GiB)."""
    from roberta_diffusion.fast_ar import _decode_static

    model = copy.deepcopy(causal_lm)  # the decoder is kept on the model
    graphs.release(model)  # decoders other tests left on the shared model travel with the copy
    prefix = torch.randint(5, model.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    uniforms = torch.rand((16, 2), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.is_grad_enabled()
    for _ in range(2):
        ids, confidence, _ = _decode_static(model, prefix, torch.ones_like(prefix), 24, uniforms, 1.0, 0, 1.0, False)
    (decoder,) = graphs.model_cache(model).values()
    assert not decoder.keys.requires_grad and not decoder.values.requires_grad
    assert ids.grad_fn is None and confidence.grad_fn is None


@pytest.mark.parametrize("policy", ["redraw", "random", "confidence", "margin", "entropy"])
def test_diffusion_graph_runner_matches_the_plain_loop(mlm, tokenizer, graphs_on_cpu, policy):
    model = copy.deepcopy(mlm)
    runs = [dict(seed=0), dict(seed=1), dict(seed=0, temperature=0.8)]
    for kwargs in runs:
        plain = generate_diffusion(model, tokenizer, PROMPTS, steps=5, prefix_len=18, max_len=40, policy=policy, **kwargs)
        fast = generate_diffusion(model, tokenizer, PROMPTS, steps=5, prefix_len=18, max_len=40, policy=policy,
                                  graph=True, **kwargs)
        assert torch.equal(fast.ids, plain.ids), kwargs
        torch.testing.assert_close(fast.confidence, plain.confidence, equal_nan=True)
    assert EagerGraph.captures == 2, "the two temperatures are two graphs; the seeds share one"


def test_diffusion_graph_runner_with_blocks_and_uneven_infill_rows(mlm, tokenizer, graphs_on_cpu):
    model = copy.deepcopy(mlm)
    canvas = infill_canvas(tokenizer, ["The <mask*7> sat down.", "A <mask*13> on the <mask*4> mat"])
    for semi_ar_block in (None, 6):
        plain = generate_diffusion(model, tokenizer, canvas=canvas, steps=6, policy="confidence", semi_ar_block=semi_ar_block)
        fast = generate_diffusion(model, tokenizer, canvas=canvas, steps=6, policy="confidence", semi_ar_block=semi_ar_block,
                                  graph=True)
        assert torch.equal(fast.ids, plain.ids)


def test_graphs_need_cuda_and_a_fixed_step_count(mlm, causal_lm, tokenizer):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        generate_diffusion(mlm, tokenizer, "Hello", steps=2, max_len=24, prefix_len=6, graph=True)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        generate_ar(causal_lm, tokenizer, "Hello", max_len=24, prefix_len=6, graph=True)


def test_threshold_has_no_graph(mlm, tokenizer, graphs_on_cpu):
    with pytest.raises(ValueError, match="threshold"):
        generate_diffusion(mlm, tokenizer, "Hello", steps=2, max_len=24, prefix_len=6, policy="threshold", graph=True)


def test_the_compiled_step_is_refused_off_cuda(mlm, tokenizer):
    # inductor's CPU code for the step committed nothing on batches with different rows (torch 2.13), so the
    # compiled step is a CUDA path; `bench` reports its token agreement with the eager loop and any masks left
    with pytest.raises(ValueError, match="compile=True is for CUDA"):
        generate_diffusion(mlm, tokenizer, "Hello", steps=2, max_len=24, prefix_len=6, compile=True)


def test_the_static_decoder_refuses_what_it_cannot_reproduce(causal_lm, tokenizer, graphs_on_cpu):
    unscaled = copy.deepcopy(causal_lm)
    unscaled.config.scale_attn_weights = False
    with pytest.raises(ValueError, match="scales attention"):
        generate_ar(unscaled, tokenizer, "Hello", max_len=24, prefix_len=6, static_cache=True)
    with pytest.raises(ValueError, match="at least 3 positions"):
        generate_ar(copy.deepcopy(causal_lm), tokenizer, torch.tensor([[0]]), max_len=2, prefix_len=1, graph=True)


def test_release_frees_what_the_samplers_keep(mlm, tokenizer, graphs_on_cpu):
    model = copy.deepcopy(mlm)
    generate_diffusion(model, tokenizer, "Hello", steps=2, max_len=24, prefix_len=6, graph=True)
    assert graphs.model_cache(model)
    graphs.release(model)
    assert not graphs.model_cache(model)


def _run_steps(model, x, attention, plan, **knobs):
    from roberta_diffusion.sampler import diffusion_step

    confidence = torch.full(x.shape, float("nan"))
    for j in range(plan.in_block.shape[0]):
        x, confidence, _ = diffusion_step(model, x, confidence, confidence, attention, plan, torch.tensor([j]), **knobs)
    return x, confidence


@pytest.mark.parametrize("semi_ar_block", [None, 5])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 50, 0.95), (0.7, 0, 1.0)])
def test_random_draws_only_where_it_commits_and_gets_the_same_tokens(mlm, tokenizer, semi_ar_block, temperature, top_k, top_p):
    """``random`` fixes its positions in the plan and draws only there; drawing at every free position and
    committing the same ones (the generic step, here by emptying the plan's commit fields) gives the same text."""
    from roberta_diffusion.draws import make_generator
    from roberta_diffusion.plan import _no_commits, make_plan
    from roberta_diffusion.sampler import model_attention_mask

    canvas = infill_canvas(tokenizer, ["The <mask*7> sat down.", "A <mask*13> on the <mask*4> mat"])
    free = ~canvas.pinned & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, tokenizer.mask_token_id)
    sampling = Sampling(policy="random", steps=8, schedule="cosine", semi_ar_block=semi_ar_block,
                        temperature=temperature, top_k=top_k, top_p=top_p)
    plan = make_plan(free, sampling, make_generator(3, "cpu"))
    counts_per_step = plan.commit_ok.sum(dim=2)  # [S, B]
    assert torch.equal(counts_per_step.sum(dim=0), free.sum(dim=1)), "every free position is committed exactly once"
    assert plan.commit_pos.shape[-1] < free.sum(dim=1).max(), "a step draws at fewer positions than the canvas has free"
    knobs = dict(sampling=sampling, mask_id=tokenizer.mask_token_id)
    attention = model_attention_mask(mlm, canvas.attention)
    planned = _run_steps(mlm, x, attention, plan, **knobs)
    generic_plan = copy.copy(plan)
    generic_plan.commit_pos, generic_plan.commit_ok, generic_plan.commit_draw = _no_commits(8, len(x), "cpu")
    generic = _run_steps(mlm, x, attention, generic_plan, **knobs)
    assert torch.equal(planned[0], generic[0])
    assert not (planned[0] == tokenizer.mask_token_id).any()
    torch.testing.assert_close(planned[1], generic[1], equal_nan=True)


def test_random_reveals_in_a_uniformly_random_order():
    """``random`` commits by one key per position: over many seeds every free position is equally likely to come
    at any step (no bias to the left or right of the canvas, as a tie-break or an ignored key would give)."""
    from roberta_diffusion.draws import make_generator
    from roberta_diffusion.plan import make_plan

    free = torch.zeros(1, 24, dtype=torch.bool)
    free[0, 4:] = True  # 20 free positions, 4 steps of 5
    step_of = torch.zeros(20)
    runs = 400
    for seed in range(runs):
        plan = make_plan(free, Sampling(policy="random", steps=4), make_generator(seed, "cpu"))
        pos = plan.commit_pos[:, 0]  # [S, C] the positions each step commits
        steps = torch.arange(4).unsqueeze(1).expand_as(pos)
        step_of.scatter_add_(0, (pos - 4).flatten(), steps.flatten().float())
        keys = plan.noise[0, 0]
        assert keys[pos[0]].min() > keys[pos[1]].max(), "the first step takes the highest keys"
    mean_step = step_of / runs  # 1.5 for every position if the order is uniform; sd of this mean ~0.056
    assert (mean_step - 1.5).abs().max() < 0.25, mean_step


def test_repeatable_attention_holds_sdpa_to_the_repeatable_kernels_on_cuda_only():
    """On CUDA the AR decoders run SDPA with the memory-efficient kernel (math as the fallback): the kernel picked
    otherwise for a masked cache did not repeat its results at B >= 16 on an H200. Elsewhere nothing changes."""
    from roberta_diffusion.graphs import repeatable_attention

    before = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled())
    with repeatable_attention("cuda"):
        assert torch.backends.cuda.mem_efficient_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.cudnn_sdp_enabled()
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled()) == before
    with repeatable_attention("cpu"):
        assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.cudnn_sdp_enabled()) == before
