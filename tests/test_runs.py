"""Run folders are all-or-nothing and locked by name: a run is staged and swapped in on success, a failed rerun
leaves the previous results byte for byte, a second run on a locked name refuses, a killed holder's lock is
taken over."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from roberta_diffusion import bpe, paths
from workbench import runs
from workbench.cli import EXIT_USAGE, main


def digest(folder):
    """Every file under ``folder`` with its content hash (what "untouched" means)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# -- staged_run / swap / recover ------------------------------------------------------------------------------
def test_a_staged_run_replaces_the_old_one_only_on_success(tmp_path):
    final = tmp_path / "demo"
    final.mkdir()
    (final / "result.txt").write_text("old")
    with pytest.raises(RuntimeError), runs.staged_run("demo", tmp_path, say=lambda m: None) as root:
        assert (root / "demo" / "result.txt").read_text() == "old"  # the stage starts as a copy
        (root / "demo" / "result.txt").write_text("half")
        raise RuntimeError("the work failed")
    assert digest(final) == {"result.txt": hashlib.sha256(b"old").hexdigest()}
    with runs.staged_run("demo", tmp_path, say=lambda m: None) as root:
        (root / "demo" / "result.txt").write_text("new")
    assert (final / "result.txt").read_text() == "new"
    assert not (tmp_path / ".staging" / "demo").exists() and not (tmp_path / ".demo.old").exists()


def test_checkpoints_of_a_failed_attempt_are_carried_into_the_next(tmp_path):
    with pytest.raises(RuntimeError), runs.staged_run("demo", tmp_path, say=lambda m: None) as root:
        ckpt = root / "demo" / "mlm" / "checkpoints" / "step-4"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text("{}")
        (root / "demo" / "half.png").write_text("half-written")
        raise RuntimeError("killed")
    notes = []
    with runs.staged_run("demo", tmp_path, say=notes.append) as root:
        assert (root / "demo" / "mlm" / "checkpoints" / "step-4" / "state.json").exists()
        assert not (root / "demo" / "half.png").exists(), "only checkpoints carry over, not half-written outputs"
    assert notes and "unfinished attempt" in notes[0]


def test_checkpoints_are_shared_by_hard_link_and_other_files_copied(tmp_path):
    final = tmp_path / "demo" / "mlm" / "checkpoints" / "step-2"
    final.mkdir(parents=True)
    (final / "w.bin").write_bytes(b"weights")
    (tmp_path / "demo" / "metrics.json").write_text("{}")
    with pytest.raises(RuntimeError), runs.staged_run("demo", tmp_path, say=lambda m: None) as root:
        staged = root / "demo"
        assert os.stat(staged / "mlm/checkpoints/step-2/w.bin").st_ino == os.stat(final / "w.bin").st_ino
        assert os.stat(staged / "metrics.json").st_ino != os.stat(tmp_path / "demo" / "metrics.json").st_ino
        (staged / "metrics.json").write_text('{"changed": 1}')  # an in-place rewrite must not reach the original
        raise RuntimeError
    assert (tmp_path / "demo" / "metrics.json").read_text() == "{}"


def test_a_swap_cut_between_its_two_renames_is_undone(tmp_path):
    """Killed after runs/<name> became .<name>.old but before the stage took its place: the next start puts
    the old results back."""
    (tmp_path / ".demo.old").mkdir()
    (tmp_path / ".demo.old" / "result.txt").write_text("old")
    runs.recover("demo", tmp_path)
    assert (tmp_path / "demo" / "result.txt").read_text() == "old" and not (tmp_path / ".demo.old").exists()


