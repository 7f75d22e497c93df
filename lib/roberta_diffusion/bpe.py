"""Our own byte-level BPE tokenizer with RoBERTa's special tokens: trained on the corpus, or on the sample text in a
second for tests and the no-weights demo."""

from __future__ import annotations

from collections.abc import Iterable

import transformers
from tokenizers import AddedToken, ByteLevelBPETokenizer, processors

from .data import load_lines
from .paths import SAMPLE_TEXT

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's, in RoBERTa's id order


def train_tokenizer(texts: Iterable[str], vocab_size: int = 16384, save_to=None, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer with RoBERTa's special tokens; return a HF fast tokenizer.

    The result adds ``<s> … </s>`` like RoBERTa when asked for special tokens, and ``<mask>`` swallows the
    space before it (``lstrip``) so ``"a <mask> b"`` round-trips.
    """
    if vocab_size % 64 or not 256 + len(SPECIAL_TOKENS) < vocab_size:
        raise ValueError(f"vocab_size={vocab_size}: use a multiple of 64 above 261, e.g. 16384")
    bpe = ByteLevelBPETokenizer()
    # <mask> must carry lstrip in the backend itself: the tokenizer's mask_token argument below does not
    # update a token the backend already has
    specials = [AddedToken(t, lstrip=True, special=True) if t == "<mask>" else t for t in SPECIAL_TOKENS]
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                            special_tokens=specials, show_progress=False)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
        pad_token="<pad>", mask_token=AddedToken("<mask>", lstrip=True, special=True),
        model_max_length=1_000_000,  # blocks are cut by tokenize_blocks, not here
    )
    if save_to is not None:
        tokenizer.save_pretrained(str(save_to))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(save_to))  # reload: the saved folder is what users get
    return tokenizer


def fallback_tokenizer():
    """A small BPE tokenizer trained on ``data/sample.txt`` in a second: for tests and the no-weights demo."""
    return train_tokenizer(load_lines(SAMPLE_TEXT), vocab_size=768, min_frequency=1)
