"""`roberta-diffusion eval` writes eval.json with every figure the model cards quote."""

import json
import math
import shlex
from dataclasses import replace

from roberta_diffusion.sampling import Sampling
from workbench import cli, pipeline

from scripts.results_table import results_markdown


def test_eval_writes_heldout_and_sample_scores(tiny_dirs, tmp_path):
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--prompts", "2",
                     "--steps", "2,3", "--policies", "confidence,seed-remask", "--max-blocks", "3",
                     "--elbo-samples", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    for corpus in ("wikipedia-valid", "wikitext2-valid (detokenised)"):
        scores = result["heldout"][corpus]
        assert scores["blocks"] == 3 and scores["ar"]["ppl"] > 1 and scores["mlm_elbo"]["ppl"] > 1
    samples = result["samples"]
    assert set(samples["diffusion"]) == {"confidence@2", "confidence@3", "seed-remask@2", "seed-remask@3"}
    assert "AR baseline itself" in samples["judge"]  # the shipped judge reads another vocabulary than the tiny models
    for entry in (*samples["diffusion"].values(), samples["real"], samples["ar"]):  # comparable at matched entropy
        assert {"gen_ppl", "unigram_entropy", "distinct_2", "rep_4"} <= set(entry)
    base = Sampling(**samples["sampling"])  # stored whole: it round-trips
    assert base == Sampling.readable()  # eval starts where the CLI, the panel and the notebooks do
    for name, entry in samples["diffusion"].items():
        each = Sampling(**entry["sampling"])
        assert f"{each.policy}@{each.steps}" == f"{entry['policy']}@{entry['steps']}" == name
        assert each == replace(base, policy=each.policy, steps=each.steps)
    assert samples["ar"]["sampling"] == {"temperature": base.temperature, "top_k": base.top_k, "top_p": base.top_p}
    card = results_markdown(result)  # the model cards' metrics: the Sampling whole, in JSON
    assert Sampling(**json.loads(card.split("Sampling: `")[1].split("`")[0])) == base
    assert result["command"].startswith("roberta-diffusion eval --mlm ") and "--debug" not in result["command"]
    assert cli.build_parser().parse_args(shlex.split(result["command"])[1:]).out == out  # it runs as written
    for _, value in pipeline._flatten(result):
        assert not isinstance(value, float) or math.isfinite(value)


def test_eval_rejects_unknown_policies(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--policies", "psychic",
                     "--out", str(out)]) == 2
    assert not out.exists()
    assert capsys.readouterr().err.startswith("error:")


def test_the_shipped_judge_scores_the_shipped_vocabulary_only(tokenizer):
    from roberta_diffusion import evaluate, models, paths

    assert evaluate.shipped_judge_for(models.load_tokenizer(paths.SHIPPED_MLM)) == "weights/judge"
    assert evaluate.shipped_judge_for(tokenizer) is None  # the tests' tiny tokenizer: another vocabulary
