"""All-or-nothing results: a lock per run name, a staged run folder swapped in on success, staged output files.

Layout under ``runs/``: ``<name>/`` holds the last successful results; ``.staging/<name>/<name>/`` is the run
being made (the commands point ``paths.RUNS`` at ``.staging/<name>`` while it runs, so the notebooks write
there unchanged); ``.locks/<name>.lock`` says who is running ``<name>``.

The lock is an ``flock`` on that file: the kernel drops it when the holder dies, however it dies, so a lock
left by a killed process is stale by construction; the file's pid only makes the messages say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from roberta_diffusion import paths


class RunLocked(ValueError):
    """Another live process holds the run name (a ValueError: the CLI prints it as one line, exit 2)."""


class RunFailed(RuntimeError):
    """The work itself failed (a notebook raised, the outputs have problems); the previous results are kept."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def lock(name: str, runs: Path | None = None, say=None):
    """Hold ``runs/.locks/<name>.lock`` for the block; a name held by a live process raises ``RunLocked``."""
    say = say or (lambda m: print(m, file=sys.stderr))
    folder = Path(runs or paths.RUNS) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (papermill kernels)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise RunLocked(f"run {name!r} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                            f"(since {holder.get('since', '?')}): wait for it to finish or use another run name") from None
        previous = _read_holder(fd)
        if previous.get("pid") and previous.get("host") == socket.gethostname() and not _pid_alive(previous["pid"]):
            say(f"note: taking over the stale lock of run {name!r} left by process {previous['pid']} (no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: an empty file is a free name
    finally:
        os.close(fd)  # closing drops the flock


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}


# -- staged run folders ------------------------------------------------------------------------------------
def staging_root(name: str, runs: Path | None = None) -> Path:
    return Path(runs or paths.RUNS) / ".staging" / name


def _copy_run(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst``; checkpoint files are hard links (only ever written as new files and renamed,
    never changed in place, so sharing them cannot alter the originals). Everything else is a real copy:
    notebooks rewrite their outputs in place."""
    def copy(s, d):
        if os.path.exists(d) and os.path.samefile(s, d):  # merging a checkpoint both sides already share
            return d
        if "checkpoints" in Path(s).relative_to(src).parts or Path(src).name == "checkpoints":
            try:
                return os.link(s, d)
            except OSError:
                pass  # another file system: copy instead
        return shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=copy, dirs_exist_ok=True)


@contextlib.contextmanager
def staged_run(name: str, runs: Path | None = None, say=None):
    """Yield the staging root for run ``name`` (write the run to ``<root>/<name>``) and, when the block
    succeeds, swap it in as ``runs/<name>``. On failure the previous ``runs/<name>`` is untouched; the staging
    folder is kept so that a rerun resumes from its checkpoints. Call inside ``lock(name)``."""
    runs = Path(runs or paths.RUNS)
    final = runs / name
    recover(name, runs)
    root = staging_root(name, runs)
    stage = root / name
    if stage.exists():  # a failed or killed attempt: keep its checkpoints, refresh the rest from the results
        leftover = root.with_name(f"{name}.leftover")
        shutil.rmtree(leftover, ignore_errors=True)
        stage.rename(leftover)
        if final.exists():
            _copy_run(final, stage)
        for ckpt in leftover.glob("*/checkpoints"):
            _copy_run(ckpt, stage / ckpt.relative_to(leftover))
        shutil.rmtree(leftover)
        (say or print)(f"note: resuming the unfinished attempt of run {name!r} (checkpoints kept in {root})")
    elif final.exists():
        _copy_run(final, stage)
    stage.mkdir(parents=True, exist_ok=True)
    yield root
    swap_in(stage, final)
    shutil.rmtree(root, ignore_errors=True)


def swap_in(stage: Path, final: Path) -> None:
    """``stage`` becomes ``final``. Two renames: a kill between them leaves ``final.old`` (the previous results)
    and the complete ``stage``, which ``recover`` turns back into one whole run."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def recover(name: str, runs: Path | None = None) -> None:
    """Undo a swap cut short: ``runs/<name>`` missing but its ``.old`` copy present -> put the old one back."""
    runs = Path(runs or paths.RUNS)
    final, old = runs / name, runs / f".{name}.old"
    if old.exists():
        if final.exists():
            shutil.rmtree(old)
        else:
            old.rename(final)


@contextlib.contextmanager
def redirect_runs(root: Path):
    """Point ``paths.RUNS`` (this process) and ``ROBERTA_DIFFUSION_RUNS`` (child kernels) at ``root``; the corpus
    cache stays where it is (``ROBERTA_DIFFUSION_CACHE``)."""
    saved = paths.RUNS, os.environ.get("ROBERTA_DIFFUSION_RUNS"), os.environ.get("ROBERTA_DIFFUSION_CACHE")
    os.environ["ROBERTA_DIFFUSION_CACHE"] = str(paths.CACHE)
    os.environ["ROBERTA_DIFFUSION_RUNS"] = str(root)
    paths.RUNS = Path(root)
    try:
        yield root
    finally:
        paths.RUNS = saved[0]
        for key, value in (("ROBERTA_DIFFUSION_RUNS", saved[1]), ("ROBERTA_DIFFUSION_CACHE", saved[2])):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- staged output files ---------------------------------------------------------------------------------
@contextlib.contextmanager
def staged_files(targets: dict):
    """``{key: final path or None}`` -> ``{key: temporary path}`` beside each; all are renamed into place only
    when the block succeeds, and on failure every temporary file (and any folder made for them) is removed."""
    made, temps = [], {}
    for key, path in targets.items():
        if path is None:
            continue
        path = Path(path)
        missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        temps[key] = path.with_name(f".{path.stem}.{os.getpid()}.staged{path.suffix}")
    try:
        yield temps
        for key, tmp in temps.items():
            if not tmp.exists():
                raise OSError(f"{targets[key]} was not written")
        for key, tmp in temps.items():
            tmp.replace(targets[key])
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
