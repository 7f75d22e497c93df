"""The CLI end to end on the saved tiny models: generate, ar, compare; GIF and JSON outputs; stdin prompts;
and the real console entry point in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from roberta_diffusion.sampling import Sampling
from workbench.cli import EXIT_USAGE, main

SMALL = ["--max-len", "48", "--steps", "4", "--device", "cpu"]
PROMPT = "The cat sat"


def read_json(path):
    return json.loads(path.read_text())


def assert_gif(path, frames=None):
    from PIL import Image

    assert path.exists() and path.read_bytes()[:4] == b"GIF8"
    if frames is not None:
        with Image.open(path) as gif:
            assert gif.n_frames == frames
    assert not list(path.parent.glob("*.tmp*")), "no temporary files left behind"


def prompt_width() -> int:
    """<s> + the prompt's tokens: what generate pins when --prefix-len is not given."""
    from roberta_diffusion.bpe import fallback_tokenizer

    return 1 + len(fallback_tokenizer()(PROMPT, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("extra,changes", [
    ([], {}),
    (["--policy", "confidence", "--schedule", "cosine", "--semi-ar-block", "16"],
     {"policy": "confidence", "schedule": "cosine", "semi_ar_block": 16}),
    (["--policy", "threshold", "--threshold", "1.0"], {"policy": "threshold", "threshold": 1.0})])
def test_generate(capsys, tmp_path, tiny_dirs, extra, changes):
    gif, js = tmp_path / "out" / "run.gif", tmp_path / "out" / "run.json"
    status = main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, *extra,
                   "--animation", str(gif), "--json", str(js)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "error" not in err
    assert "step 1/4" in out and "step 4/4" in out
    assert "=== diffusion" in out and f"animation: {gif}" in out
    assert_gif(gif, frames=5)  # one frame per step, plus the start
    summary = read_json(js)
    assert summary["kind"] == "diffusion" and summary["steps"] == 4 and summary["max_len"] == 48
    assert summary["new_tokens"] == 48 - prompt_width()  # the whole prompt is pinned, nothing more
    assert summary["text"].startswith(PROMPT)
    # the settings are stored whole and round-trip: the flags' Sampling, printed before the first step
    sampling = Sampling(**summary["sampling"])
    assert sampling == replace(Sampling.readable(), steps=4, **changes)
    assert out.splitlines()[0] == f"sampling: {sampling}"


@pytest.mark.parametrize("old,new,value", [("--strategy", "--policy", "margin"),
                                           ("--block-size", "--semi-ar-block", "16")])
def test_old_flag_names_still_work_for_one_release_and_say_so(capsys, tmp_path, tiny_dirs, old, new, value):
    texts, errs = {}, {}
    for flag in (new, old):
        js = tmp_path / f"{flag[2:]}.json"
        assert main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, "--policy", "random", flag,
                     value, "--quiet", "--json", str(js)]) == 0
        texts[flag], errs[flag] = read_json(js), capsys.readouterr().err
    assert texts[new]["text"] == texts[old]["text"] and texts[new]["sampling"] == texts[old]["sampling"]
    assert errs[new] == "" and errs[old].splitlines() == [
        f"warning: {old} is deprecated and goes in the next release: use {new}"]


def test_generate_infill(capsys, tmp_path, tiny_dirs):
    js = tmp_path / "infill.json"
    status = main(["generate", "The <mask*5> on the mat", "--infill", "--model", str(tiny_dirs / "mlm"),
                   "--steps", "4", "--device", "cpu", "--json", str(js)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "step 1/4" in out
    # a short fill is timed per step too (a six-token fill once read "1 tokens/s" and nothing else)
    assert "5 new tokens in 4 steps" in out and "ms a step" in out
    summary = read_json(js)
    assert summary["new_tokens"] == 5
    assert summary["text"].startswith("The") and summary["text"].endswith("on the mat")


def test_generate_quiet_prints_only_the_result(capsys, tmp_path, tiny_dirs):
    status = main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, "--quiet"])
    out, _ = capsys.readouterr()
    assert status == 0
    assert "step 1/4" not in out and PROMPT in out


def test_generate_is_reproducible_by_seed(capsys, tmp_path, tiny_dirs):
    texts = []
    for seed in ("3", "3", "4"):
        js = tmp_path / f"seed{len(texts)}.json"
        assert main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, "--quiet", "--seed", seed,
                     "--json", str(js)]) == 0
        texts.append(read_json(js)["text"])
    capsys.readouterr()
    assert texts[0] == texts[1] != texts[2]


