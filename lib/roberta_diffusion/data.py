"""Corpora: read text from a hub dataset or local files, undo WikiText tokenisation, cut into blocks.

Local sources are plain ``.txt``/``.raw`` files, gzip'd ones (``.gz``), or folders of them (the layout
of ``../shared/data``). Hub sources are ``"wikitext-2-raw-v1"`` style names (``datasets`` is imported
only then, so the GPU path and the tests need no ``datasets`` install).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from .paths import atomic_path

TEXT_SUFFIXES = (".txt", ".raw", ".gz")
# WikiText configs on the hub are loaded as load_dataset("wikitext", name).
HUB_ALIASES = {"wikitext-2-raw-v1": ("wikitext", "wikitext-2-raw-v1"),
               "wikitext-103-raw-v1": ("wikitext", "wikitext-103-raw-v1")}


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def text_files(source: str | Path) -> list[Path]:
    """The text files behind a local source: the file itself or the sorted text files in a folder."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
        if not files:
            raise FileNotFoundError(f"no .txt/.raw/.gz files in {path}: point at a file or a folder of them")
        return files
    raise FileNotFoundError(f"corpus {path} does not exist: pass a .txt/.raw/.gz file, a folder, or a hub name")


def iter_lines(source: str | Path, split: str = "train", max_lines: int | None = None) -> Iterator[str]:
    """Non-empty, stripped lines of a corpus, in order. ``split`` matters only for hub datasets."""
    count = 0
    for line in _raw_lines(source, split):
        line = line.strip()
        if not line:
            continue
        yield line
        count += 1
        if max_lines is not None and count >= max_lines:
            return


def _raw_lines(source: str | Path, split: str) -> Iterator[str]:
    looks_local = isinstance(source, Path) or any(s in str(source) for s in ("/", "\\", ".txt", ".raw", ".gz"))
    if looks_local or Path(source).exists():
        for file in text_files(source):
            try:
                with _open_text(file) as handle:
                    yield from handle
            except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
                raise ValueError(_not_text(file, err)) from None
        return
    yield from _hub_lines(str(source), split)


def _not_text(file: Path, err: Exception) -> str:
    return (f"corpus file {file} is not UTF-8 text ({type(err).__name__}): pass a .txt/.raw file in UTF-8 "
            "or a gzip of one")


def check_text(source: str | Path, sample_bytes: int = 1 << 20) -> None:
    """Decode the start of each local file of ``source`` (hub names pass): binary data is refused before any
    training, naming the file, instead of failing mid-way with a bare codec error."""
    looks_local = isinstance(source, Path) or any(s in str(source) for s in ("/", "\\", ".txt", ".raw", ".gz"))
    if not (looks_local or Path(source).exists()) or str(source).endswith(".pt"):
        return  # a hub name, or blocks tokenised ahead of time (cached_blocks reads them)
    for file in text_files(source):
        try:
            with _open_text(file) as handle:
                handle.read(sample_bytes)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
            raise ValueError(_not_text(file, err)) from None


def _hub_lines(name: str, split: str) -> Iterator[str]:
    try:
        from datasets import load_dataset
    except ImportError as err:  # pragma: no cover - datasets is a declared dependency
        raise ValueError(f"hub dataset {name!r} needs `pip install datasets`, or pass a local file") from err
    path, config = HUB_ALIASES.get(name, (name, None))
    try:
        dataset = load_dataset(path, config, split=split)
    except Exception as err:  # the hub raises many kinds; one clear line is what the user needs
        raise FileNotFoundError(
            f"could not load hub dataset {name!r} (split {split!r}): {type(err).__name__}. Offline? "
            "Pass a local .txt/.raw/.gz file or folder instead, e.g. ../shared/data/wikitext-2-raw"
        ) from err
    column = "text" if "text" in dataset.column_names else dataset.column_names[0]
    for row in dataset:
        yield row[column]


def load_lines(source: str | Path, split: str = "train", max_lines: int | None = None) -> list[str]:
    return list(iter_lines(source, split, max_lines))


