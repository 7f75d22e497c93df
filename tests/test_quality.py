"""The matched-entropy protocol: the grid, the picks made on tuning prompts and reported on others, the speed at equal
quality, and the two phases end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from roberta_diffusion import corpus

from benchmarks import quality


def row(ppl, entropy):
    return {"gen_ppl": ppl, "unigram_entropy": entropy, "distinct_2": 0.9, "rep_4": 0.01}


def test_grid_keeps_guidance_to_few_steps_and_names_every_setting():
    settings = quality.grid(["random", "guided-8"], [8, 64], temperatures=(0.8, 1.0), filters=("plain",))
    names = [s["name"] for s in settings]
    assert names == ["random@8/t0.8/plain", "random@8/t1/plain", "random@64/t0.8/plain", "random@64/t1/plain",
                     "guided-8@8/t0.8/plain", "guided-8@8/t1/plain"]
    assert settings[-1]["candidates"] == 8 and settings[0]["top_k"] == 0


def test_matched_picks_on_tuning_prompts_and_reports_the_others():
    rows = {"real": {"tune": row(60, 4.70), "report": row(61, 4.71)},
            "ar/t1/plain": {"tune": row(50, 4.75), "report": row(52, 4.74)},
            "ar/t0.7/plain": {"tune": row(20, 4.20), "report": row(21, 4.2)},  # too little entropy: never picked
            "random@8/t1/plain": {"tune": row(150, 4.80), "report": row(155, 4.80)},
            "random@8/t0.8/plain": {"tune": row(100, 4.60), "report": row(120, 4.6)},
            "random@8/t0.7/plain": {"tune": row(40, 4.00), "report": row(41, 4.0)}}
    settings = [{"name": n, "family": "random", "steps": 8} for n in rows if n.startswith("random")]
    result = {"rows": rows, "settings": settings, "latency": {"random@8": 0.005, "ar": 0.1}}
    picks = quality.matched(result)
    assert picks["ar"]["setting"] == "ar/t1/plain" and picks["ar"]["gen_ppl"] == 52  # the report prompts' score
    assert picks["random@8"]["setting"] == "random@8/t0.8/plain" and picks["random@8"]["gen_ppl"] == 120
    assert picks["random@8"]["latency_s"] == 0.005 and picks["random@8"]["tune"]["gen_ppl"] == 100
    result["matched"] = picks
    assert not quality.speed_at_equal_quality(result)["found"]  # 120 is not within 10 % of 52
    picks["random@8"]["tune"] |= {"gen_ppl": 55.0, "unigram_entropy": 4.7}  # matching is decided on the tuning set
    found = quality.speed_at_equal_quality(result)
    assert found["found"] and found["setting"] == "random@8" and found["speedup"] == 20.0
    assert found["diffusion"]["gen_ppl"] == 120  # reported on the report prompts, which no choice looked at


def test_a_setting_better_than_ar_on_both_counts_as_equal_quality():
    ar = {"gen_ppl": 52, "unigram_entropy": 4.56, "tune": row(50, 4.56)}
    diverse = {"gen_ppl": 49, "unigram_entropy": 4.83, "latency_s": 0.01, "tune": row(48, 4.83)}  # 5.9 % more entropy
    result = {"matched": {"ar": ar, "random@16": diverse}, "latency": {"ar": 0.1, "random@16": 0.01}}
    found = quality.speed_at_equal_quality(result)
    assert found["found"] and found["setting"] == "random@16" and found["speedup"] == 10.0
    diverse["tune"] = row(51, 4.83)  # more entropy but worse perplexity, and too far from AR's entropy to be close
    assert not quality.speed_at_equal_quality(result)["found"]


def test_a_pick_whose_report_entropy_leaves_the_band_is_marked(capsys):
    rows = {"real": {"tune": row(60, 4.70), "report": row(61, 4.70)},
            "ar/t1/plain": {"tune": row(50, 4.70), "report": row(52, 4.72)},
            "random@8/t1/plain": {"tune": row(90, 4.57), "report": row(95, 4.50)},  # in on tuning, 4.3 % low on report
            "random@16/t1/plain": {"tune": row(80, 4.60), "report": row(82, 4.58)}}
    settings = [{"name": n, "family": "random", "steps": int(n[7:].split("/")[0])} for n in rows if n.startswith("r")
                and n != "real"]
    result = {"rows": rows, "settings": settings, "latency": {}}
    result["matched"] = picks = quality.matched(result)
    assert picks["random@8"]["setting"] == "random@8/t1/plain" and picks["random@8"]["report_in_band"] is False
    assert picks["random@16"]["report_in_band"] is True and picks["ar"]["report_in_band"] is True
    result["at_real_entropy"], result["speed_at_equal_quality"] = {}, {"found": False}
    quality.print_table(result)
    table = capsys.readouterr().out
    assert "4.500*" in table and "4.580*" not in table and "outside the band on the report prompts" in table


def test_sample_then_score_on_tiny_models(tmp_path, tiny_dirs, tokenizer, capsys):
    model = tmp_path / "mlm"
    model.mkdir()
    for f in (tiny_dirs / "mlm").iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    corpus.save_counts(model, torch.randint(1, 50, (len(tokenizer),), generator=torch.Generator().manual_seed(0)),
                       "made up")
    common = ["--mlm", str(model), "--ar", str(tiny_dirs / "ar"), "--corpus", "sample", "--prompts", "2",
              "--families", "random,remdm-0.2,calibrated,guided-8,corrected-4", "--steps", "2,3", "--max-len", "32",
              "--prefix-len", "8", "--device", "cpu"]
    assert quality.main(["sample", *common, "--out", str(tmp_path / "s.pt")]) == 0
    samples = torch.load(tmp_path / "s.pt", weights_only=False)
    assert len(samples["ids"]) == 5 * 2 * len(quality.TEMPERATURES) * len(quality.FILTERS)
    assert all(ids.shape == (4, 32) for ids in samples["ids"].values())  # two prompt sets of two
    assert set(samples["latency"]) == {f"{f}@{s}" for f in ("random", "remdm-0.2", "calibrated", "guided-8", "corrected-4")
                                       for s in (2, 3)} | {"ar"}
    out = tmp_path / "q.json"
    assert quality.main(["score", str(tmp_path / "s.pt"), "--judge", str(tiny_dirs / "ar"), "--device", "cpu",
                         "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["rows"]["real"]) == {"tune", "report"}
    assert all(set(r["report"]) >= {"gen_ppl", "gen_ppl_interval", "unigram_entropy", "distinct_2", "rep_4"}
               for r in result["rows"].values())
    low, high = result["rows"]["real"]["report"]["gen_ppl_interval"]
    assert low <= result["rows"]["real"]["report"]["gen_ppl"] <= high
    assert len(result["rows"]["real"]["report"]["prompt_nll"]) == 2  # one per report prompt, for paired intervals
    pick = result["matched"]["random@2"] or next(p for p in result["matched"].values() if p)
    low, high = pick["x_real_interval"]
    assert low <= pick["x_real"] <= high and "prompt_nll" not in pick  # the picks stay lean
    assert "random@2" in result["matched"] and out.with_suffix(".png").stat().st_size > 0
    assert "speed at equal quality" in capsys.readouterr().out


def test_a_time_budget_lists_what_it_skipped(tmp_path, tiny_dirs):
    common = ["--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--corpus", "sample", "--prompts", "2",
              "--families", "random", "--steps", "2", "--max-len", "32", "--prefix-len", "8", "--device", "cpu"]
    assert quality.main(["sample", *common, "--max-seconds", "0", "--out", str(tmp_path / "s.pt")]) == 0
    samples = torch.load(tmp_path / "s.pt", weights_only=False)
    assert not samples["ids"] and len(samples["skipped"]) == len(quality.TEMPERATURES) * len(quality.FILTERS)


@pytest.mark.parametrize("argv,match", [(["--families", "loudest"], "loudest"), (["--out", "x.txt"], ".pt")])
def test_bad_arguments_are_one_line(argv, match, tmp_path, capsys):
    args = ["sample", "--out", str(tmp_path / "s.pt"), *argv]
    assert quality.main(args) == 2
    assert match in capsys.readouterr().err


def test_merge_lists_a_setting_as_skipped_only_if_no_run_sampled_it():
    real = {"tune": row(60, 4.7), "report": row(61, 4.7)}
    base = {"environment": {}, "prefix_len": 16, "models": {"judge": "weights/judge"}, "latency": {}}
    first = {**base, "rows": {"real": real}, "settings": [], "skipped": ["random@8/t1/plain", "random@16/t1/plain"]}
    second = {**base, "rows": {"real": real, "random@8/t1/plain": {"tune": row(90, 4.6), "report": row(95, 4.6)}},
              "settings": [{"name": "random@8/t1/plain", "family": "random", "steps": 8}], "skipped": []}
    assert quality.merge([first, second])["skipped"] == ["random@16/t1/plain"]


def test_a_tagged_merge_sets_another_models_families_beside_the_first_ones(tmp_path):
    real = {"tune": row(60, 4.7), "report": row(61, 4.7)}
    ar = {"tune": row(30, 4.6), "report": row(31, 4.6)}

    def run(ppl):
        return {"environment": {}, "prefix_len": 16, "models": {"judge": "weights/judge"}, "skipped": [],
                "latency": {"random@8": 0.01, "ar": 0.1},
                "rows": {"real": real, "ar/t1/plain": ar, "random@8/t1/plain": {"tune": row(ppl, 4.6),
                                                                                "report": row(ppl + 1, 4.6)}},
                "settings": [{"name": "random@8/t1/plain", "family": "random", "steps": 8}]}

    (tmp_path / "a.json").write_text(json.dumps(run(90)))
    (tmp_path / "b.json").write_text(json.dumps(run(70)))
    merged = quality.merge([quality.tagged(str(tmp_path / "a.json")), quality.tagged(f"fast={tmp_path / 'b.json'}")])
    assert merged["matched"]["random@8"]["gen_ppl"] == 91 and merged["matched"]["fast:random@8"]["gen_ppl"] == 71
    assert merged["latency"]["fast:random@8"] == 0.01 and "fast:ar" not in merged["latency"]
    assert {s["family"] for s in merged["settings"]} == {"random", "fast:random"}


def test_the_perplexity_interval_holds_the_estimate_and_narrows_with_more_prompts():
    """The bootstrap over prompts: it holds the perplexity of all of them, it is the same on the same seed, it has
    no width when every prompt scores alike, and it narrows as the prompts grow from 16 to 256."""
    from roberta_diffusion import metrics

    tokens = 240
    torch.manual_seed(0)
    sums = torch.distributions.Gamma(20.0, 20.0 / (4.0 * tokens)).sample((256,)).double()  # mean NLL 4 a token

    def width(n):
        low, high = metrics.ppl_interval(sums[:n], tokens)
        return high - low

    low, high = metrics.ppl_interval(sums, tokens)
    assert low < float((sums.sum() / (tokens * len(sums))).exp()) < high
    assert metrics.ppl_interval(sums, tokens) == [low, high]
    assert metrics.ppl_interval(torch.full((16,), 4.0 * tokens, dtype=torch.float64), tokens) == [54.6, 54.6]
    assert width(256) < width(64) < width(16)


def test_a_paired_interval_cancels_what_the_prompts_share():
    """Two sample sets on the same prompts: a set that is the other plus a constant per token has that ratio with no
    spread, although each set alone spreads with its prompts; the same set against itself is 1; other prompts are
    refused."""
    from roberta_diffusion import metrics

    tokens = 240
    torch.manual_seed(1)
    hard = torch.distributions.Gamma(5.0, 5.0 / (4.0 * tokens)).sample((64,)).double()  # prompts differ a lot
    easier = hard - 0.2 * tokens  # 0.2 nats a token better on every prompt
    assert metrics.ratio_interval(easier, hard, tokens) == [0.819, 0.819]  # exp(-0.2)
    assert metrics.ratio_interval(hard, hard, tokens) == [1.0, 1.0]
    alone = metrics.ppl_interval(easier, tokens)
    assert alone[1] / alone[0] > 1.1  # each set's own interval is wide
    with pytest.raises(ValueError, match="the same prompts"):
        metrics.ratio_interval(hard, hard[:10], tokens)


def test_a_corrected_family_draws_one_candidate_at_any_step_count(mlm, causal_lm, tokenizer):
    from roberta_diffusion.canvas import prompt_canvas

    names = {s["name"] for s in quality.grid(["corrected-4", "guided-8"], [64], [1.0], ["k190"])}
    assert names == {"corrected-4@64/t1/k190"}, "guidance is capped at GUIDED_MAX_STEPS, corrections are not"
    setting = quality.grid(["corrected-4"], [2], [1.0], ["k190"])[0]
    canvas = prompt_canvas(tokenizer, ["The cat sat", "A"], None, 16)
    trace = quality.diffuse(mlm, causal_lm, tokenizer, canvas, setting, seed=0)
    assert trace.settings["candidates"] == 1 and trace.settings["corrections"] == 4 and trace.steps == 2 + 2 * 4


def test_every_corrected_family_runs_its_rounds_at_its_share(mlm, causal_lm, tokenizer):
    from roberta_diffusion.canvas import prompt_canvas
    from roberta_diffusion.guided import CORRECTION_SHARE

    corrected = [f for f, knobs in quality.FAMILIES.items() if knobs.get("corrections")]
    assert {quality.FAMILIES[f].get("correction_share", CORRECTION_SHARE) for f in corrected} == {0.1, 0.2}
    canvas = prompt_canvas(tokenizer, ["The cat sat"], None, 16)
    for setting in quality.grid(corrected, [2], [1.0], ["k190"]):
        knobs = quality.FAMILIES[setting["family"]]
        trace = quality.diffuse(mlm, causal_lm, tokenizer, canvas, setting, seed=0)
        assert trace.settings["correction_share"] == knobs.get("correction_share", CORRECTION_SHARE)
        assert trace.settings["policy"] == knobs["policy"], "corrections follow any order, the drawn one too"
        assert trace.steps == 2 + 2 * knobs["corrections"], setting["name"]
