"""Shared fixtures: a tokenizer trained here, tiny random models, and their save_pretrained folders.

Everything is built offline in a few seconds; nothing is downloaded. The fixtures are session-scoped and
read-only: a test that needs to change a model or tokenizer copies it first.
"""

from __future__ import annotations

import os
from pathlib import Path

# before transformers / huggingface_hub are imported: they read these once
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["MPLBACKEND"] = "Agg"
# the CLI's thread rule (roberta_diffusion.threads) takes this as given rather than measuring the free cores at each
# main() call; tests of the rule itself remove it
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

# One intra-op thread: the models are tiny, and on a shared 2-core machine a second OpenMP thread spin-waits
# against other processes (measured: a 16-token AR run 1.5 s with 2 threads vs 0.05 s with 1 under load).
torch.set_num_threads(1)

from roberta_diffusion import bpe, corpus, models, paths  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return bpe.fallback_tokenizer()


@pytest.fixture(scope="session")
def mlm(tokenizer):
    return models.fresh_mlm(tokenizer, "tiny")


@pytest.fixture(scope="session")
def causal_lm(tokenizer):
    return models.fresh_causal_lm(tokenizer, "tiny")


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, tokenizer, mlm, causal_lm):
    """A folder holding ``mlm/`` and ``ar/``: save_pretrained folders of each model with the tokenizer."""
    root = tmp_path_factory.mktemp("tiny_models")
    for name, model in (("mlm", mlm), ("ar", causal_lm)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    save_sample_counts(root / "mlm", tokenizer)
    return root


def save_sample_counts(folder: Path, tokenizer) -> None:
    """The corpus counts a trained masked LM keeps beside it (policy calibrated reads them), from the sample text."""
    sample = tokenizer(paths.SAMPLE_TEXT.read_text())["input_ids"]
    corpus.save_counts(folder, corpus.count_tokens(torch.tensor(sample), len(tokenizer)), "data/sample.txt")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``runs/smoke`` of ``roberta-diffusion pipeline --profile smoke`` in a private runs/ (once a session: the
    notebook tests and the fault tests read the same run)."""
    import subprocess
    import sys

    runs = tmp_path_factory.mktemp("runs")
    env = {**os.environ, "ROBERTA_DIFFUSION_RUNS": str(runs), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "pipeline", "--profile", "smoke"],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return runs / "smoke"


def parameterized(notebook: str | Path, params: dict, out_path: Path):
    """Notebook ``notebook`` (a name in ``notebooks/`` or a py:percent path) as an ``.ipynb`` at ``out_path``
    with papermill's injected-parameters cell after its ``parameters`` cell, as ``run_pipeline`` runs it; for
    executing it another way (a browser, nbclient)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    from workbench import pipeline

    path = Path(notebook) if Path(notebook).exists() else pipeline.NOTEBOOKS / f"{notebook}.py"
    pipeline.to_ipynb(path, out_path)
    notebook = parameterize_notebook(load_notebook_node(str(out_path)), params)
    nbformat.write(notebook, out_path)
    return out_path


# -- the notebooks under nbmake (`pytest --nbmake`, on by default in pyproject's addopts) -----------------------
# nbmake runs .ipynb files; what it cannot do is left here: make them from the py:percent sources (they are not
# committed) into tests/nbmake/ (gitignored), give each the tiny values of tests/notebooks.yaml as nbmake mocks on
# its parameters cell, build the tiny models those values name, and keep the kernel's runs/ in a temporary folder.
NBMAKE_COPIES = Path(__file__).parent / "nbmake"


def pytest_configure(config):
    if getattr(config.option, "nbmake", False):
        import shutil
        import tempfile

        config._rd_tiny = tempfile.mkdtemp(prefix="rd-tiny-")  # filled before the first notebook runs
        config.add_cleanup(lambda: shutil.rmtree(config._rd_tiny, ignore_errors=True))
        write_notebook_copies(NBMAKE_COPIES, config._rd_tiny)


def write_notebook_copies(folder: Path, tiny: str) -> list[Path]:
    """``jupytext --to ipynb`` of each notebook into ``folder``, its parameters cell carrying the tiny values as
    nbmake's ``mock`` metadata (set as globals right after the cell runs); copies of notebooks gone are removed."""
    import jupytext
    import yaml
    from roberta_diffusion import paths

    values = yaml.safe_load((Path(__file__).parent / "notebooks.yaml").read_text())
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.ipynb"):
        if stale.stem not in values:
            stale.unlink()
    written = []
    for name, params in values.items():
        notebook = jupytext.read(paths.NOTEBOOKS / f"{name}.py")
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        cell.metadata["nbmake"] = {"mock": {k: v.replace("{tiny}", tiny) if isinstance(v, str) else v
                                            for k, v in (params or {}).items()}}
        written.append(paths.atomic_write_text(folder / f"{name}.ipynb", jupytext.writes(notebook, fmt="ipynb")))
    return written


def pytest_collection_modifyitems(items):
    for item in items:
        if getattr(item, "nbmake", False):
            item.add_marker(pytest.mark.notebooks)


@pytest.hookimpl(wrapper=True, trylast=True)  # inside the output capture
def pytest_runtest_call(item):
    if not getattr(item, "nbmake", False):
        return (yield)
    import shutil
    import tempfile

    tiny = Path(item.config._rd_tiny)
    if not (tiny / "ar").exists():
        tokenizer = bpe.fallback_tokenizer()
        for name, model in (("mlm", models.fresh_mlm(tokenizer, "tiny")), ("ar", models.fresh_causal_lm(tokenizer, "tiny"))):
            model.save_pretrained(tiny / name)
            tokenizer.save_pretrained(tiny / name)
        save_sample_counts(tiny / "mlm", tokenizer)
    runs = tempfile.mkdtemp(prefix=f"rd-{item.name}-")
    before = os.environ.get("ROBERTA_DIFFUSION_RUNS")
    os.environ["ROBERTA_DIFFUSION_RUNS"] = runs  # the kernel nbmake starts inherits it: nothing lands in runs/
    try:
        return (yield)
    finally:
        if before is None:
            del os.environ["ROBERTA_DIFFUSION_RUNS"]
        else:
            os.environ["ROBERTA_DIFFUSION_RUNS"] = before
        shutil.rmtree(runs, ignore_errors=True)
