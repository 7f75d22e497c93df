"""Resume cannot lose or lie: a run killed (kill -9) at random moments and resumed ends with the losses and
weights of an unbroken run, bit for bit; a damaged newest checkpoint falls back to an intact older one; a
changed config is refused, naming the keys."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from roberta_diffusion import checkpoints, data, train
from roberta_diffusion.paths import SAMPLE_TEXT

STEPS = 16
SETTINGS = dict(objective="mlm", size="tiny", block_size=32, prefix_len=4, batch_size=4, max_steps=STEPS,
                save_every=2, eval_every=5, eval_batches=1, log_every=1, warmup_steps=2, dropout=0.1)
SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from roberta_diffusion import bpe, data, models, train
    from roberta_diffusion.paths import SAMPLE_TEXT
    tok = bpe.fallback_tokenizer()
    blocks = data.load_blocks(SAMPLE_TEXT, tok, 32)
    torch.randn(int(sys.argv[2]))  # whatever ran before in the process must not matter
    train.fit(train.TrainConfig(out_dir=sys.argv[1], **{settings}), blocks, blocks, tok, progress=False)
""").replace("{settings}", repr(SETTINGS))


def run_script(tmp_path, out, disturb=0, kill_after=None):
    """Train in a subprocess; with ``kill_after``, kill -9 it once a checkpoint of at least that step exists
    (the moment within the following step varies from run to run, which is the point)."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(disturb)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if kill_after is None:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        return
    try:
        while proc.poll() is None:
            done = checkpoints.checkpoints(out)  # finished folders (renamed into place), newest first
            if done and int(done[0].name.split("-")[1]) >= kill_after:
                break
            time.sleep(0.02)  # poll gently: the machine is small and shared
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()


def outcome(out):
    history = json.loads((out / "history.json").read_text())
    return history["train_loss"], history["eval_loss"], (out / "model" / "model.safetensors").read_bytes()


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unbroken")
    run_script(tmp, tmp / "run")
    return outcome(tmp / "run")


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path, unbroken):
    """RESUME_KILLS (default 3) kills of one run at random checkpoints; the finished run equals the unbroken one:
    every logged training loss, every held-out loss and the exported weights, byte for byte."""
    kills = int(os.environ.get("RESUME_KILLS", "3"))
    rng = random.Random(os.environ.get("RESUME_SEED", "16"))
    out = tmp_path / "run"
    for kill_after in sorted(rng.randrange(2, STEPS, 2) for _ in range(kills)):
        run_script(tmp_path, out, disturb=rng.randrange(1, 1000), kill_after=kill_after)
        assert not (out / "model").exists() or checkpoints.latest_checkpoint(out) is not None
    run_script(tmp_path, out, disturb=7)
    losses, evals, weights = outcome(out)
    assert losses == unbroken[0] and len(losses) == STEPS
    assert evals == unbroken[1]
    assert weights == unbroken[2]


def _blocks(tokenizer):
    return data.load_blocks(SAMPLE_TEXT, tokenizer, 32)


FAST = [pytest.param({}, id="cpu"),
        pytest.param({"compile": True, "compile_scope": "graphed", "ratio_mode": "stratified", "deterministic": True},
                     id="cuda-graphed",
                     marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU"))]


@pytest.mark.parametrize("fast", FAST)
def test_an_interrupted_run_in_process_resumes_bit_identically(tmp_path, tokenizer, monkeypatch, fast):
    """The same, without a subprocess: stop right after the step-6 checkpoint, disturb the global random state,
    resume. Without the saved random state the dropout noise differs and so do the losses after step 6. On a GPU,
    the step the converge recipe trains with: compiled whole and replayed as CUDA graphs, recaptured on resume, with
    deterministic kernels (without them two unbroken GPU runs already differ)."""
    blocks = _blocks(tokenizer)
    cfg = dict(SETTINGS, max_steps=10, save_every=3, **fast)
    whole = train.fit(train.TrainConfig(out_dir=str(tmp_path / "whole"), **cfg), blocks, blocks, tokenizer,
                        progress=False)
    save = checkpoints.save_checkpoint

    class Stop(Exception):
        pass

    def save_then_stop(*args, **kwargs):
        folder = save(*args, **kwargs)
        if args[4] >= 6:
            raise Stop
        return folder

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(Stop):
        train.fit(train.TrainConfig(out_dir=str(tmp_path / "cut"), **cfg), blocks, blocks, tokenizer, progress=False)
    monkeypatch.setattr(train, "save_checkpoint", save)
    torch.randn(123)
    resumed = train.fit(train.TrainConfig(out_dir=str(tmp_path / "cut"), **cfg), blocks, blocks, tokenizer,
                          progress=False)
    assert resumed["train_loss"] == whole["train_loss"] and resumed["eval_loss"] == whole["eval_loss"]


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "drop a file", "garble the manifest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(tmp_path, tokenizer, damage):
    blocks = _blocks(tokenizer)
    cfg = train.TrainConfig(out_dir=str(tmp_path), **dict(SETTINGS, max_steps=4))
    train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    newest = tmp_path / "checkpoints" / "step-4"
    weights = newest / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip a byte":
        raw = bytearray(weights.read_bytes())
        raw[-10] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "drop a file":
        (newest / "optimizer.pt").unlink()
    else:
        (newest / "manifest.json").write_text("{")
    notes = []
    assert checkpoints.latest_checkpoint(tmp_path, say=notes.append).name == "step-2"
    assert notes and "step-4" in notes[0]
    history = train.fit(train.TrainConfig(out_dir=str(tmp_path), **dict(SETTINGS, max_steps=6)), blocks, blocks,
                          tokenizer, progress=False)
    assert history["step"][:2] == [1, 2] and history["step"][2] == 3  # resumed at step 2, not 4, not 0


@pytest.mark.parametrize("change", [{"block_size": 64}, {"size": "small"}, {"lr": 1e-2, "seed": 3}])
def test_a_changed_config_is_refused_naming_the_keys(tmp_path, tokenizer, change):
    blocks = _blocks(tokenizer)
    train.fit(train.TrainConfig(out_dir=str(tmp_path), **dict(SETTINGS, max_steps=2)), blocks, blocks, tokenizer,
                progress=False)
    with pytest.raises(ValueError, match="another config") as refused:
        train.fit(train.TrainConfig(out_dir=str(tmp_path), **{**SETTINGS, "max_steps": 4, **change}),
                    blocks, blocks, tokenizer, progress=False)
    for key in change:
        assert f"{key}:" in str(refused.value)


def test_harmless_changes_resume(tmp_path, tokenizer):
    blocks = _blocks(tokenizer)
    train.fit(train.TrainConfig(out_dir=str(tmp_path), **dict(SETTINGS, max_steps=2)), blocks, blocks, tokenizer,
                progress=False)
    history = train.fit(train.TrainConfig(out_dir=str(tmp_path), **dict(SETTINGS, max_steps=4, eval_every=1,
                                                                           save_every=1, max_minutes=5.0)),
                          blocks, blocks, tokenizer, progress=False)
    assert history["step"] == [1, 2, 3, 4]


def test_extra_state_is_saved_and_verified(tmp_path, mlm):
    optimizer = torch.optim.AdamW(mlm.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = {"ema": {k: v.clone() for k, v in list(mlm.state_dict().items())[:2]}}
    folder = checkpoints.save_checkpoint(tmp_path, mlm, optimizer, scheduler, 5, {"step": []}, extra=ema)
    loaded = checkpoints.load_extra(folder)
    assert loaded.keys() == ema.keys() and all(torch.equal(loaded["ema"][k], v) for k, v in ema["ema"].items())
    assert "extra.pt" in json.loads((folder / "manifest.json").read_text())
    (folder / "extra.pt").write_bytes(b"damaged")
    assert checkpoints.checkpoint_problem(folder) is not None


def test_deterministic_kernels_change_no_number_on_a_cpu_and_may_be_switched_on_resume(tmp_path, tokenizer):
    """``deterministic=True`` switches the process to deterministic kernels (what makes a GPU run resumable bit for
    bit); a CPU's kernels are deterministic already, so its numbers stay. Switching it between a run and its resume
    is allowed: it changes how sums are ordered, not what is trained."""
    blocks = _blocks(tokenizer)
    plain = train.fit(train.TrainConfig(out_dir=str(tmp_path / "plain"), **dict(SETTINGS, max_steps=4)), blocks,
                      blocks, tokenizer, progress=False)
    try:
        strict = train.fit(train.TrainConfig(out_dir=str(tmp_path / "strict"), deterministic=True,
                                             **dict(SETTINGS, max_steps=4)), blocks, blocks, tokenizer, progress=False)
        assert torch.are_deterministic_algorithms_enabled()
        assert strict["train_loss"] == plain["train_loss"] and strict["eval_loss"] == plain["eval_loss"]
        longer = train.fit(train.TrainConfig(out_dir=str(tmp_path / "plain"), deterministic=True,
                                             **dict(SETTINGS, max_steps=6)), blocks, blocks, tokenizer, progress=False)
        assert longer["step"][:4] == plain["step"] and len(longer["step"]) == 6
    finally:
        torch.use_deterministic_algorithms(False)
