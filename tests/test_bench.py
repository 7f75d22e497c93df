"""The benchmark harness runs on the CPU with small sizes and writes complete, finite JSON."""

import json
import math

import pytest
import torch

from benchmarks import agreement, bench, common


def test_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--size", "tiny", "--batch-sizes", "1,2", "--steps", "2,4", "--max-len", "32",
                     "--repeats", "1", "--train-batch", "2", "--device", "cpu", "--policies", "confidence,random",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {(r["policy"], r["batch"], r["steps"]) for r in result["diffusion"]} == {
        (s, b, n) for s in ("confidence", "random") for b in (1, 2) for n in (2, 4)}
    assert {(r["batch"], r["impl"]) for r in result["ar"]} == {
        (b, i) for b in (1, 2) for i in ("kv-cache loop", "hf generate", "static cache")}
    assert not [r for r in result["diffusion"] + result["ar"] + result["train"] if "error" in r]
    assert all(r["masks_left"] == 0 for r in result["diffusion"])
    # the step loop is part of the whole call: never slower, so never a smaller share of the FLOP-limited rate
    assert all(r["ms_per_step_loop"] <= r["ms_per_step"] for r in result["diffusion"])
    assert all(r["flop_limited_share_loop"] >= r["flop_limited_share"] for r in result["diffusion"])
    numbers = [v for r in result["diffusion"] + result["ar"] + result["train"] for v in r.values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) and v > 0 for v in numbers)
    static = [r for r in result["ar"] if r["impl"] == "static cache"]
    assert all(r["token_agreement_with_kv_cache_loop"] == 1.0 for r in static), "same tokens as the plain loop"
    assert all(r["teacher_forced"]["fast"]["token_agreement"] == 1.0 and r["teacher_forced"]["within_tolerance"]
               for r in static), "teacher-forced along the plain loop's run: the same draws"
    assert {(r["policy"], r["steps"]) for r in result["ratios"]} == {(s, n) for s in ("confidence", "random") for n in (2, 4)}
    assert all(r["ar_over_diffusion"] > 0 for r in result["ratios"])
    assert "MFU" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--policies", "threshold"], ["--policies", "greedy"],
                                 ["--train-variants", "eager,fastest"]])
def test_bench_rejects_bad_arguments(tmp_path, capsys, bad):
    assert bench.main([*bad, "--max-len", "32", "--repeats", "1", "--skip", "ar,train", "--device", "cpu",
                     "--out", str(tmp_path / "b.json")]) == 2
    assert not (tmp_path / "b.json").exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_random_policy_flops_count_only_the_positions_it_draws():
    assert bench.drawn_positions("confidence", 240, 10) == 240
    assert bench.drawn_positions("random", 240, 10) == 24  # 240 committed over 10 linear steps
    assert bench.drawn_positions("random", 240, 64) == 4  # 3 or 4 a step


def test_flop_count_grows_with_sequence_length(mlm):
    assert common.training_flops_per_token(mlm, 512) > common.training_flops_per_token(mlm, 64) > 6 * 1000


def test_flop_counts_match_a_hand_count_for_roberta_base_shapes(tokenizer):
    from roberta_diffusion.models import fresh_mlm

    model = fresh_mlm(tokenizer, "base")
    width, layers, vocab = 768, 12, model.config.vocab_size
    encoder = layers * (4 * width * width + 2 * width * 3072)  # q, k, v, out + the MLP
    head = width * width + width * vocab  # the head's dense layer + the vocabulary projection
    assert common.matmul_weights(model) == (encoder, head)
    attention = 4 * layers * width * 256
    assert common.training_flops_per_token(model, 256, 0.5) == 6 * encoder + 3 * head + 3 * attention


@pytest.mark.parametrize("arch", ["roberta", "modernbert"])
def test_a_steps_flop_count_equals_torchs_own_count(tokenizer, arch):
    """PyTorch's FlopCounterMode counts every matmul of one sampler forward (eager attention, so the score and
    value products are plain matmuls it sees)."""
    from roberta_diffusion.models import fresh_mlm, gathered_logits
    from roberta_diffusion.sampler import additive_attention_mask
    from torch.utils.flop_counter import FlopCounterMode

    model = fresh_mlm(tokenizer, "tiny", arch=arch, max_len=64)
    model.set_attn_implementation("eager")
    batch, length, candidates = 2, 64, 48
    ids = torch.randint(5, len(tokenizer), (batch, length), generator=torch.Generator().manual_seed(0))
    index = torch.arange(length - candidates, length).expand(batch, -1)
    mask = additive_attention_mask(torch.ones(batch, length, dtype=torch.long), torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        gathered_logits(model, ids, mask, index)
    assert common.diffusion_step_flops(model, batch, length, candidates) == counter.get_total_flops()


def test_compiled_rows_carry_the_teacher_forced_tolerance(monkeypatch, mlm, tokenizer):
    """The compiled step is CUDA-only; here the plain step stands in for it, so the wiring is what is checked: both
    comparisons are run and the verdict follows ``agreement.within_tolerance``."""
    from roberta_diffusion.evaluate import prompt_canvas_from_blocks
    from roberta_diffusion.sampling import Sampling

    monkeypatch.setattr(bench, "fast_step", lambda model, mode=None: agreement.plain_step(model))
    blocks = torch.randint(5, len(tokenizer), (2, 32), generator=torch.Generator().manual_seed(0))
    canvas = prompt_canvas_from_blocks(blocks, 8, tokenizer.mask_token_id)
    result = bench._teacher_forced(mlm, tokenizer, canvas, Sampling(steps=4).with_policy("random"), None)
    assert result["compiled"]["draws"] == 2 * 24 and result["compiled"]["token_agreement"] == 1.0
    assert result["precision"]["draws"] >= 2 * 24
    assert result["within_tolerance"] is True


@pytest.mark.parametrize("size", ["tiny", "shipped-like"])
def test_the_dropout0_training_row_builds_its_model_without_dropout(tmp_path, mlm, tokenizer, size):
    from types import SimpleNamespace

    folder = None
    if size == "shipped-like":
        folder = tmp_path / "mlm"
        mlm.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    args = SimpleNamespace(mlm=folder, ar=None, size="tiny", max_len=32, vocab_multiple=1)
    plain = common.bench_model("mlm", args, tokenizer, "cpu")
    no_dropout = common.bench_model("mlm", args, tokenizer, "cpu", dropout=0.0)
    rates = [m.p for m in no_dropout.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates and all(p == 0.0 for p in rates)
    assert any(m.p > 0 for m in plain.modules() if isinstance(m, torch.nn.Dropout)), "the default keeps its dropout"