_WIKITEXT_RULES = [
    (re.compile(r" @(.)@ "), r"\1"),  # " @-@ " -> "-", " @,@ " -> ",", " @.@ " -> "."
    (re.compile(r" ([.,;:!?%)\]}])"), r"\1"),  # no space before closing punctuation
    (re.compile(r"([(\[{$]) "), r"\1"),  # no space after opening brackets and currency
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b"), r"\1"),  # contractions and possessives
    (re.compile(r"\s+"), " "),
]
_QUOTED = re.compile(r'" ([^"]*?) "')


def wikitext_detokenize(text: str) -> str:
    """Undo WikiText's tokenisation (``a @-@ b``, ``word ,``) so text reads like natural prose.

    Apply it before scoring a model trained on natural text on WikiText; the raw files are pre-split.
    """
    for pattern, repl in _WIKITEXT_RULES:
        text = pattern.sub(repl, text)
    text = _QUOTED.sub(r'"\1"', text)
    return text.strip()


def tokenize_blocks(
    lines: Iterable[str],
    tokenizer,
    block_size: int = 256,
    max_blocks: int | None = None,
    batch_lines: int = 1000,
) -> torch.Tensor:
    """Tokenise lines and cut the stream into blocks ``[N, block_size]`` of ``[bos] + block_size-1`` tokens.

    Lines are joined with a newline so that paragraph breaks are ordinary (maskable, learnable) tokens;
    only the leading ``bos`` is special. The tail that does not fill a block is dropped.
    """
    if block_size < 2:
        raise ValueError(f"block_size={block_size} is too small: use at least 2 (bos + one token)")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    if bos is None:
        raise ValueError("tokenizer has neither a bos nor a cls token: train or load one that does")
    body = block_size - 1
    stream: list[int] = []
    blocks: list[list[int]] = []
    batch: list[str] = []

    def flush():
        encoded = tokenizer([line + "\n" for line in batch], add_special_tokens=False)["input_ids"]
        for ids in encoded:
            stream.extend(ids)
        batch.clear()
        start = 0
        while len(stream) - start >= body:
            blocks.append([bos] + stream[start : start + body])
            start += body
        del stream[:start]

    for line in lines:
        batch.append(line)
        if len(batch) >= batch_lines:
            flush()
            if max_blocks is not None and len(blocks) >= max_blocks:
                break
    if batch:
        flush()
    if max_blocks is not None:
        blocks = blocks[:max_blocks]
    if not blocks:
        raise ValueError(f"the text is shorter than one block of {block_size} tokens: give more text or a smaller block")
    return torch.tensor(blocks, dtype=torch.long)


def load_blocks(source, tokenizer, block_size=256, split="train", max_lines=None, max_blocks=None, detokenize=False):
    """``tokenize_blocks(iter_lines(source))``, with optional WikiText detokenisation of each line."""
    lines = iter_lines(source, split, max_lines)
    if detokenize:
        lines = (wikitext_detokenize(line) for line in lines)
    return tokenize_blocks(lines, tokenizer, block_size, max_blocks)


def cached_blocks(source, tokenizer, block_size: int, cache_dir, max_lines=None, detokenize=False) -> torch.Tensor:
    """``data.load_blocks`` with an on-disk cache keyed by file name+size, tokenizer vocabulary and block size."""
    if str(source).endswith(".pt"):  # blocks tokenised ahead of time (e.g. carried to a machine without the corpus)
        return torch.load(source).long()
    try:
        files = [(p.name, p.stat().st_size) for p in text_files(source)]
    except FileNotFoundError:
        files = [str(source)]  # a hub name
    vocab = hashlib.sha1(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:10]
    key = hashlib.sha1(json.dumps([files, vocab, block_size, max_lines, detokenize]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"blocks-{key}.pt"
    if path.exists():
        return torch.load(path).long()
    blocks = load_blocks(source, tokenizer, block_size, max_lines=max_lines, detokenize=detokenize)
    with atomic_path(path) as tmp:  # unique per process: two trainings may fill the cache at once
        torch.save(blocks.to(torch.int16 if len(tokenizer) < 2**15 else torch.int32), tmp)
    return blocks
