"""Issue 16's hostile-user cases: every CLI error is one ``error:`` line, exit status 2, no traceback, and
nothing written (no output file, no temporary file, no run folder); output paths are checked before any model
loads; a failing write keeps the previous results."""

from __future__ import annotations

import errno
import json

import pytest
from roberta_diffusion import bpe, paths
from workbench import cli, generate
from workbench.cli import EXIT_USAGE, main

from benchmarks import bench


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """A private runs/ (and cache) and a few hostile paths: a file, a folder named like a GIF, a binary corpus."""
    runs = tmp_path / "runs"
    monkeypatch.setattr(paths, "RUNS", runs)
    monkeypatch.setattr(paths, "CACHE", runs / "cache")
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "folder.gif").mkdir()
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    (tmp_path / "typed.yaml").write_text("name: typed\n02_finetune:\n  max_steps: many\n")
    (tmp_path / "not-a-mapping.yaml").write_text("- a\n- list\n")
    (tmp_path / "escape.yaml").write_text("name: ../../escape\n")
    (tmp_path / "twice.yaml").write_text("name: twice\n02_finetune:\n  max_steps: 5\n  lr: 0.001\n  max_steps: 500\n")
    (tmp_path / "cache.yaml").write_text("name: cache\n")
    (tmp_path / "decay.yaml").write_text("name: decay\n02_finetune:\n  weight_decay: -1\n")
    return tmp_path


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_cli(capsys, argv) -> tuple[int, str]:
    """``argv`` through ``roberta-diffusion``, or a ``bench ...`` line through ``python -m benchmarks.bench`` (the tool
    beside the library, which keeps the CLI's error conventions)."""
    entry, argv = (bench.main, argv[1:]) if argv[:1] == ["bench"] else (main, argv)
    capsys.readouterr()
    try:
        status = entry(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_error(status, err, expect, progress=False):
    """``progress``: training ran first, so stderr also holds its progress bars; the error is still one line, the
    last one."""
    lines = err.splitlines()
    assert status == EXIT_USAGE, err
    if progress:  # (a progress bar left open may add blank lines and cursor moves at the end)
        lines = [line for line in lines if any(c.isalnum() for c in line)]
        errors = [line for line in lines if line.startswith("error:")]
        assert errors and lines[-1] == errors[0], f"the error line must come last, got:\n{lines!r}"
        lines = [line for line in lines if line.startswith(("error:", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"one error line expected, got:\n{err}"
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]


BAD_UTF8 = "caf\udce9"  # what Python makes of a Latin-1 byte in argv
# (argv with {mlm}, {ar}, {tmp} filled in, a piece of the expected line)
CASES = {
    "non-UTF-8 prompt": (["generate", BAD_UTF8], "UTF-8"),
    "non-UTF-8 infill text": (["generate", BAD_UTF8 + " <mask>", "--infill"], "UTF-8"),
    "--device nonsense": (["generate", "x", "--device", "nonsense"], "--device"),
    "--device cuda:x": (["generate", "x", "--device", "cuda:x"], "--device"),
    "--temperature inf": (["generate", "x", "--temperature", "inf"], "--temperature"),
    "--temperature nan": (["generate", "x", "--temperature", "nan"], "--temperature"),
    "ar --temperature inf": (["ar", "x", "--temperature", "inf"], "--temperature"),
    "ar --temperature nan": (["ar", "x", "--temperature", "nan"], "--temperature"),
    "--top-p nan": (["generate", "x", "--top-p", "nan"], "--top-p"),
    "--threshold nan": (["generate", "x", "--threshold", "nan", "--policy", "threshold"], "--threshold"),
    "--model is a file": (["generate", "x", "--model", "{mlm}/config.json"], "is a file"),
    "ar --model is a file": (["ar", "x", "--model", "{ar}/config.json"], "is a file"),
    "compare --ar-model is a file": (["compare", "x", "--ar-model", "{ar}/config.json"], "--ar-model"),
    "<mask*99999999999999>": (["generate", "a <mask*99999999999999> b", "--infill"], "99999999999999"),
    "compare --infill": (["compare", "a <mask> b", "--infill"], "compare --infill"),
    # --steps above the positions to fill is lowered with a note, not refused (issue 25): tests/test_small_things.py
    "--seed 2**70 as a number": (["generate", "x", "--seed", str(2**70)], "--seed"),
    "--seed 2**70 as text": (["generate", "x", "--seed", "2**70"], "--seed"),
    "--seed negative": (["generate", "x", "--seed", "-1"], "--seed"),
    "--steps abc": (["generate", "x", "--steps", "abc"], "--steps"),
    "unknown flag": (["generate", "x", "--bogus"], "--bogus"),
    "--animation is a directory": (["generate", "x", "--animation", "{tmp}/folder.gif"], "is a directory"),
    "--animation under a file": (["generate", "x", "--animation", "{tmp}/afile/x.gif"], "which is a file"),
    "--animation wrong suffix": (["generate", "x", "--animation", "{tmp}/x.png"], ".gif"),
    "--json under a file": (["generate", "x", "--json", "{tmp}/afile/deeper/x.json"], "which is a file"),
    "--json wrong suffix": (["ar", "x", "--json", "{tmp}/x.txt"], ".json"),
    "compare --json is a directory": (["compare", "x", "--json", "{tmp}"], ".json"),
    "eval --prompts -3": (["eval", "--prompts", "-3", "--out", "{tmp}/e.json"], "--prompts"),
    "eval --elbo-samples 0": (["eval", "--elbo-samples", "0", "--out", "{tmp}/e.json"], "--elbo-samples"),
    "eval --steps abc": (["eval", "--steps", "abc", "--out", "{tmp}/e.json"], "--steps 'abc'"),
    "eval --steps 0": (["eval", "--steps", "10,0", "--out", "{tmp}/e.json"], "--steps"),
    "eval --max-blocks 0": (["eval", "--max-blocks", "0", "--out", "{tmp}/e.json"], "--max-blocks"),
    "eval --policies": (["eval", "--policies", "psychic", "--out", "{tmp}/e.json"], "psychic"),
    "eval --out under a file": (["eval", "--out", "{tmp}/afile/e.json"], "which is a file"),
    "eval --out wrong suffix": (["eval", "--out", "{tmp}/e.txt"], ".json"),
    "eval --mlm is a file": (["eval", "--mlm", "{mlm}/config.json", "--out", "{tmp}/e.json"], "--mlm"),
    "eval --steps above the canvas": (["eval", "--mlm", "{mlm}", "--ar", "{ar}", "--steps", "4000",
                                       "--out", "{tmp}/e.json"], "--steps 4000"),
    "bench --max-len 0": (["bench", "--max-len", "0", "--out", "{tmp}/b.json"], "--max-len"),
    "bench --prefix-len 0": (["bench", "--prefix-len", "0", "--out", "{tmp}/b.json"], "--prefix-len"),
    "bench --train-batch 0": (["bench", "--train-batch", "0", "--out", "{tmp}/b.json"], "--train-batch"),
    "bench --out under a file": (["bench", "--out", "{tmp}/afile/b.json"], "which is a file"),
    "bench --device nonsense": (["bench", "--device", "gpu0", "--out", "{tmp}/b.json"], "--device"),
    "malformed profile YAML": (["finetune", "--profile", "{tmp}/bad.yaml"], "not valid YAML"),
    "profile of the wrong shape": (["finetune", "--profile", "{tmp}/not-a-mapping.yaml"], "mapping"),
    "wrong type in a profile": (["finetune", "--profile", "{tmp}/typed.yaml"], "max_steps"),
    "profile name escaping runs/": (["pipeline", "--profile", "{tmp}/escape.yaml"], "runs/"),
    "--set max_steps=abc": (["finetune", "--set", "max_steps=abc"], "max_steps"),
    "--set batch_size=0": (["finetune", "--set", "batch_size=0"], "batch_size"),
    "--set max_steps=-5": (["finetune", "--set", "max_steps=-5"], "max_steps"),
    "--set max_step=2 (typo)": (["finetune", "--set", "max_step=2"], "did you mean 'max_steps'"),
    "--set without =": (["finetune", "--set", "max_steps"], "KEY=VALUE"),
    "--set lr=NaN": (["finetune", "--set", "lr=NaN"], "lr"),
    "--set lr=-1": (["finetune", "--set", "lr=-1"], "lr"),
    "--set seed=2**70": (["finetune", "--set", f"seed={2**70}"], "seed"),
    "--set prefix_len >= block_size": (["finetune", "--set", "block_size=16", "prefix_len=16"], "prefix_len"),
    "--set objectives as a string": (["finetune", "--set", "objectives=mlm"], "objectives"),
    "run_name with ../..": (["finetune", "--set", "run_name=../../x"], "run_name"),
    "run_name with a slash": (["finetune", "--set", "run_name=a/b"], "run_name"),
    "run_name hidden": (["finetune", "--set", "run_name=.staging"], "run_name"),
    "binary training data": (["finetune", "--set", "train_data={tmp}/binary.txt"], "binary.txt"),
    "missing training data": (["finetune", "--set", "train_data={tmp}/missing.txt"], "missing.txt"),
    "pipeline --only unknown": (["pipeline", "--only", "05_extra"], "05_extra"),
    # issue 25: every check before the lock; ranges for every numeric knob; reserved names; duplicate keys
    "--set weight_decay=-1": (["finetune", "--set", "weight_decay=-1"], "weight_decay"),
    "weight_decay=-1 in a profile": (["pipeline", "--profile", "{tmp}/decay.yaml"], "weight_decay"),
    "--set dropout=1": (["finetune", "--set", "dropout=1.0"], "dropout"),
    "--set ema_decay=1": (["finetune", "--set", "ema_decay=1.0"], "ema_decay"),
    "--set span_prob=1.5": (["finetune", "--set", "span_prob=1.5"], "span_prob"),
    "--set locality_init=-0.5": (["finetune", "--set", "locality_init=-0.5"], "locality_init"),
    "--set eval_batches=0": (["finetune", "--set", "eval_batches=0"], "eval_batches"),
    "--set max_prefix_len beyond the block": (["finetune", "--set", "block_size=32", "max_prefix_len=40"],
                                              "max_prefix_len=40 must be below block_size=32"),
    "--set max_prefix_len below prefix_len": (["finetune", "--set", "prefix_len=8", "max_prefix_len=4"], "max_prefix_len"),
    "--set ratio_mode unknown": (["finetune", "--set", "ratio_mode=linear"], "ratio_mode"),
    "--set graphed over the levels collator": (["finetune", "--set", "compile=true", 'compile_scope="graphed"',
                                                'ratio_mode="levels"'], "ratio_mode='stratified'"),
    "--set objectives unknown": (["finetune", "--set", 'objectives=["mlm", "gpt"]'], "objectives"),
    "--set escape_lr without escape_steps": (["finetune", "--set", "escape_lr=0.0002", "escape_steps=0"], "escape_steps"),
    "--set plateau_escape with init": (["finetune", "--set", "plateau_escape=true", "init={mlm}"], "plateau_escape"),
    "run_name=cache (the corpus cache)": (["finetune", "--set", "run_name=cache"], "reserved"),
    "run_name=Logs": (["finetune", "--set", "run_name=Logs"], "reserved"),
    "profile named cache": (["pipeline", "--profile", "{tmp}/cache.yaml"], "reserved"),
    "a key given twice in a profile": (["finetune", "--profile", "{tmp}/twice.yaml"], "'max_steps' is given twice"),
    "--num-processes 3 with batch 8": (["finetune", "--num-processes", "3"], "--num-processes 3"),
    "--max-len 10**12": (["generate", "x", "--max-len", str(10**12)], "positions"),
    "ar --max-len 10**12": (["ar", "x", "--max-len", str(10**12)], "positions"),
    "compare --max-len 10**12": (["compare", "x", "--max-len", str(10**12)], "positions"),
    "missing profile": (["pipeline", "--profile", "no-such-profile"], "no-such-profile"),
}
SAMPLING = {"generate": {"--steps": "4", "--max-len": "48"}, "ar": {"--max-len": "48"},
            "compare": {"--steps": "4", "--max-len": "48"}}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_writes_nothing(capsys, sandbox, tiny_dirs, case):
    argv, expect = CASES[case]
    fill = {"mlm": tiny_dirs / "mlm", "ar": tiny_dirs / "ar", "tmp": sandbox}
    argv = [a.format(**fill) if "{" in a else a for a in argv]
    command = argv[0]
    if command in SAMPLING:  # small and fast, on the tiny models, unless the case sets the flag
        defaults = {**SAMPLING[command], "--model": str(tiny_dirs / ("ar" if command == "ar" else "mlm")),
                    "--device": "cpu", **({"--ar-model": str(tiny_dirs / "ar")} if command == "compare" else {})}
        argv += [x for flag, value in defaults.items() if flag not in argv for x in (flag, value)]
    before = snapshot(sandbox)
    status, err = run_cli(capsys, argv)
    assert_one_error(status, err, expect)
    assert snapshot(sandbox) == before, "nothing may be written: no file, no temporary file, no run folder"


def test_debug_shows_the_traceback(capsys, sandbox):
    status, err = run_cli(capsys, ["finetune", "--set", "max_step=2", "--debug"])
    assert status == EXIT_USAGE and "Traceback" in err and err.splitlines()[-1].startswith("error: ")


def test_the_read_only_check_names_the_folder(sandbox, monkeypatch):
    """(As root every folder is writable, so the permission answer is simulated.)"""

    from workbench import checks

    monkeypatch.setattr(checks.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match="no permission to write in"):
        checks.output_path("--json", sandbox / "new" / "x.json", ".json")


def _generate(tiny_dirs, gif, js, *extra):
    return ["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--max-len", "48", "--steps", "4",
            "--device", "cpu", "--quiet", "--animation", str(gif), "--json", str(js), *extra]


@pytest.mark.parametrize("failing", ["animation", "json"])
def test_a_failed_write_keeps_the_previous_results(capsys, tmp_path, tiny_dirs, monkeypatch, failing):
    """A full disk while writing the GIF or the JSON: one error line, exit 2, and both previous files exactly as
    they were (a good GIF is not left beside a failed JSON), no temporary file."""
    from roberta_diffusion import viz

    gif, js = tmp_path / "out.gif", tmp_path / "out.json"
    assert run_cli(capsys, _generate(tiny_dirs, gif, js))[0] == 0
    old = gif.read_bytes(), js.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    if failing == "animation":
        monkeypatch.setattr(viz, "animate", full_disk)
    else:
        monkeypatch.setattr(generate.json, "dumps", full_disk)
    status, err = run_cli(capsys, _generate(tiny_dirs, gif, js, "--seed", "7"))
    assert_one_error(status, err, "No space left on device")
    assert (gif.read_bytes(), js.read_bytes()) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif", "out.json"]


def test_outputs_are_replaced_together_on_success(capsys, tmp_path, tiny_dirs):
    gif, js = tmp_path / "new" / "out.gif", tmp_path / "new" / "out.json"
    assert run_cli(capsys, _generate(tiny_dirs, gif, js, "--seed", "1"))[0] == 0
    first = json.loads(js.read_text())["text"]
    assert run_cli(capsys, _generate(tiny_dirs, gif, js, "--seed", "2"))[0] == 0
    assert json.loads(js.read_text())["text"] != first
    assert sorted(p.name for p in gif.parent.iterdir()) == ["out.gif", "out.json"]


def test_bench_keeps_its_out_file_until_every_section_ran(capsys, tmp_path, monkeypatch):
    out = tmp_path / "b.json"
    out.write_text('{"old": true}')

    def crash(*args, **kwargs):
        raise RuntimeError("the AR section crashed")

    monkeypatch.setattr(bench, "_bench_ar", crash)
    status, err = run_cli(capsys, ["bench", "--size", "tiny", "--batch-sizes", "1", "--steps", "2", "--max-len", "24",
                                   "--repeats", "1", "--skip", "train", "--device", "cpu", "--out", str(out)])
    assert status == cli.EXIT_BUG and len(err.splitlines()) == 1 and "RuntimeError" in err
    assert json.loads(out.read_text()) == {"old": True}
    partial = json.loads((tmp_path / ".b.partial.json").read_text())  # what was measured is still there
    assert partial["diffusion"] and not partial["ar"]


# -- issue 25: outputs, resume, leftovers, disk and signals ------------------------------------------------------
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from roberta_diffusion import checkpoints, data, train  # noqa: E402
from roberta_diffusion.paths import SAMPLE_TEXT  # noqa: E402
from workbench import commands, runs, settings  # noqa: E402


@pytest.mark.notebooks
def test_smoke_outputs_record_final_paths_not_the_staging_folder(smoke_run):
    """After the swap-in, what the run records names ``runs/smoke/...``: no text file of it (executed notebooks,
    metrics.json, generation.json, configs, checkpoints) names the staging folder or this machine's runs folder."""
    absolute = str(smoke_run.parent)
    texts = [p for p in smoke_run.rglob("*") if p.suffix in (".ipynb", ".json", ".md", ".txt") and p.is_file()]
    assert {p.name for p in texts} >= {"03_generate.ipynb", "metrics.json", "generation.json", "config.json"}
    for path in texts:
        text = path.read_text()
        assert ".staging" not in text and absolute not in text, path
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["models"]["mlm"].startswith("mlm: runs/smoke/mlm/model ")
    assert json.loads((smoke_run / "mlm" / "config.json").read_text())["out_dir"] == "runs/smoke/mlm"
    notebook = json.loads((smoke_run / "03_generate.ipynb").read_text())
    assert notebook["metadata"]["papermill"]["output_path"] == "runs/smoke/03_generate.ipynb"


# A run whose held-out bound is best at step 2 and worse after, so the exported model/ is best/ (step 2), not the
# last weights: a resume that lost best/ would export step 6's weights and fail the comparison.
KILL_RUN = ["run_name=kill", "train_data=sample", "valid_data=sample", "max_train_lines=null", "block_size=32",
            "prefix_len=4", "batch_size=4", "max_steps=6", "eval_every=2", "save_every=2", "warmup_steps=1",
            "eval_batches=1", 'objectives=["mlm"]']
TIMING = ("seconds", "speed", "tokens_per_second")  # wall-clock numbers: they differ between any two runs


class Killed(BaseException):
    """kill -9, simulated in the process: nothing catches it (the CLI catches Exception), no cleanup runs."""


def _worse_after_step_2(monkeypatch):
    """The held-out bound gets worse after step 2, whatever the weights do (the tiny model's bound is noisy)."""
    record = train.record_eval

    class Worse:
        def __init__(self, scorer, step):
            self.scorer, self.step, self.block_size = scorer, step, scorer.block_size

        def score(self, model, **kwargs):
            loss, bound = self.scorer.score(model, **kwargs)
            return loss, bound + (0.0 if self.step <= 2 else 5.0)

    monkeypatch.setattr(train, "record_eval", lambda history, step, scorer, *rest:
                        record(history, step, Worse(scorer, step), *rest))


def _finetune(*extra) -> int:
    return main(["finetune", "--set", *KILL_RUN, *extra])


def _outcome(run: Path) -> dict:
    """Everything a finished run exports, as bytes (model/, best/), the history without its timings, the card
    without its wall time."""
    files = {str(p.relative_to(run)): p.read_bytes() for folder in ("model", "best")
             for p in sorted((run / "mlm" / folder).iterdir())}
    history = json.loads((run / "mlm" / "history.json").read_text())
    card = [line for line in files.pop("mlm/model/README.md").decode().splitlines() if "wall time" not in line]
    return {"files": files, "card": card, "history": {k: v for k, v in history.items() if k not in TIMING}}


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        runs_dir = tmp_path_factory.mktemp("unbroken") / "runs"
        patch.setattr(paths, "RUNS", runs_dir)
        patch.setattr(paths, "CACHE", runs_dir / "cache")
        _worse_after_step_2(patch)
        assert _finetune() == 0
        outcome = _outcome(runs_dir / "kill")
    assert outcome["history"]["best_step"] == 2 and outcome["history"]["eval_step"] == [2, 4, 6]
    return outcome


def _kill_at(monkeypatch, point: str) -> None:
    """Make the next run die at ``point``."""
    save, export = train.save_checkpoint, train.export_model

    def save_then_die(out, model, optimizer, scheduler, step, *args, **kwargs):
        folder = save(out, model, optimizer, scheduler, step, *args, **kwargs)
        if point == "after the checkpoint that follows the best evaluation" and step == 4:
            raise Killed
        return folder

    def export_and_die(folder, *args, **kwargs):
        if point == "after the last checkpoint, before the export" and Path(folder).name == "model":
            raise Killed
        done = export(folder, *args, **kwargs)
        if point == "after the best evaluation, before its checkpoint" and Path(folder).name == "best":
            raise Killed
        return done

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    monkeypatch.setattr(train, "export_model", export_and_die)


KILL_POINTS = ["after the best evaluation, before its checkpoint", "after the checkpoint that follows the best evaluation",
               "after the last checkpoint, before the export"]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_then_resume_restores_model_best_history_and_card_bit_for_bit(sandbox, monkeypatch, unbroken, point):
    """Killed before or after the best evaluation, then resumed: model/, best/, history and card equal the unbroken
    run's, tensor for tensor (best/ travels inside the checkpoints and is restored with them)."""
    _worse_after_step_2(monkeypatch)
    with monkeypatch.context() as kill:
        _kill_at(kill, point)
        with pytest.raises(Killed):
            _finetune()
    assert not (paths.RUNS / "kill").exists()
    assert _finetune() == 0
    assert _outcome(paths.RUNS / "kill") == unbroken


def test_a_refused_resume_keeps_the_killed_attempts_best(sandbox, monkeypatch, unbroken, capsys):
    """Killed after its best evaluation was checkpointed; a rerun with another lr is refused (one line, exit 2)
    and deletes nothing: the staged best/ and the checkpoints stay, and the rerun with the first config ends as
    the unbroken run."""
    _worse_after_step_2(monkeypatch)
    with monkeypatch.context() as kill:
        _kill_at(kill, "after the checkpoint that follows the best evaluation")
        with pytest.raises(Killed):
            _finetune()
    staged = paths.RUNS / ".staging" / "kill" / "kill" / "mlm"
    best = {p.name: p.read_bytes() for p in (staged / "best").iterdir()}
    capsys.readouterr()
    status, err = _finetune("lr=0.002"), capsys.readouterr().err
    assert_one_error(status, err, "another config")
    assert {p.name: p.read_bytes() for p in (staged / "best").iterdir()} == best
    assert (staged / "checkpoints" / "step-4" / "best" / "model.safetensors").read_bytes() == best["model.safetensors"]
    assert _finetune() == 0
    assert _outcome(paths.RUNS / "kill") == unbroken


def test_a_checkpoint_without_manifest_and_with_a_truncated_shard_falls_back(tmp_path, tokenizer):
    """Checkpoints from before manifests are checked by their formats: a safetensors shard cut short (or a .pt
    failing its CRC) is skipped for the older checkpoint, which resumes."""
    blocks = data.load_blocks(SAMPLE_TEXT, tokenizer, 32)
    settings = dict(objective="mlm", size="tiny", block_size=32, prefix_len=4, batch_size=4, save_every=2,
                    eval_every=2, eval_batches=1, log_every=1, warmup_steps=1)
    train.fit(train.TrainConfig(out_dir=str(tmp_path), max_steps=4, **settings), blocks, blocks, tokenizer, progress=False)
    for step in (2, 4):
        (tmp_path / "checkpoints" / f"step-{step}" / "manifest.json").unlink()
    shard = tmp_path / "checkpoints" / "step-4" / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    notes = []
    assert checkpoints.latest_checkpoint(tmp_path, say=notes.append).name == "step-2"
    assert "step-4" in notes[0] and "model.safetensors" in notes[0]
    history = train.fit(train.TrainConfig(out_dir=str(tmp_path), max_steps=6, **settings), blocks, blocks, tokenizer,
                        progress=False)
    assert history["step"][:3] == [1, 2, 3]  # steps 3 and 4 trained again: resumed at 2
    optimizer = tmp_path / "checkpoints" / "step-6" / "optimizer.pt"
    (tmp_path / "checkpoints" / "step-6" / "manifest.json").unlink()
    raw = bytearray(optimizer.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    optimizer.write_bytes(bytes(raw))
    assert checkpoints.checkpoint_problem(optimizer.parent) is not None


def test_a_check_failing_after_the_lock_leaves_no_staging_and_no_lock(sandbox, capsys):
    """What only the model can tell (here: a causal LM given to fine-tune as a masked LM) fails after the lock:
    one line, exit 2, and no staging folder, no lock file; only the tokenised-corpus cache stays."""
    from roberta_diffusion import models

    causal = sandbox / "causal"
    tokenizer = bpe.fallback_tokenizer()
    models.fresh_causal_lm(tokenizer, "tiny").save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    capsys.readouterr()
    status = _finetune(f"init={causal}")
    assert_one_error(status, capsys.readouterr().err, "not a masked LM")
    assert sorted(os.listdir(paths.RUNS)) == ["cache"]
    capsys.readouterr()
    assert _finetune("max_steps=2") == 0
    assert "unfinished attempt" not in capsys.readouterr().out  # nothing left to resume from


@pytest.mark.parametrize("writer_error", ["OSError ENOSPC", "torch's own RuntimeError"])
def test_out_of_space_during_finetune_is_one_line_and_removes_the_partial_checkpoint(sandbox, monkeypatch, capsys,
                                                                                      writer_error):
    """The disk fills while the step-4 checkpoint is written: one error line, exit 2; the partial folder is gone,
    the complete step-2 checkpoint stays staged for a rerun to resume from, no lock is left."""
    save = torch.save

    def full_disk(obj, target, *args, **kwargs):
        if Path(target).parent.name == "step-4.tmp" and Path(target).name == "optimizer.pt":
            Path(target).write_bytes(b"partial")
            if writer_error == "OSError ENOSPC":
                raise OSError(errno.ENOSPC, "No space left on device", str(target))
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", full_disk)
    capsys.readouterr()
    status, err = _finetune(), capsys.readouterr().err
    assert_one_error(status, err, "step-4", progress=True)
    assert not list(paths.RUNS.rglob("*.tmp")) and not (paths.RUNS / ".locks").exists()
    staged = paths.RUNS / ".staging" / "kill" / "kill" / "mlm" / "checkpoints"
    assert [p.name for p in checkpoints.checkpoints(staged.parent)] == ["step-2"]
    assert checkpoints.checkpoint_problem(staged / "step-2") is None
    assert not (paths.RUNS / "kill").exists()


def test_files_added_to_a_run_folder_during_a_rerun_are_kept(sandbox, monkeypatch, capsys):
    """The swap-in keeps what a user put into runs/<name>/ while the run went: a new file moves into the new
    results; a file the run also writes is kept beside the run's as <name>.user<suffix>. Nothing is deleted."""
    assert _finetune("max_steps=2") == 0
    final = paths.RUNS / "kill"
    save = train.save_checkpoint

    def user_writes(*args, **kwargs):
        (final / "notes.txt").write_text("my notes")
        (final / "mlm" / "history.json").write_text('{"mine": true}')
        return save(*args, **kwargs)

    monkeypatch.setattr(train, "save_checkpoint", user_writes)
    capsys.readouterr()
    assert _finetune("max_steps=4") == 0
    assert "kept 2 file(s)" in capsys.readouterr().out
    assert (final / "notes.txt").read_text() == "my notes"
    assert json.loads((final / "mlm" / "history.user.json").read_text()) == {"mine": True}
    assert json.loads((final / "mlm" / "history.json").read_text())["step"][-1] == 4


def test_a_num_processes_batch_it_does_not_divide_is_refused_before_torchrun(sandbox, monkeypatch, capsys):
    monkeypatch.setattr(commands, "_launch", lambda args: pytest.fail("torchrun started"))
    before = snapshot(sandbox)
    status, err = run_cli(capsys, ["finetune", "--num-processes", "3", "--set", *KILL_RUN])
    assert_one_error(status, err, "batch_size=4 is the global batch and must split evenly over --num-processes 3")
    assert snapshot(sandbox) == before


def test_a_failed_worker_under_num_processes_is_one_error_line(sandbox, capsys, tiny_dirs):
    """Two real processes (torchrun, gloo on the CPU) both fail on a causal LM given as a masked LM: one line
    naming the process and its error, exit 2 (not torchrun's report per rank), and nothing left behind."""
    status, err = run_cli(capsys, ["finetune", "--num-processes", "2", "--set", *KILL_RUN, f"init={tiny_dirs / 'ar'}"])
    assert_one_error(status, err, "training process 0 of 2:")
    assert "not a masked LM" in err
    assert sorted(os.listdir(paths.RUNS)) == ["cache"]


def test_every_numeric_notebook_parameter_has_a_range():
    """A numeric knob without a range is accepted at any value (weight_decay=-1 was): each one is listed."""
    ranged = settings.POSITIVE | settings.NON_NEGATIVE | settings.POSITIVE_FLOAT | set(settings.UNIT) | set(settings.LISTS) | {"seed"}
    for name in ("01_explore_masking", "02_finetune", "03_generate", "04_compare"):
        for key, (annotation, default) in settings.notebook_parameters(paths.NOTEBOOKS / f"{name}.py").items():
            numeric = any(t in annotation for t in ("int", "float")) or (
                isinstance(default, list) and default and all(isinstance(v, (int, float)) for v in default))
            assert not numeric or key in ranged, f"{name}: {key} has no range in workbench.checks"


def test_the_lock_file_goes_with_its_holder(tmp_path):
    with runs.lock("demo", tmp_path):
        assert (tmp_path / ".locks" / "demo.lock").exists()
    assert not (tmp_path / ".locks").exists()


