"""The diffusion sampler on a tiny random RoBERTa: invariants of every policy, the schedules, blocks, seeds,
batching with left padding, infilling, and the Trace it returns."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion.canvas import infill_canvas, prefix_suffix_canvas, prompt_canvas, prompt_prefixes
from roberta_diffusion.draws import reveal_counts
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.trace import Trace

PROMPTS = ["The cat sat on the mat and", "A"]  # different lengths: the second is left-padded
PREFIX, MAX_LEN, STEPS = 12, 40, 4
COUNTED = [name for name, p in POLICIES.items() if p.counted]  # those that commit the scheduled number per step
FINAL = [name for name, p in POLICIES.items() if p.remask is None]  # a committed token is never touched again


def knobs_of(policy: str | None, tokenizer) -> dict:
    """What a policy needs beyond the defaults to do its own thing: a corpus, a re-mask share."""
    rule = POLICIES.get(policy)
    out = {"salience": torch.rand(len(tokenizer), generator=torch.Generator().manual_seed(0)) * 12} \
        if rule and rule.reads_corpus else {}
    return out | ({"remask": 0.25} if rule and rule.remask == "lowest" else {})


def run(model, tokenizer, prompts=PROMPTS, **kwargs):
    kwargs = {"steps": STEPS, "prefix_len": PREFIX, "max_len": MAX_LEN, **knobs_of(kwargs.get("policy"), tokenizer),
              **kwargs}
    return generate_diffusion(model, tokenizer, prompts, **kwargs)


def masked_counts(trace: Trace) -> torch.Tensor:
    """``[S+1, B]`` generated positions still ``<mask>`` after each step."""
    return ((trace.ids == trace.mask_token_id) & trace.generated).sum(dim=2)


def two_row_infill(tokenizer):
    # rows with different numbers of free positions (and right padding on the shorter one)
    return infill_canvas(tokenizer, ["The <mask*7> sat down.", "A <mask*13> on the <mask*4> mat"])


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_policy_fills_the_canvas_and_keeps_pins(mlm, tokenizer, policy, schedule):
    start = prompt_canvas(tokenizer, PROMPTS, PREFIX, MAX_LEN)
    trace = run(mlm, tokenizer, policy=policy, schedule=schedule)
    mask = tokenizer.mask_token_id

    if policy == "threshold":  # may stop early once everything is committed
        assert 1 <= trace.steps <= STEPS
    else:
        assert trace.steps == STEPS
    assert trace.ids.shape == (trace.steps + 1, len(PROMPTS), MAX_LEN)
    assert trace.forward_passes == trace.steps == len(trace.step_times)

    assert torch.equal(trace.ids[0], start.ids), "step 0 is the start canvas"
    assert torch.equal(trace.pinned, start.pinned) and torch.equal(trace.attention, start.attention)
    assert not (trace.final == mask).any(), "no <mask> left"
    pinned = trace.ids[:, start.pinned]
    assert torch.equal(pinned, start.ids[start.pinned].expand_as(pinned)), "pinned positions never change"
    assert (trace.ids[1:] == mask).sum() < (trace.ids[:-1] == mask).sum(), "progress is made"
    assert trace.masked_share()[0] == 1.0 and trace.masked_share()[-1] == 0.0

    committed = trace.committed_at
    assert torch.all(committed[trace.pinned] == 0)
    gen = trace.generated
    assert torch.all((committed[gen] >= 1) & (committed[gen] <= trace.steps))
    # committed_at: the first step from which the token is final
    for b, pos in gen.nonzero().tolist():
        s = int(committed[b, pos])
        assert torch.all(trace.ids[s:, b, pos] == trace.final[b, pos])
        assert trace.ids[s - 1, b, pos] != trace.final[b, pos]

    assert len(trace.texts) == len(trace.completions) == len(PROMPTS)
    assert all(trace.texts[b].endswith(trace.completions[b]) for b in range(len(PROMPTS)))
    assert trace.settings["policy"] == policy and trace.kind == "diffusion"


@pytest.fixture(scope="module")
def mask_loving_mlm(mlm, tokenizer):
    """The tiny model with its output bias pushed towards <mask>: it would draw <mask> almost always."""
    model = copy.deepcopy(mlm)
    with torch.no_grad():
        model.lm_head.bias[tokenizer.mask_token_id] += 50.0
    return model


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("top_k,top_p", [(50, 0.95), (0, 1.0)])
def test_mask_is_never_drawn_even_when_the_model_prefers_it(mask_loving_mlm, tokenizer, policy, top_k, top_p):
    with torch.no_grad():
        probe = mask_loving_mlm(input_ids=prompt_canvas(tokenizer, PROMPTS, PREFIX, MAX_LEN).ids).logits
    assert (probe.argmax(dim=-1) == tokenizer.mask_token_id).float().mean() > 0.9, "the probe model does prefer it"
    trace = run(mask_loving_mlm, tokenizer, policy=policy, top_k=top_k, top_p=top_p)
    assert not (trace.final == tokenizer.mask_token_id).any()
    if POLICIES[policy].counted:
        assert torch.equal(masked_counts(trace)[:-1] - masked_counts(trace)[1:],
                           reveal_counts(trace.generated.sum(dim=1), STEPS, "linear"))


@pytest.mark.parametrize("policy", FINAL)
def test_committed_tokens_are_final(mlm, tokenizer, policy):
    """Every policy but redraw commits once: a position that is not <mask> never changes again."""
    trace = run(mlm, tokenizer, policy=policy, steps=6)
    for s in range(trace.steps + 1):
        done = trace.ids[s] != tokenizer.mask_token_id
        assert torch.equal(trace.ids[s][done], trace.final[done])


@pytest.mark.parametrize("policy", COUNTED)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_each_step_commits_the_scheduled_count(mlm, tokenizer, policy, schedule):
    steps = 5
    trace = generate_diffusion(mlm, tokenizer, canvas=two_row_infill(tokenizer), steps=steps, policy=policy,
                               schedule=schedule, **knobs_of(policy, tokenizer))
    left = masked_counts(trace)
    n_free = trace.generated.sum(dim=1)
    assert torch.equal(left[0], n_free) and n_free[0] != n_free[1]
    expected = reveal_counts(n_free, steps, schedule)
    assert torch.equal(left[:-1] - left[1:], expected)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_seed_remask_masked_share_follows_the_linear_schedule(mlm, tokenizer, steps):
    trace = generate_diffusion(mlm, tokenizer, canvas=two_row_infill(tokenizer), steps=steps)
    left = masked_counts(trace)
    n_free = trace.generated.sum(dim=1).tolist()
    for s in range(steps + 1):
        assert left[s].tolist() == [round(n * (1 - s / steps)) for n in n_free]
    # redraw resamples generated positions every step: tokens written at step 1 need not survive
    assert trace.settings["policy"] == "redraw"


def test_threshold_commits_at_least_one_per_step_and_stops_early(mlm, tokenizer):
    trace = run(mlm, tokenizer, policy="threshold", steps=6, threshold=1.0)  # a random model is never sure
    left = masked_counts(trace)
    assert trace.steps == 6
    assert torch.all(left[:-1] - left[1:] >= 1)
    assert torch.all(left[-1] == 0)

    easy = run(mlm, tokenizer, policy="threshold", steps=6, threshold=1e-9)  # every draw clears the bar
    assert easy.steps == 1 and easy.forward_passes == 1
    assert not (easy.final == tokenizer.mask_token_id).any()


def _block_index(generated: torch.Tensor, block_size: int) -> torch.Tensor:
    """Block of each generated position, counting generated positions left to right per row (-1 elsewhere)."""
    out = torch.full(generated.shape, -1)
    for b in range(generated.shape[0]):
        free = generated[b].nonzero().flatten().tolist()
        for k, pos in enumerate(free):
            out[b, pos] = k // block_size
    return out


@pytest.mark.parametrize("policy", ["random", "confidence", "margin", "entropy", "threshold"])
@pytest.mark.parametrize("source", ["prompt", "infill"])
def test_blocks_fill_left_to_right(mlm, tokenizer, policy, source):
    block = 6
    if source == "prompt":
        trace = run(mlm, tokenizer, policy=policy, steps=12, semi_ar_block=block)
    else:
        trace = generate_diffusion(mlm, tokenizer, canvas=two_row_infill(tokenizer), steps=12, policy=policy,
                                   semi_ar_block=block)
    blocks = _block_index(trace.generated, block)
    assert not (trace.final == tokenizer.mask_token_id).any()
    n_blocks = int(blocks.max()) + 1
    assert n_blocks >= 3
    for s in range(trace.steps + 1):
        open_ = trace.ids[s] != tokenizer.mask_token_id
        for b in range(trace.ids.shape[1]):
            for k in range(n_blocks - 1):
                started_next = (open_[b] & (blocks[b] == k + 1)).any()
                done = open_[b][blocks[b] == k].all()
                assert done or not started_next, f"step {s}, row {b}: block {k + 1} started before block {k} ended"


def test_blocks_split_the_steps(mlm, tokenizer):
    # 32 free positions in blocks of 8 -> 4 blocks; 8 steps -> 2 each: block k is done after step 2(k+1)
    trace = run(mlm, tokenizer, policy="random", steps=8, semi_ar_block=8)
    committed = trace.committed_at[:, PREFIX:]
    for k in range(4):
        assert torch.all(committed[:, 8 * k: 8 * (k + 1)] <= 2 * (k + 1))
        assert torch.all(committed[:, 8 * k: 8 * (k + 1)] > 2 * k)


def test_block_errors(mlm, tokenizer):
    with pytest.raises(ValueError, match="steps"):
        run(mlm, tokenizer, policy="random", steps=3, semi_ar_block=8)  # 4 blocks, 3 steps
    with pytest.raises(ValueError, match="redraw"):
        run(mlm, tokenizer, policy="redraw", semi_ar_block=8)
    with pytest.raises(ValueError, match="semi_ar_block"):
        run(mlm, tokenizer, policy="random", semi_ar_block=0)


@pytest.mark.parametrize("policy", ["redraw", "random", "confidence"])
def test_seeds_repeat_and_differ(mlm, tokenizer, policy):
    a = run(mlm, tokenizer, policy=policy, seed=7)
    b = run(mlm, tokenizer, policy=policy, seed=7)
    c = run(mlm, tokenizer, policy=policy, seed=8)
    assert torch.equal(a.ids, b.ids)
    assert a.texts == b.texts
    assert not torch.equal(a.final, c.final)


def test_left_padding_is_invisible_to_the_model(mlm, tokenizer):
    """A left-padded row generates what the same prompt generates unpadded (greedy, deterministic policy)."""
    greedy = dict(policy="confidence", top_k=1, steps=5)
    prefixes = prompt_prefixes(tokenizer, PROMPTS, PREFIX)
    assert len(prefixes[1]) < PREFIX, "the second prompt is padded"
    batched = run(mlm, tokenizer, **greedy)
    short = len(prefixes[1])
    alone = run(mlm, tokenizer, [PROMPTS[1]], prefix_len=short, max_len=MAX_LEN - PREFIX + short, **greedy)
    assert alone.ids.shape[2] == MAX_LEN - PREFIX + short
    assert torch.equal(batched.ids[:, 1, PREFIX:], alone.ids[:, 0, short:])
    assert batched.completions[1] == alone.completions[0]
    # and the pads stay pads, outside attention
    pad = PREFIX - short
    assert torch.all(batched.final[1, :pad] == tokenizer.pad_token_id)
    assert torch.all(batched.attention[1, :pad] == 0) and torch.all(batched.attention[1, pad:] == 1)


def test_batch_rows_do_not_interact(mlm, tokenizer):
    greedy = dict(policy="margin", top_k=1, steps=5)
    batched = run(mlm, tokenizer, **greedy)
    for b, prompt in enumerate(PROMPTS):
        alone = run(mlm, tokenizer, [prompt], **greedy)
        assert torch.equal(batched.ids[:, b], alone.ids[:, 0])


@pytest.mark.parametrize("policy", ["redraw", "confidence", "threshold"])
def test_infill_changes_only_the_masks(mlm, tokenizer, policy):
    canvas = infill_canvas(tokenizer, "The <mask*5> on the mat")
    mask = tokenizer.mask_token_id
    holes = canvas.ids == mask
    assert int(holes.sum()) == 5
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, steps=3, policy=policy)
    assert trace.ids.shape[1:] == canvas.ids.shape
    assert torch.equal(trace.generated, holes)
    for s in range(trace.steps + 1):
        assert torch.equal(trace.ids[s][~holes], canvas.ids[~holes])
    assert not (trace.final == mask).any()
    assert trace.completions[0] and trace.texts[0].startswith("The")


def test_prefix_suffix_canvas(mlm, tokenizer):
    gap = 6
    canvas = prefix_suffix_canvas(tokenizer, "The cat", " on the mat.", gap)
    holes = canvas.ids == tokenizer.mask_token_id
    assert int(holes.sum()) == gap
    assert torch.equal(canvas.pinned, ~holes)
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, steps=3, policy="entropy")
    assert torch.equal(trace.final[~holes], canvas.ids[~holes])
    assert not (trace.final == tokenizer.mask_token_id).any()
    assert trace.texts[0].startswith("The cat") and trace.texts[0].endswith(" on the mat.")
    with pytest.raises(ValueError):
        prefix_suffix_canvas(tokenizer, "a", "b", 0)


def test_on_step_sees_every_step(mlm, tokenizer):
    seen = []
    trace = run(mlm, tokenizer, policy="random", on_step=lambda step, ids: seen.append((step, ids.clone())))
    assert [s for s, _ in seen] == list(range(1, trace.steps + 1))
    for step, ids in seen:
        assert torch.equal(ids, trace.ids[step])


def test_confidence_is_recorded_for_generated_positions(mlm, tokenizer):
    trace = run(mlm, tokenizer, policy="confidence")
    conf = trace.confidence[trace.generated]
    assert torch.all((conf > 0) & (conf <= 1))
    assert torch.all(torch.isnan(trace.confidence[trace.pinned]))


def test_trace_save_load_round_trip(mlm, tokenizer, tmp_path):
    trace = run(mlm, tokenizer, policy="random")
    path = trace.save(tmp_path / "sub" / "trace.pt")
    assert path.exists() and list(path.parent.iterdir()) == [path], "no temporary file left behind"
    back = Trace.load(path)
    assert set(vars(back)) == set(vars(trace))
    assert back.tokenizer is None, "the tokenizer is not stored: the file holds the decoded texts"
    for name, value in vars(trace).items():
        other = getattr(back, name)
        if isinstance(value, torch.Tensor):
            assert value.dtype == other.dtype
            torch.testing.assert_close(other, value, equal_nan=True, rtol=0, atol=0)
        elif name != "tokenizer":
            assert other == value, name
    assert back.texts == trace.texts and back.completions == trace.completions
    assert back.summary() == trace.summary()
    assert torch.equal(back.committed_at, trace.committed_at)


def test_texts_are_decoded_on_first_access_and_old_trace_files_still_load(mlm, tokenizer, tmp_path):
    trace = run(mlm, tokenizer, policy="random")
    assert trace._texts is None and trace._completions is None, "sampling itself decodes nothing"
    final, keep = trace.final, trace.attention.bool()
    assert trace.texts == [tokenizer.decode(row[k].tolist(), skip_special_tokens=True) for row, k in zip(final, keep, strict=True)]
    assert trace.completions == [tokenizer.decode(row[g].tolist(), skip_special_tokens=True)
                                 for row, g in zip(final, trace.generated, strict=True)]
    # the layout saved before decoding was lazy: plain `texts` / `completions` keys
    old = {k: v for k, v in vars(trace).items() if k not in ("tokenizer", "_texts", "_completions")}
    torch.save({**old, "texts": ["a"], "completions": ["b"]}, tmp_path / "old.pt")
    back = Trace.load(tmp_path / "old.pt")
    assert back.texts == ["a"] and back.completions == ["b"]
    no_tokenizer = Trace.load(tmp_path / "old.pt")
    no_tokenizer._texts = None
    with pytest.raises(ValueError, match="no tokenizer"):
        _ = no_tokenizer.texts


def test_seed_none_is_fresh_and_leaves_the_global_rng_alone(mlm, tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = run(mlm, tokenizer, policy="random", seed=None)
    assert torch.equal(torch.rand(4), expected), "seed=None must not reseed torch's global generator"
    b = run(mlm, tokenizer, policy="random", seed=None)
    assert not torch.equal(a.final, b.final)


@pytest.mark.parametrize("which", ["fallback", "shipped"])
def test_batch_decoding_gives_the_tokenizers_own_strings(tokenizer, which):
    """Trace texts come from one batched call; they must equal tokenizer.decode row by row, specials dropped."""
    from roberta_diffusion import models, paths
    from roberta_diffusion.trace import decode_rows

    tok = tokenizer if which == "fallback" else models.load_tokenizer(paths.SHIPPED_TOKENIZER)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, len(tok), (n,), generator=generator).tolist() for n in (0, 1, 7, 40)]
    rows.append([tok.bos_token_id, *tok.encode(" naïve café — 東京", add_special_tokens=False), tok.mask_token_id])
    assert decode_rows(tok, rows) == [tok.decode(row, skip_special_tokens=True) for row in rows]


def test_remdm_sends_back_the_scheduled_share_and_still_ends_committed(mlm, tokenizer):
    steps, remask = 6, 0.4
    trace = generate_diffusion(mlm, tokenizer, canvas=two_row_infill(tokenizer), steps=steps, policy="remdm",
                               remask=remask)
    left = masked_counts(trace)
    n_free = trace.generated.sum(dim=1)
    scheduled = n_free - reveal_counts(n_free, steps, "linear").cumsum(dim=0)  # [S, B] still masked, no revision
    masked_before = n_free.clone()
    for j in range(steps):
        revised = torch.zeros_like(n_free) if j == steps - 1 else torch.floor(remask * (n_free - masked_before)).long()
        assert torch.equal(left[j + 1], scheduled[j] + revised), f"step {j + 1}"
        masked_before = left[j + 1]
    assert (left[2:-1] > scheduled[1:-1]).any(), "some committed tokens went back to <mask>"
    assert not (trace.final == tokenizer.mask_token_id).any()


def test_remdm_without_remask_is_the_ancestral_order_with_fresh_noise(mlm, tokenizer):
    trace = run(mlm, tokenizer, policy="remdm", remask=0.0)
    left = masked_counts(trace)
    assert torch.equal(left[:-1] - left[1:], reveal_counts(trace.generated.sum(dim=1), STEPS, "linear"))


def test_calibrated_with_a_strong_pull_commits_left_to_right(mlm, tokenizer):
    canvas = prompt_canvas(tokenizer, ["The cat sat"], None, 16)
    n_free = int((~canvas.pinned & canvas.attention.bool()).sum())
    trace = generate_diffusion(mlm, tokenizer, canvas=canvas, steps=n_free, policy="calibrated", position_decay=50.0,
                               **knobs_of("calibrated", tokenizer))
    order = trace.committed_at[0][trace.generated[0]]
    assert order.tolist() == list(range(1, n_free + 1))


def test_calibrated_needs_corpus_frequencies(mlm, tokenizer, tmp_path):
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.name_or_path = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="token_counts.json"):
        generate_diffusion(mlm, tokenizer, PROMPTS, steps=STEPS, max_len=MAX_LEN, policy="calibrated")


@pytest.mark.parametrize("bad,match", [({"policy": "random", "remask": 0.2}, "remdm"),
                                       ({"policy": "remdm", "remask": 1.0}, r"\[0, 1\)"),
                                       ({"policy": "remdm", "remask": -0.1}, r"\[0, 1\)"),
                                       ({"policy": "calibrated", "position_decay": -1.0}, "position_decay"),
                                       ({"policy": "confidence", "position_decay": 0.1}, "calibrated"),
                                       ({"policy": "greedy"}, "unknown policy")])
def test_new_knobs_refuse_bad_values(mlm, tokenizer, bad, match):
    with pytest.raises(ValueError, match=match):
        run(mlm, tokenizer, **bad)


def test_corpus_counts_are_read_once_per_file_version(mlm, tokenizer, tmp_path, monkeypatch):
    import os

    from roberta_diffusion import corpus

    bare = copy.deepcopy(tokenizer)
    bare.name_or_path = str(tmp_path)
    corpus.save_counts(tmp_path, torch.ones(len(tokenizer), dtype=torch.long), "flat")
    reads = []
    real_load = corpus.load_counts
    monkeypatch.setattr(corpus, "load_counts", lambda folder: reads.append(folder) or real_load(folder))
    first = corpus.salience_beside(bare)
    assert torch.equal(corpus.salience_beside(bare), first) and len(reads) == 1
    corpus.save_counts(tmp_path, torch.arange(1, len(tokenizer) + 1), "rising")
    os.utime(tmp_path / corpus.COUNTS_FILE, ns=(1, 10**18))  # a new version, even within the clock's resolution
    assert not torch.equal(corpus.salience_beside(bare), first) and len(reads) == 2
