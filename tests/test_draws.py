"""Token sampling and the reveal schedule, checked against plain loop-over-rows references."""

from __future__ import annotations

import math

import pytest
import torch
from roberta_diffusion.draws import (
    chosen_probability,
    filter_logits,
    reveal_counts,
    sample_tokens,
    still_masked_fraction,
    top_count_mask,
)
from roberta_diffusion.policies import POLICIES, Drawn


def reference_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """One row at a time: keep the k largest, then the smallest descending prefix reaching top_p of the
    (renormalised) mass of the survivors; the best token always stays. Dropped entries are -inf."""
    out = torch.full_like(logits, float("-inf"))
    for r, row in enumerate(logits.tolist()):
        order = sorted(range(len(row)), key=lambda i: -row[i])
        if top_k:
            order = order[:top_k]
        if top_p < 1:
            top = max(row[i] for i in order)
            weights = [math.exp(row[i] - top) for i in order]
            total = sum(weights)
            kept, mass = [], 0.0
            for i, w in zip(order, weights, strict=True):
                kept.append(i)
                mass += w / total
                if mass >= top_p:
                    break
            order = kept
        for i in order:
            out[r, i] = logits[r, i]
    return out


CASES = [(0, 1.0), (5, 1.0), (1, 1.0), (40, 1.0), (100, 1.0), (0, 0.9), (0, 0.5), (0, 0.05), (10, 0.8), (3, 0.3),
         (25, 0.99), (100, 0.6)]  # top_k >= vocab: top-p alone


@pytest.mark.parametrize("top_k,top_p", CASES)
@pytest.mark.parametrize("seed", range(4))
def test_filter_logits_matches_reference(top_k, top_p, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 40, generator=g) * (1 + seed)  # sharper and flatter rows
    got = filter_logits(logits, top_k, top_p)
    want = reference_filter(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(want)), "same surviving set"
    kept = ~torch.isinf(want)
    assert torch.equal(got[kept], logits[kept]), "survivors keep their logits"


def test_filter_logits_keeps_shape_and_batches_leading_dims():
    logits = torch.randn(2, 3, 30, generator=torch.Generator().manual_seed(0))
    got = filter_logits(logits, 4, 0.7)
    assert got.shape == logits.shape
    assert torch.equal(got.view(6, 30), filter_logits(logits.view(6, 30), 4, 0.7))
    assert torch.equal(torch.isinf(got.view(6, 30)), torch.isinf(reference_filter(logits.view(6, 30), 4, 0.7)))
    # filtering off returns an equal copy, not the input itself
    same = filter_logits(logits)
    assert torch.equal(same, logits) and same is not logits


def test_top_p_always_keeps_the_best_token():
    logits = torch.tensor([[5.0, 0.0, -1.0, -2.0]])
    got = filter_logits(logits, 0, 0.01)
    assert torch.isfinite(got).sum() == 1 and torch.isfinite(got[0, 0])


def _empirical(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab).double() / len(tokens)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.5, 8, 1.0), (1.0, 0, 0.8),
                                                     (0.6, 10, 0.9), (2.0, 5, 0.7)])
def test_sample_tokens_follows_the_filtered_tempered_softmax(temperature, top_k, top_p):
    vocab, draws = 24, 40_000
    logits = torch.randn(1, vocab, generator=torch.Generator().manual_seed(11)) * 1.5
    # temperature first, then top-k/top-p on the tempered distribution (as transformers' generate does)
    target = reference_filter(logits / temperature, top_k, top_p).double().softmax(dim=-1)[0]
    tokens, scaled, _ = sample_tokens(logits.expand(draws, vocab), temperature, top_k, top_p,
                                  generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (draws,) and tokens.dtype == torch.long
    assert torch.all(target[tokens] > 0), "only tokens the filters keep are drawn"
    tv = 0.5 * (_empirical(tokens, vocab) - target).abs().sum().item()
    assert tv < 0.03
    # scaled: the tempered, unfiltered logits (what the policies read confidences from)
    torch.testing.assert_close(scaled[0], logits[0] / temperature)
    torch.testing.assert_close(chosen_probability(scaled[:50], tokens[:50]),
                               (logits[0] / temperature).softmax(dim=-1)[tokens[:50]])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 8, 1.0), (1.3, 0, 0.8), (0.9, 10, 0.9)])
