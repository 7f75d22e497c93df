"""DiffusionCollator: what gets masked, the labels, the ratio statistics, the ELBO weights and the loss."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion import bpe, data
from roberta_diffusion.collator import DiffusionCollator, diffusion_loss
from roberta_diffusion.paths import SAMPLE_TEXT

PREFIX = 5


@pytest.fixture(scope="module")
def blocks(tokenizer):
    """Real blocks of the sample text, ``[N, 32]``, each starting with bos."""
    return data.load_blocks(SAMPLE_TEXT, tokenizer, block_size=32)


def batch_with_specials(tokenizer, blocks, n=8):
    """Blocks with a pad tail and a stray eos in some rows: the collator must leave both alone."""
    ids = blocks[:n].clone()
    ids[0, -6:] = tokenizer.pad_token_id
    ids[1, 10] = tokenizer.eos_token_id
    ids[2, -1] = tokenizer.eos_token_id
    return ids


def collate(tokenizer, ids, seed=0, **kwargs):
    kwargs.setdefault("prefix_len", PREFIX)
    collator = DiffusionCollator(tokenizer, generator=torch.Generator().manual_seed(seed), **kwargs)
    return collator, collator(ids)


def maskable_reference(tokenizer, ids, prefix_len):
    specials = set(tokenizer.all_special_ids)
    allowed = torch.tensor([[tok not in specials for tok in row] for row in ids.tolist()])
    allowed[:, :prefix_len] = False
    return allowed


def check_batch(tokenizer, ids, batch, prefix_len):
    """The invariants every collated batch must satisfy."""
    masked = batch["labels"] != -100
    # labels: original ids where masked, -100 elsewhere; inputs: <mask> exactly there, untouched elsewhere
    assert torch.equal(batch["labels"][masked], ids[masked])
    assert torch.equal(batch["input_ids"] == tokenizer.mask_token_id, masked)
    assert torch.equal(batch["input_ids"][~masked], ids[~masked])
    # never the prefix, never a special or pad token
    assert not masked[:, :prefix_len].any()
    assert not (masked & ~maskable_reference(tokenizer, ids, prefix_len)).any()
    assert torch.equal(batch["attention_mask"], (ids != tokenizer.pad_token_id).long())
    return masked


@pytest.mark.parametrize("mode", ["levels", "continuous"])
def test_prefix_specials_and_pads_never_masked(tokenizer, blocks, mode):
    ids = batch_with_specials(tokenizer, blocks)
    for seed in range(20):
        _, batch = collate(tokenizer, ids, seed=seed, mode=mode)
        masked = check_batch(tokenizer, ids, batch, PREFIX)
        assert masked.any(dim=1).all(), "every row with maskable tokens gets at least one loss term"


def test_dict_examples_and_list_of_tensors_collate_alike(tokenizer, blocks):
    ids = blocks[:4]
    _, from_tensor = collate(tokenizer, ids, seed=3)
    _, from_dicts = collate(tokenizer, [{"input_ids": row.tolist()} for row in ids], seed=3)
    _, from_rows = collate(tokenizer, list(ids), seed=3)
    for key in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(from_tensor[key], from_dicts[key])
        assert torch.equal(from_tensor[key], from_rows[key])


def _closest_counts(ratio: float, n: int) -> set[int]:
    """round(ratio * n), allowing both neighbours when the product sits on .5 (float rounding decides)."""
    x = ratio * n
    low = int(x // 1)
    if abs(x - low - 0.5) < 1e-5:
        return {max(1, low), max(1, low + 1)}
    return {max(1, round(x))}


def test_levels_mode_one_ratio_per_batch_from_the_grid(tokenizer, blocks):
    n_levels = 8
    ids = batch_with_specials(tokenizer, blocks)
    n_maskable = maskable_reference(tokenizer, ids, PREFIX).sum(dim=1)
    collator = DiffusionCollator(tokenizer, prefix_len=PREFIX, mode="levels", n_levels=n_levels,
                                 generator=torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(200):
        batch = collator(ids)
        ratios = batch["mask_ratio"]
        assert torch.all(ratios == ratios[0]), "levels: one ratio for the whole batch"
        level = ratios[0].item() * n_levels
        assert abs(level - round(level)) < 1e-6 and 1 <= round(level) <= n_levels
        seen.add(round(level))
        masked = check_batch(tokenizer, ids, batch, PREFIX)
        for row in range(ids.shape[0]):
            assert int(masked[row].sum()) in _closest_counts(ratios[0].item(), int(n_maskable[row]))
    assert seen == set(range(1, n_levels + 1)), "every level is drawn over 200 batches"


def test_levels_ratio_one_masks_everything_maskable(tokenizer, blocks):
    ids = batch_with_specials(tokenizer, blocks)
    collator = DiffusionCollator(tokenizer, prefix_len=PREFIX, n_levels=1)
    batch = collator(ids)
    assert torch.equal(batch["labels"] != -100, maskable_reference(tokenizer, ids, PREFIX))


def test_continuous_mode_ratios_are_uniform_per_sample(tokenizer, blocks):
    eps = 1e-3
    collator = DiffusionCollator(tokenizer, prefix_len=PREFIX, mode="continuous", eps=eps,
                                 generator=torch.Generator().manual_seed(0))
    ratios = torch.cat([collator.sample_ratios(100) for _ in range(100)])  # 10,000 draws
    assert ratios.min() >= eps and ratios.max() <= 1
    assert abs(ratios.mean().item() - (1 + eps) / 2) < 0.01
    assert abs(ratios.std().item() - (1 - eps) / 12**0.5) < 0.01  # U(eps, 1): sd = (1-eps)/sqrt(12)
    # a uniform fills every decile about equally
    deciles = torch.histc(ratios, bins=10, min=0, max=1) / len(ratios)
    assert torch.all((deciles - 0.1).abs() < 0.02)

    ids = blocks[:8]
    n_maskable = maskable_reference(tokenizer, ids, PREFIX).sum(dim=1)
    batch = collator(ids)
    assert len(set(batch["mask_ratio"].tolist())) == ids.shape[0], "continuous: one ratio per sample"
    masked = check_batch(tokenizer, ids, batch, PREFIX)
    for row in range(ids.shape[0]):
        assert int(masked[row].sum()) in _closest_counts(batch["mask_ratio"][row].item(), int(n_maskable[row]))


def test_rows_get_different_masks_and_seeds_repeat(tokenizer, blocks):
    ids = blocks[0].repeat(6, 1)  # identical rows: any difference comes from the noise
    _, batch = collate(tokenizer, ids, seed=1, mode="continuous")
    masks = {tuple(row.tolist()) for row in batch["labels"] != -100}
    assert len(masks) == ids.shape[0]
    _, again = collate(tokenizer, ids, seed=1, mode="continuous")
    assert torch.equal(batch["input_ids"], again["input_ids"])
    _, other = collate(tokenizer, ids, seed=2, mode="continuous")
    assert not torch.equal(batch["input_ids"], other["input_ids"])


def test_elbo_weights_are_one_over_t_times_n(tokenizer, blocks):
    ids = batch_with_specials(tokenizer, blocks)
    n_maskable = maskable_reference(tokenizer, ids, PREFIX).sum(dim=1).double()
    _, batch = collate(tokenizer, ids, mode="continuous", weighting="elbo")
    expected = 1.0 / (batch["mask_ratio"].double() * n_maskable)
    torch.testing.assert_close(batch["loss_weight"].double(), expected, rtol=1e-5, atol=0)
    _, plain = collate(tokenizer, ids, mode="continuous")
    assert "loss_weight" not in plain


def test_diffusion_loss_matches_a_hand_computation(tokenizer, blocks):
    ids = blocks[:4]
    _, batch = collate(tokenizer, ids, seed=5, mode="continuous", weighting="elbo")
    labels, weight = batch["labels"], batch["loss_weight"]
    logits = torch.randn(*ids.shape, 50, generator=torch.Generator().manual_seed(0))
    labels = labels.clamp(max=49).masked_fill(labels == -100, -100)  # fit the small vocabulary

    per_row, all_terms = [], []
    for b in range(ids.shape[0]):
        row = 0.0
        for pos in range(ids.shape[1]):
            if labels[b, pos] != -100:
                logp = logits[b, pos].double().log_softmax(dim=-1)
                term = -logp[labels[b, pos]].item()
                row += term
                all_terms.append(term)
        per_row.append(row)
    plain = sum(all_terms) / len(all_terms)
    weighted = sum(r * w for r, w in zip(per_row, weight.tolist(), strict=True)) / len(per_row)

    assert diffusion_loss(logits, labels).item() == pytest.approx(plain, rel=1e-5)
    assert diffusion_loss(logits, labels, weight).item() == pytest.approx(weighted, rel=1e-5)


def test_diffusion_loss_of_nothing_masked_is_zero():
    logits = torch.randn(2, 5, 7)
    assert diffusion_loss(logits, torch.full((2, 5), -100)).item() == 0.0


def test_a_second_tokenizer_with_a_mask_token_works():
    lines = data.load_lines(SAMPLE_TEXT, max_lines=6)
    other = bpe.train_tokenizer(lines, vocab_size=320, min_frequency=1)
    ids = data.tokenize_blocks(lines, other, block_size=24)
    assert ids.shape[0] >= 2
    _, batch = collate(other, ids, seed=0, mode="continuous", prefix_len=3)
    masked = check_batch(other, ids, batch, 3)
    assert masked.any()


def test_tokenizer_without_mask_token_is_refused(tokenizer):
    no_mask = copy.deepcopy(tokenizer)
    no_mask.mask_token = None
    assert no_mask.mask_token_id is None
    with pytest.raises(ValueError, match="mask"):
        DiffusionCollator(no_mask)


def test_tokenizer_built_without_mask_is_refused():
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(tk_models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(["the cat sat on the mat"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False))
    plain = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                    unk_token="<unk>")
    with pytest.raises(ValueError, match="mask"):
        DiffusionCollator(plain)


@pytest.mark.parametrize("kwargs", [dict(mode="uniform"), dict(weighting="mdlm"), dict(prefix_len=-1),
                                    dict(n_levels=0), dict(eps=0.0), dict(eps=1.0)])
def test_bad_settings_are_refused(tokenizer, kwargs):
    with pytest.raises(ValueError):
        DiffusionCollator(tokenizer, **kwargs)


def test_stratified_ratios_are_evenly_spread_uniform_and_bound_the_masked_count(tokenizer):
    """One u per batch: the ratios are eps + (1 - eps) (u + i/B mod 1), so sorted they step by (1 - eps)/B, each is
    uniform over seeds, and no batch masks more than max_masked tokens (the fixed-shape loss relies on it)."""
    eps = 1e-3
    firsts = []
    for seed in range(400):
        collator = DiffusionCollator(tokenizer, PREFIX, "stratified", eps=eps, generator=torch.Generator().manual_seed(seed))
        ratios = collator.sample_ratios(8)
        gaps = ratios.sort().values.diff()
        torch.testing.assert_close(gaps, torch.full((7,), (1 - eps) / 8))
        assert float(ratios.min()) >= eps and float(ratios.max()) <= 1
        firsts.append(float(ratios[0]))
    assert abs(sum(firsts) / len(firsts) - 0.5) < 0.05  # each ratio on its own is uniform: mean near 1/2
    assert sum(f < 0.25 for f in firsts) / len(firsts) == pytest.approx(0.25, abs=0.07)
    for batch_size, length in [(1, 12), (3, 20), (16, 40), (32, 256)]:
        ids = torch.randint(5, len(tokenizer), (batch_size, length), generator=torch.Generator().manual_seed(batch_size))
        bound = DiffusionCollator(tokenizer, PREFIX, "stratified").max_masked(batch_size, length)
        worst = 0
        for seed in range(200):
            collator = DiffusionCollator(tokenizer, PREFIX, "stratified", generator=torch.Generator().manual_seed(seed))
            worst = max(worst, int((collator(ids)["labels"] != -100).sum()))
        assert worst <= bound < batch_size * (length - PREFIX) or batch_size == 1, (batch_size, length, worst, bound)
    with pytest.raises(ValueError, match="stratified"):
        DiffusionCollator(tokenizer, PREFIX, "continuous").max_masked(4, 32)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9, 1.0])
def test_mask_takes_the_rounded_share_of_the_maskable_positions(tokenizer, blocks, ratio):
    """What notebook 01 shows: at ratio t a row masks round(t x its maskable positions), at least one, and never
    a prefix, special or pad position (a row padded at its end and one with a stray ``</s>`` included)."""
    ids = batch_with_specials(tokenizer, blocks)
    collator = DiffusionCollator(tokenizer, prefix_len=PREFIX, generator=torch.Generator().manual_seed(0))
    masked = collator.mask(ids, torch.full((len(ids),), ratio))
    maskable = maskable_reference(tokenizer, ids, PREFIX)
    assert torch.equal(masked.sum(dim=1), torch.clamp(torch.round(ratio * maskable.sum(dim=1)), min=1).long())
    assert not (masked & ~maskable).any()


def test_audit_counts_nothing_for_the_collator_and_catches_a_broken_one(tokenizer, blocks):
    ids = blocks[:4].clone()
    ids[1, -5:] = tokenizer.pad_token_id
    ids[1, 10] = tokenizer.eos_token_id
    collator = DiffusionCollator(tokenizer, PREFIX, generator=torch.Generator().manual_seed(0))
    assert set(collator.audit(ids).values()) == {0}

    class Careless(DiffusionCollator):  # masks the prefix too
        def mask(self, input_ids, ratios, allowed=None):
            return torch.ones_like(input_ids, dtype=torch.bool)

    report = Careless(tokenizer, PREFIX, generator=torch.Generator().manual_seed(0)).audit(ids)
    assert report["prefix masked"] > 0 and report["special masked"] > 0 and report["rows with a wrong count"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["levels", "continuous", "stratified"])
def test_noise_drawn_on_the_gpu_keeps_the_rules_and_repeats_by_seed(tokenizer, blocks, mode):
    from roberta_diffusion.losses import noisy_batch

    collator = DiffusionCollator(tokenizer, 1, mode, max_prefix_len=8, span_prob=0.5, weighting="elbo")
    first = noisy_batch(collator, blocks, 7, "cuda")
    again = noisy_batch(collator, blocks, 7, "cuda")
    assert first["input_ids"].is_cuda and all(torch.equal(first[k], again[k]) for k in first)
    collator.generator = torch.Generator(device="cuda").manual_seed(3)
    assert not any(collator.audit(blocks.cuda()).values())
    half = noisy_batch(collator, blocks, 7, "cuda", rows=slice(1, None, 2))
    assert torch.equal(half["labels"], first["labels"][1::2])  # a row's noise does not depend on the rows kept