# -- locks ---------------------------------------------------------------------------------------------------------
def test_a_locked_name_refuses_and_a_free_one_does_not(tmp_path):
    with runs.lock("demo", tmp_path):
        with pytest.raises(runs.RunLocked, match=f"in use by process {os.getpid()}"), runs.lock("demo", tmp_path):
            pass
        with runs.lock("other", tmp_path):
            pass
    with runs.lock("demo", tmp_path):  # released
        pass


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from workbench import runs
    with runs.lock(sys.argv[2], Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.readline()  # held until the test says so (or kills this process)
""")


@pytest.fixture()
def holder(tmp_path):
    """A separate process holding the lock of run 'smoke' under ``tmp_path/runs``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "runs"), "smoke"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_second_run_on_a_locked_name_refuses_and_a_killed_holder_is_taken_over(tmp_path, holder, capsys,
                                                                                monkeypatch):
    runs_dir = tmp_path / "runs"
    monkeypatch.setattr(paths, "RUNS", runs_dir)
    (runs_dir / "smoke").mkdir()
    (runs_dir / "smoke" / "metrics.json").write_text('{"kept": true}')
    before = digest(runs_dir / "smoke")
    capsys.readouterr()
    assert main(["pipeline", "--profile", "smoke"]) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"in use by process {holder.pid}" in err[0] and "smoke" in err[0]
    assert digest(runs_dir / "smoke") == before and not (runs_dir / ".staging").exists()

    os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the kernel drops the flock, the file keeps its pid
    holder.wait()
    notes = []
    with runs.lock("smoke", runs_dir, say=notes.append):
        pass
    assert notes == [f"note: taking over the stale lock of run 'smoke' left by process {holder.pid} (no longer running)"]


# -- finetune end to end -------------------------------------------------------------------------------------------
TINY = ["train_data=sample", "valid_data=sample", "max_train_lines=null", "block_size=32", "batch_size=4",
        "max_steps=2", "eval_every=2", "save_every=2", 'objectives=["mlm"]']


def test_finetune_failures_leave_no_run_folder_and_keep_previous_results(tmp_path, monkeypatch, capsys):
    """A validation error makes nothing; a good run lands in runs/<name>; a rerun that fails mid-way (here: a
    model of the wrong kind to fine-tune) leaves those results byte for byte; max_steps=-5 never exports."""
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(paths, "CACHE", tmp_path / "runs" / "cache")
    assert main(["finetune", "--set", "run_name=ft", *[t for t in TINY if "max_steps" not in t], "max_steps=-5"]) == EXIT_USAGE
    assert not (tmp_path / "runs").exists()

    assert main(["finetune", "--set", "run_name=ft", *TINY]) == 0
    good = digest(tmp_path / "runs" / "ft")
    assert "mlm/model/model.safetensors" in good
    causal = tmp_path / "causal"
    from roberta_diffusion import models

    tokenizer = bpe.fallback_tokenizer()
    models.fresh_causal_lm(tokenizer, "tiny").save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    capsys.readouterr()
    status = main(["finetune", "--set", "run_name=ft", f"init={causal}", *TINY])
    err = capsys.readouterr().err.splitlines()
    assert status == EXIT_USAGE and len(err) == 1 and "not a masked LM" in err[0]
    assert digest(tmp_path / "runs" / "ft") == good


def test_two_finetunes_on_one_name_one_runs_one_refuses(tmp_path, monkeypatch, capsys):
    """A long fine-tune holds run 'race'; a second one refuses and the previous results stay; after kill -9 of
    the first, the next run takes over its stale lock, resumes from the killed attempt's checkpoints (nothing is
    lost) and swaps its results in."""
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(paths, "CACHE", tmp_path / "runs" / "cache")
    base = ["finetune", "--set", "run_name=race", *[t for t in TINY if not t.startswith(("max_steps", "save_every"))],
            "save_every=4"]
    assert main([*base, "max_steps=4"]) == 0
    previous = digest(tmp_path / "runs" / "race")
    env = {**os.environ, "ROBERTA_DIFFUSION_RUNS": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([sys.executable, "-m", "workbench.cli", *base, "max_steps=1000000"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged = tmp_path / "runs" / ".staging" / "race" / "race" / "mlm" / "checkpoints"
    try:
        while not any(int(p.name.split("-")[1]) > 4 for p in staged.glob("step-*[0-9]")):
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        capsys.readouterr()
        assert main([*base, "max_steps=8"]) == EXIT_USAGE
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"in use by process {first.pid}" in err[0]
        assert digest(tmp_path / "runs" / "race") == previous
    finally:
        first.kill()
        first.wait()
    assert digest(tmp_path / "runs" / "race") == previous
    assert main([*base, "max_steps=8"]) == 0
    out = capsys.readouterr()
    assert f"left by process {first.pid}" in out.err and "unfinished attempt" in out.out
    history = json.loads((tmp_path / "runs" / "race" / "mlm" / "history.json").read_text())
    assert history["tokens"] >= 8 * 4 * 32, "resumed from the killed run's checkpoints (step >= 8), not restarted"
    assert not (tmp_path / "runs" / ".staging" / "race").exists()