def test_the_drawn_probability_is_the_filtered_tempered_one(temperature, top_k, top_p):
    """The third output is each token's probability under what it was drawn from (the proposal of importance
    weights): after the temperature and the filters, not before them."""
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(3)) * 2
    tokens, _, drawn = sample_tokens(logits, temperature, top_k, top_p, generator=torch.Generator().manual_seed(1))
    target = reference_filter(logits / temperature, top_k, top_p).double().softmax(dim=-1)
    assert drawn.dtype == torch.float64
    torch.testing.assert_close(drawn, target.gather(-1, tokens[:, None]).squeeze(-1))


def test_sample_tokens_rows_are_independent():
    vocab = 16
    logits = torch.full((2, vocab), -30.0)
    logits[0, 3] = 0.0
    logits[1, 11] = 0.0
    tokens, _, _ = sample_tokens(logits.repeat(500, 1), 1.0, 0, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, torch.tensor([3, 11]).repeat(500))


def test_sample_tokens_seeded_generator_repeats():
    logits = torch.randn(50, 30, generator=torch.Generator().manual_seed(0))
    a, _, _ = sample_tokens(logits, 1.0, 10, 0.9, generator=torch.Generator().manual_seed(4))
    b, _, _ = sample_tokens(logits, 1.0, 10, 0.9, generator=torch.Generator().manual_seed(4))
    c, _, _ = sample_tokens(logits, 1.0, 10, 0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sample_tokens_top_k_one_is_greedy():
    logits = torch.randn(200, 64, generator=torch.Generator().manual_seed(2))
    tokens, _, _ = sample_tokens(logits, 1.0, 1, 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, logits.argmax(dim=-1))


def test_sample_tokens_never_draws_a_minus_inf_token():
    logits = torch.randn(3000, 12, generator=torch.Generator().manual_seed(0))
    logits[:, ::2] = float("-inf")
    for top_k, top_p in [(0, 1.0), (4, 1.0), (0, 0.9)]:
        tokens, _, _ = sample_tokens(logits, 1.3, top_k, top_p, generator=torch.Generator().manual_seed(1))
        assert torch.all(tokens % 2 == 1)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 3, 10, 64])
def test_reveal_counts_sum_to_the_masked_count(schedule, steps):
    n_masked = torch.tensor([0, 1, 7, 10, 33, 240])
    counts = reveal_counts(n_masked, steps, schedule)
    assert counts.shape == (steps, len(n_masked))
    assert torch.all(counts >= 0)
    assert torch.equal(counts.sum(dim=0), n_masked)
    # still masked after step s: round(n * fraction(s / steps))
    left = n_masked - counts.cumsum(dim=0)
    for s in range(1, steps):
        for b, n in enumerate(n_masked.tolist()):
            x = n * still_masked_fraction(schedule, s / steps)
            assert abs(left[s - 1, b].item() - x) <= 0.5 + 1e-9


def test_linear_reveal_counts_are_even_and_cosine_starts_slow():
    assert reveal_counts(torch.tensor([40]), 4, "linear")[:, 0].tolist() == [10, 10, 10, 10]
    cosine = reveal_counts(torch.tensor([1000]), 10, "cosine")[:, 0]
    assert cosine[0] < cosine[-1], "cosine reveals little first and much last"
    with pytest.raises(ValueError, match="schedule"):
        reveal_counts(torch.tensor([5]), 3, "exponential")


def test_top_count_mask_picks_the_best_eligible_counts():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 30, generator=g)
    eligible = torch.rand(20, 30, generator=g) < 0.5
    counts = torch.randint(0, 20, (20,), generator=g)
    chosen = top_count_mask(scores, eligible, counts)
    assert not (chosen & ~eligible).any()
    for b in range(20):
        n = min(int(counts[b]), int(eligible[b].sum()))
        assert int(chosen[b].sum()) == n
        best = sorted(scores[b][eligible[b]].tolist(), reverse=True)[:n]
        assert sorted(scores[b][chosen[b]].tolist(), reverse=True) == best


def test_top_count_mask_with_tied_and_infinite_scores():
    scores = torch.zeros(3, 8)
    scores[1] = float("-inf")
    scores[2, :4] = float("nan")
    eligible = torch.tensor([[True, False] * 4, [False, True] * 4, [True] * 8])
    chosen = top_count_mask(scores, eligible, torch.tensor([3, 2, 8]))
    assert chosen.sum(dim=1).tolist() == [3, 2, 8]
    assert not (chosen & ~eligible).any()


