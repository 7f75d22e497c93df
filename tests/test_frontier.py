"""The quality frontier: its measurement on tiny models end to end, and the rule that picks the default."""

import json

import pytest
import torch
from roberta_diffusion import evaluate
from roberta_diffusion.sampling import Sampling

from benchmarks import frontier


def test_pick_takes_the_lowest_perplexity_that_keeps_the_entropy():
    points = [{"setting": "confidence@10", "gen_ppl": 10.0, "unigram_entropy": 2.0},  # fluent by repeating itself
              {"setting": "random@10", "gen_ppl": 100.0, "unigram_entropy": 4.3},
              {"setting": "random@32", "gen_ppl": 70.0, "unigram_entropy": 4.25},
              {"setting": "redraw@10", "gen_ppl": 2000.0, "unigram_entropy": 4.6}]
    result = {"real": {"unigram_entropy": 4.7}, "points": points}
    assert frontier.pick_readable(result)["setting"] == "random@32"
    assert frontier.pick_readable(result, entropy_floor=0.0)["setting"] == "confidence@10"
    assert frontier.pick_readable(result, entropy_floor=1.0) is None  # nothing keeps all of the real entropy


def test_frontier_command_writes_points_for_every_setting(tmp_path, tiny_dirs, capsys):
    out = tmp_path / "frontier.json"
    status = frontier.main(["--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--corpus", "sample",
                       "--prompts", "2", "--steps", "2,3", "--policies", "random,confidence", "--max-len", "32",
                       "--prefix-len", "8", "--device", "cpu", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    result = json.loads(out.read_text())
    assert sorted(p["setting"] for p in result["points"]) == ["confidence@2", "confidence@3", "random@2", "random@3"]
    assert result["prompts"] == 2 and result["real"]["gen_ppl"] > 0 and result["ar"]["gen_ppl"] > 0
    assert "readable pick:" in printed and out.with_suffix(".png").stat().st_size > 0


def test_frontier_refuses_an_unknown_policy(tmp_path, capsys):
    assert frontier.main(["--policies", "loudest", "--out", str(tmp_path / "f.json")]) == 2
    assert "loudest" in capsys.readouterr().err and not (tmp_path / "f.json").exists()


def test_a_shifted_prompt_set_shares_no_block_with_evals():
    blocks = torch.arange(100).unsqueeze(1)
    first = frontier.shifted(blocks, 10).flatten().tolist()
    assert first == evaluate.spread_blocks(blocks, 10).flatten().tolist()
    second = frontier.shifted(blocks, 10, shift=1).flatten().tolist()
    assert len(set(second)) == 10 and not set(first) & set(second) and max(second) < 100
    for bad in (-1, 11):  # backwards, or past the next of eval's blocks
        with pytest.raises(ValueError, match="--shift"):
            frontier.shifted(blocks, 10, shift=bad)


def test_frontier_samples_with_the_filters_it_is_given(tmp_path, tiny_dirs):
    out = tmp_path / "frontier.json"
    assert frontier.main(["--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--corpus", "sample",
                          "--prompts", "2", "--steps", "2", "--policies", "random", "--max-len", "32", "--prefix-len",
                          "8", "--device", "cpu", "--top-k", "7", "--top-p", "1", "--shift", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert Sampling(**result["sampling"]) == Sampling(top_k=7, top_p=1.0) and result["shift"] == 1
