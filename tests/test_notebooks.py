"""The workbook end to end: the smoke profile's pipeline runs all four notebooks headless with papermill, and
its outputs hold up (no error cells, GIFs, finite metrics, no <mask> left in generated text)."""

import json
import math
from dataclasses import asdict

import pytest
from PIL import Image
from workbench import pipeline

pytestmark = pytest.mark.notebooks


def test_every_notebook_executed_without_errors(smoke_run):
    assert pipeline.check_run(smoke_run) == []
    for name in pipeline.ORDER:
        assert (smoke_run / f"{name}.ipynb").exists()


def test_metrics_are_finite_and_texts_have_no_masks(smoke_run):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    values = list(pipeline._flatten(metrics))
    floats = [v for _, v in values if isinstance(v, float)]
    assert floats and all(math.isfinite(v) for v in floats)
    texts = [v for k, v in values if k.endswith("text")]
    assert texts and all("<mask>" not in t and t.strip() for t in texts)


def test_generation_json_stores_the_sampling_whole(smoke_run):
    from roberta_diffusion.sampling import Sampling

    summary = json.loads((smoke_run / "generation.json").read_text())
    sampling = Sampling(**summary["sampling"])  # round-trips
    assert sampling == Sampling.of(summary) and sampling.steps == summary["steps"]
    compared = json.loads((smoke_run / "metrics.json").read_text())["settings"]["sampling"]
    assert Sampling(**compared).policy == sampling.policy


def test_generation_gif_has_a_frame_per_step(smoke_run):
    summary = json.loads((smoke_run / "generation.json").read_text())
    with Image.open(smoke_run / "generation.gif") as gif:
        assert gif.n_frames == summary["steps"] + 1
    with Image.open(smoke_run / "compare.gif") as gif:
        assert gif.n_frames > 1


def test_finetune_left_models_and_a_loss_curve(smoke_run):
    for objective in ("mlm", "ar"):
        assert (smoke_run / objective / "model" / "config.json").exists()
        assert (smoke_run / objective / "model" / "README.md").exists()
    assert (smoke_run / "loss_curves.png").stat().st_size > 0


def test_profiles_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="smoke"):
        pipeline.load_profile("no-such-profile")
    bad = tmp_path / "bad.yaml"
    bad.write_text("05_extra: {}\n")
    with pytest.raises(ValueError, match="unknown sections"):
        pipeline.load_profile(bad)


def test_finetune_notebook_can_train_its_own_tokenizer(tmp_path, monkeypatch):
    """02's recipe (TrainConfig's defaults, then these) with a fresh config and a tokenizer trained on the corpus."""
    from roberta_diffusion import paths, train

    monkeypatch.setattr(paths, "RUNS", tmp_path)
    params = {"run_name": "own-tokenizer", "new_tokenizer_vocab": 1024, "train_data": "sample", "valid_data": "sample",
              "max_train_lines": None, "block_size": 32, "batch_size": 4, "max_steps": 3, "eval_every": 3,
              "save_every": 3, "objectives": ["mlm"]}
    train.train(train.TrainConfig(**params), say=lambda line: None)
    run = tmp_path / "own-tokenizer"
    from roberta_diffusion.models import load_mlm, load_tokenizer

    tokenizer = load_tokenizer(run / "tokenizer")
    assert 261 < len(tokenizer) <= 1024 and tokenizer.mask_token == "<mask>"  # a short text stops BPE early
    assert load_mlm(run / "mlm" / "model", device="cpu").config.vocab_size == -(-len(tokenizer) // 64) * 64
    from roberta_diffusion import corpus

    counts = corpus.load_counts(run / "mlm" / "model")  # beside every trained masked LM, for policy calibrated
    assert len(counts) == len(tokenizer) and counts.sum() > 0


@pytest.mark.parametrize("name", pipeline.ORDER)
def test_parameters_cells_parse_cleanly(name, caplog):
    """papermill reads every parameter of every notebook (a line it cannot parse, e.g. with a second '=' in its
    comment, is skipped with a warning, and its value can then not be overridden from a profile)."""
    import jupytext
    from papermill.translators import PythonTranslator

    notebook = jupytext.read(pipeline.NOTEBOOKS / f"{name}.py")
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    with caplog.at_level("WARNING", logger="papermill"):
        found = PythonTranslator.inspect(cell)
    assigned = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert not caplog.records and len(found) == len(assigned)


def test_notebook_defaults_are_the_readable_ones():
    """03 and 04 start from the settings the CLI uses (``Sampling.readable()``): every parameter named after a
    ``Sampling`` field holds its default, and each notebook builds its ``Sampling`` from those parameters."""
    import jupytext
    from papermill.translators import PythonTranslator
    from roberta_diffusion.sampling import Sampling

    readable = asdict(Sampling.readable())
    for name, shared in (("03_generate", 7), ("04_compare", 6)):
        notebook = jupytext.read(pipeline.NOTEBOOKS / f"{name}.py")
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        values = {p.name: eval(p.default) for p in PythonTranslator.inspect(cell)}  # noqa: S307 - its own literals
        assert {k: v for k, v in values.items() if k in readable} == {k: readable[k] for k in values if k in readable}
        assert len(set(values) & set(readable)) == shared, name  # a renamed field or parameter fails here
        # the policy last, through with_policy: its own knob (remdm, calibrated, sampled) at its measured default
        built = ", ".join(f"{k}={k}" for k in readable if k in values and k != "policy")
        assert f"sampling = Sampling({built}).with_policy(policy)" in notebook_source(name)


def notebook_source(name: str) -> str:
    return " ".join((pipeline.NOTEBOOKS / f"{name}.py").read_text().split())


def test_nbmake_copies_mock_only_parameters_of_their_notebook(tmp_path):
    """The copies nbmake runs set tests/notebooks.yaml's tiny values as mocks: each must name a parameter of its
    notebook (nbmake would set a misspelt or renamed one as a stray global, and the notebook would run its default)."""
    import nbformat
    from conftest import write_notebook_copies
    from workbench import settings

    written = write_notebook_copies(tmp_path, "/tiny")
    assert [p.stem for p in written] == list(pipeline.ORDER)
    for path in written:
        notebook = nbformat.read(path, as_version=4)
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        mocks = cell.metadata["nbmake"]["mock"]
        assert mocks and set(mocks) <= set(settings.notebook_parameters(pipeline.NOTEBOOKS / f"{path.stem}.py"))
        assert not any("{tiny}" in str(v) for v in mocks.values())
