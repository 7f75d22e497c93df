"""Property-based fuzzing of the CLI surface (hypothesis): random argument lines for every subcommand, made of
sensible and hostile values, end in status 0 or 2; status 2 is exactly one ``error:`` line and no traceback;
and nothing is written, whatever the outcome, before the work itself starts.

Fast by design: no model runs. The first step of real work (picking the device, taking the run lock) is
replaced by a sentinel that ends the command, so an example costs only the parsing and the checks."""

from __future__ import annotations

import io
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roberta_diffusion import models, paths
from workbench import cli, runs
from workbench import settings as training_settings

from benchmarks import bench

pytest.importorskip("hypothesis")


class Reached(BaseException):
    """The checks passed and the command got to its work (a BaseException: the CLI's handler lets it through)."""


def _reached(*args, **kwargs):
    raise Reached


NUMBERS = ["0", "1", "4", "-3", "48", "10000", str(2**70), "-1e9", "0.5", "1.5", "inf", "-inf", "nan", "abc", "",
           "2**70", "1e400", " 7"]
TEXTS = st.one_of(st.sampled_from(["The cat", "", "  ", "a <mask> b", "<mask*5> x", "a <mask*99999999999999> b",
                                   "caf\udce9", "<mask*0>", "--", "-x"]),
                  st.text(alphabet=string.printable + "é\udce9<>*", max_size=30))
SAMPLING_FLAGS = ["--steps", "--max-len", "--prefix-len", "--top-k", "--top-p", "--temperature", "--seed",
                  "--semi-ar-block", "--threshold", "--policy", "--schedule", "--device", "--animation", "--json"]
EVAL_FLAGS = ["--prompts", "--steps", "--policies", "--elbo-samples", "--max-blocks", "--device", "--out", "--mlm"]
BENCH_FLAGS = ["--max-len", "--prefix-len", "--batch-sizes", "--steps", "--repeats", "--train-batch", "--policies",
               "--skip", "--device", "--out", "--size"]
WORDS = ["confidence", "redraw", "greedy", "linear", "cosine", "auto", "cpu", "cuda", "nonsense", "tiny",
         "1,16", "10,abc", "ar,train", "diffusion,ar,train"]
PATHS = ["{tmp}/o.gif", "{tmp}/o.json", "{tmp}/o.png", "{tmp}", "{tmp}/afile/o.json", "{tmp}/new/deeper/o.json",
         "{tmp}/folder.gif", "{tmp}/afile"]
PARAMS = ["max_steps", "max_step", "batch_size", "block_size", "prefix_len", "lr", "seed", "run_name", "objectives",
          "train_data", "eval_every", "dropout", "size", "init"]
SET_VALUES = ["40", "-5", "0", "abc", "null", "1e-3", "NaN", "[\"mlm\"]", "mlm", "../../x", "a/b", "ok-name", "true",
              "{tmp}/binary.txt", "sample", str(2**70), "[1,", "{\"a\": 1}"]


def flag_values(flags):
    return st.lists(st.tuples(st.sampled_from(flags), st.sampled_from(NUMBERS + WORDS + PATHS)), max_size=5)


@st.composite
def argv(draw):
    command = draw(st.sampled_from(["generate", "ar", "compare", "eval", "bench", "finetune", "pipeline"]))
    line = [command]
    if command in ("generate", "ar", "compare"):
        if draw(st.booleans()):
            line.append(draw(TEXTS))
        for flag, value in draw(flag_values(SAMPLING_FLAGS)):
            line += [flag, value]
        if command != "ar" and draw(st.booleans()):
            line.append("--infill")
        line += ["--model", "{mlm}" if command != "ar" else "{ar}"]
    elif command == "eval":
        for flag, value in draw(flag_values(EVAL_FLAGS)):
            line += [flag, value]
        if "--out" not in line and draw(st.booleans()):
            line += ["--out", "{tmp}/e.json"]
    elif command == "bench":
        for flag, value in draw(flag_values(BENCH_FLAGS)):
            line += [flag, value]
    else:
        line += ["--profile", draw(st.sampled_from(["smoke", "full", "{tmp}/bad.yaml", "missing", "{tmp}/typed.yaml"]))]
        if command == "finetune":
            pairs = draw(st.lists(st.tuples(st.sampled_from(PARAMS), st.sampled_from(SET_VALUES)), max_size=4))
            line += ["--set", *[f"{k}={v}" for k, v in pairs]] if pairs else []
        elif draw(st.booleans()):
            line += ["--only", draw(st.sampled_from(["03_generate", "05_x", "02_finetune"]))]
    if draw(st.integers(0, 20)) == 0:
        line.append(draw(st.sampled_from(["--help", "--bogus", "--debug"])))
    return line


def _sandbox() -> Path:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    (root / "afile").write_text("a file")
    (root / "folder.gif").mkdir()
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (root / "bad.yaml").write_text("name: [unclosed\n")
    (root / "typed.yaml").write_text("name: typed\n02_finetune:\n  batch_size: 0.5\n")
    return root


def _snapshot(root: Path):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


SANDBOX = _sandbox()


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(line=argv())
def test_any_argument_line_ends_in_0_or_one_error_line_and_writes_nothing(line, tiny_dirs, capsys):
    fill = {"tmp": SANDBOX, "mlm": tiny_dirs / "mlm", "ar": tiny_dirs / "ar"}
    line = [a.replace("{tmp}", str(SANDBOX)).replace("{mlm}", str(fill["mlm"])).replace("{ar}", str(fill["ar"]))
            for a in line]
    before = _snapshot(SANDBOX)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paths, "RUNS", SANDBOX / "runs")
        patch.setattr(paths, "CACHE", SANDBOX / "runs" / "cache")
        patch.setattr(models, "pick_device", _reached)
        patch.setattr(runs, "lock", _reached)
        patch.setattr("sys.stdin", io.StringIO(""))
        capsys.readouterr()
        try:
            # bench is the tool beside the library (python -m benchmarks.bench), with the CLI's error conventions
            status = bench.main(line[1:]) if line[0] == "bench" else cli.main(line)
        except SystemExit as exit_:  # --help (0) or argparse's own errors (2)
            status = exit_.code
        except Reached:
            status = "reached"
    err = capsys.readouterr().err
    assert status in (0, 2, "reached"), f"{line!r} -> {status}: {err}"
    assert "Traceback" not in err or "--debug" in line
    if status == 2 and "--debug" not in line:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{line!r}: {err}"
    assert _snapshot(SANDBOX) == before, f"{line!r} wrote something before its work began"


def test_the_library_checks_refuse_with_value_errors_only():
    """The checks module's entry points on random values: a ValueError or nothing, never another exception."""

    @settings(max_examples=200, deadline=None, database=None)
    @given(value=st.one_of(st.integers(), st.floats(), st.text(max_size=20), st.none(), st.booleans(),
                           st.lists(st.integers(), max_size=3)),
           key=st.sampled_from(sorted(training_settings.train_settings()) + ["max_step"]))
    def check(value, key):
        known = training_settings.train_settings()
        try:
            training_settings.parameter(key, value, known, "--set")
        except ValueError as err:
            assert key in str(err) or "run_name" in str(err)

    check()
