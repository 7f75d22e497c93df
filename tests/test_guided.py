"""Twin-guided sampling: N diffusion candidates per prompt in one batch, corrected where the AR twin points, one kept
by the twin."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion import guided
from roberta_diffusion.canvas import prompt_canvas
from roberta_diffusion.guided import generate_guided, repeat_rows, sequence_logprob
from roberta_diffusion.sampler import generate_diffusion

PROMPTS = ["The cat sat on the mat and", "A"]
SETTINGS = {"steps": 4, "policy": "random", "top_k": 0, "top_p": 1.0}


def test_one_candidate_is_plain_diffusion(mlm, causal_lm, tokenizer):
    canvas = prompt_canvas(tokenizer, PROMPTS, None, 24)
    guided = generate_guided(mlm, causal_lm, tokenizer, canvas=canvas, candidates=1, seed=3, **SETTINGS)
    plain = generate_diffusion(mlm, tokenizer, canvas=canvas, seed=3, **SETTINGS)
    assert torch.equal(guided.final, plain.final) and guided.settings["candidates"] == 1


def test_likelihood_keeps_the_candidate_the_twin_scores_highest(mlm, causal_lm, tokenizer):
    canvas, n = prompt_canvas(tokenizer, PROMPTS, None, 24), 5
    guided = generate_guided(mlm, causal_lm, tokenizer, canvas=canvas, candidates=n, seed=1, **SETTINGS)
    every = generate_diffusion(mlm, tokenizer, canvas=repeat_rows(canvas, n), seed=1, **SETTINGS)
    scores = sequence_logprob(causal_lm, every.final, every.attention, every.generated).view(len(PROMPTS), n)
    best = every.final.view(len(PROMPTS), n, -1)[torch.arange(len(PROMPTS)), scores.argmax(dim=1)]
    assert torch.equal(guided.final, best)
    assert len(set(map(tuple, every.final.tolist()))) > 2, "the candidates differ"
    assert guided.ids.shape == (SETTINGS["steps"] + 1, len(PROMPTS), 24) and len(guided.texts) == len(PROMPTS)


def test_importance_resampling_is_repeatable_and_picks_a_candidate(mlm, causal_lm, tokenizer):
    canvas, n = prompt_canvas(tokenizer, PROMPTS, None, 24), 4
    a = generate_guided(mlm, causal_lm, tokenizer, canvas=canvas, candidates=n, pick="importance", seed=2, **SETTINGS)
    b = generate_guided(mlm, causal_lm, tokenizer, canvas=canvas, candidates=n, pick="importance", seed=2, **SETTINGS)
    every = generate_diffusion(mlm, tokenizer, canvas=repeat_rows(canvas, n), seed=2, **SETTINGS).final
    assert torch.equal(a.final, b.final)
    for row in range(len(PROMPTS)):
        assert any(torch.equal(a.final[row], every[row * n + i]) for i in range(n))


@pytest.mark.parametrize("policy,top_k,top_p,temperature", [("random", 20, 0.9, 0.8), ("random", 0, 1.0, 1.0),
                                                              ("redraw", 20, 1.0, 1.2)])
def test_the_proposal_is_what_each_token_was_drawn_from(mlm, tokenizer, policy, top_k, top_p, temperature):
    """Importance weights are exact only if ``q`` is the sampler's own draw probability: recompute it by running the
    model on the canvas before each step and reading the tempered, filtered distribution at what that step wrote."""
    from roberta_diffusion.draws import filter_logits
    from roberta_diffusion.sampler import model_attention_mask

    canvas = prompt_canvas(tokenizer, PROMPTS, None, 24)
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, seed=5, steps=4, policy=policy, top_k=top_k,
                               top_p=top_p, temperature=temperature)
    expected = torch.full(trace.final.shape, float("nan"))
    attention = model_attention_mask(mlm, canvas.attention)
    for before, after in zip(trace.ids[:-1], trace.ids[1:], strict=True):
        logits = mlm(input_ids=before, attention_mask=attention).logits.float()
        logits[..., tokenizer.mask_token_id] = float("-inf")
        log_q = filter_logits(logits / temperature, top_k, top_p).double().log_softmax(dim=-1)
        # `random` writes each position once; `redraw` draws every free position again at every step
        written = (after != tokenizer.mask_token_id) & trace.generated
        if policy == "random":
            written &= before == tokenizer.mask_token_id
        expected = torch.where(written, log_q.gather(-1, after[..., None]).squeeze(-1).float(), expected)
    generated = trace.generated
    assert torch.isfinite(trace.proposal[generated]).all() and trace.proposal[~generated].isnan().all()
    torch.testing.assert_close(trace.proposal[generated], expected[generated], atol=1e-4, rtol=1e-4)


def test_a_left_padded_row_scores_as_unpadded(causal_lm, tokenizer):
    padded = prompt_canvas(tokenizer, ["The cat sat on the mat and", "A dog"], None, 16)
    alone = prompt_canvas(tokenizer, ["A dog"], None, 16 - int((padded.attention[1] == 0).sum()))
    ids = torch.randint(10, 200, padded.ids.shape, generator=torch.Generator().manual_seed(0))
    ids = torch.where(padded.attention.bool(), ids, padded.ids)
    ids_alone = ids[1:, padded.attention[1].bool()]
    scored = padded.attention.bool() & ~padded.pinned
    both = sequence_logprob(causal_lm, ids, padded.attention, scored)
    one = sequence_logprob(causal_lm, ids_alone, alone.attention, scored[1:, padded.attention[1].bool()])
    torch.testing.assert_close(both[1], one[0])


@pytest.mark.parametrize("bad,match", [({"candidates": 0}, "candidates"), ({"pick": "loudest"}, "pick"),
                                       ({"corrections": -1}, "corrections"), ({"corrections": 1.5}, "corrections"),
                                       ({"corrections": 1, "correction_share": 0.0}, "correction_share"),
                                       ({"corrections": 1, "correction_share": 1.5}, "correction_share"),
                                       ({"corrections": 1, "candidates": 2, "pick": "importance"}, "importance")])
def test_bad_settings_are_refused(mlm, causal_lm, tokenizer, bad, match):
    with pytest.raises(ValueError, match=match):
        generate_guided(mlm, causal_lm, tokenizer, PROMPTS, max_len=24, **{**SETTINGS, **bad})


def test_a_guide_with_another_vocabulary_is_refused(mlm, causal_lm, tokenizer):
    other = copy.deepcopy(causal_lm)
    other.config.vocab_size += 1
    with pytest.raises(ValueError, match="vocabulary"):
        generate_guided(mlm, other, tokenizer, PROMPTS, max_len=24, **SETTINGS)
    trace = generate_diffusion(mlm, tokenizer, PROMPTS, max_len=24, **SETTINGS)
    with pytest.raises(ValueError, match="vocabulary"):
        guided.correct(mlm, other, trace, 1)


def test_correcting_a_trace_without_proposals_is_refused(mlm, causal_lm, tokenizer):
    from roberta_diffusion.sampler import generate_ar

    ar_trace = generate_ar(causal_lm, tokenizer, PROMPTS, max_len=24)
    with pytest.raises(ValueError, match="proposal"):
        guided.correct(mlm, causal_lm, ar_trace, 1)


def test_scoring_in_chunks_gives_the_one_pass_scores(causal_lm, tokenizer, monkeypatch):
    """Many candidates are scored a few rows at a time (a budget of logits), with the same numbers as one pass."""
    canvas = prompt_canvas(tokenizer, ["The cat sat", "A dog", "Once upon a time there", "It"], None, 16)
    ids = torch.randint(5, len(tokenizer), canvas.ids.shape, generator=torch.Generator().manual_seed(1))
    ids = torch.where(canvas.attention.bool(), ids, canvas.ids)
    scored = canvas.attention.bool() & ~canvas.pinned
    whole = guided.sequence_logprob(causal_lm, ids, canvas.attention, scored)
    monkeypatch.setattr(guided, "LOGITS_BUDGET", 3 * 16 * causal_lm.config.vocab_size)  # 3 rows a pass: 2 passes
    calls = []
    forward = causal_lm.forward
    monkeypatch.setattr(causal_lm, "forward", lambda *a, **k: calls.append(k["input_ids"].shape[0]) or forward(*a, **k))
    chunked = guided.sequence_logprob(causal_lm, ids, canvas.attention, scored)
    assert calls == [3, 1]
    torch.testing.assert_close(chunked, whole)


def test_a_correction_round_redraws_the_most_undercut_tokens_in_context(mlm, causal_lm, tokenizer):
    """``correct`` against a readable reference: per round, the guide's log-probability of each token (full logits),
    the ``share`` of each row's generated tokens lowest in ``log p_guide - log q`` re-masked, and the masked LM's
    tempered, filtered distribution on that canvas giving the redrawn tokens their new ``q``."""
    from roberta_diffusion.draws import filter_logits

    canvas = prompt_canvas(tokenizer, ["The cat sat on the mat"] * 2, None, 24)  # two rows, drawn apart
    assert canvas.attention.bool().all(), "the reference below reads unpadded rows"
    knobs = {"steps": 3, "policy": "random", "top_k": 20, "top_p": 1.0, "temperature": 0.9}
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, seed=4, **knobs)
    rounds, share = 3, 0.25
    fixed = guided.correct(mlm, causal_lm, trace, rounds, share)
    again = guided.correct(mlm, causal_lm, trace, rounds, share)
    assert torch.equal(fixed.ids, again.ids), "the same seed redraws the same tokens"
    assert fixed.ids.shape[0] == trace.ids.shape[0] + 2 * rounds and torch.equal(fixed.ids[:trace.ids.shape[0]], trace.ids)
    generated, mask_id = trace.generated, tokenizer.mask_token_id
    count = int(round(share * int(generated[0].sum())))
    q = trace.proposal.clone()
    changed = 0
    for r in range(rounds):
        before, masked, after = fixed.ids[trace.steps + 2 * r: trace.steps + 2 * r + 3]
        logits = causal_lm(input_ids=before).logits.float().log_softmax(dim=-1)
        fit = torch.cat([torch.zeros(len(before), 1), logits[:, :-1].gather(-1, before[:, 1:, None]).squeeze(-1)], dim=1)
        gap = torch.where(generated, q - fit, float("-inf"))
        expected = torch.zeros_like(generated).scatter(1, gap.topk(count, dim=1).indices, True)
        assert torch.equal(masked, before.masked_fill(expected, mask_id))
        assert torch.equal(after[~expected], before[~expected]) and not (after == mask_id).any()
        redraw = mlm(input_ids=masked).logits.float()
        redraw[..., mask_id] = float("-inf")
        log_q = filter_logits(redraw / knobs["temperature"], knobs["top_k"], 1.0).log_softmax(dim=-1)
        q = torch.where(expected, log_q.gather(-1, after[..., None]).squeeze(-1), q)
        changed += int((after != before).sum())
    torch.testing.assert_close(fixed.proposal[generated], q[generated], atol=1e-4, rtol=1e-4)
    assert changed > 0, "some redrawn token differs from the one it replaced"
    assert fixed.settings["corrections"] == rounds and fixed.forward_passes == trace.forward_passes + 2 * rounds
    assert torch.equal(fixed.final[trace.pinned], trace.final[trace.pinned])


def test_corrected_candidates_are_kept_by_the_guide(mlm, causal_lm, tokenizer):
    canvas, n = prompt_canvas(tokenizer, PROMPTS, None, 24), 3
    kept = generate_guided(mlm, causal_lm, tokenizer, canvas=canvas, candidates=n, corrections=2, seed=6, **SETTINGS)
    every = guided.correct(mlm, causal_lm, generate_diffusion(mlm, tokenizer, canvas=repeat_rows(canvas, n), seed=6,
                                                              **SETTINGS), 2)
    scores = sequence_logprob(causal_lm, every.final, every.attention, every.generated).view(len(PROMPTS), n)
    best = every.final.view(len(PROMPTS), n, -1)[torch.arange(len(PROMPTS)), scores.argmax(dim=1)]
    assert torch.equal(kept.final, best) and kept.steps == SETTINGS["steps"] + 4


def test_corrections_leave_pinned_and_padding_alone_and_point_at_the_share(mlm, causal_lm, tokenizer):
    canvas = prompt_canvas(tokenizer, PROMPTS, None, 24)
    assert not canvas.attention.bool().all(), "a left-padded row"
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, seed=1, **SETTINGS)
    rounds, share, mask_id = 3, 0.2, tokenizer.mask_token_id
    fixed = guided.correct(mlm, causal_lm, trace, rounds, share)
    keep = ~trace.generated
    assert all(torch.equal(frame[keep], trace.final[keep]) for frame in fixed.ids[trace.steps:])
    pointed = (trace.generated.sum(dim=1) * share).round().clamp(min=1)
    for r in range(rounds):
        assert torch.equal((fixed.ids[trace.steps + 2 * r + 1] == mask_id).sum(dim=1), pointed.long())
    assert not (fixed.final == mask_id).any()


def test_sample_quality_corrects_with_a_guide_and_refuses_without_one(mlm, causal_lm, tokenizer):
    from roberta_diffusion.evaluate import sample_quality
    from roberta_diffusion.sampling import Sampling

    blocks = torch.randint(5, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    sampling = Sampling(steps=3, top_k=0, top_p=1.0, seed=0)
    args = (mlm, tokenizer, None, None, causal_lm, tokenizer, blocks, 6, [3], sampling)
    plain = sample_quality(*args, score_real=False)["diffusion"][3]
    fixed = sample_quality(*args, score_real=False, guide=causal_lm, corrections=2)["diffusion"][3]
    assert fixed["corrections"] == 2 and plain["corrections"] == 0 and fixed["text"] != plain["text"]
    with pytest.raises(ValueError, match="guide"):
        sample_quality(*args, score_real=False, corrections=2)


def test_the_guide_reads_a_prepared_causal_mask_as_the_padding_mask(causal_lm, tokenizer):
    """The correction round gives the guide a 4D causal mask (one attention kernel, graphed or not): it must score
    every real token as the 2D padding mask does, a left-padded row too."""
    canvas = prompt_canvas(tokenizer, PROMPTS, None, 24)
    assert not canvas.attention.bool().all(), "a left-padded row"
    ids, attention = canvas.ids.masked_fill(canvas.ids == tokenizer.mask_token_id, 7), canvas.attention
    plain = guided.token_logprob(causal_lm, ids, attention)
    mask = guided.causal_attention_mask(attention, next(causal_lm.parameters()).dtype)
    prepared = guided.token_logprob(causal_lm, ids, attention, mask)
    real = attention.bool()
    real[:, 0] = False  # nothing predicts a row's first column
    first = attention.long().argmax(dim=1)
    real[torch.arange(len(ids)), first] = False  # nor a padded row's first real token
    torch.testing.assert_close(prepared[real], plain[real], atol=1e-4, rtol=1e-4)


def test_graphed_corrections_need_a_gpu_and_the_guide_beside_the_masked_lm(mlm, causal_lm, tokenizer):
    trace = generate_diffusion(mlm, tokenizer, canvas=prompt_canvas(tokenizer, PROMPTS, None, 24), seed=1, **SETTINGS)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="graph=False"):
            guided.correct(mlm, causal_lm, trace, 2, graph=True)
    meta = copy.deepcopy(causal_lm).to("meta")
    with pytest.raises(ValueError, match="one device"):
        guided.correct(mlm, meta, trace, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graphed_corrections_redraw_the_eager_tokens(mlm, causal_lm, tokenizer):
    gpu_mlm, gpu_guide = copy.deepcopy(mlm).cuda(), copy.deepcopy(causal_lm).cuda()
    trace = generate_diffusion(gpu_mlm, tokenizer, canvas=prompt_canvas(tokenizer, PROMPTS, None, 24), seed=1,
                               **SETTINGS)
    eager, graphed = (guided.correct(gpu_mlm, gpu_guide, trace, 3, 0.3, graph=g) for g in (False, True))
    assert torch.equal(eager.ids, graphed.ids)
    torch.testing.assert_close(graphed.proposal, eager.proposal, rtol=0, atol=0, equal_nan=True)  # NaN where pinned


def test_the_graphed_rounds_plumbing_on_a_cpu(mlm, causal_lm, tokenizer, monkeypatch):
    """Without a GPU, a stand-in for the capture (warm-up calls, then a replay that runs the round) checks what the
    graphed path adds around the round: its buffers take each call's values, keep the state from round to round,
    and serve a second call of the same shape from the cache."""
    captured = []

    class Replay:
        def __init__(self, step):
            self.replay = step

    def capture(step, warmup=2):
        for _ in range(warmup):
            step()
        captured.append(step)
        return Replay(step)

    monkeypatch.setattr(guided.graphs, "capture", capture)
    monkeypatch.setattr(guided, "check_graph_device", lambda device: None)
    canvas = prompt_canvas(tokenizer, PROMPTS, None, 24)
    for seed in (1, 2):  # the second call reuses the first call's buffers
        trace = generate_diffusion(mlm, tokenizer, canvas=canvas, seed=seed, **SETTINGS)
        eager, graphed = (guided.correct(mlm, causal_lm, trace, 3, 0.3, graph=g) for g in (False, True))
        assert torch.equal(eager.ids, graphed.ids)
        torch.testing.assert_close(graphed.proposal, eager.proposal, rtol=0, atol=0, equal_nan=True)
    assert len(captured) == 1
