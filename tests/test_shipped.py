"""The shipped weights: within the size budget, loaded by default in float32, generating text, and described by
cards whose numbers are the eval.json's."""

from __future__ import annotations

import json

import pytest
import torch
from roberta_diffusion import models, paths
from roberta_diffusion.sampler import generate_ar, generate_diffusion

pytestmark = pytest.mark.skipif(not (paths.SHIPPED_MLM / "config.json").exists(), reason="no shipped weights")
FOLDERS = [paths.SHIPPED_MLM, paths.SHIPPED_AR]


def test_shipped_weights_fit_the_budget_in_small_bf16_shards():
    shards = [f for folder in FOLDERS for f in folder.glob("*.safetensors")]
    assert len(shards) >= 2
    assert sum(f.stat().st_size for f in shards) <= 80e6
    assert max(f.stat().st_size for f in shards) < 15 * 2**20
    for folder in FOLDERS:
        assert json.loads((folder / "config.json").read_text())["dtype"] in ("bfloat16", "float16")


@pytest.fixture(scope="module")
def shipped():
    notes = []
    mlm, tok = models.default_models("mlm", say=notes.append)
    ar, ar_tok = models.default_models("ar", say=notes.append)
    return mlm, ar, tok, ar_tok, notes


def test_the_defaults_are_the_shipped_models_in_float32_with_one_vocabulary(shipped):
    mlm, ar, tok, ar_tok, notes = shipped
    assert notes == [], "no fallback note when weights are shipped"
    assert models.is_masked_lm(mlm) and not models.is_masked_lm(ar)
    assert {p.dtype for p in mlm.parameters()} == {p.dtype for p in ar.parameters()} == {torch.float32}
    assert tok.get_vocab() == ar_tok.get_vocab()
    assert mlm.config.num_hidden_layers == ar.config.n_layer and mlm.config.hidden_size == ar.config.n_embd


def test_the_shipped_models_write_text_from_a_prompt(shipped):
    mlm, ar, tok, _, _ = shipped
    diffusion = generate_diffusion(mlm, tok, "The history of the city", steps=4, max_len=48)
    assert not (diffusion.final == tok.mask_token_id).any()
    assert diffusion.texts[0].startswith("The history of the city") and len(diffusion.completions[0].split()) >= 5
    autoregressive = generate_ar(ar, tok, "The history of the city", max_len=48)
    assert len(autoregressive.completions[0].split()) >= 5


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda f: f.name)
def test_each_card_quotes_its_eval_json(folder):
    result = json.loads((folder / "eval.json").read_text())
    card = (folder / "README.md").read_text()
    for held in result["heldout"].values():
        assert f"{held['ar']['ppl']:.1f}" in card and f"{held['mlm_elbo']['ppl']:.1f}" in card
    for fact in ("tokens seen", "training hardware", "training wall time", "licence of the data", "hyperparameters"):
        assert f"| {fact} |" in card
    assert "roberta-diffusion eval" in card, "the command that wrote eval.json"
