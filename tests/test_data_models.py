"""Corpora (reading, WikiText detokenisation, blocks) and model/tokenizer loading."""

from __future__ import annotations

import gzip
import os

import pytest
import torch
from roberta_diffusion import bpe, data, models, plateau
from roberta_diffusion.paths import SAMPLE_TEXT

# ---------------------------------------------------------------------------------------------------------
# WikiText detokenisation


@pytest.mark.parametrize("raw,clean", [
    ("a @-@ b", "a-b"),
    ("1 @,@ 000 people", "1,000 people"),
    ("$ 5 @.@ 3 million", "$5.3 million"),
    ("word , next .", "word, next."),
    ("( x ) and [ y ] ; z : w !", "(x) and [y]; z: w!"),
    ("do n't , it 's , they 're , we 've , I 'm , you 'll , he 'd", "don't, it's, they're, we've, I'm, you'll, he'd"),
    ('he said " hello there " .', 'he said "hello there".'),
    ("  spaced   out  text  ", "spaced out text"),
    ("50 %", "50%"),
    ("plain prose stays as it is.", "plain prose stays as it is."),
])
def test_wikitext_detokenize(raw, clean):
    assert data.wikitext_detokenize(raw) == clean


def test_wikitext_detokenize_is_idempotent_on_its_output():
    line = ' The game \'s sequel , " Valkyria Chronicles III " , sold 1 @,@ 000 copies ( in 2011 ) .'
    once = data.wikitext_detokenize(line)
    assert once == 'The game\'s sequel, "Valkyria Chronicles III", sold 1,000 copies (in 2011).'
    assert data.wikitext_detokenize(once) == once


