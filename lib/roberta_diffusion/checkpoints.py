"""What a training run writes: checkpoints (written atomically with a manifest, verified before loading, refused
when the config changed, carrying every random state so that a resumed run continues exactly as an unbroken one),
the exported model and its card.

Layout of ``<out>/checkpoints/step-N/``: the model (``save_pretrained``), ``optimizer.pt`` (optimiser and schedule),
``rng.pt`` (random states), ``extra.pt`` (optional further state), ``train_config.json``, ``state.json`` (step and
history) and ``manifest.json`` (size and sha256 of each of those files, written last).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy
import torch
from safetensors.torch import load_file

# Config keys that may change between a run and its resume: they steer when to stop, log, evaluate or save,
# not what is trained. Any other difference (size, block_size, lr, ...) makes the checkpoint another run's.
RESUMABLE_CHANGES = {"out_dir", "max_steps", "max_minutes", "eval_every", "save_every", "log_every", "eval_batches",
                     "compile"}
MANIFEST = "manifest.json"  # written last: name -> size and sha256 of every other file of the checkpoint


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (None: intact). Checks every file against the manifest, so a
    truncated or damaged checkpoint is skipped before anything is loaded. Folders from before manifests count
    as intact when their state.json parses."""
    folder = Path(folder)
    try:
        if not (folder / MANIFEST).exists():
            json.loads((folder / "state.json").read_text())
            return None
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, want in manifest.items():
            file = folder / name
            if not file.is_file():
                return f"{name} missing"
            if file.stat().st_size != want["size"]:
                return f"{name} has {file.stat().st_size} bytes, the manifest says {want['size']}"
            if _file_digest(file) != want["sha256"]:
                return f"{name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable ({type(err).__name__}: {err})"
    return None


def checkpoints(out_dir: Path) -> list[Path]:
    """Finished checkpoint folders, newest first (``*.tmp`` folders are being written and never count)."""
    root = Path(out_dir) / "checkpoints"
    done = [p for p in root.glob("step-*") if not p.name.endswith(".tmp") and _step_of(p) >= 0 and p.is_dir()]
    return sorted(done, key=_step_of, reverse=True)


def latest_checkpoint(out_dir: Path, say=None) -> Path | None:
    """The newest *intact* checkpoint: damaged ones (``checkpoint_problem``) are skipped, with a note to ``say``."""
    for folder in checkpoints(out_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if say is not None:
            say(f"skipping damaged checkpoint {folder}: {problem}; falling back to an older one")
    return None


def rng_state() -> dict:
    """Every random state training draws from: Python's, numpy's, torch's CPU and CUDA generators (dropout uses
    torch's). The data order and the noise are functions of (seed, step) and need none."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    state["numpy"] = numpy.random.get_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        numpy.random.set_state(state["numpy"])


def seeded_rng_state(seed: int) -> dict:
    """The random state a fresh run starts from: fixed by ``seed``, whatever ran before in the process."""
    saved = rng_state()
    random.seed(seed)
    torch.manual_seed(seed)
    numpy.random.seed(seed % 2**32)
    fresh = rng_state()
    set_rng_state(saved)
    return fresh


def save_checkpoint(out_dir: Path, model, optimizer, scheduler, step: int, history: dict, keep: int = 2,
                    config: dict | None = None, extra: dict | None = None, rng: dict | None = None) -> Path:
    """Write ``checkpoints/step-<step>`` under a temporary name and rename it when complete. Beside the weights
    and optimiser: the random states (``rng``, default: this process's now), the training ``config`` (a resume
    with other values is refused), and ``extra`` (any further state, e.g. EMA weights: ``load_extra`` reads it).
    The manifest of sizes and checksums is written last; ``keep`` newest checkpoints stay."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    torch.save(rng if rng is not None else rng_state(), tmp / "rng.pt")
    if extra:
        torch.save(extra, tmp / "extra.pt")
    if config is not None:
        (tmp / "train_config.json").write_text(json.dumps(config, indent=2))
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}))
    manifest = {f.name: {"size": f.stat().st_size, "sha256": _file_digest(f)} for f in sorted(tmp.iterdir()) if f.is_file()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # written last
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # the atomic moment: before it the old checkpoint is the newest, after it this one
    for old in checkpoints(out_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_extra(folder: Path) -> dict:
    """The ``extra`` state ``save_checkpoint`` stored in ``folder`` (empty when none)."""
    path = Path(folder) / "extra.pt"
    return torch.load(path, weights_only=False) if path.exists() else {}


def config_changes(saved: dict, cfg: dict) -> list[str]:
    """``key: old -> new`` for each config value that differs and is not in ``RESUMABLE_CHANGES``; a field the
    saved config predates (a checkpoint written before the field existed) is not compared."""
    keys = sorted(set(saved) - RESUMABLE_CHANGES)
    return [f"{k}: {saved.get(k)!r} -> {cfg.get(k)!r}" for k in keys if saved.get(k) != cfg.get(k)]


def resume(out: Path, cfg, model, optimizer, scheduler, say=print) -> tuple[int, dict | None, dict, Path | None]:
    """Load the newest intact checkpoint of ``out`` into model, optimizer and scheduler. Returns ``(step, history,
    rng, folder)``: ``(0, None, seeded state, None)`` when there is none. A checkpoint of another config is refused
    (ValueError naming the keys); one that fails to load falls back to the next older. Set the returned random
    state right before the first step: whatever runs in between must not move it."""
    current = dataclasses.asdict(cfg)
    for folder in checkpoints(out):
        problem = checkpoint_problem(folder)
        if problem is not None:
            say(f"skipping damaged checkpoint {folder}: {problem}; falling back to an older one")
            continue
        saved_cfg = folder / "train_config.json"
        saved_cfg = saved_cfg if saved_cfg.exists() else out / "config.json"  # checkpoints from before this file
        if saved_cfg.exists():
            changes = config_changes(json.loads(saved_cfg.read_text()), current)
            if changes:
                raise ValueError(f"{out} holds checkpoints of another config ({'; '.join(changes)}): use the same values, "
                                 f"another run name or out_dir, or delete {out / 'checkpoints'} to start over")
        try:
            state = json.loads((folder / "state.json").read_text())
            weights = _load_weights(folder)
            opt_state = torch.load(folder / "optimizer.pt", weights_only=False)
            rng = torch.load(folder / "rng.pt", weights_only=False) if (folder / "rng.pt").exists() else None
            # strict=False: tied weights (the MLM head's decoder = the embeddings) are stored once
            model.load_state_dict(weights, strict=False)
            optimizer.load_state_dict(opt_state["optimizer"])
            scheduler.load_state_dict(opt_state["scheduler"])
        except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
            say(f"cannot load checkpoint {folder} ({type(err).__name__}: {str(err)[:200]}); falling back to an older one")
            continue
        if rng is None:
            say(f"note: {folder} has no random state (an older checkpoint): dropout noise will differ from an unbroken run")
            rng = seeded_rng_state(cfg.seed + state["step"])
        return state["step"], state["history"], rng, folder
    return 0, None, seeded_rng_state(cfg.seed), None


def _load_weights(folder: Path) -> dict:
    state = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    return state


def export_model(folder: Path, model, tokenizer, dtype: torch.dtype | None = None, max_shard_size: str = "15MB") -> Path:
    """``save_pretrained`` model + tokenizer into ``folder`` atomically (temp folder, then rename)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = model
    if dtype is not None:
        to_save = copy.deepcopy(model).to(dtype)
    to_save.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(tmp)
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
