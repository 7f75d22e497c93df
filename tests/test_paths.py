"""Saved files name paths relative to the project root, not the machine that wrote them."""

from roberta_diffusion import paths


def test_saved_paths_are_portable():
    assert paths.portable(str(paths.ROOT / "weights" / "tokenizer")) == "weights/tokenizer"
    assert paths.portable(str(paths.RUNS / "ship" / "mlm")) == "runs/ship/mlm"
    assert paths.portable("/work/main/runs/ship-ar/ar") == "runs/ship-ar/ar"  # the GPU machine's own checkout
    assert paths.portable("roberta-base") == "roberta-base" and paths.portable("/opt/data/x.txt") == "/opt/data/x.txt"
