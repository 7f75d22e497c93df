"""Progressive stacking: a deeper masked LM built from a trained one's layers."""

from __future__ import annotations

import pytest
import torch
from roberta_diffusion import models

from scripts.stack_layers import main, stack_layers


def test_stacked_layers_are_copies_in_order_and_train_apart(mlm):
    import copy

    deep = stack_layers(copy.deepcopy(mlm), 2)
    n = mlm.config.num_hidden_layers
    assert deep.config.num_hidden_layers == 2 * n == len(deep.base_model.encoder.layer)
    for i in range(2 * n):
        source = mlm.base_model.encoder.layer[i % n].state_dict()
        for name, value in deep.base_model.encoder.layer[i].state_dict().items():
            assert torch.equal(value, source[name])
    with torch.no_grad():
        next(deep.base_model.encoder.layer[n].parameters()).add_(1.0)
    assert not torch.equal(next(deep.base_model.encoder.layer[0].parameters()),
                           next(deep.base_model.encoder.layer[n].parameters())), "copies, not shared modules"


def test_the_stacked_folder_loads_with_its_tokenizer(mlm, tokenizer, tmp_path):
    mlm.save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    main([str(tmp_path / "small"), str(tmp_path / "deep"), "--times", "3"])
    deep = models.load_mlm(tmp_path / "deep", device="cpu")
    assert deep.config.num_hidden_layers == 3 * mlm.config.num_hidden_layers
    assert models.load_tokenizer(tmp_path / "deep").get_vocab() == tokenizer.get_vocab()
    with pytest.raises(SystemExit):  # never over an existing folder
        main([str(tmp_path / "small"), str(tmp_path / "deep")])
