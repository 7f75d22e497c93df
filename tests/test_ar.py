"""The autoregressive baseline on a tiny random GPT-2: one token a step, left padding, seeds, refusals."""

from __future__ import annotations

import pytest
import torch
from roberta_diffusion.autoregressive import NOT_YET, generate_ar
from roberta_diffusion.canvas import prompt_prefixes

PROMPTS = ["The cat sat on the mat and", "A"]
PREFIX, MAX_LEN = 12, 28


def run(model, tokenizer, prompts=PROMPTS, **kwargs):
    return generate_ar(model, tokenizer, prompts, **{"prefix_len": PREFIX, "max_len": MAX_LEN, **kwargs})


def test_one_new_token_per_step(causal_lm, tokenizer):
    trace = run(causal_lm, tokenizer)
    steps = MAX_LEN - PREFIX
    assert trace.kind == "ar"
    assert trace.steps == steps == trace.forward_passes == len(trace.step_times)
    assert trace.ids.shape == (steps + 1, len(PROMPTS), MAX_LEN)
    assert torch.all(trace.ids[0, :, PREFIX:] == NOT_YET), "nothing generated at step 0"
    assert not (trace.final == NOT_YET).any()
    for s in range(1, steps + 1):
        changed = trace.ids[s] != trace.ids[s - 1]
        assert torch.all(changed.sum(dim=1) == 1), f"step {s} changes one position per row"
        assert torch.all(changed[:, PREFIX + s - 1]), f"step {s} writes position {PREFIX + s - 1}"
    # the prefix is never touched, and committed_at is the step that wrote each position
    assert torch.all(trace.ids[:, :, :PREFIX] == trace.ids[0, :, :PREFIX])
    expected = torch.arange(MAX_LEN) - PREFIX + 1
    assert torch.equal(trace.committed_at, expected.clamp(min=0).expand(len(PROMPTS), -1))
    conf = trace.confidence[:, PREFIX:]
    assert torch.all((conf > 0) & (conf <= 1)) and torch.all(torch.isnan(trace.confidence[:, :PREFIX]))
    assert trace.new_tokens == len(PROMPTS) * steps


def test_prompt_is_left_padded_into_the_prefix(causal_lm, tokenizer):
    trace = run(causal_lm, tokenizer)
    prefixes = prompt_prefixes(tokenizer, PROMPTS, PREFIX)
    for b, prefix in enumerate(prefixes):
        pad = PREFIX - len(prefix)
        assert trace.final[b, pad:PREFIX].tolist() == prefix
        assert torch.all(trace.attention[b, :pad] == 0) and torch.all(trace.attention[b, pad:] == 1)
        assert trace.texts[b].endswith(trace.completions[b])
    assert PREFIX - len(prefixes[1]) > 0, "the short prompt is padded"


def test_seeds_repeat_and_differ(causal_lm, tokenizer):
    a = run(causal_lm, tokenizer, seed=3)
    b = run(causal_lm, tokenizer, seed=3)
    c = run(causal_lm, tokenizer, seed=4)
    assert torch.equal(a.ids, b.ids) and a.texts == b.texts
    assert not torch.equal(a.final, c.final)


def test_left_padding_is_invisible_to_the_model(causal_lm, tokenizer):
    """Greedy: a padded row continues exactly as the same prompt does unpadded, and batch rows don't mix."""
    batched = run(causal_lm, tokenizer, top_k=1)
    new = MAX_LEN - PREFIX
    for b, prefix in enumerate(prompt_prefixes(tokenizer, PROMPTS, PREFIX)):
        alone = run(causal_lm, tokenizer, [PROMPTS[b]], prefix_len=len(prefix), max_len=len(prefix) + new, top_k=1)
        assert torch.equal(batched.final[b, PREFIX:], alone.final[0, len(prefix):])
        assert batched.completions[b] == alone.completions[0]


def test_greedy_matches_a_full_forward_pass(causal_lm, tokenizer):
    """The KV-cache loop picks what a plain, cache-free forward pass over the text so far would pick."""
    trace = run(causal_lm, tokenizer, [PROMPTS[0]], top_k=1, max_len=PREFIX + 6)
    ids = trace.final[0]
    with torch.no_grad():
        logits = causal_lm(input_ids=ids.unsqueeze(0)).logits[0]
    assert torch.equal(logits[PREFIX - 1:-1].argmax(dim=-1), ids[PREFIX:])


def test_masked_lm_is_refused(mlm, tokenizer):
    with pytest.raises(ValueError, match="masked LM"):
        run(mlm, tokenizer)


def test_seed_none_is_fresh_and_leaves_the_global_rng_alone(causal_lm, tokenizer):
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    a = run(causal_lm, tokenizer, seed=None)
    assert torch.equal(torch.rand(4), expected), "seed=None must not reseed torch's global generator"
    b = run(causal_lm, tokenizer, seed=None)
    assert not torch.equal(a.final, b.final)


def test_ready_prefix_ids_set_the_prefix_length_before_it_is_checked(causal_lm, tokenizer):
    """A 6-token prefix tensor with max_len 12: the default prefix_len (16) must not refuse the run."""
    prefix = torch.randint(5, len(tokenizer), (2, 6), generator=torch.Generator().manual_seed(0))
    trace = generate_ar(causal_lm, tokenizer, prefix, max_len=12)
    assert trace.final.shape == (2, 12) and (trace.final[:, 6:] >= 0).all()
    with pytest.raises(ValueError, match="prefix_len=6 must be smaller than max_len=6"):
        generate_ar(causal_lm, tokenizer, prefix, max_len=6)
