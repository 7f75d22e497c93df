"""Issue 16's hostile-user cases: every CLI error is one ``error:`` line, exit status 2, no traceback, and
nothing written (no output file, no temporary file, no run folder); output paths are checked before any model
loads; a failing write keeps the previous results."""

from __future__ import annotations

import errno
import json

import pytest
from roberta_diffusion import paths
from workbench import cli
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


def assert_one_error(status, err, expect):
    lines = err.splitlines()
    assert status == EXIT_USAGE, err
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
    "--threshold nan": (["generate", "x", "--threshold", "nan", "--strategy", "threshold"], "--threshold"),
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
        monkeypatch.setattr(cli.json, "dumps", full_disk)
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