def test_iter_lines_drops_empty_lines_and_strips(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first line  \n\n   \n\tsecond\n\n third \n", encoding="utf-8")
    assert data.load_lines(path) == ["first line", "second", "third"]
    assert data.load_lines(str(path)) == ["first line", "second", "third"]
    assert list(data.iter_lines(path, max_lines=2)) == ["first line", "second"]


def test_iter_lines_reads_gzip(tmp_path):
    path = tmp_path / "b.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("zipped one\n\nzipped two — ünïcode\n")
    assert data.load_lines(path) == ["zipped one", "zipped two — ünïcode"]


def test_iter_lines_reads_a_folder_in_sorted_order(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.raw").write_text("from b\n", encoding="utf-8")
    (folder / "a.txt").write_text("from a\n\n", encoding="utf-8")
    with gzip.open(folder / "sub" / "c.gz", "wt", encoding="utf-8") as handle:
        handle.write("from c\n")
    (folder / "notes.md").write_text("not a corpus file\n", encoding="utf-8")
    assert data.load_lines(folder) == ["from a", "from b", "from c"]
    assert data.text_files(folder) == [folder / "a.txt", folder / "b.raw", folder / "sub" / "c.gz"]


def test_iter_lines_missing_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_lines(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt"):
        data.load_lines(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------------------
# blocks


def test_tokenize_blocks(tokenizer):
    lines = data.load_lines(SAMPLE_TEXT)
    block_size = 32
    blocks = data.tokenize_blocks(lines, tokenizer, block_size=block_size, batch_lines=7)
    assert blocks.dtype == torch.long and blocks.ndim == 2 and blocks.shape[1] == block_size
    assert torch.all(blocks[:, 0] == tokenizer.bos_token_id)
    assert not (blocks == tokenizer.pad_token_id).any()
    specials = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(blocks[:, 1:], specials).any(), "only the leading bos is special"
    # the bodies are the token stream of the newline-joined lines, in order, tail dropped
    stream = [t for line in lines for t in tokenizer(line + "\n", add_special_tokens=False)["input_ids"]]
    assert blocks.shape[0] == len(stream) // (block_size - 1)
    assert blocks[:, 1:].flatten().tolist() == stream[: blocks.shape[0] * (block_size - 1)]
    # batching lines differently changes nothing; max_blocks keeps the first blocks
    assert torch.equal(data.tokenize_blocks(lines, tokenizer, block_size, batch_lines=1000), blocks)
    assert torch.equal(data.tokenize_blocks(iter(lines), tokenizer, block_size, max_blocks=2, batch_lines=3),
                       blocks[:2])


def test_tokenize_blocks_refusals(tokenizer):
    with pytest.raises(ValueError, match="block_size"):
        data.tokenize_blocks(["some text"], tokenizer, block_size=1)
    with pytest.raises(ValueError, match="shorter than one block"):
        data.tokenize_blocks(["a few words"], tokenizer, block_size=256)


def test_load_blocks_detokenizes(tokenizer, tmp_path):
    path = tmp_path / "wiki.raw"
    path.write_text(" = Heading = \n\n The year 's end , 1 @,@ 000 of them . \n" * 20, encoding="utf-8")
    raw = data.load_blocks(path, tokenizer, block_size=16)
    clean = data.load_blocks(path, tokenizer, block_size=16, detokenize=True)
    assert tokenizer.decode(clean[:, 1:].flatten()).startswith("= Heading =\nThe year's end, 1,000 of them.\n= ")
    assert tokenizer.decode(raw[:, 1:].flatten()).startswith("= Heading =\nThe year 's end , 1 @,@ 000")


# ---------------------------------------------------------------------------------------------------------
# models and tokenizers


def test_tokenizer_round_trip(tokenizer, tiny_dirs):
    loaded = models.load_tokenizer(tiny_dirs / "mlm")
    text = "The cat sat on the <mask> mat.\nA second line."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id", "unk_token_id"):
        assert getattr(loaded, name) == getattr(tokenizer, name), name
    assert len(loaded) == len(tokenizer)
    ids = tokenizer("The cat sat", add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == "The cat sat"


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_mlm_round_trip(mlm, tokenizer, tiny_dirs):
    loaded = models.load_mlm(tiny_dirs / "mlm", device="cpu")
    assert type(loaded) is type(mlm) and models.is_masked_lm(loaded)
    assert not loaded.training
    _same_weights(loaded, mlm)
    ids = tokenizer(["The cat <mask> on the mat"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, mlm(input_ids=ids).logits)


def test_causal_lm_round_trip(causal_lm, tokenizer, tiny_dirs):
    loaded = models.load_causal_lm(str(tiny_dirs / "ar"), device="cpu")
    assert type(loaded) is type(causal_lm) and not models.is_masked_lm(loaded)
    assert not loaded.training
    _same_weights(loaded, causal_lm)
    ids = tokenizer(["The cat sat on the mat"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, causal_lm(input_ids=ids).logits)


@pytest.mark.parametrize("loader", [models.load_tokenizer, models.load_mlm, models.load_causal_lm])
@pytest.mark.parametrize("name", ["roberta-diffusion-tests/not-cached-anywhere", "not-cached-model-xyz"])
def test_uncached_hub_name_offline_points_to_a_local_folder(loader, name):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest before transformers was imported
    with pytest.raises(FileNotFoundError, match="local folder"):
        loader(name)


def test_max_canvas_len(mlm, causal_lm, tokenizer):
    config = mlm.config
    assert models.max_canvas_len(mlm) == config.max_position_embeddings - config.pad_token_id - 1 == 256
    small = models.fresh_mlm(tokenizer, "tiny", max_len=64)
    assert models.max_canvas_len(small) == 64
    # the longest canvas really fits: RoBERTa numbers positions from pad_token_id + 1
    ids = torch.full((1, 64), tokenizer.mask_token_id)
    with torch.no_grad():
        assert small(input_ids=ids).logits.shape[1] == 64
    assert models.max_canvas_len(causal_lm) == causal_lm.config.n_positions


def test_fresh_models_match_the_tokenizer(mlm, causal_lm, tokenizer):
    for model in (mlm, causal_lm):
        assert model.config.vocab_size >= len(tokenizer) and model.config.vocab_size % 64 == 0
        assert not model.training
    assert mlm.config.hidden_size == models.SIZES["tiny"]["hidden"]
    with pytest.raises(ValueError, match="size"):
        models.fresh_mlm(tokenizer, "enormous")


def test_train_tokenizer_has_roberta_specials(tmp_path):
    lines = data.load_lines(SAMPLE_TEXT, max_lines=8)
    tok = bpe.train_tokenizer(lines, vocab_size=320, min_frequency=1, save_to=tmp_path / "tok")
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == bpe.SPECIAL_TOKENS
    ids = tok("hello")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert (tmp_path / "tok" / "tokenizer.json").exists()
    with pytest.raises(ValueError, match="vocab_size"):
        bpe.train_tokenizer(lines, vocab_size=300)


def test_mask_token_swallows_the_space_before_it(tokenizer):
    """train_tokenizer promises RoBERTa's ``<mask>`` (lstrip): no lone space token before a mask."""
    ids = tokenizer("a <mask> b", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "<mask>", "Ġb"]


@pytest.mark.parametrize("arch", ["roberta-prelayernorm", "modernbert"])
def test_other_masked_lm_architectures_generate_and_train(arch, tokenizer):
    """Every fresh MLM architecture works with the sampler and the training loss."""
    from roberta_diffusion import generate_diffusion
    from roberta_diffusion.collator import DiffusionCollator
    from roberta_diffusion.losses import masked_lm_loss

    model = models.fresh_mlm(tokenizer, "tiny", max_len=48, arch=arch)
    trace = generate_diffusion(model, tokenizer, "The harbour", steps=3, policy="confidence", max_len=48)
    assert not (trace.final == tokenizer.mask_token_id).any()
    batch = DiffusionCollator(tokenizer, prefix_len=4)(torch.randint(10, 300, (2, 48)))
    batch.pop("mask_ratio")
    loss = masked_lm_loss(model.train(), batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    with pytest.raises(ValueError, match="unknown arch"):
        models.fresh_mlm(tokenizer, arch="lstm")


def _sliding_modernbert(tokenizer):
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              num_attention_heads=2, max_position_embeddings=64, local_attention=8,
                              layer_types=["sliding_attention", "full_attention"], pad_token_id=tokenizer.pad_token_id,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              cls_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return ModernBertForMaskedLM(config).eval()


MASKED_LMS = {**{arch: (lambda tok, arch=arch: models.fresh_mlm(tok, "tiny", arch=arch)) for arch in models.MLM_ARCHS},
              "modernbert-sliding-window": _sliding_modernbert}


@pytest.mark.parametrize("name", MASKED_LMS)
def test_partial_logits_equal_the_full_forward_at_the_chosen_positions(tokenizer, name):
    from roberta_diffusion.sampler import model_attention_mask

    model = MASKED_LMS[name](tokenizer)
    ids = torch.randint(5, len(tokenizer), (2, 40), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, :6] = 0  # a left-padded row, as batched prompts have
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).logits  # [B, L, V]: the model's own masking
        rows = (torch.rand(2, 40, generator=torch.Generator().manual_seed(1)) > 0.5) & attention.bool()
        torch.testing.assert_close(models.masked_lm_logits(model, ids, attention, rows), full[rows], atol=1e-5, rtol=1e-5)
        # what the sampler passes (a prepared 4D mask where that means the same) gives the same logits
        index = torch.tensor([[0, 5, 39], [6, 6, 30]])
        expected = full.gather(1, index.unsqueeze(-1).expand(-1, -1, full.shape[-1])).reshape(-1, full.shape[-1])
        got = models.gathered_logits(model, ids, model_attention_mask(model, attention), index)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_models_get_the_2d_mask(tokenizer):
    from roberta_diffusion.sampler import model_attention_mask

    attention = torch.ones(1, 8, dtype=torch.long)
    assert model_attention_mask(_sliding_modernbert(tokenizer), attention).dim() == 2
    assert model_attention_mask(models.fresh_mlm(tokenizer, "tiny"), attention).shape == (1, 1, 1, 8)


def _first_layer_attention(model, ids):
    """Softmax attention ``[B, heads, L, L]`` of the first layer at this model's current weights."""
    base = model.roberta
    hidden = base.embeddings(input_ids=ids)
    attention = base.encoder.layer[0].attention.self
    heads = model.config.num_attention_heads
    split = lambda t: t.view(*t.shape[:2], heads, -1).transpose(1, 2)  # noqa: E731
    q, k = split(attention.query(hidden)), split(attention.key(hidden))
    return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)


def test_locality_init_starts_roberta_with_local_attention(tokenizer):
    """On a canvas of <mask> only (positions are all that differ), a random init attends almost uniformly; the
    locality init puts several times the uniform share on the nearest neighbours."""
    ids = torch.full((1, 64), tokenizer.mask_token_id)
    distance = (torch.arange(64)[:, None] - torch.arange(64)[None, :]).abs()
    near = (distance >= 1) & (distance <= 2)  # [L, L]
    shares = {}
    for amplitude in (0.0, 0.1):
        model = models.fresh_mlm(tokenizer, "tiny", max_len=64, locality=amplitude)
        with torch.no_grad():
            weights = _first_layer_attention(model, ids)[0]  # [heads, L, L]
        shares[amplitude] = float(weights[:, near].mean() * 64)  # 1.0 = uniform
        pe = model.roberta.embeddings.position_embeddings
        assert torch.all(pe.weight[pe.padding_idx] == 0), "the padding row stays zero"
    assert shares[0.0] < 1.5
    assert shares[0.1] > 3 * shares[0.0], shares


def test_locality_init_is_for_learned_positions_only(tokenizer):
    with pytest.raises(ValueError, match="modernbert"):
        models.fresh_mlm(tokenizer, "tiny", arch="modernbert", locality=0.1)
    with pytest.raises(ValueError, match="amplitude"):
        models.fresh_mlm(tokenizer, "tiny", locality=-1)


def test_spread_heads_gives_every_head_fast_and_slow_frequencies():
    """Plain order: head 0 holds only the fastest pairs, the last head only the slowest. Spread: each head's pairs
    are every n_heads-th frequency, so each head holds the fastest and slowest frequency of its share."""
    n_pos, width, n_heads = 16, 24, 3
    table = torch.arange(width, dtype=torch.float32).repeat(n_pos, 1)  # column j holds j: pair k = columns 2k, 2k+1
    spread = plateau._spread_over_heads(table, n_heads)
    pair_of_column = spread[0].view(-1, 2)[:, 0] / 2  # [width/2]: which original pair each slot now holds
    per_head = pair_of_column.view(n_heads, -1)
    assert per_head.tolist() == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    assert torch.equal(spread.sort(dim=1).values, table), "a permutation of the columns"
    with pytest.raises(ValueError, match="even width"):
        plateau._spread_over_heads(torch.zeros(4, 36), 4)  # 9 columns a head


def test_plateau_escape_init_sets_unigram_bias_zero_type_and_small_branches(tokenizer):
    fresh = models.fresh_mlm(tokenizer, "tiny", max_len=64)
    model = models.fresh_mlm(tokenizer, "tiny", max_len=64)
    counts = torch.zeros(model.config.vocab_size)
    counts[10:20] = torch.arange(1.0, 11.0) * 1e6  # large: the +1 smoothing of every count is negligible
    plateau.plateau_escape_init(model, counts)
    # the output bias alone gives the unigram distribution (the rest of the head adds a little input-dependent noise)
    assert torch.allclose(model.lm_head.bias.softmax(-1)[10:20], counts[10:20] / counts.sum(), rtol=0.05)
    assert torch.count_nonzero(model.roberta.embeddings.token_type_embeddings.weight) == 0
    for before, after in zip(fresh.roberta.encoder.layer, model.roberta.encoder.layer, strict=True):
        assert torch.allclose(after.output.dense.weight, 0.1 * before.output.dense.weight)
        assert torch.allclose(after.attention.output.dense.weight, 0.1 * before.attention.output.dense.weight)
        assert torch.equal(after.attention.self.query.weight, torch.eye(model.config.hidden_size))
    local = models.fresh_mlm(tokenizer, "tiny", max_len=64)
    plateau.locality_init(local, amplitude=0.1, spread_heads=True)
    assert torch.equal(model.roberta.embeddings.position_embeddings.weight,
                       local.roberta.embeddings.position_embeddings.weight), "positions spread over the heads"
    with pytest.raises(ValueError, match="RobertaForMaskedLM"):
        plateau.plateau_escape_init(models.fresh_mlm(tokenizer, "tiny", arch="modernbert"), counts)
