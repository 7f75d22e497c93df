"""All-or-nothing results: a lock per run name, a staged run folder swapped in on success, staged output files.

Layout under ``runs/``: ``<name>/`` holds the last successful results; ``.staging/<name>/<name>/`` is the run
being made (the commands point ``paths.RUNS`` at ``.staging/<name>`` while it runs, so the notebooks write
there unchanged); ``.locks/<name>.lock`` says who is running ``<name>``.

The lock is an ``flock`` on that file: the kernel drops it when the holder dies, however it dies, so a lock
left by a killed process is stale by construction; the file's pid only makes the messages say who holds it.
A holder that ends removes the file (and ``.locks/`` when empty): only a killed one leaves it behind.

A failed attempt leaves nothing behind unless it is worth resuming or reading: its staging folder stays when it
wrote checkpoints of its own or a notebook failed (``RunFailed`` names the folder), and goes otherwise (a check
that failed after the lock, a full disk before the first checkpoint).
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


def _made_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; return the ones made, innermost first (to remove when empty)."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty (another run's lock, the corpus cache): it stays
            folder.rmdir()


def _acquire(path: Path, name: str) -> int:
    """An open descriptor of ``path`` holding its flock. A holder removes the file when it ends, so the file
    locked may have been unlinked between our open and our flock: then it is no lock at all, and we retry on
    the file now at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (papermill kernels)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(f"run {name!r} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                            f"(since {holder.get('since', '?')}): wait for it to finish or use another run name") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def lock(name: str, runs: Path | None = None, say=None):
    """Hold ``runs/.locks/<name>.lock`` for the block; a name held by a live process raises ``RunLocked``. On
    leaving, the lock file goes, and so do the folders made for it when they are empty."""
    say = say or (lambda m: print(m, file=sys.stderr))
    folder = Path(runs or paths.RUNS) / ".locks"
    made = _made_folders(folder)
    path = folder / f"{name}.lock"
    try:
        fd = _acquire(path, name)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        previous = _read_holder(fd)
        if previous.get("pid") and previous.get("host") == socket.gethostname() and not _pid_alive(previous["pid"]):
            say(f"note: taking over the stale lock of run {name!r} left by process {previous['pid']} (no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: an empty file is a free name (if the unlink below fails)
            with contextlib.suppress(OSError):
                path.unlink()  # while still held: a waiter that opened it sees another inode and retries
    finally:
        os.close(fd)  # closing drops the flock
        _remove_empty([folder, *made[1:]])


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}


# -- staged run folders ------------------------------------------------------------------------------------
def staging_root(name: str, runs: Path | None = None) -> Path:
    return Path(runs or paths.RUNS) / ".staging" / name


def _copy_run(src: Path, dst: Path) -> None:
    """``src`` copied to ``dst``; checkpoint and best-model files are hard links (only ever written as new files
    and renamed, never changed in place, so sharing them cannot alter the originals). Everything else is a real
    copy: notebooks rewrite their outputs in place."""
    def copy(s, d):
        if os.path.exists(d) and os.path.samefile(s, d):  # merging a checkpoint both sides already share
            return d
        if {"checkpoints", "best"} & {*Path(s).relative_to(src).parts, Path(src).name}:
            try:
                return os.link(s, d)
            except OSError:
                pass  # another file system: copy instead
        return shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=copy, dirs_exist_ok=True)


# what a killed or failed attempt hands on to the next one, per objective folder: its checkpoints (each with the
# best weights as of that step) and the best weights it exported last
CARRIED = ("checkpoints", "best")


@contextlib.contextmanager
def staged_run(name: str, runs: Path | None = None, say=None):
    """Yield the staging root for run ``name`` (write the run to ``<root>/<name>``) and, when the block
    succeeds, swap it in as ``runs/<name>``. On failure the previous ``runs/<name>`` is untouched; the staging
    folder is kept when a rerun can resume from it (``keep_attempt``) and removed otherwise. Files a user put
    into ``runs/<name>`` while the run went are kept (``keep_user_files``). Call inside ``lock(name)``."""
    say = say or print
    runs = Path(runs or paths.RUNS)
    final = runs / name
    recover(name, runs)
    root = staging_root(name, runs)
    stage = root / name
    made = _made_folders(root.parent) if not stage.exists() else []
    before = _listing(final)  # what runs/<name> held when the stage was copied from it
    if stage.exists():  # a failed or killed attempt: keep what it hands on, refresh the rest from the results
        leftover = root / f".{name}.leftover"  # a leading dot: no run name can take it
        shutil.rmtree(leftover, ignore_errors=True)
        stage.rename(leftover)
        if final.exists():
            _copy_run(final, stage)
        for kept in sorted(p for what in CARRIED for p in leftover.glob(f"*/{what}") if p.is_dir()):
            if kept.name == "best":  # one model, not a mix of two runs' files
                shutil.rmtree(stage / kept.relative_to(leftover), ignore_errors=True)
            _copy_run(kept, stage / kept.relative_to(leftover))
        shutil.rmtree(leftover)
        say(f"note: resuming the unfinished attempt of run {name!r} (checkpoints kept in {root})")
    elif final.exists():
        _copy_run(final, stage)
    stage.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    except Exception as err:  # a kill, Ctrl-C included, leaves the stage as it is, like kill -9 would
        if not keep_attempt(stage, final, err):
            shutil.rmtree(root, ignore_errors=True)
            _remove_empty([root.parent, *made[1:]])
        raise
    keep_user_files(final, stage, before, say)
    swap_in(stage, final)
    shutil.rmtree(root, ignore_errors=True)
    _remove_empty([root.parent])


def keep_attempt(stage: Path, final: Path, err: BaseException) -> bool:
    """Whether a failed attempt's stage is worth keeping: it holds checkpoints that ``runs/<name>`` does not
    (a rerun resumes from them), or a notebook failed (the message sends the user to the executed notebook)."""
    if isinstance(err, RunFailed):
        return True
    for state in stage.glob("*/checkpoints/step-*/state.json"):
        twin = final / state.relative_to(stage)
        if not (twin.exists() and os.path.samefile(state, twin)):  # hard links of the results' own do not count
            return True
    return False


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (size, mtime_ns)`` of every file under ``folder`` (empty when it does not exist)."""
    return {str(p.relative_to(folder)): (st.st_size, st.st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink() for st in [p.stat()]}


def keep_user_files(final: Path, stage: Path, before: dict, say=print) -> None:
    """Files that appeared in ``final`` (or changed there) since the run copied it: someone put them there while
    the run went, and the swap would delete them. They are moved into the new results; where the run wrote a
    file of the same path, the user's copy is kept beside it as ``<name>.user<suffix>`` (never overwritten)."""
    moved = []
    for rel, seen in sorted(_listing(final).items()):
        if before.get(rel) == seen:
            continue
        src, dst = final / rel, stage / rel
        if dst.exists() or dst.is_symlink():
            dst = _free_name(dst.with_name(f"{dst.stem}.user{dst.suffix}"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)  # a copy: the previous results stay whole until the swap
        moved.append(str(dst.relative_to(stage)))
    if moved:
        say(f"note: kept {len(moved)} file(s) added to {final} during the run: {', '.join(moved)}")


def _free_name(path: Path) -> Path:
    n = 1
    while path.exists():
        path = path.with_name(f"{path.stem.rsplit('.user', 1)[0]}.user{n}{path.suffix}")
        n += 1
    return path


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