def test_ar(capsys, tmp_path, tiny_dirs):
    gif, js = tmp_path / "ar.gif", tmp_path / "ar.json"
    # prefix 44 of 48: four AR steps, so the progress prints every step
    status = main(["ar", PROMPT, "--model", str(tiny_dirs / "ar"), "--max-len", "48", "--prefix-len", "44",
                   "--device", "cpu", "--animation", str(gif), "--json", str(js)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "step 1/4" in out and "step 4/4" in out and "=== ar" in out
    assert_gif(gif, frames=5)
    summary = read_json(js)
    assert summary["kind"] == "ar" and summary["steps"] == 4 and summary["new_tokens"] == 4
    assert summary["text"].startswith(PROMPT)


def test_compare(capsys, tmp_path, tiny_dirs):
    gif, js = tmp_path / "cmp.gif", tmp_path / "cmp.json"
    status = main(["compare", PROMPT, "--model", str(tiny_dirs / "mlm"), "--ar-model", str(tiny_dirs / "ar"),
                   *SMALL, "--animation", str(gif), "--json", str(js)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "DIFFUSION (random)" in out and "AUTOREGRESSIVE" in out and "tokens / s" in out
    assert_gif(gif)
    both = read_json(js)
    assert both["diffusion"]["kind"] == "diffusion" and both["ar"]["kind"] == "ar"
    assert both["diffusion"]["steps"] == 4 and both["ar"]["steps"] == 48 - prompt_width()
    assert both["diffusion"]["new_tokens"] == both["ar"]["new_tokens"] == 48 - prompt_width()
    assert both["diffusion"]["text"].startswith(PROMPT) and both["ar"]["text"].startswith(PROMPT)


def test_prompt_from_stdin(capsys, tmp_path, tiny_dirs, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT + "\n"))
    js = tmp_path / "stdin.json"
    status = main(["generate", "--model", str(tiny_dirs / "mlm"), *SMALL, "--json", str(js)])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "step 1/4" in out
    assert read_json(js)["text"].startswith(PROMPT)


def test_empty_stdin_is_an_error(capsys, tmp_path, tiny_dirs, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    js = tmp_path / "stdin.json"
    status = main(["generate", "--model", str(tiny_dirs / "mlm"), *SMALL, "--json", str(js)])
    lines = capsys.readouterr().err.splitlines()
    assert status == EXIT_USAGE and len(lines) == 1 and lines[0].startswith("error:")
    assert not js.exists()


def test_console_entry_point_in_a_subprocess(tmp_path, tiny_dirs):
    """``python -m workbench.cli`` (what the roberta-diffusion script runs), prompt on stdin."""
    js = tmp_path / "sub.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "generate", "--model", str(tiny_dirs / "mlm"), *SMALL,
         "--json", str(js)],
        input=PROMPT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "step 1/4" in done.stdout
    assert read_json(js)["text"].startswith(PROMPT)


def test_the_cpu_latency_script_runs_on_tiny_models(mlm, causal_lm, tokenizer):
    """benchmarks/cpu_latency.py is what README's latency figures come from: it must keep up with the library's API."""
    from benchmarks.cpu_latency import latencies

    out = latencies(mlm, causal_lm, tokenizer, steps=2, max_len=24, repeats=1)
    assert len(out) == 5 and all(isinstance(v, float) and v >= 0 for v in out.values())


def test_fast_picks_the_distilled_model_at_its_steps(capsys, tmp_path):
    """--fast loads weights/roberta-diffusion-small-fast (shipped) at Sampling.distilled()'s steps; --steps still wins."""
    js = tmp_path / "fast.json"
    assert main(["generate", PROMPT, "--fast", "--max-len", "40", "--device", "cpu", "--json", str(js)]) == 0
    summary = read_json(js)
    assert Sampling(**summary["sampling"]) == Sampling.distilled() and summary["steps"] == Sampling.distilled().steps
    assert "roberta-diffusion-small-fast" in capsys.readouterr().out
    assert main(["generate", PROMPT, "--fast", "--steps", "3", "--max-len", "40", "--device", "cpu", "--json",
                 str(js)]) == 0
    assert read_json(js)["steps"] == 3


def test_fast_and_another_model_is_one_line_and_status_2(capsys, tiny_dirs):
    assert main(["generate", PROMPT, "--fast", "--model", str(tiny_dirs / "mlm"), *SMALL]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--fast picks the distilled model" in err[0]


def test_the_old_name_of_the_redraw_policy_still_works_for_one_release_and_says_so(capsys, tmp_path, tiny_dirs):
    texts, errs = {}, {}
    for name in ("redraw", "seed-remask"):
        js = tmp_path / f"{name}.json"
        assert main(["generate", PROMPT, "--model", str(tiny_dirs / "mlm"), *SMALL, "--policy", name, "--quiet",
                     "--json", str(js)]) == 0
        texts[name], errs[name] = read_json(js), capsys.readouterr().err
    assert texts["redraw"]["text"] == texts["seed-remask"]["text"]
    assert texts["seed-remask"]["sampling"]["policy"] == "redraw"  # recorded under its current name
    assert errs["redraw"] == "" and errs["seed-remask"].splitlines() == [
        "warning: --policy seed-remask is deprecated and goes in the next release: use --policy redraw"]
