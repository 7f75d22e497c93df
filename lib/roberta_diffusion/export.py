"""A model as it leaves a run: its weights and tokenizer written atomically (``export_model``), its card
(``write_model_card``), and the one error a writer raises when the disk says no (``write_error``)."""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import shutil
from pathlib import Path

import torch


def write_error(err: Exception, target: Path) -> OSError:
    """An ``OSError`` for a writer's own error, naming ``target`` and the free space left there."""
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(target.parent).free
        return OSError(errno.ENOSPC if free < 1 << 26 else errno.EIO,
                       f"could not be written ({type(err).__name__}: {err}; {free / 1e6:.0f} MB free there)", str(target))
    return OSError(errno.EIO, f"could not be written ({type(err).__name__}: {err})", str(target))


def export_model(folder: Path, model, tokenizer, dtype: torch.dtype | None = None, max_shard_size: str = "15MB") -> Path:
    """``save_pretrained`` model + tokenizer into ``folder`` atomically (temp folder, then rename)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if dtype is not None:
        to_save = copy.deepcopy(model).to(dtype)
    try:
        to_save.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # half a model only fills the disk
        if isinstance(err, Exception) and not isinstance(err, OSError):
            raise write_error(err, folder) from err
        raise
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def write_model_card(folder, title: str, summary: str, facts: dict, metrics: dict | str | None = None,
                     usage: str = "") -> Path:
    """Write ``folder/README.md``: a title, a paragraph, a table of facts, a usage snippet and the metrics
    (markdown text, or a dict shown as JSON)."""
    folder = Path(folder)
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    text = f"# {title}\n\n{summary}\n\n| | |\n|---|---|\n{rows}\n"
    if usage:
        text += f"\n## Use\n\n```python\n{usage.strip()}\n```\n"
    if isinstance(metrics, str):
        text += f"\n## Metrics\n\n{metrics.strip()}\n"
    elif metrics:
        text += f"\n## Metrics\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n"
    path = folder / "README.md"
    path.write_text(text)
    return path
