"""``History``: what fit returns is what history.json holds, every shipped history.json loads, and ``train_step``
is the step ``fit`` runs (a profiler calling it measures the real thing)."""

import json

import pytest
import torch
from roberta_diffusion import checkpoints, curves, data, loop, train
from roberta_diffusion.history import History
from roberta_diffusion.paths import SAMPLE_TEXT, WEIGHTS

SHIPPED = sorted(WEIGHTS.glob("*/history.json"))


@pytest.fixture(scope="module")
def blocks(tokenizer):
    return data.load_blocks(SAMPLE_TEXT, tokenizer, 32)


def _config(out, **kw):
    return train.TrainConfig(**{**dict(out_dir=str(out), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                                       max_steps=4, eval_every=2, save_every=2, log_every=1, warmup_steps=1), **kw})


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.name for p in SHIPPED])
def test_every_shipped_history_loads_and_saves_back_the_same_values(path, tmp_path):
    saved = json.loads(path.read_text())
    history = History.load(path)
    assert history.eval_bound == saved["eval_bound"] and history.best_step == saved["best_step"] is not None
    history.save(tmp_path / "history.json")
    again = json.loads((tmp_path / "history.json").read_text())
    assert {k: again[k] for k in saved} == saved  # the old keys, the old values; missing ones get their defaults
    assert again["eval_bound_raw"] == saved.get("eval_bound_raw", []) and again["prior_tokens"] == saved.get("prior_tokens", 0)


def test_a_shipped_history_draws_its_curve_and_names_a_key_it_does_not_know(tmp_path):
    assert SHIPPED, "weights/*/history.json: the shipped models keep their training history"
    assert len(curves.load_curve(SHIPPED[0].parent)["ppl"]) >= len(History.load(SHIPPED[0]).eval_bound)
    (tmp_path / "history.json").write_text(json.dumps({"step": [1], "eval_bund": [2.0]}))
    with pytest.raises(ValueError, match="eval_bund"):
        History.load(tmp_path / "history.json")


def test_fit_returns_the_history_it_writes_and_checkpoints(tokenizer, blocks, tmp_path):
    history = train.fit(_config(tmp_path, ema_decay=0.5), blocks, blocks, tokenizer, progress=False)
    assert isinstance(history, History) and history.to_dict() == History.load(tmp_path / "history.json").to_dict()
    assert history.step == [1, 2, 3, 4] and history.eval_step == [2, 4] and len(history.eval_bound_raw) == 2
    assert history.best_bound == min(history.eval_bound) and history["best_step"] == history.best_step
    assert history.tokens == 4 * 4 * 32 and history.world_size == 1 and history.parameters > 0
    state = json.loads((checkpoints.checkpoints(tmp_path)[0] / "state.json").read_text())
    assert History.from_dict(state["history"]) == history  # the last checkpoint: after the last evaluation


def test_train_step_is_the_step_fit_runs(tokenizer, blocks, tmp_path):
    """``setup`` then ``train_step``, as a profiler calls them, give fit's losses step for step."""
    fitted = train.fit(_config(tmp_path / "fit"), blocks, blocks, tokenizer, progress=False)
    run = loop.setup(_config(tmp_path / "steps"), blocks, blocks, tokenizer)
    run.step_module.train()
    checkpoints.set_rng_state(run.rng)
    losses = [round(loop.train_step(run, blocks).item(), 5) for _ in range(4)]
    assert run.step == 4 and run.history.tokens == 4 * 4 * 32
    assert losses == fitted.train_loss and len(set(losses)) == 4
    assert not torch.equal(run.model.lm_head.bias, loop.build_model(_config(tmp_path), tokenizer).lm_head.bias)