def policy_scores(policy, scaled, tokens, uniforms=None, order_temperature=0.0):
    """A registered policy's score for ``N`` rows drawn outside a plan: one row of ``N`` candidates, ``uniforms`` as
    both the step's noise and the order key."""
    n = tokens.shape[0]
    key = (uniforms if uniforms is not None else torch.rand(n, dtype=torch.float64)).float().view(1, n)
    drawn = Drawn(scaled, tokens, chosen_probability(scaled, tokens), torch.arange(n).view(1, n), key, key,
                  torch.zeros(0), 0.0, order_temperature)
    return POLICIES[policy].score(drawn)


def test_the_sampled_order_runs_from_confidence_to_the_noise_as_its_temperature_grows():
    scaled = torch.randn(200, 30, generator=torch.Generator().manual_seed(6)) * 3
    tokens = scaled.argmax(dim=-1)
    uniforms = torch.rand(200, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ranks = lambda t: policy_scores("sampled", scaled, tokens, uniforms, t).argsort().argsort().float()  # noqa: E731
    by_confidence = policy_scores("confidence", scaled, tokens).argsort().argsort().float()
    by_noise = uniforms.float().argsort().argsort().float()
    agree = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    assert torch.equal(ranks(0.0), by_confidence)  # T = 0: confidence order exactly
    temperatures = (0.0, 0.03, 0.3, 3.0, 300.0)
    with_confidence = [agree(ranks(t), by_confidence) for t in temperatures]
    with_noise = [agree(ranks(t), by_noise) for t in temperatures]
    assert with_confidence == sorted(with_confidence, reverse=True) and with_noise == sorted(with_noise)
    assert with_noise[-1] > 0.99  # T large: the Gumbel noise (a monotone map of the uniforms) decides


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_policy_scores_read_the_tempered_softmax_without_building_it(temperature):
    scaled = torch.randn(6, 30, generator=torch.Generator().manual_seed(3)) / temperature
    tokens = torch.randint(0, 30, (6,), generator=torch.Generator().manual_seed(4))
    probs = scaled.softmax(dim=-1)
    torch.testing.assert_close(policy_scores("confidence", scaled, tokens), probs[torch.arange(6), tokens])
    top2 = probs.topk(2, dim=-1).values
    torch.testing.assert_close(policy_scores("margin", scaled, tokens), top2[:, 0] - top2[:, 1])
    torch.testing.assert_close(policy_scores("entropy", scaled, tokens), (probs * probs.log()).sum(dim=-1))
    uniforms = torch.rand(6, dtype=torch.float64)
    torch.testing.assert_close(policy_scores("random", scaled, tokens, uniforms=uniforms), uniforms.float())


def test_sample_tokens_with_given_uniforms_matches_the_generator_draw():
    logits = torch.randn(7, 40, generator=torch.Generator().manual_seed(5))
    a, _, _ = sample_tokens(logits, 0.8, 10, 0.9, generator=torch.Generator().manual_seed(9))
    u = torch.rand(7, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    b, _, _ = sample_tokens(logits, 0.8, 10, 0.9, uniforms=u)
    assert torch.equal(a, b)
    # a uniform near 0 picks the most likely kept token, near 1 the least likely kept one
    low, _, _ = sample_tokens(logits, 1.0, 10, 1.0, uniforms=torch.full((7,), 1e-9, dtype=torch.float64))
    high, _, _ = sample_tokens(logits, 1.0, 10, 1.0, uniforms=torch.full((7,), 1 - 1e-9, dtype=torch.float64))
    assert torch.equal(low, logits.argmax(dim=-1))
    assert torch.equal(high, logits.topk(10, dim=-1).indices[:, -1])


def test_the_sampled_score_is_finite_where_the_noise_is_exactly_zero():
    """Noise 0 comes up about once in 2**24 draws; it must rank low, not give NaN (0 x -inf at T = 0)."""
    scaled = torch.randn(4, 30, generator=torch.Generator().manual_seed(8))
    tokens = scaled.argmax(dim=-1)
    uniforms = torch.tensor([0.5, 0.0, 0.25, 0.75], dtype=torch.float64)
    for temperature in (0.0, 2.0):
        assert torch.isfinite(policy_scores("sampled", scaled, tokens, uniforms, temperature)).all()
    assert torch.equal(policy_scores("sampled", scaled, tokens, uniforms, 0.0), policy_scores("confidence", scaled, tokens).log())
