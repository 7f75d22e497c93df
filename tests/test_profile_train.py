"""benchmarks.profile_train: its recipe reading, its clock on fit's on_step hook, and its refusal without a GPU."""

import dataclasses

import pytest
import torch
from roberta_diffusion import data, train
from roberta_diffusion.paths import SAMPLE_TEXT

from benchmarks import profile_train


def test_the_recipe_is_the_profiles_masked_lm_with_overrides():
    cfg = profile_train.recipe("converge", ["batch_size=512", 'init="somewhere"'])
    assert (cfg.objective, cfg.batch_size, cfg.init, cfg.ratio_mode) == ("mlm", 512, "somewhere", "stratified")
    with pytest.raises(ValueError, match="'batch' is not a TrainConfig field"):
        profile_train.recipe("converge", ["batch=512"])


def test_the_clock_times_the_steps_between_its_two_marks_and_steps_the_profiler(tokenizer, tmp_path):
    blocks = data.load_blocks(SAMPLE_TEXT, tokenizer, 32)
    cfg = train.TrainConfig(objective="mlm", size="tiny", block_size=32, prefix_len=4, batch_size=4, dropout=0.0)
    stepped = []
    profiler = type("Profiler", (), {"step": lambda self: stepped.append(1)})()
    clock = profile_train.Clock(2, 5, profiler)
    profile_train.run_fit(dataclasses.replace(cfg, out_dir=None), blocks, blocks, tokenizer, 6, clock, tmp_path / "a")
    assert sorted(clock.marks) == [2, 5] and len(stepped) == 6  # fit ran 6 steps, each one reported
    assert clock.seconds_per_step() > 0
    history = (tmp_path / "a" / "history.json").read_text()
    assert '"eval_step": [\n    6\n  ]' in history  # held-out scoring only after the last step: outside the timing


def test_without_a_gpu_it_says_so_in_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert profile_train.cli.run(profile_train.build_parser(), profile_train.main, ["--out", "x"]) == 2
    assert "run it on a machine with a GPU" in capsys.readouterr().err


def test_the_trace_summary_counts_overlapping_kernels_once_and_sorts_them_by_kind():
    events = [{"cat": "kernel", "name": "nvjet_sm90_gemm", "ts": 0, "dur": 10},
              {"cat": "kernel", "name": "triton_per_fused_dropout", "ts": 5, "dur": 10},  # overlaps the first
              {"cat": "kernel", "name": "cunn_SoftMaxForward", "ts": 30, "dur": 10},  # after a 15 us gap
              {"cat": "gpu_user_annotation", "name": "ProfilerStep#3", "ts": 0, "dur": 40},  # not a kernel
              {"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 99}]
    summary = profile_train.trace_summary(events, steps=1)
    assert summary["gpu_span_ms_per_step"] == 0.04 and summary["kernel_busy_ms_per_step"] == 0.025
    assert summary["gpu_busy_share"] == 0.625 and summary["kernels_per_step"] == 3
    assert list(summary["kinds"])[0] in ("matmul", "fused elementwise: dropout, layer norm, GELU, residual (Triton)")
    assert summary["kinds"]["softmax and loss (head)"]["ms_per_step"] == 0.01
    with pytest.raises(ValueError, match="no kernels"):
        profile_train.trace_summary(events[3:], steps=1)
