"""benchmarks.ablate: named recipe variants trained one after another, compared at equal training tokens."""

import json

import torch
from roberta_diffusion import paths
from roberta_diffusion.speed import trained_on

from benchmarks import ablate, scaling


def test_variants_file_parses_and_names_every_setting(tmp_path):
    listed = tmp_path / "v.txt"
    listed.write_text("# a comment\nbase lr=0.001  # trailing\n\nwide lr=0.001 dropout=0.0\n")
    assert ablate.read_variants(listed) == {"base": ["lr=0.001"], "wide": ["lr=0.001", "dropout=0.0"]}
    shipped = ablate.read_variants()
    assert "base" in shipped and all(all("=" in s for s in v) for v in shipped.values())


def test_each_gpu_takes_every_nth_variant_in_order():
    assert ablate.queues(["a", "b", "c", "d", "e"], 2) == [["a", "c", "e"], ["b", "d"]]
    assert ablate.queues(["a", "b"], 0) == [["a", "b"]]  # the CPU: one after another


def _row(name, steps, ppl, *settings, batch=4):
    return {"name": name, "settings": list(settings), "eval_step": steps, "ppl": ppl, "global_batch": batch,
            "block": 8}


def test_variants_are_ranked_at_the_tokens_all_of_them_reached():
    """A run that went further down its rate decay looks better at its end for that alone: the ranking compares
    every run at the largest token count all of them were evaluated at."""
    rows = [_row("base", [1, 2, 3], [60, 50, 49], "lr=0.0003"),
            _row("longer", [1, 2, 3, 4], [60, 51, 50, 40], "lr=0.0003", "dropout=0.0"),  # best only by running on
            _row("wide", [1], [55], "lr=0.0003", "batch_size=8", batch=8),  # step 1 at batch 8 = step 2 at batch 4
            {"name": "broken", "settings": [], "error": "its training failed"}]
    result = ablate.rank(rows, "base", margin=0.0)
    assert result["common_tokens"] == 2 * 4 * 8
    assert [r["name"] for r in result["rows"]] == ["base", "longer", "wide", "broken"]
    assert [r["ppl_at_common"] for r in result["rows"][:3]] == [50, 51, 55]
    assert result["pick"] == ["lr=0.0003"]  # nothing beat base at equal tokens


def test_pick_adds_the_winners_changes_to_base_and_skips_clashes_small_gains_and_fresh_starts():
    rows = [_row("fresh", [1], [40], "init=null", "lr=0.001"), _row("low-lr", [1], [45], "lr=0.0001"),
            _row("lr-and-batch", [1], [46], "lr=0.0002", "batch_size=512"),
            _row("no-dropout", [1], [47], "lr=0.0003", "dropout=0.0"),
            _row("tiny-gain", [1], [49.9], "lr=0.0003", "weight_decay=0.1"), _row("base", [1], [50], "lr=0.0003")]
    assert ablate.rank(rows, "base", margin=0.01)["pick"] == ["lr=0.0001", "dropout=0.0"]
    assert ablate.rank(rows, "missing")["pick"] == []


def test_ablate_trains_each_variant_and_reports_a_failed_one(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUNS", tmp_path / "runs")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    variants = tmp_path / "v.txt"
    variants.write_text("base lr=0.0003\ndropout-0 lr=0.0003 dropout=0.0\nbroken lr=0.0003 size=huge\n")
    out = tmp_path / "ablations.json"
    common = ["--gpus", "0", "--profile", "smoke", "--variants", str(variants), "--out", str(out), "--set",
              "max_steps=4", "eval_every=2", "batch_size=4", "max_train_lines=200", "ema_decay=0.9"]
    assert ablate.main(["base", "dropout-0", "broken", *common]) == 1  # the failed variant fails the command
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert "error" in rows["broken"] and (paths.RUNS / "logs" / "ablate-broken.log").exists()
    assert result["common_tokens"] == 4 * 4 * 128
    for name in ("base", "dropout-0"):
        row = rows[name]
        assert row["eval_step"] == [2, 4] and len(row["ppl_raw"]) == 2 and row["tokens"] == 4 * 4 * 128
        assert row["ppl_at_common"] == row["ppl"][-1] and row["best_ppl"] == min(row["ppl"])
        assert "finetune --profile smoke" in (paths.RUNS / f"ablate-{name}" / "command.txt").read_text()
    assert rows["dropout-0"]["settings"] == ["lr=0.0003", "dropout=0.0"]


def test_an_unknown_variant_is_one_error_line(capsys):
    assert ablate.main(["no-such-variant", "--summarise-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no-such-variant" in err[0]


def test_a_run_summarised_on_another_machine_keeps_the_gpu_it_trained_on(tmp_path):
    """gpu_train.sh writes device.txt beside each ablation run: its MFU is against that GPU's peak, not the
    summarising machine's (a CPU has none)."""
    run = tmp_path / "ablate-x" / "mlm"
    run.mkdir(parents=True)
    here = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    assert trained_on(run.parent) == here
    (run.parent / "device.txt").write_text("NVIDIA H200, 143771 MiB, 580.159.04\n")
    assert trained_on(run.parent) == "NVIDIA H200"
    assert scaling.spec_peak_tflops(trained_on(run.parent))
