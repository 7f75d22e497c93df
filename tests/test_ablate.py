"""benchmarks.ablate: named recipe variants trained one after another, ranked by their held-out bound."""

import json

from roberta_diffusion import paths

from benchmarks import ablate


def test_variants_file_parses_and_names_every_setting(tmp_path):
    listed = tmp_path / "v.txt"
    listed.write_text("# a comment\nbase lr=0.001  # trailing\n\nwide lr=0.001 dropout=0.0\n")
    assert ablate.read_variants(listed) == {"base": ["lr=0.001"], "wide": ["lr=0.001", "dropout=0.0"]}
    shipped = ablate.read_variants()
    assert "base" in shipped and all(all("=" in s for s in v) for v in shipped.values())


def test_pick_adds_the_winners_changes_to_base_and_skips_clashes_and_fresh_starts():
    row = lambda name, ppl, *settings: {"name": name, "best_ppl": ppl, "settings": list(settings)}  # noqa: E731
    rows = [row("fresh", 40, "init=null", "lr=0.001"), row("low-lr", 45, "lr=0.0001"),
            row("lr-and-batch", 46, "lr=0.0002", "batch_size=512"), row("no-dropout", 47, "lr=0.0003", "dropout=0.0"),
            row("base", 50, "lr=0.0003"), row("worse", 55, "lr=0.0003", "weight_decay=0.1")]
    assert ablate.pick(rows, "base") == ["lr=0.0001", "dropout=0.0"]
    assert ablate.pick(rows, "missing") == []


def test_ablate_trains_each_variant_and_ranks_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "ablations.json"
    status = ablate.main(["base", "dropout-0", "--gpus", "0", "--profile", "smoke", "--set", "max_steps=4",
                          "eval_every=2", "batch_size=4", "max_train_lines=200", "ema_decay=0.9", "--out", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"base", "dropout-0"}
    assert [r["best_ppl"] for r in result["rows"]] == sorted(r["best_ppl"] for r in result["rows"])
    for row in rows.values():
        assert row["eval_step"] == [2, 4] and len(row["ppl_raw"]) == 2 and row["tokens"] == 4 * 4 * 128
        assert row["best_ppl"] == min(row["ppl"])
    assert rows["dropout-0"]["settings"] == ["lr=0.0003", "dropout=0.0"]
    assert (paths.RUNS / "logs" / "ablate-base.log").exists()


def test_an_unknown_variant_is_one_error_line(capsys):
    assert ablate.main(["no-such-variant", "--summarise-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no-such-variant" in err[0]
