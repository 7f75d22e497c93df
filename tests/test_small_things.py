"""Issue 25, item 7 and two checks of item 5: the small things a user meets, each pinned by a test.

--quiet, a closed pipe, help texts, the steps clamp, special-token text in a prompt, a model folder without a
tokenizer, ``pipeline --only`` alone, the transformers loss warning, and the figure's minor tick labels."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
from workbench.cli import EXIT_PIPE, EXIT_USAGE, build_parser, main

SMALL = ["--max-len", "48", "--steps", "4", "--device", "cpu"]
PROMPT = "The cat sat"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


# -- the figure -----------------------------------------------------------------------------------------------
def _curve(objective, ppl):
    epochs = [1.0 * (i + 1) for i in range(len(ppl))]
    best = min(range(len(ppl)), key=ppl.__getitem__)
    return {"label": objective, "objective": objective, "epochs": epochs, "flops": [1e15 * e for e in epochs],
            "ppl": ppl, "best": {"epochs": epochs[best], "flops": 1e15 * epochs[best], "ppl": ppl[best]}}


# the shipped pair alone (under half a decade), and beside a smoke run's tiny model (its best perplexity in the
# hundreds or thousands: notebook 02's figure spans decades)
@pytest.mark.parametrize("run_best", [None, 120, 600, 3000])
def test_data_constrained_figure_tick_labels_do_not_overlap(run_best):
    """Every y tick label drawn (major and minor) has room of its own, for short and long perplexity spans."""
    import matplotlib.pyplot as plt
    from roberta_diffusion.curves import plot_data_constrained

    curves = [_curve("mlm", [104, 70, 60, 55, 53]), _curve("ar", [58, 45, 42, 42.5, 43])]
    if run_best:
        curves.append(_curve("mlm", [run_best * 4, run_best * 2, run_best]))
    fig = plot_data_constrained(curves)
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            assert_room(ax.yaxis, lambda box: (box.y0, box.y1), ax.get_ylim())
        assert_room(fig.axes[1].xaxis, lambda box: (box.x0, box.x1), fig.axes[1].get_xlim())  # log compute
    finally:
        plt.close(fig)


def assert_room(axis, extent, limits):
    """The drawn tick labels of ``axis`` (major and minor, inside ``limits``) do not overlap along it."""
    renderer = axis.figure.canvas.get_renderer()
    ticks = [*axis.get_majorticklocs(), *axis.get_minorticklocs()]
    spans = sorted(extent(label.get_window_extent(renderer))
                   for label, tick in zip(axis.get_ticklabels(which="both"), ticks, strict=True)
                   if label.get_text() and min(limits) <= tick <= max(limits))
    assert len(spans) >= 2, "the axis should still say where it is"
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"tick labels overlap on an axis from {limits[0]:.3g} to {limits[1]:.3g}"


# -- generate's output ----------------------------------------------------------------------------------------
def test_quiet_prints_the_final_text_alone(capsys, tmp_path, tiny_dirs):
    """--quiet's help says "only the final text": no progress, no === header, no animation line."""
    js, gif = tmp_path / "q.json", tmp_path / "q.gif"
    status = main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, "--quiet", "--json", str(js),
                   "--animation", str(gif)])
    out = capsys.readouterr().out
    assert status == 0 and gif.exists()
    assert out == json.loads(js.read_text())["text"] + "\n"


