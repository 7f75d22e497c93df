"""How often each token occurs in the training corpus: the background that ``calibrated`` (PC-Sampler) divides out.

``token_counts.json`` (one count per token id, counted on the training blocks) lives beside the shipped tokenizer
and model; ``salience`` turns counts into each token's surprise, ``-log p``, with add-one smoothing so that a token
never seen is the most surprising, not infinite.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

COUNTS_FILE = "token_counts.json"


def count_tokens(blocks: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``blocks [N, L]`` token ids -> ``[V]`` counts."""
    return torch.bincount(blocks.reshape(-1).long(), minlength=vocab_size)[:vocab_size]


def salience(counts: torch.Tensor) -> torch.Tensor:
    """``[V]`` counts -> ``[V]`` float32 ``-log p`` of each token (add-one smoothed)."""
    counts = counts.double() + 1
    return (counts.sum().log() - counts.log()).float()


def save_counts(folder, counts: torch.Tensor, source: str) -> Path:
    path = Path(folder) / COUNTS_FILE
    path.write_text(json.dumps({"source": source, "tokens": int(counts.sum()), "counts": counts.tolist()}))
    return path


def load_counts(folder) -> torch.Tensor:
    return torch.tensor(json.loads((Path(folder) / COUNTS_FILE).read_text())["counts"], dtype=torch.long)


def salience_beside(tokenizer) -> torch.Tensor:
    """The salience stored beside ``tokenizer`` (the folder it was loaded from); a clear error where there is none."""
    path = Path(getattr(tokenizer, "name_or_path", "") or ".") / COUNTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"policy calibrated needs the corpus token frequencies: no {COUNTS_FILE} in "
                                f"{path.parent} (pass salience=corpus.salience(counts), or use the shipped model, "
                                "which has it)")
    found = _salience_of(str(path.resolve()), path.stat().st_mtime_ns)
    if len(found) != len(tokenizer):
        raise ValueError(f"{path} counts {len(found)} tokens, the tokenizer has {len(tokenizer)}")
    return found


@functools.lru_cache(maxsize=8)
def _salience_of(path: str, mtime_ns: int) -> torch.Tensor:
    """Read and turn into salience once per file version: every calibrated call (a panel click, each setting of a
    benchmark grid) would otherwise parse the JSON again. Callers never write into the tensor."""
    return salience(load_counts(Path(path).parent))


def fit_vocabulary(salience: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``salience`` over the model's output rows: a model may pad its vocabulary past the tokenizer's (to a multiple
    of 64); those ids never occur in the corpus, so they get the surprise of a token never seen."""
    if len(salience) > vocab_size:
        raise ValueError(f"the salience covers {len(salience)} tokens, the model only {vocab_size}: counts of another "
                         "tokenizer?")
    return torch.cat([salience, salience.new_full((vocab_size - len(salience),), float(salience.max()))])
