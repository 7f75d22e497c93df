"""Shared fixtures: a tokenizer trained here, tiny random models, and their save_pretrained folders.

Everything is built offline in a few seconds; nothing is downloaded. The fixtures are session-scoped and
read-only: a test that needs to change a model or tokenizer copies it first.
"""

from __future__ import annotations

import os

# before transformers / huggingface_hub are imported: they read these once
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"

import pytest
import torch

# One intra-op thread: the models are tiny, and on a shared 2-core machine a second OpenMP thread spin-waits
# against other processes (measured: a 16-token AR run 1.5 s with 2 threads vs 0.05 s with 1 under load).
torch.set_num_threads(1)

from roberta_diffusion import models  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return models.fallback_tokenizer()


@pytest.fixture(scope="session")
def mlm(tokenizer):
    return models.fresh_mlm(tokenizer, "tiny")


@pytest.fixture(scope="session")
def causal_lm(tokenizer):
    return models.fresh_causal_lm(tokenizer, "tiny")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer, mlm, causal_lm):
    """A folder holding ``mlm/`` and ``ar/``: save_pretrained folders of each model with the tokenizer."""
    root = tmp_path_factory.mktemp("tiny_models")
    for name, model in (("mlm", mlm), ("ar", causal_lm)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root
