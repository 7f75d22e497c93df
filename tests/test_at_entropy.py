"""Judge perplexity at exactly the real text's entropy: the temperature found on the tuning prompts, the numbers read
from the report prompts at that temperature."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import at_entropy


def row(ppl, entropy):
    return {"gen_ppl": ppl, "unigram_entropy": entropy}


def sweep(name, temperatures, entropy, ppl, shift=0.0):
    """Rows of one filter whose entropy and log-perplexity are straight lines in the temperature (the report set's
    entropy shifted by ``shift``): what linear interpolation must give back exactly."""
    group, filter_name = name.split("/")  # named as quality names them: group/t<temperature>/filter
    return {f"{group}/t{t:g}/{filter_name}": {"tune": row(ppl(t), entropy(t)), "report": row(2 * ppl(t), entropy(t) + shift)}
            for t in temperatures}


def result_with(rows, groups):
    settings = [{"name": n, "family": g.split("@")[0], "steps": int(g.split("@")[1])}
                for g in groups for n in rows if n.startswith(g + "/")]
    return {"rows": {"real": {"tune": row(40.0, 4.7), "report": row(50.0, 4.68)}, **rows}, "settings": settings}


def test_the_crossing_is_interpolated_on_the_tuning_set_and_read_on_the_report_set():
    line = dict(entropy=lambda t: 4.0 + t * 0.6, ppl=lambda t: math.exp(2.0 + 2.0 * t))
    rows = sweep("random@16/k190", (0.8, 1.0, 1.2), **line, shift=0.01)
    found = at_entropy.at_real_entropy(result_with(rows, ["random@16"]))["random@16"]
    t = (4.7 - 4.0) / 0.6  # where the tuning entropy is the real text's
    assert found["temperature"] == pytest.approx(t, abs=1e-3) and found["filter"] == "k190"
    assert found["between"] == ["random@16/t1/k190", "random@16/t1.2/k190"]
    assert found["gen_ppl"] == pytest.approx(2 * math.exp(2.0 + 2.0 * t), rel=1e-4)  # the report set's
    assert found["unigram_entropy"] == pytest.approx(4.71, abs=1e-4)
    assert found["x_real"] == pytest.approx(found["gen_ppl"] / 50.0, abs=1e-3)


def test_the_filter_lowest_on_the_tuning_set_wins_and_an_unbracketed_sweep_is_none():
    rows = {**sweep("random@8/plain", (0.8, 1.0), entropy=lambda t: 4.2 + t * 0.6, ppl=lambda t: 100 + 0 * t),
            **sweep("random@8/k190", (0.8, 1.0), entropy=lambda t: 4.3 + t * 0.5, ppl=lambda t: 60 + 0 * t),
            **sweep("random@64/k190", (0.8, 1.0), entropy=lambda t: 3.0 + t, ppl=lambda t: 30 + 0 * t)}
    found = at_entropy.at_real_entropy(result_with(rows, ["random@8", "random@64"]))
    assert found["random@8"]["filter"] == "k190" and found["random@8"]["gen_ppl"] == pytest.approx(120)
    assert found["random@64"] is None  # 3.8-4.0: never reaches the real text's 4.7, and nothing is extrapolated


def test_ar_rows_are_a_group_of_their_own():
    rows = sweep("ar/k190", (1.0, 1.1), entropy=lambda t: 4.55 + 2 * (t - 1.0), ppl=lambda t: 30 * t)
    found = at_entropy.at_real_entropy(result_with(rows, []))["ar"]
    assert found["temperature"] == pytest.approx(1.075, abs=1e-6) and found["filter"] == "k190"


def test_the_command_writes_one_table_per_results_file(tmp_path, capsys):
    rows = sweep("random@16/plain", (0.8, 1.0), entropy=lambda t: 4.2 + t * 0.6, ppl=lambda t: 50 * t)
    source = tmp_path / "q.json"
    source.write_text(json.dumps(result_with(rows, ["random@16"])))
    out = tmp_path / "at.json"
    assert at_entropy.main([str(source), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written[str(source)]["random@16"]["filter"] == "plain" and "random@16" in capsys.readouterr().out
