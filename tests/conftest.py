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

from roberta_diffusion import corpus, models, paths  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return models.fallback_tokenizer()


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
    # the corpus counts a trained masked LM keeps beside it (policy calibrated reads them), from the sample text
    sample = tokenizer(paths.SAMPLE_TEXT.read_text())["input_ids"]
    corpus.save_counts(root / "mlm", corpus.count_tokens(torch.tensor(sample), len(tokenizer)), "data/sample.txt")
    return root


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


# -- the notebooks as pytest items (tests/notebooks.yaml) ---------------------------------------------------
def pytest_collect_file(parent, file_path):
    if file_path.name == "notebooks.yaml":
        return NotebookFile.from_parent(parent, path=file_path)
    return None


class NotebookFile(pytest.File):
    def collect(self):
        import yaml

        for name, params in yaml.safe_load(self.path.read_text()).items():
            item = NotebookItem.from_parent(self, name=name, params=params or {})
            item.add_marker(pytest.mark.notebooks)
            yield item


def _tiny_models(config) -> str:
    """A folder with the tiny models (``mlm/``, ``ar/``), built once per session and removed at its end."""
    if not hasattr(config, "_rd_tiny_models"):
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix="rd-tiny-")
        config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
        tokenizer = models.fallback_tokenizer()
        for name, model in (("mlm", models.fresh_mlm(tokenizer, "tiny")), ("ar", models.fresh_causal_lm(tokenizer, "tiny"))):
            model.save_pretrained(f"{root}/{name}")
            tokenizer.save_pretrained(f"{root}/{name}")
        config._rd_tiny_models = root
    return config._rd_tiny_models


class NotebookItem(pytest.Item):
    """One notebook executed in a kernel with its parameters injected as papermill does."""

    def __init__(self, *, params: dict, **kwargs):
        super().__init__(**kwargs)
        self.params = params

    def runtest(self):
        import tempfile
        from pathlib import Path

        from nbclient import NotebookClient
        from roberta_diffusion.paths import ROOT
        from workbench import pipeline

        tiny = _tiny_models(self.config)
        params = {k: v.replace("{tiny}", tiny) if isinstance(v, str) else v for k, v in self.params.items()}
        with tempfile.TemporaryDirectory(prefix=f"rd-{self.name}-") as folder:
            runs = Path(folder) / "runs"
            notebook = parameterized(self.name, {"run_name": "nb-item", **params}, Path(folder) / "in.ipynb")
            import nbformat

            nb = nbformat.read(notebook, as_version=4)
            env = {**os.environ, "ROBERTA_DIFFUSION_RUNS": str(runs), "MPLBACKEND": "Agg"}
            with pipeline.ipc_kernel() as km:
                NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(ROOT)}}).execute(
                    env=env, cwd=str(ROOT))
            assert (runs / "nb-item").is_dir(), "the notebook wrote nothing under runs/<run_name>/"

    def repr_failure(self, excinfo):
        from nbclient.exceptions import CellExecutionError

        if isinstance(excinfo.value, CellExecutionError):
            import re

            plain = re.sub(r"\x1b\[[0-9;]*m", "", str(excinfo.value))  # the kernel's traceback comes coloured
            return f"{self.name}: a cell failed\n{plain}"
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, 0, f"notebook {self.name} (tiny model, tests/notebooks.yaml)"
