"""Bad input fails early and clearly: a ValueError (FileNotFoundError for a missing file) from the library,
and from the CLI exit status 2, exactly one ``error:`` line on stderr, and nothing written."""

from __future__ import annotations

import copy
import shutil

import pytest
from roberta_diffusion import models
from roberta_diffusion.autoregressive import generate_ar
from roberta_diffusion.canvas import infill_canvas
from roberta_diffusion.sampler import generate_diffusion
from workbench.cli import EXIT_USAGE, main

# ---------------------------------------------------------------------------------------------------------
# folders: broken copies of the saved tiny MLM


@pytest.fixture(scope="module")
def broken_dirs(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    good = tiny_dirs / "mlm"

    truncated = root / "truncated-weights"
    shutil.copytree(good, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    garbled_weights = root / "garbled-weights"
    shutil.copytree(good, garbled_weights)
    (garbled_weights / "model.safetensors").write_bytes(b"not a safetensors file" * 50)

    garbled_config = root / "garbled-config"
    shutil.copytree(good, garbled_config)
    (garbled_config / "config.json").write_text('{"model_type": "roberta", ')

    no_config = root / "no-config"
    shutil.copytree(good, no_config)
    (no_config / "config.json").unlink()

    return {"truncated-weights": truncated, "garbled-weights": garbled_weights, "garbled-config": garbled_config,
            "no-config": no_config, "missing": root / "does-not-exist"}


@pytest.fixture()
def no_mask_tokenizer(tokenizer):
    plain = copy.deepcopy(tokenizer)
    plain.mask_token = None
    assert plain.mask_token_id is None
    return plain


# ---------------------------------------------------------------------------------------------------------
# library

DIFFUSION_BAD = {
    "empty prompt": (dict(prompts=""), "empty"),
    "blank prompt": (dict(prompts="   \n"), "empty"),
    "one empty prompt in a batch": (dict(prompts=["fine", ""]), "empty"),
    "prefix_len >= max_len": (dict(prefix_len=32, max_len=32), "prefix_len"),
    "prefix_len too small": (dict(prefix_len=1), "prefix_len"),
    "max_len above the model": (dict(max_len=257), "max_len"),
    "steps < 1": (dict(steps=0), "steps"),
    "top_p = 0": (dict(top_p=0.0), "top_p"),
    "top_p > 1": (dict(top_p=1.5), "top_p"),
    "top_k < 0": (dict(top_k=-1), "top_k"),
    "temperature = 0": (dict(temperature=0.0), "temperature"),
    "temperature < 0": (dict(temperature=-0.5), "temperature"),
    "unknown policy": (dict(policy="greedy"), "policy"),
    "unknown schedule": (dict(schedule="exponential"), "schedule"),
    "threshold > 1": (dict(policy="threshold", threshold=1.5), "threshold"),
}


@pytest.mark.parametrize("case", DIFFUSION_BAD)
def test_diffusion_sampler_refuses(mlm, tokenizer, case):
    kwargs, message = DIFFUSION_BAD[case]
    kwargs = {"prompts": "The cat", "max_len": 32, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_diffusion(mlm, tokenizer, kwargs.pop("prompts"), **kwargs)


def test_diffusion_sampler_refuses_a_causal_lm(causal_lm, tokenizer):
    with pytest.raises(ValueError, match="not a masked LM"):
        generate_diffusion(causal_lm, tokenizer, "The cat", max_len=32)


def test_diffusion_sampler_refuses_a_tokenizer_without_mask(mlm, no_mask_tokenizer):
    with pytest.raises(ValueError, match="mask token"):
        generate_diffusion(mlm, no_mask_tokenizer, "The cat", max_len=32)
    with pytest.raises(ValueError, match="mask token"):
        infill_canvas(no_mask_tokenizer, "The <mask> sat")


def test_diffusion_sampler_needs_prompts_or_canvas(mlm, tokenizer):
    with pytest.raises(ValueError, match="prompts or a canvas"):
        generate_diffusion(mlm, tokenizer)


def test_infill_refusals(mlm, tokenizer):
    with pytest.raises(ValueError, match="nothing to infill"):
        infill_canvas(tokenizer, "no masks here")
    with pytest.raises(ValueError, match="nothing to infill"):
        infill_canvas(tokenizer, ["a <mask> b", "no masks here"])
    with pytest.raises(ValueError, match="longer than max_len"):
        infill_canvas(tokenizer, "The <mask*20> end", max_len=10)
    too_long = infill_canvas(tokenizer, "The <mask*300> end")  # fine as a canvas, too long for the model
    with pytest.raises(ValueError, match="longer than the model"):
        generate_diffusion(mlm, tokenizer, canvas=too_long)


AR_BAD = {
    "empty prompt": (dict(prompts=""), "empty"),
    "prefix_len >= max_len": (dict(prefix_len=40, max_len=32), "prefix_len"),
    "max_len above the model": (dict(max_len=1000), "max_len"),
    "top_p > 1": (dict(top_p=2.0), "top_p"),
    "top_k < 0": (dict(top_k=-3), "top_k"),
    "temperature = 0": (dict(temperature=0.0), "temperature"),
}


@pytest.mark.parametrize("case", AR_BAD)
def test_ar_sampler_refuses(causal_lm, tokenizer, case):
    kwargs, message = AR_BAD[case]
    kwargs = {"prompts": "The cat", "max_len": 32, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate_ar(causal_lm, tokenizer, kwargs.pop("prompts"), **kwargs)


def test_loaders_refuse_a_missing_folder(broken_dirs):
    missing = broken_dirs["missing"]
    for loader in (models.load_mlm, models.load_causal_lm):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            loader(missing, device="cpu")
    with pytest.raises(FileNotFoundError):
        models.load_tokenizer(missing)


@pytest.mark.parametrize("which", ["truncated-weights", "garbled-weights", "garbled-config", "no-config"])
def test_loaders_refuse_a_corrupt_folder(broken_dirs, which):
    with pytest.raises((ValueError, FileNotFoundError), match=str(broken_dirs[which].name)):
        models.load_mlm(broken_dirs[which], device="cpu")


def test_loaders_refuse_the_wrong_kind_of_model(tiny_dirs):
    with pytest.raises(ValueError, match="causal LM"):
        models.load_mlm(tiny_dirs / "ar", device="cpu")
    with pytest.raises(ValueError, match="not a causal LM"):
        models.load_causal_lm(tiny_dirs / "mlm", device="cpu")


# ---------------------------------------------------------------------------------------------------------
# CLI: status 2, one "error:" line, nothing written


def cli_error(capsys, tmp_path, argv) -> str:
    out_dir = tmp_path / "out"
    gif, js = out_dir / "x.gif", out_dir / "x.json"
    capsys.readouterr()  # drop anything fixtures printed
    status = main([*argv, "--device", "cpu", "--animation", str(gif), "--json", str(js)])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert status == EXIT_USAGE
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr should be one error line, got:\n{err}"
    assert not gif.exists() and not js.exists()
    assert not out_dir.exists() or not any(out_dir.iterdir()), "nothing written, not even a temporary file"
    return lines[0]


SMALL = ["--max-len", "48", "--steps", "4"]
CLI_BAD = {
    "empty prompt": (["generate", ""], "empty"),
    "graph on a CPU": (["generate", "The cat", "--graph", "--device", "cpu"], "CUDA"),
    "AR graph on a CPU": (["ar", "The cat", "--graph", "--device", "cpu"], "CUDA"),
    "blank prompt": (["generate", "  "], "empty"),
    "prefix_len >= max_len": (["generate", "The cat", "--prefix-len", "48"], "--prefix-len"),
    "max_len above the model": (["generate", "The cat", "--max-len", "300"], "max_len"),
    "steps < 1": (["generate", "The cat", "--steps", "0"], "steps"),
    "top-p = 0": (["generate", "The cat", "--top-p", "0"], "--top-p"),
    "top-p > 1": (["generate", "The cat", "--top-p", "1.2"], "--top-p"),
    "top-k < 0": (["generate", "The cat", "--top-k", "-1"], "--top-k"),
    "temperature = 0": (["generate", "The cat", "--temperature", "0"], "temperature"),
    "temperature < 0": (["generate", "The cat", "--temperature", "-1"], "temperature"),
    "unknown policy": (["generate", "The cat", "--policy", "greedy"], "policy"),
    "unknown schedule": (["generate", "The cat", "--schedule", "exponential"], "schedule"),
    "infill without a mask": (["generate", "no masks here", "--infill"], "nothing to infill"),
    "ar: prefix_len >= max_len": (["ar", "The cat", "--prefix-len", "48"], "--prefix-len"),
    "ar: max_len above the model": (["ar", "The cat", "--max-len", "300"], "max_len"),
    "ar: top-k < 0": (["ar", "The cat", "--top-k", "-2"], "top_k"),
    "compare: unknown policy": (["compare", "The cat", "--policy", "greedy"], "policy"),
    "compare: empty prompt": (["compare", ""], "empty"),
}


def _with_models(argv, tiny_dirs):
    command = argv[0]
    model = tiny_dirs / ("ar" if command == "ar" else "mlm")
    extra = ["--ar-model", str(tiny_dirs / "ar")] if command == "compare" else []
    return [*argv, "--model", str(model), *extra]


@pytest.mark.parametrize("case", CLI_BAD)
def test_cli_refuses(capsys, tmp_path, tiny_dirs, case):
    argv, message = CLI_BAD[case]
    defaults = {"--max-len": "48"} if argv[0] == "ar" else {"--max-len": "48", "--steps": "4"}
    for option, value in defaults.items():
        if option not in argv:  # small and fast unless the case sets it
            argv = [*argv, option, value]
    line = cli_error(capsys, tmp_path, _with_models(argv, tiny_dirs))
    assert message in line


def test_cli_refuses_a_causal_lm_for_generate(capsys, tmp_path, tiny_dirs):
    line = cli_error(capsys, tmp_path, ["generate", "The cat", "--model", str(tiny_dirs / "ar"), *SMALL])
    assert "causal LM" in line


def test_cli_refuses_a_masked_lm_for_ar(capsys, tmp_path, tiny_dirs):
    line = cli_error(capsys, tmp_path, ["ar", "The cat", "--model", str(tiny_dirs / "mlm"), "--max-len", "48"])
    assert "not a causal LM" in line


def test_cli_refuses_a_missing_model_folder(capsys, tmp_path, broken_dirs):
    line = cli_error(capsys, tmp_path, ["generate", "The cat", "--model", str(broken_dirs["missing"]), *SMALL])
    assert "does not exist" in line


@pytest.mark.parametrize("which", ["truncated-weights", "garbled-weights", "garbled-config", "no-config"])
def test_cli_refuses_a_corrupt_model_folder(capsys, tmp_path, broken_dirs, which):
    line = cli_error(capsys, tmp_path, ["generate", "The cat", "--model", str(broken_dirs[which]), *SMALL])
    assert broken_dirs[which].name in line


def test_cli_refuses_output_paths_with_the_wrong_suffix(capsys, tmp_path, tiny_dirs):
    capsys.readouterr()
    target = tmp_path / "x.png"
    status = main(["generate", "The cat", "--model", str(tiny_dirs / "mlm"), *SMALL, "--animation", str(target)])
    lines = capsys.readouterr().err.splitlines()
    assert status == EXIT_USAGE and len(lines) == 1 and lines[0].startswith("error:") and ".gif" in lines[0]
    assert not target.exists()
