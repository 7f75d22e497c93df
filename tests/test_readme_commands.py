"""Every ``roberta-diffusion ...`` command in the code blocks of README.md and of docs/cli.md (README's page of every
subcommand, one link away) runs as written (issue 25, item 2).

Both are read when the tests are collected, so a command added, changed or removed there is what runs here. Each
command is one test item, named by its words, and is handled in one of four ways:

- run as written, in a scratch folder (its relative output paths land there), on the shipped weights when it names
  no model: what a user who copies it gets;
- run with the tiny models where it holds a placeholder for a model folder (``FOLDER``, ``FOLDER_OR_HUB_NAME``);
  the placeholder ``PROMPT`` becomes a prompt; ``eval`` runs on the tiny models with a few prompts and blocks (on the
  shipped ones it takes the better part of an hour);
- checked without running (``finetune``, ``pipeline``: minutes to hours of training): the line must parse with the
  CLI's own parser, and its profile with the ``--set`` values must pass the checks ``finetune`` runs before it trains
  (the smoke pipeline itself runs in tests/test_notebooks.py);
- skipped, saying why: a GPU-only line (``--device cuda``, ``--graph``) on a machine without CUDA, and a line naming a
  Hugging Face Hub model (``roberta-base``, ``gpt2``), as the tests run offline.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import torch
from roberta_diffusion import paths
from workbench import cli, pipeline

README = paths.ROOT / "README.md"
PROMPT = "The history of the city"
FOLDER_PLACEHOLDERS = {"FOLDER", "FOLDER_OR_HUB_NAME"}
HUB_MODELS = {"roberta-base", "gpt2"}
TRAINING = {"finetune", "pipeline"}
# what makes eval quick on the tiny models; later flags win over the line's own
QUICK_EVAL = ["--prompts", "2", "--max-blocks", "2", "--elbo-samples", "1", "--steps", "2", "--policies", "random"]


def readme_commands(text: str) -> list[list[str]]:
    """The words after ``roberta-diffusion`` of every command in the fenced code blocks of ``text``: backslash
    continuations joined, comments dropped, also after ``&&`` or as ``.venv/bin/roberta-diffusion``."""
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            for start, word in enumerate(words):
                if word == "roberta-diffusion" or word.endswith("/roberta-diffusion"):
                    end = words.index("&&", start) if "&&" in words[start:] else len(words)
                    commands.append(words[start + 1:end])
    return commands


CLI_PAGE = paths.ROOT / "docs" / "cli.md"
COMMANDS = [*readme_commands(README.read_text()),
            *(c for c in readme_commands(CLI_PAGE.read_text()) if c not in readme_commands(README.read_text()))]


def test_readme_has_commands_to_run():
    """The extraction finds what README and its command page show: generate, infill, ar, compare, finetune, pipeline,
    eval."""
    assert {c[0] for c in COMMANDS} >= {"generate", "ar", "compare", "finetune", "pipeline", "eval"}
    assert any("--infill" in c for c in COMMANDS)


def as_run(words: list[str], tiny_dirs) -> list[str]:
    """The command with its placeholders filled: PROMPT, and model folders (the tiny masked LM, or the tiny causal LM
    for ``ar``, and for compare's ``--ar-model``)."""
    out = []
    for i, word in enumerate(words):
        if word == "PROMPT":
            word = PROMPT
        elif word in FOLDER_PLACEHOLDERS:
            causal = words[0] == "ar" or words[i - 1] == "--ar-model"
            word = str(tiny_dirs / ("ar" if causal else "mlm"))
        out.append(word)
    return out


def flag(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words[:-1] else None


def check_training_line(words: list[str]) -> None:
    """What ``finetune`` checks before it trains, without training: the line parses, and the profile with its
    ``--set`` values makes a valid TrainConfig (pipeline: the profile loads and holds valid parameters)."""
    from roberta_diffusion import train
    from workbench import commands, settings

    parser = cli.build_parser()
    args = parser.parse_args(words)
    profile = pipeline.load_profile(args.profile)
    if words[0] == "finetune":
        sets = commands.parse_sets(args.set)
        known = settings.train_settings()  # TrainConfig's fields: what finetune checks against
        params = {**{k: v for k, v in pipeline.notebook_params(profile, "02_finetune").items() if k in known}, **sets}
        settings.parameters(params, known, "--set with the profile")
        settings.train_config(train.TrainConfig(**params), args.num_processes)
        assert args.num_processes >= 1


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_readme_command_runs_as_written(words, tiny_dirs, tmp_path, monkeypatch, capsys):
    hub = sorted(HUB_MODELS & set(words) | {w.split("=", 1)[1].strip('"') for w in words
                                             if w.startswith("init=") and w.split("=", 1)[1].strip('"') in HUB_MODELS})
    if words[0] in TRAINING:
        check_training_line(words)  # hub names in --set are only checked here: nothing is downloaded
        return
    if hub:
        pytest.skip(f"names the Hub model {hub[0]!r}; the tests run offline")
    if (flag(words, "--device") == "cuda" or "--graph" in words) and not torch.cuda.is_available():
        pytest.skip("a GPU-only line (--device cuda / --graph) and this machine has no CUDA")
    argv = as_run(words, tiny_dirs)
    if words[0] == "eval":  # the shipped models take most of an hour: the tiny ones, a few prompts and blocks
        argv += ["--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), *QUICK_EVAL]
    monkeypatch.chdir(tmp_path)  # relative outputs (runs/demo/generation.gif, out.gif, eval.json) land here
    status = cli.main(argv)
    out, err = capsys.readouterr()
    assert status == 0, f"roberta-diffusion {shlex.join(words)} exited {status}: {err.strip()}"
    assert "error" not in err
    for name in ("--animation", "--json", "--out"):
        if flag(words, name):
            written = tmp_path / flag(words, name)
            assert written.exists(), f"{name} {flag(words, name)} was not written"
            if name != "--animation":
                json.loads(written.read_text())
    if words[0] in ("generate", "ar"):
        assert out.strip(), "no text printed"
