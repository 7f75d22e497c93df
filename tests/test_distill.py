"""Self-distillation through time: the two-step target, the loss, and a distillation run through train.fit."""

from __future__ import annotations

import json

import pytest
import torch
from roberta_diffusion import distill, train


def test_batch_masks_past_the_prompt_on_the_students_grid(tokenizer):
    ids = torch.randint(10, 200, (64, 24), generator=torch.Generator().manual_seed(0))
    batch = distill.distill_batch(ids, prefix_len=4, steps=8, mask_id=tokenizer.mask_token_id, seed=1, device="cpu")
    assert not batch["masked"][:, :4].any() and batch["masked"].any()
    assert set((batch["t"] * 8).round().long().flatten().tolist()) <= set(range(1, 9))
    assert torch.equal(batch["noisy"] == tokenizer.mask_token_id, batch["masked"])
    again = distill.distill_batch(ids, 4, 8, tokenizer.mask_token_id, seed=1, device="cpu", rows=slice(1, None, 2))
    assert torch.equal(again["noisy"], batch["noisy"][1::2]), "a row's noise does not depend on the rows kept"


def test_target_mixes_the_teachers_two_steps_where_the_first_left_a_mask(mlm, tokenizer):
    ids = torch.randint(10, 200, (6, 20), generator=torch.Generator().manual_seed(2))
    batch = distill.distill_batch(ids, 4, steps=2, mask_id=tokenizer.mask_token_id, seed=3, device="cpu")
    target, scored = distill.two_step_target(mlm, batch, steps=2, mask_id=tokenizer.mask_token_id)
    masked = batch["masked"]
    revealed = masked & (batch["reveal"] < 0.25 / batch["t"])  # the first half-step, from t to t - 1/4
    assert revealed.any() and (masked & ~revealed).any()
    assert torch.equal(scored, masked & ~revealed), "read only where the first step left a mask"
    assert torch.allclose(target[scored].sum(dim=-1), torch.ones(int(scored.sum())), atol=1e-5)
    assert (target[scored][:, tokenizer.mask_token_id] == 0).all()
    with torch.no_grad():
        p1 = distill._probs(mlm, batch["noisy"], tokenizer.mask_token_id)
    assert not torch.allclose(target[scored], p1[scored]), "the second step saw the first one's tokens"


def test_loss_is_zero_when_the_student_already_takes_both_steps(mlm, tokenizer):
    ids = torch.randint(10, 200, (4, 16), generator=torch.Generator().manual_seed(4))
    batch = distill.distill_batch(ids, 4, steps=1000, mask_id=tokenizer.mask_token_id, seed=5, device="cpu")
    # with tiny steps and t ~ 1 nothing is revealed in between: the target is the student's own prediction
    batch["t"] = torch.ones_like(batch["t"])
    loss = distill.distill_loss(mlm, batch, mlm, steps=1000, mask_id=tokenizer.mask_token_id)
    assert abs(loss.item()) < 1e-5
    coarse = distill.distill_loss(mlm, batch, mlm, steps=1, mask_id=tokenizer.mask_token_id)
    target, scored = distill.two_step_target(mlm, batch, 1, tokenizer.mask_token_id)
    target = target[scored].double()
    with torch.no_grad():
        q = distill._probs(mlm, batch["noisy"], tokenizer.mask_token_id)[scored].double()
    keep = target > 0
    by_hand = (target[keep] * (target[keep].log() - q[keep].log())).sum() / int(scored.sum())
    torch.testing.assert_close(coarse.double(), by_hand, atol=1e-6, rtol=1e-4)


def test_a_distillation_run_trains_the_student_and_lowers_the_loss(tiny_dirs, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(train.paths, "RUNS", tmp_path)
    blocks = torch.randint(10, 300, (24, 16), generator=torch.Generator().manual_seed(6))
    cfg = train.TrainConfig(run_name="distil", teacher=str(tiny_dirs / "mlm"), distill_steps=2, block_size=16,
                            prefix_len=4, batch_size=8, max_steps=12, lr=3e-3, warmup_steps=1, eval_every=6,
                            save_every=6, objectives=["mlm"]).for_objective("mlm")
    history = train.fit(cfg, blocks, blocks[:8], tokenizer, progress=False)
    assert history["step"][-1] == 12 and history["best_bound"] is not None
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert json.loads((tmp_path / "distil" / "mlm" / "config.json").read_text())["teacher"] == str(tiny_dirs / "mlm")


def test_a_teacher_needs_the_students_steps(tiny_dirs, tokenizer, tmp_path):
    cfg = train.TrainConfig(teacher=str(tiny_dirs / "mlm"), distill_steps=0, out_dir=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="distill_steps"):
        train.fit(cfg, torch.zeros(4, 16, dtype=torch.long), torch.zeros(4, 16, dtype=torch.long), tokenizer)
    assert not (tmp_path / "x").exists(), "refused before anything is written"
