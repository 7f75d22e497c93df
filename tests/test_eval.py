"""`roberta-diffusion eval` writes eval.json with every figure the model cards quote."""

import json
import math
import shlex
from dataclasses import replace

import pytest
import torch
from roberta_diffusion import data, evaluate, losses, metrics, models, paths, train
from roberta_diffusion.collator import DiffusionCollator, diffusion_loss
from roberta_diffusion.defaults import PROMPT_LEN
from roberta_diffusion.sampling import Sampling
from workbench import cli, pipeline

from scripts.results_table import results_markdown


def test_eval_writes_heldout_and_sample_scores(tiny_dirs, tmp_path):
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--mlm", str(tiny_dirs / "mlm"), "--ar", str(tiny_dirs / "ar"), "--prompts", "2",
                     "--steps", "2,3", "--policies", "confidence,redraw", "--max-blocks", "3",
                     "--elbo-samples", "1", "--device", "cpu", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    for corpus in ("wikipedia-valid", "wikitext2-valid (detokenised)"):
        scores = result["heldout"][corpus]
        assert scores["blocks"] == 3 and scores["ar"]["ppl"] > 1 and scores["mlm_elbo"]["ppl"] > 1
    samples = result["samples"]
    assert set(samples["diffusion"]) == {"confidence@2", "confidence@3", "redraw@2", "redraw@3"}
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


# -- one bound: training's evaluation and `eval` compute it with one function ---------------------------------
def test_the_training_history_and_eval_report_the_same_bound(tokenizer, tmp_path):
    """A run's best held-out bound (history.json, from HeldOutScorer) is the bound ``eval`` computes for the
    exported weights on the same blocks, batches and one noise sample: one definition, not two that drift."""
    blocks = data.load_blocks(paths.SAMPLE_TEXT, tokenizer, 48)
    cfg = train.TrainConfig(out_dir=str(tmp_path), size="tiny", block_size=48, batch_size=4, max_steps=4,
                            eval_every=2, save_every=4, eval_batches=2, warmup_steps=1, lr=1e-2)
    bounds = train.fit(cfg, blocks, blocks, tokenizer, progress=False)["eval_bound"]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["eval_bound"] == bounds and saved["best_bound"] == min(bounds)
    exported = models.load_mlm(tmp_path / "model", device="cpu")
    scored = blocks[: cfg.eval_batches * cfg.batch_size]
    evaluated = evaluate.heldout_scores(exported, None, tokenizer, scored, prefix_len=PROMPT_LEN,
                                        elbo_samples=1, batch_size=cfg.batch_size)["mlm_elbo"]
    assert evaluated["nll"] == saved["best_bound"] and evaluated["mc_samples"] == 1
    assert evaluated["tokens"] == int((~torch.isin(scored[:, PROMPT_LEN:], torch.tensor(tokenizer.all_special_ids))).sum())
    more = metrics.mlm_elbo(exported, tokenizer, scored, prefix_len=PROMPT_LEN, samples=3, batch_size=4)["nll"]
    assert more != evaluated["nll"] and abs(more - evaluated["nll"]) < 0.5  # other noise, the same bound


def test_the_bound_is_the_elbo_weighted_training_loss_on_the_collators_noise(tokenizer, mlm):
    """``losses.elbo`` is the loss a ``weighting="elbo"`` collator trains on, averaged over its batches and noise
    draws (the dense loss here, another code path than the bound's); a collator without the weights is refused."""
    blocks = data.load_blocks(paths.SAMPLE_TEXT, tokenizer, 40)[:10]
    collator = losses.elbo_collator(tokenizer, prefix_len=8)
    expected = []
    for sample in range(2):
        for start in range(0, len(blocks), 4):
            collator.generator = torch.Generator().manual_seed(7 + sample * len(blocks) + start)
            batch = collator(blocks[start : start + 4])
            with torch.no_grad():
                logits = mlm.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            expected.append(diffusion_loss(logits, batch["labels"], batch["loss_weight"]).item() * len(batch["labels"]))
    assert losses.elbo(mlm, collator, blocks, batch_size=4, samples=2, seed=7) == pytest.approx(sum(expected) / 20)
    assert losses.elbo(mlm, collator, blocks, batch_size=4, seed=7) == pytest.approx(sum(expected[:3]) / 10)
    with pytest.raises(ValueError, match="no bound"):
        losses.elbo(mlm, DiffusionCollator(tokenizer, 8, "stratified"), blocks, batch_size=4)
