"""Issue 14's training: prompts of any length in training, the whole prompt pinned at generation, data-parallel
processes that see exactly the one-process batch, averaged weights, and the best held-out weights exported."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from roberta_diffusion import checkpoints, data, losses, train
from roberta_diffusion.canvas import prompt_canvas
from roberta_diffusion.collator import DiffusionCollator
from roberta_diffusion.history import History
from roberta_diffusion.paths import ROOT, SAMPLE_TEXT
from roberta_diffusion.sampler import generate_ar, generate_diffusion
from workbench.cli import main


@pytest.fixture(scope="module")
def blocks(tokenizer):
    return data.load_blocks(SAMPLE_TEXT, tokenizer, 32)


# -- the collator: prompts of every length, pinned spans ------------------------------------------------------
def _ids(tokenizer, rows=256, length=48):
    return torch.randint(len(tokenizer.all_special_ids) + 10, len(tokenizer), (rows, length),
                         generator=torch.Generator().manual_seed(0))


def test_prompt_length_is_drawn_per_row_and_never_masked(tokenizer):
    ids = _ids(tokenizer)
    collator = DiffusionCollator(tokenizer, 2, "continuous", max_prefix_len=20, generator=torch.Generator().manual_seed(1))
    pinned = collator.pinned(tuple(ids.shape))
    lengths = pinned.sum(dim=1)
    assert lengths.min() == 2 and lengths.max() == 20  # every length of the range turns up in 256 rows
    assert len(set(lengths.tolist())) == 19
    assert torch.equal(pinned, torch.arange(48) < lengths.unsqueeze(1))  # a prompt is a prefix
    collator.generator = torch.Generator().manual_seed(1)
    batch = collator(ids)
    collator.generator = torch.Generator().manual_seed(1)
    collator.sample_ratios(len(ids))  # the call draws the ratios first, then the prompts
    pinned = collator.pinned(tuple(ids.shape))
    masked = batch["labels"] != -100
    assert not (masked & pinned).any()
    assert masked.any(dim=1).all()


def test_pinned_spans_sit_after_the_prompt_in_the_chosen_share_of_rows(tokenizer):
    collator = DiffusionCollator(tokenizer, 4, "continuous", max_prefix_len=4, span_prob=0.5, max_span_len=6,
                                 generator=torch.Generator().manual_seed(3))
    pinned = collator.pinned((400, 48))
    after = pinned[:, 4:]
    with_span = after.any(dim=1)
    assert 0.4 < with_span.float().mean() < 0.6
    assert pinned[:, :4].all()
    lengths = after.sum(dim=1)[with_span]
    assert lengths.min() >= 1 and lengths.max() <= 6
    # one contiguous run per row: the flags change at most twice along the row
    changes = (after[:, 1:] != after[:, :-1]).sum(dim=1)
    assert changes.max() <= 2


def test_stratified_bound_holds_with_random_prompts_and_spans(tokenizer):
    ids = _ids(tokenizer, rows=16, length=40)
    bound = DiffusionCollator(tokenizer, 1, "stratified", max_prefix_len=20, span_prob=0.3).max_masked(16, 40)
    for seed in range(30):
        collator = DiffusionCollator(tokenizer, 1, "stratified", max_prefix_len=20, span_prob=0.3,
                                     generator=torch.Generator().manual_seed(seed))
        assert int((collator(ids)["labels"] != -100).sum()) <= bound


def test_max_prefix_below_prefix_is_refused(tokenizer):
    with pytest.raises(ValueError, match="max_prefix_len=3 is below prefix_len=5"):
        DiffusionCollator(tokenizer, 5, max_prefix_len=3)


# -- generation pins the whole prompt ---------------------------------------------------------------------------
LONG = "The cat sat on the mat and looked out of the window at the rain for a long time"


def test_generation_pins_every_token_of_a_long_prompt(mlm, tokenizer):
    prompt_ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(prompt_ids) > 16  # longer than the old fixed prefix, which cut it
    trace = generate_diffusion(mlm, tokenizer, LONG, steps=3, max_len=len(prompt_ids) + 9, policy="random")
    final = trace.ids[-1, 0].tolist()
    assert final[1 : 1 + len(prompt_ids)] == prompt_ids
    assert trace.settings["prefix_len"] == 1 + len(prompt_ids)
    assert trace.new_tokens == 8


def test_ar_pins_the_whole_prompt_too(causal_lm, tokenizer):
    prompt_ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    trace = generate_ar(causal_lm, tokenizer, LONG, max_len=len(prompt_ids) + 5)
    assert trace.ids[-1, 0, 1 : 1 + len(prompt_ids)].tolist() == prompt_ids
    assert trace.new_tokens == 4


def test_a_pinned_width_shorter_than_the_prompt_is_refused_not_cut(tokenizer):
    with pytest.raises(ValueError, match="more than prefix_len=4"):
        prompt_canvas(tokenizer, LONG, prefix_len=4, max_len=64)


def test_prompts_of_a_batch_are_left_padded_to_the_longest(tokenizer):
    canvas = prompt_canvas(tokenizer, ["A", LONG], max_len=64)
    width = 1 + len(tokenizer(LONG, add_special_tokens=False)["input_ids"])
    assert canvas.pinned[:, :width].all() and not canvas.pinned[:, width:].any()
    assert int(canvas.attention[0, :width].sum()) == 2  # <s> A, after the padding


@pytest.mark.parametrize("command", ["generate", "ar"])
def test_a_prompt_that_fills_the_canvas_is_bad_input(command, capsys, tmp_path, tiny_dirs):
    gif = tmp_path / "x.gif"
    status = main([command, LONG, "--model", str(tiny_dirs / ("mlm" if command == "generate" else "ar")),
                   "--max-len", "12", "--device", "cpu", "--animation", str(gif)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and "leaves no room" in err[0]
    assert not gif.exists()


# -- data-parallel batches ------------------------------------------------------------------------------------
def test_process_batches_partition_the_one_process_batch(tokenizer, blocks):
    """Each of N processes keeps rows rank::N of the global batch, noise included: together they are the batch
    one process trains on, whatever N is."""
    cfg = train.TrainConfig(out_dir="unused", block_size=32, prefix_len=2, max_prefix_len=10, span_prob=0.2,
                            ratio_mode="stratified", batch_size=8)
    collator = train.make_collator(cfg, tokenizer)
    ids = blocks[train.batch_indices(5, len(blocks), 8, seed=0)]
    whole = train._make_batch(cfg, collator, ids, seed=123, rows=slice(None), device="cpu")
    for world in (2, 4):
        parts = [train._make_batch(cfg, collator, ids, seed=123, rows=slice(r, None, world), device="cpu")
                 for r in range(world)]
        for key, value in whole.items():
            rebuilt = torch.empty_like(value)
            for r, part in enumerate(parts):
                rebuilt[r::world] = part[key]
            assert torch.equal(rebuilt, value), key


def _finetune(run_name: str, runs, processes: int) -> dict:
    env = {**os.environ, "ROBERTA_DIFFUSION_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "workbench.cli", "finetune", "--profile", "smoke",
               "--num-processes", str(processes), "--set", f'run_name="{run_name}"', 'objectives=["mlm"]',
               "max_steps=4", "eval_every=2", "save_every=2", "batch_size=4", "max_train_lines=200",
               "max_prefix_len=20", "span_prob=0.2", "ema_decay=0.9"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = runs / run_name / "mlm"
    weights = {k: v.clone() for k, v in checkpoints._load_weights(run / "model").items()}
    return {"history": json.loads((run / "history.json").read_text()), "weights": weights}


def test_two_cpu_processes_train_deterministically(tmp_path):
    """``finetune --num-processes 2`` on CPU (gloo): two runs give the same losses and the same weights."""
    first = _finetune("ddp-a", tmp_path, 2)
    second = _finetune("ddp-b", tmp_path, 2)
    assert first["history"]["world_size"] == 2
    assert first["history"]["train_loss"] == second["history"]["train_loss"]
    assert first["history"]["eval_bound"] == second["history"]["eval_bound"]
    assert first["weights"].keys() == second["weights"].keys()
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])
    assert first["history"]["tokens"] == 4 * 4 * 128  # the global batch counts once, not once per process


# -- averaged weights and the best checkpoint ------------------------------------------------------------------
def test_weight_average_follows_the_weights_and_swaps_back(mlm):
    model = type(mlm)(mlm.config)
    model.load_state_dict(mlm.state_dict())
    average = train.WeightAverage(model, 0.5)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update(model, step=100)  # past the warm-up: decay 0.5
    expected = [b + 0.5 for b in before]
    assert all(torch.allclose(a, e) for a, e in zip(average.average, expected, strict=True))
    with average.swapped_in(model):
        assert all(torch.allclose(p, e) for p, e in zip(model.parameters(), expected, strict=True))
    assert all(torch.allclose(p, b + 1.0) for p, b in zip(model.parameters(), before, strict=True))


def test_the_exported_model_is_the_best_held_out_checkpoint(tokenizer, blocks, tmp_path, monkeypatch):
    """A bound that gets worse after the first evaluation: the exported weights are the first evaluation's."""
    bounds = iter([2.0, 3.0, 4.0])
    snapshots = {}

    def fake_score(self, model, objective=True):
        snapshots[len(snapshots)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return 1.0, next(bounds)

    monkeypatch.setattr(losses.HeldOutScorer, "score", fake_score)
    cfg = train.TrainConfig(out_dir=str(tmp_path), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                            max_steps=6, eval_every=2, save_every=2, lr=1e-2, warmup_steps=1)
    history = train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    assert history["best_step"] == 2 and history["best_bound"] == 2.0 and history["eval_bound"] == [2.0, 3.0, 4.0]
    exported = checkpoints._load_weights(tmp_path / "model")
    for key, value in exported.items():
        assert torch.allclose(value, snapshots[0][key]), key


def test_with_an_average_the_weights_themselves_are_scored_too(tokenizer, blocks, tmp_path, monkeypatch):
    """Each evaluation scores the raw weights, then their average; the best (and exported) model is the average's."""
    snapshots = []

    def fake_score(self, model, objective=True):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return 1.0, float(len(snapshots))

    monkeypatch.setattr(losses.HeldOutScorer, "score", fake_score)
    cfg = train.TrainConfig(out_dir=str(tmp_path), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                            max_steps=4, eval_every=2, save_every=2, lr=1e-2, warmup_steps=1, ema_decay=0.5)
    history = train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    assert history["eval_bound_raw"] == [1.0, 3.0] and history["eval_bound"] == [2.0, 4.0]
    raw, average = snapshots[0], snapshots[1]
    assert any(not torch.equal(raw[k], average[k]) for k in raw)
    exported = checkpoints._load_weights(tmp_path / "model")
    assert all(torch.allclose(exported[k], average[k]) for k in exported)
    # training goes on from the weights themselves: the last checkpoint holds the raw weights of the last evaluation
    last = checkpoints._load_weights(tmp_path / "checkpoints" / "step-4")
    assert all(torch.equal(last[k], snapshots[2][k]) for k in last)
    assert any(not torch.equal(last[k], snapshots[3][k]) for k in last)


def test_without_an_average_only_the_weights_are_scored(tokenizer, blocks, tmp_path):
    cfg = train.TrainConfig(out_dir=str(tmp_path), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                            max_steps=2, eval_every=2, save_every=2)
    history = train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    assert len(history["eval_bound"]) == 1 and history["eval_bound_raw"] == []


# -- the data-constrained figure ------------------------------------------------------------------------------
def test_curves_read_a_run_and_find_the_crossover(tokenizer, blocks, tmp_path):
    from roberta_diffusion import curves

    cfg = train.TrainConfig(out_dir=str(tmp_path / "mlm"), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                            max_steps=4, eval_every=2, save_every=4)
    history = train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    curve = curves.load_curve(tmp_path / "mlm", prior_tokens=1000)
    tokens = [1000 + 2 * 4 * 32, 1000 + 4 * 4 * 32]
    assert curve["epochs"] == [t / (len(blocks) * 32) for t in tokens]
    assert curve["flops"] == [6 * history["parameters"] * t for t in tokens]
    assert curve["ppl"] == pytest.approx([2.718281828 ** b for b in history["eval_bound"]])
    mlm = {"flops": [1, 2, 3, 4], "ppl": [90, 60, 45, 40]}
    ar = {"flops": [1, 2, 3, 4], "ppl": [70, 50, 48, 49]}
    assert curves.crossover(mlm, ar) == 3  # 45 <= the best GPT-2 had by then (48)
    assert curves.crossover(mlm, {"flops": [1, 2], "ppl": [30, 20]}) is None
    figure = curves.plot_data_constrained([curve, {**curve, "objective": "ar", "label": "other"}], tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0 and len(figure.axes) == 2

    # a continued run: its history carries the tokens before it and the held-out points of the runs behind it
    saved = json.loads((tmp_path / "mlm" / "history.json").read_text())
    saved.update(prior_tokens=5000, earlier={"tokens": [2000, 4000], "eval_bound": [20.0, 19.0]})
    (tmp_path / "mlm" / "history.json").write_text(json.dumps(saved))
    path = curves.load_curve(tmp_path / "mlm")
    assert path["epochs"][:2] == [2000 / (len(blocks) * 32), 4000 / (len(blocks) * 32)]
    assert path["flops"][2:] == [6 * history["parameters"] * (5000 + t - 1000) for t in tokens]
    assert path["ppl"][:2] == pytest.approx([math.exp(20), math.exp(19)])
    # a diverged point does not squash the rest: the frame stops at 3 x the best, and says how high it went
    figure = curves.plot_data_constrained([path])
    assert figure.axes[0].get_ylim()[1] == pytest.approx(3 * path["best"]["ppl"])
    assert any(f"up to {math.exp(20):,.0f}" in text.get_text() for text in figure.axes[0].texts)


def test_a_continued_run_carries_the_path_of_the_weights_it_started_from(tokenizer, blocks, tmp_path):
    """The weights a run continues are its predecessor's best evaluation: the path runs up to there, the
    evaluations after it are a branch, and the curve draws both."""
    from roberta_diffusion import curves

    before = History(eval_step=[10, 20, 30, 40], eval_bound=[5.0, 4.0, 4.5, 9.0], best_step=20, tokens=40 * 100,
                     prior_tokens=500, earlier={"tokens": [100, 300], "eval_bound": [7.0, 6.0]})
    lineage = curves.continued(before, {"batch_size": 10, "block_size": 10})
    assert lineage["prior_tokens"] == 500 + 20 * 100
    assert lineage["earlier"] == {"tokens": [100, 300, 1500, 2500], "eval_bound": [7.0, 6.0, 5.0, 4.0]}
    assert lineage["branches"] == [{"tokens": [2500, 3500, 4500], "eval_bound": [4.0, 4.5, 9.0]}]
    assert lineage["discarded_tokens"] == 20 * 100
    again = curves.continued(dataclasses.replace(before, **lineage, best_step=40), {"batch_size": 10, "block_size": 10})
    assert again["branches"] == lineage["branches"] and again["discarded_tokens"] == 20 * 100  # ended at its best

    cfg = train.TrainConfig(out_dir=str(tmp_path / "mlm"), size="tiny", block_size=32, prefix_len=4, batch_size=4,
                            max_steps=2, eval_every=2, save_every=2)
    train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    saved = json.loads((tmp_path / "mlm" / "history.json").read_text())
    (tmp_path / "mlm" / "history.json").write_text(json.dumps({**saved, **lineage}))
    curve = curves.load_curve(tmp_path / "mlm")
    assert len(curve["ppl"]) == 4 + 1 and curve["branches"][0]["ppl"] == pytest.approx([math.exp(b) for b in (4.0, 4.5, 9.0)])
    figure = curves.plot_data_constrained([curve], ymax=3 * math.exp(4.0))
    assert any(f"up to {math.exp(9.0):,.0f}" in text.get_text() for text in figure.axes[0].texts)


def _vote(rank: int, world: int, init_file: str, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results[rank] = (train.any_process(rank == 0, "cpu"), train.any_process(False, "cpu"))
    finally:
        torch.distributed.destroy_process_group()


def test_a_time_limit_reached_by_one_process_stops_them_all(tmp_path):
    """``max_minutes`` is read off each process's clock; they vote, so all stop at one step (a process that
    stopped alone would leave the others blocked in DDP's next all-reduce)."""
    import torch.multiprocessing as mp

    results = mp.Manager().dict()
    mp.spawn(_vote, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert dict(results) == {0: (True, False), 1: (True, False)}
    assert train.any_process(True, "cpu") and not train.any_process(False, "cpu")  # one process: its own flag
