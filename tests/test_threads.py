"""Issue 25, item 1: every command picks its torch threads (``roberta_diffusion.threads``) and takes ``--threads``.

The rule's logic on a mocked machine, and the flag on every entry point; how fast each choice is lives in
``benchmarks/threads.py``'s JSON, not here."""

from __future__ import annotations

import json

import pytest
import torch
from roberta_diffusion import threads
from workbench import cli, commands
from workbench.cli import EXIT_USAGE, main


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "busy", "expected"), [
    (2, 0.0, 2),    # idle small CPU: both cores
    (2, 0.3, 2),    # a little background work still leaves most of both
    (2, 1.0, 1),    # one core taken by another process
    (2, 2.0, 1),    # everything taken: still one thread, never none
    (2, 5.0, 1),
    (1, 0.0, 1),
    (16, 3.2, 13),  # a big machine: what the others leave
    (16, 0.0, 16),
])
def test_the_rule_is_the_free_cores_at_least_one(cores, busy, expected):
    assert threads.choose(cores, busy) == expected


def test_hyper_threads_are_not_cores():
    """Two cores with two hardware threads each: four processors in /proc/cpuinfo, two cores."""
    cpu = "processor\t: {n}\nphysical id\t: 0\ncore id\t\t: {core}\n"
    text = "\n".join(cpu.format(n=n, core=n % 2) for n in range(4))
    assert threads.cores_in_cpuinfo(text) == 2
    assert threads.cores_in_cpuinfo("processor\t: 0\nmodel name\t: some ARM\n") == 0  # no core ids: logical CPUs count


def test_the_default_measures_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.setattr(threads, "physical_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1.2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: measured, as if unset
    assert threads.default_threads() == 3


def test_busy_cpus_reads_what_others_used_from_proc_stat(monkeypatch):
    """Two readings of /proc/stat's first line: 150 of 200 ticks busy over the interval on 2 CPUs = 1.5 CPUs."""
    readings = iter([(1000, 4000), (1150, 4200)])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.busy_cpus() == pytest.approx(1.5)


def test_use_sets_torch(restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "default_threads", lambda: 2)
    assert threads.use(None) == 2 and torch.get_num_threads() == 2
    assert threads.use(1) == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="1 or more"):
        threads.use(0)


def test_generate_runs_on_the_threads_asked_for(restore_threads, tmp_path, tiny_dirs, capsys):
    js = tmp_path / "t.json"
    assert main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--max-len", "32", "--steps", "2",
                 "--device", "cpu", "--quiet", "--threads", "2", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["torch_threads"] == 2


def test_without_the_flag_the_rule_decides(restore_threads, tmp_path, tiny_dirs, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "physical_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1.0)  # another process holds a core
    js = tmp_path / "t.json"
    assert main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), "--max-len", "32", "--steps", "2",
                 "--device", "cpu", "--quiet", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["torch_threads"] == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
@pytest.mark.parametrize("command", [["generate", "x"], ["ar", "x"], ["compare", "x"], ["eval", "--out", "e.json"],
                                     ["finetune"]])
def test_a_bad_thread_count_is_one_error_line(capsys, command, value):
    with pytest.raises(SystemExit) as done:
        main([*command, "--threads", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert done.value.code == EXIT_USAGE and len(err) == 1 and err[0].startswith("error:") and "--threads" in err[0]


def test_the_pipeline_leaves_threads_to_its_notebooks(capsys):
    """Its notebooks run in their own kernels (their cpu_threads parameter): a --threads here would do nothing."""
    with pytest.raises(SystemExit):
        main(["pipeline", "--threads", "2"])
    assert "unrecognized arguments: --threads" in capsys.readouterr().err


def test_the_benchmark_tools_take_threads_too():
    """They run through cli.run, which gives every command the flag (frontier.py does not list it itself)."""
    from benchmarks import bench, frontier
    from benchmarks import threads as threads_bench

    for parser in (bench.build_parser(), frontier.build_parser(), threads_bench.build_parser()):
        cli.add_threads_flag(parser)
        assert parser.parse_args(["--out", "x.json", "--threads", "3"]).threads == 3


def test_finetune_workers_get_the_thread_count(monkeypatch):
    """--num-processes N relaunches finetune N times: each worker gets --threads as given."""
    seen = {}
    monkeypatch.setattr(commands, "launch", lambda config: seen.update(config=config))
    monkeypatch.setattr(commands, "parse_args", lambda argv: argv)  # the launcher's argument list, as given
    parser = cli.build_parser()
    commands._launch(parser.parse_args(["finetune", "--num-processes", "2", "--threads", "3"]))
    assert seen["config"][-2:] == ["--threads", "3"] and "--nproc_per_node" in seen["config"]
