"""The benchmark harness runs on the CPU with small sizes and writes complete, finite JSON."""

import json
import math

from roberta_diffusion import bench, cli


def test_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--size", "tiny", "--batch-sizes", "1,2", "--steps", "2,4", "--max-len", "32",
                     "--repeats", "1", "--train-batch", "2", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {(r["batch"], r["steps"]) for r in result["diffusion"]} == {(1, 2), (1, 4), (2, 2), (2, 4)}
    assert {(r["batch"], r["impl"]) for r in result["ar"]} == {(b, i) for b in (1, 2) for i in ("kv-cache loop", "hf generate")}
    numbers = [v for r in result["diffusion"] + result["ar"] for v in r.values() if isinstance(v, float)]
    numbers += [v for v in result["train"].values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) and v > 0 for v in numbers)
    assert "MFU" in capsys.readouterr().out


def test_bench_rejects_bad_sizes(tmp_path, capsys):
    assert cli.main(["bench", "--steps", "0", "--out", str(tmp_path / "b.json")]) == 2
    assert not (tmp_path / "b.json").exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_flop_count_grows_with_sequence_length(mlm):
    assert bench.training_flops_per_token(mlm, 512) > bench.training_flops_per_token(mlm, 64) > 6 * 1000