def test_a_closed_pipe_ends_quietly(tmp_path, tiny_dirs):
    """``generate ... | head -2``: the reader leaves early; the command stops without an error line, with the
    status a shell gives a Unix tool stopped by the pipe (141). Here the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "workbench.cli", "generate", PROMPT, "--model",
                               str(tiny_dirs / "mlm"), *SMALL], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=300)
    finally:
        os.close(write_end)
    assert done.stderr == "" and done.returncode == EXIT_PIPE


# -- help ---------------------------------------------------------------------------------------------------------
def subcommand(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


@pytest.mark.parametrize("name", ["generate", "ar", "compare", "eval", "finetune", "pipeline"])
def test_every_option_has_help(name):
    missing = [a.dest for a in subcommand(name)._actions if not a.help]
    assert not missing, f"{name}: options without help: {missing}"


def test_generate_help_shows_the_defaults(capsys):
    from roberta_diffusion.sampling import Sampling

    readable = Sampling.readable()
    with pytest.raises(SystemExit) as done:
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert done.value.code == 0
    for value in (readable.steps, readable.top_k, readable.top_p, readable.schedule, readable.policy):
        assert f"(default: {value})" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "special-token text" in text and "is refused" in text  # the prompt rule, said where users look


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "roberta-diffusion: generate" in out and "``" not in out


# -- steps, prompts, folders ------------------------------------------------------------------------------------
def test_infill_with_more_steps_than_blanks_lowers_the_steps_and_says_so(capsys, tmp_path, tiny_dirs):
    """README's infill line: 32 steps (the default) for 12 blanks runs 12 steps, with one note on stderr."""
    js = tmp_path / "infill.json"
    status = main(["generate", "--infill", "The harbour <mask*12> in 1842.", "--model", str(tiny_dirs / "mlm"),
                   "--device", "cpu", "--json", str(js)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 0, err
    assert err == ["note: --steps 32 lowered to 12: there are only 12 masked positions in the infill text"]
    summary = json.loads(js.read_text())
    assert summary["steps"] == 12 and summary["new_tokens"] == 12


def test_a_prompt_with_more_steps_than_positions_lowers_them_too(capsys, tmp_path, tiny_dirs):
    js = tmp_path / "short.json"
    status = main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), "--max-len", "48", "--prefix-len", "44",
                   "--steps", "10", "--device", "cpu", "--quiet", "--json", str(js)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "--steps 10 lowered to 4" in err and json.loads(js.read_text())["steps"] == 4


@pytest.mark.parametrize("special", ["<mask>", "</s>", "<s>", "<pad>"])
def test_special_token_text_in_a_prompt_is_refused(capsys, tmp_path, tiny_dirs, special):
    js = tmp_path / "special.json"
    status = main(["generate", f"The cat {special} sat", "--model", str(tiny_dirs / "mlm"), *SMALL, "--json", str(js)])
    assert status == EXIT_USAGE
    assert repr(special) in one_error_line(capsys)
    assert not js.exists()


def test_special_token_text_in_ar_and_infill(capsys, tiny_dirs):
    """ar refuses it too; --infill keeps <mask> (its blanks) and refuses the rest."""
    assert main(["ar", "The end </s> here", "--model", str(tiny_dirs / "ar"), "--max-len", "48", "--device", "cpu"]) \
        == EXIT_USAGE
    assert "'</s>'" in one_error_line(capsys)
    assert main(["generate", "--infill", "The <mask> sat </s>", "--model", str(tiny_dirs / "mlm"), "--steps", "1",
                 "--device", "cpu", "--quiet"]) == EXIT_USAGE
    assert "'</s>'" in one_error_line(capsys)
    assert main(["generate", "--infill", "The <mask> sat", "--model", str(tiny_dirs / "mlm"), "--steps", "1",
                 "--device", "cpu", "--quiet"]) == 0


def test_a_model_folder_without_a_tokenizer_is_refused(capsys, tmp_path, tiny_dirs):
    """It once built an empty tokenizer from config.json alone and "generated" an empty text, exit 0."""
    from roberta_diffusion import models

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in (tiny_dirs / "mlm").iterdir():
        if f.name in ("config.json", "model.safetensors"):
            shutil.copy(f, bare / f.name)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        models.load_tokenizer(bare)
    assert main(["generate", PROMPT, "--model", str(bare), *SMALL]) == EXIT_USAGE
    assert "no tokenizer files" in one_error_line(capsys)


def test_pipeline_only_without_names_is_refused(capsys):
    assert main(["pipeline", "--only"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert "--only needs notebook names" in line and "03_generate" in line


# -- notebook 02's output -----------------------------------------------------------------------------------------
def test_gpt2_names_its_loss_so_transformers_does_not_warn(capfd, tokenizer, tiny_dirs):
    """transformers warned "`loss_type=None` was set in the config but it is unrecognized" at GPT-2's first
    forward with labels (smoke notebook 02's output): the models name the loss transformers then used anyway."""
    from roberta_diffusion import models
    from transformers.loss.loss_utils import LOSS_MAPPING

    logging.Logger.warning_once.cache_clear()  # transformers warns once per process: let it warn here if it would
    ids = torch.randint(5, 100, (2, 12))
    for model in (models.fresh_causal_lm(tokenizer, "tiny"), models.load_causal_lm(tiny_dirs / "ar")):
        assert model.loss_type == "ForCausalLM" and model.loss_function is LOSS_MAPPING["ForCausalLM"]
        model(input_ids=ids, labels=ids)
    assert "loss_type" not in capfd.readouterr().err
