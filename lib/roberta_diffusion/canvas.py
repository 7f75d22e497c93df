"""Canvases: what the sampler starts from. ``ids [B, L]``, ``pinned [B, L]`` (never changed), ``attention [B, L]``.

- ``prompt_canvas``: ``[bos] + prompt``, all of it pinned (never cut), left-padded to the longest prompt of
  the batch or to ``prefix_len`` when one is given (RoBERTa numbers positions past the padding, so the text
  starts at position 0 either way), then ``<mask>`` up to ``max_len``.
- ``infill_canvas``: any text with ``<mask>`` tokens in it (``<mask*20>`` is shorthand for twenty): only
  the masks are generated, everything else is pinned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from . import defaults


@dataclass
class Canvas:
    ids: torch.Tensor  # [B, L] long
    pinned: torch.Tensor  # [B, L] bool: positions no step may change (prompt, infill context, padding)
    attention: torch.Tensor  # [B, L] long: 0 on padding

    def to(self, device):
        return Canvas(self.ids.to(device), self.pinned.to(device), self.attention.to(device))


def _bos(tokenizer) -> int:
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    if bos is None:
        raise ValueError("the tokenizer has neither a bos nor a cls token: use a RoBERTa-style tokenizer")
    return bos


def _pad(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prompt_prefixes(tokenizer, prompts: list[str], prefix_len: int | None = None) -> list[list[int]]:
    """``[bos] + prompt`` ids of each prompt, whole. With ``prefix_len`` (the pinned width), a longer prompt is
    refused rather than cut: nothing of what the user wrote is dropped silently."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or any(not p or not p.strip() for p in prompts):
        raise ValueError("the prompt is empty: give some text for the model to continue")
    if prefix_len is not None and prefix_len < 2:
        raise ValueError(f"prefix_len={prefix_len} leaves no room for the prompt: use at least 2 (bos + a token)")
    prefixes = [[_bos(tokenizer)] + ids for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
    longest = max(map(len, prefixes))
    if prefix_len is not None and longest > prefix_len:
        raise ValueError(f"the prompt is {longest} tokens (with <s>), more than prefix_len={prefix_len}: raise "
                         "prefix_len, or leave it out to pin the whole prompt")
    return prefixes


def prefix_canvas(tokenizer, prompts, prefix_len: int | None = None) -> Canvas:
    """``[bos] + prompt`` of each prompt, left-padded to ``prefix_len`` or to the longest prompt
    (``[B, P]``, all pinned)."""
    prefixes = prompt_prefixes(tokenizer, prompts, prefix_len)
    prefix_len = prefix_len or max(map(len, prefixes))
    ids = torch.full((len(prefixes), prefix_len), _pad(tokenizer), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, prefix in enumerate(prefixes):
        ids[row, prefix_len - len(prefix):] = torch.tensor(prefix)
        attention[row, prefix_len - len(prefix):] = 1
    return Canvas(ids, torch.ones_like(ids, dtype=torch.bool), attention)


def prompt_canvas(tokenizer, prompts, prefix_len: int | None = defaults.PREFIX_LEN, max_len: int = defaults.MAX_LEN) -> Canvas:
    """The whole prompt, pinned (``prefix_canvas``), followed by ``<mask>`` up to ``max_len``."""
    if prefix_len is not None and prefix_len >= max_len:
        raise ValueError(f"prefix_len={prefix_len} must be smaller than max_len={max_len}: nothing would be generated")
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    start = prefix_canvas(tokenizer, prompts, prefix_len)
    check_room(start.ids.shape[1], max_len)
    rest = (start.ids.shape[0], max_len - start.ids.shape[1])
    return Canvas(torch.cat([start.ids, torch.full(rest, tokenizer.mask_token_id, dtype=torch.long)], dim=1),
                  torch.cat([start.pinned, torch.zeros(rest, dtype=torch.bool)], dim=1),
                  torch.cat([start.attention, torch.ones(rest, dtype=torch.long)], dim=1))


def check_room(prompt_len: int, max_len: int) -> None:
    """A prompt of ``prompt_len`` tokens must leave at least one position to generate on a ``max_len`` canvas."""
    if prompt_len >= max_len:
        raise ValueError(f"the prompt is {prompt_len} tokens (with <s>) and leaves no room on a canvas of max_len="
                         f"{max_len}: shorten the prompt or raise max_len")


_MASK_RUN = re.compile(r"<mask\*(\d+)>")


def expand_mask_runs(text: str, mask_token: str = "<mask>") -> str:
    """``"a <mask*3> b"`` -> ``"a <mask><mask><mask> b"``."""
    return _MASK_RUN.sub(lambda m: mask_token * int(m.group(1)), text)


def infill_canvas(tokenizer, texts, max_len: int | None = None) -> Canvas:
    """Pin every token of ``texts`` except ``<mask>`` ones; right-pad to the longest (or ``max_len``)."""
    if isinstance(texts, str):
        texts = [texts]
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    texts = [expand_mask_runs(t, tokenizer.mask_token) for t in texts]
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    for text, ids in zip(texts, encoded, strict=True):
        if tokenizer.mask_token_id not in ids:
            raise ValueError(f"nothing to infill in {text[:40]!r}: put <mask> (or <mask*N>) where text should go")
    length = max_len or max(len(ids) for ids in encoded)
    if any(len(ids) > length for ids in encoded):
        raise ValueError(f"an infill text is {max(map(len, encoded))} tokens, longer than max_len={length}: shorten it")
    ids = torch.full((len(encoded), length), _pad(tokenizer), dtype=torch.long)
    attention = torch.zeros_like(ids)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
    pinned = (ids != tokenizer.mask_token_id) | (attention == 0)
    return Canvas(ids, pinned, attention)


def prefix_suffix_canvas(tokenizer, prefix: str, suffix: str, gap: int) -> Canvas:
    """Generate ``gap`` tokens between a pinned ``prefix`` and ``suffix``."""
    if gap < 1:
        raise ValueError(f"gap={gap}: infilling needs at least one token to generate")
    return infill_canvas(tokenizer, f"{prefix}{tokenizer.mask_token * gap}{suffix}")
