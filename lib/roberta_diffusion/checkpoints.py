"""What a training run writes: checkpoints (written atomically with a manifest, verified before loading, refused
when the config changed, carrying every random state so that a resumed run continues exactly as an unbroken one)
and the best evaluation's weights; the exported model and its card are ``export.py``'s.

Layout of ``<out>/checkpoints/step-N/``: the model (``save_pretrained``), ``optimizer.pt`` (optimiser and schedule),
``rng.pt`` (random states), ``extra.pt`` (optional further state), ``train_config.json``, ``state.json`` (step and
history), ``best/`` (the exported weights of the history's best evaluation, hard links to ``<out>/best``'s files,
so a resumed run exports the unbroken run's best, whatever happened to ``<out>/best`` since) and ``manifest.json``
(size and sha256 of each of those files, written last).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import struct
import zipfile
from pathlib import Path

import numpy
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .export import write_error

# Config keys that may change between a run and its resume: they steer when to stop, log, evaluate or save,
# not what is trained. Any other difference (size, block_size, lr, ...) makes the checkpoint another run's.
RESUMABLE_CHANGES = {"out_dir", "max_steps", "max_minutes", "eval_every", "save_every", "log_every", "eval_batches",
                     "compile", "compile_scope", "deterministic"}
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


def _unmanifested_problem(folder: Path) -> str | None:
    """A folder from before manifests (or whose manifest was lost) has no checksums to compare: check what the
    formats allow instead. state.json parses, each safetensors file is as long as its header says, each
    ``.pt`` (a zip archive) passes its CRCs; a file cut short by a kill or a full disk fails one of them."""
    json.loads((folder / "state.json").read_text())
    for file in sorted(folder.glob("*.safetensors")):
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{file.name} is cut short (no header)"
            length = struct.unpack("<Q", head)[0]
            if 8 + length > file.stat().st_size:
                return f"{file.name} is cut short (its header alone is {length} bytes)"
            header = json.loads(f.read(length))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if file.stat().st_size != 8 + length + end:
            return f"{file.name} has {file.stat().st_size} bytes, its header describes {8 + length + end}"
    for file in sorted(folder.glob("*.pt")):
        with zipfile.ZipFile(file) as archive:
            if archive.testzip() is not None:
                return f"{file.name} fails its CRC check"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (None: intact). Checks every file against the manifest, so a
    truncated or damaged checkpoint is skipped before anything is loaded. A folder without a manifest (from
    before manifests) gets the checks its files' formats allow (``_unmanifested_problem``)."""
    folder = Path(folder)
    try:
        if not (folder / MANIFEST).exists():
            return _unmanifested_problem(folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        for name, want in manifest.items():
            file = folder / name
            if not file.is_file():
                return f"{name} missing"
            if file.stat().st_size != want["size"]:
                return f"{name} has {file.stat().st_size} bytes, the manifest says {want['size']}"
            if _file_digest(file) != want["sha256"]:
                return f"{name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error, zipfile.BadZipFile) as err:
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
                    config: dict | None = None, extra: dict | None = None, rng: dict | None = None,
                    best: Path | None = None) -> Path:
    """Write ``checkpoints/step-<step>`` under a temporary name and rename it when complete. Beside the weights
    and optimiser: the random states (``rng``, default: this process's now), the training ``config`` (a resume
    with other values is refused), ``extra`` (any further state, e.g. EMA weights: ``load_extra`` reads it) and
    ``best``, the folder of the best weights so far (``restore_best`` puts it back on resume). The manifest of
    sizes and checksums is written last; ``keep`` newest checkpoints stay. A failed write (a full disk) removes
    the partial folder and raises ``OSError`` naming it."""
    root = Path(out_dir) / "checkpoints"
    final = root / f"step-{step}"
    tmp = root / f"step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        torch.save(rng if rng is not None else rng_state(), tmp / "rng.pt")
        if extra:
            torch.save(extra, tmp / "extra.pt")
        if config is not None:
            (tmp / "train_config.json").write_text(json.dumps(config, indent=2))
        (tmp / "state.json").write_text(json.dumps({"step": step, "history": history}))
        if best is not None and Path(best).is_dir():
            _link_tree(Path(best), tmp / "best")
        files = sorted(f for f in tmp.rglob("*") if f.is_file())
        manifest = {f.relative_to(tmp).as_posix(): {"size": f.stat().st_size, "sha256": _file_digest(f)} for f in files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # written last
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint only fills the disk: it is never resumed
        if isinstance(err, Exception) and not isinstance(err, OSError):
            # torch and safetensors report a full disk as their own errors ("unexpected pos 704 vs 598")
            raise write_error(err, final) from err
        raise
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # the atomic moment: before it the old checkpoint is the newest, after it this one
    for old in checkpoints(out_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _link_tree(src: Path, dst: Path) -> None:
    """``src``'s files hard-linked into ``dst`` (a copy across file systems). Exported folders are only ever
    written anew and renamed, never changed in place, so the links cannot change under a checkpoint."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
        return d

    shutil.copytree(src, dst, copy_function=link)


def restore_best(folder: Path | None, out: Path, history: dict | None) -> None:
    """Make ``<out>/best`` the best weights of checkpoint ``folder``'s history: its ``best/`` when it has one,
    nothing when its history has no evaluation yet (``folder`` None: a fresh start). A ``best/`` exported after
    that checkpoint (the run was killed before the next one) or lost with a staging folder is replaced, so the
    resumed run ends with the unbroken run's best. A checkpoint from before ``best/`` was saved leaves it be."""
    target = Path(out) / "best"
    if folder is not None and (Path(folder) / "best").is_dir():
        tmp = target.with_name("best.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _link_tree(Path(folder) / "best", tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    elif folder is None or (history or {}).get("best_step") is None:
        shutil.rmtree(target, ignore_errors=True)


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
        except (OSError, RuntimeError, ValueError, KeyError, EOFError, SafetensorError) as err:
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
