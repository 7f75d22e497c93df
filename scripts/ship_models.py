"""Copy a training run's models into weights/ as bf16 safetensors (loaded as fp32 on CPU) and write model cards.

python scripts/ship_models.py runs/full [train logs folder] [mlm|ar ...]   # ship (on the GPU machine)
python scripts/ship_models.py --student runs/distill-32 runs/distill-16 ... [logs folder]   # the last round's
                                               # SDTT student as weights/roberta-diffusion-small-fast
python scripts/ship_models.py --cards          # rewrite the cards and docs/data_constrained.png from their folders

A card is built only from files in its folder (train_config.json, history.json, provenance.json, eval.json), so
it can be rewritten after `roberta-diffusion eval` without the run.
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import torch
from results_table import results_markdown  # beside this script
from roberta_diffusion import curves, paths
from roberta_diffusion.export import export_model, write_model_card
from roberta_diffusion.history import History
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, model_summary
from roberta_diffusion.speed import trained_on

# name -> (folder in weights/, loader, the run's objective folder)
SHIP = {"mlm": (paths.SHIPPED_MLM, load_mlm, "mlm"), "ar": (paths.SHIPPED_AR, load_causal_lm, "ar"),
        "judge": (paths.SHIPPED_JUDGE, load_causal_lm, "ar"), "fast": (paths.SHIPPED_FAST, load_mlm, "mlm")}
MLM_ONLY = {"arch", "locality_init", "plateau_escape", "escape_lr", "escape_steps", "ratio_mode", "n_levels",
            "weighting", "prefix_len", "max_prefix_len", "span_prob", "init"}
SUMMARY = {
    "mlm": "The workbook's offline diffusion model: a `RobertaForMaskedLM` trained with `DiffusionCollator` to denoise "
           "256-token canvases, with a pinned prompt of 1 to 64 tokens drawn per row and a pinned span in 10 % of rows, "
           "so prompts of any length and infilling are in distribution. Four runs on the Wikipedia extract made it: "
           "`plateau_escape_init` for 65.5M tokens (about 5 epochs), then profile `converge` for 64 epochs (lr 1e-3), "
           "then `converge` again at lr 8e-4 for 66 epochs (to its best held-out point; it diverged later), then "
           "(this run) the winner of the recipe ablations (docs/experiments.md): 24 more epochs at lr 3e-4 with "
           "weight decay 0.1. The exported weights are the average of the weights (EMA, 0.999) at the evaluation with "
           "the best bound on Wikipedia valid. The curve of all four runs is in history.json (`earlier` holds the runs "
           "before this one). Online, fine-tune roberta-base instead with `--set 'init=\"roberta-base\"'`.",
    "ar": "The autoregressive baseline: a GPT-2 of the diffusion model's depth and width, trained from scratch on the "
          "same blocks, tokenizer, optimiser and regularisation (profile `converge`) for 30 epochs, past the point where its "
          "held-out loss stops falling (about 20 epochs); the exported weights are those with the best held-out loss.",
    "judge": "The independent judge: a third GPT-2, wider and deeper than the shipped pair, trained from scratch with its "
             "own seed on the same Wikipedia blocks and tokenizer (profile `judge`). It shares no weights with either "
             "shipped model, so it scores the samples of both (generative perplexity, `eval` and `benchmarks.frontier`) "
             "without favouring the twin's own samples. The exported weights are those with the best held-out loss.",
    "fast": "The few-step diffusion model: the shipped masked LM distilled through time (SDTT, `distill.py`) in four "
            "rounds, each student learning to take in one step what its teacher takes in two (64 -> 32 -> 16 -> 8 -> 4 "
            "steps), each round's student teaching the next. Judged at matched entropy (docs/results.md) its samples at 8 "
            "and 16 steps beat the shipped model's at the same steps; its held-out bound is worse (a student trades "
            "likelihood at one step for quality at few), so it ships beside the shipped model, not instead. The "
            "exported weights are the last round's averaged (EMA) weights; history.json holds every round.",
}
USAGE = {
    "mlm": 'from roberta_diffusion import models, generate_diffusion\n'
           'mlm, tok = models.load_mlm("weights/roberta-diffusion-small"), models.load_tokenizer("weights/roberta-diffusion-small")\n'
           'print(generate_diffusion(mlm, tok, "The history of the city", steps=10).texts[0])',
    "ar": 'from roberta_diffusion import models, generate_ar\n'
          'ar, tok = models.load_causal_lm("weights/gpt2-small-baseline"), models.load_tokenizer("weights/gpt2-small-baseline")\n'
          'print(generate_ar(ar, tok, "The history of the city").texts[0])',
    "fast": 'from roberta_diffusion import models, generate_diffusion\n'
            'mlm, tok = models.load_mlm("weights/roberta-diffusion-small-fast"), models.load_tokenizer("weights/roberta-diffusion-small-fast")\n'
            'print(generate_diffusion(mlm, tok, "The history of the city", steps=16, top_k=190, top_p=1.0).texts[0])',
    "judge": 'from roberta_diffusion import metrics, models\n'
             'judge = models.load_causal_lm("weights/judge")\n'
             'print(metrics.generative_ppl(judge, ids, prefix_len=16))  # ids [N, L] in the shared tokenizer',
}


def ship(run: Path, objective: str, logs: Path | None) -> None:
    target, loader, folder = SHIP[objective]
    source = run / folder
    model = loader(source / "model", device="cpu")
    config = portable(json.loads((source / "config.json").read_text()))
    history = dataclasses.replace(History.load(source / "history.json"), **lineage(config, target))  # before the export
    export_model(target, model, load_tokenizer(source / "model"), dtype=torch.bfloat16, max_shard_size="15MB")
    history.save(target / "history.json")
    (target / "train_config.json").write_text(json.dumps(config, indent=2))
    if logs and (logs / f"train_{objective}.log").exists():
        (target / "training_log.txt").write_text((logs / f"train_{objective}.log").read_text()[-200_000:])
    provenance = {"training hardware": trained_on(run), "run": paths.portable(str(run.resolve()))}
    if (run / "command.txt").exists():  # the command that trained it, for the card
        provenance["command"] = (run / "command.txt").read_text().strip()
    (target / "provenance.json").write_text(json.dumps(provenance))
    write_card(objective)
    print(f"shipped {objective} -> {target}")


def portable(config: dict) -> dict:
    """A run's config with its paths relative to the project root, not the training machine's."""
    return {k: paths.portable(v) if isinstance(v, str) else v for k, v in config.items()}


def lineage(config: dict, target: Path) -> dict:
    """For a run that continued the model shipped in ``target``: its path so far (``curves.continued``), which
    ``curves.load_curve`` draws as one curve."""
    init = config.get("init")
    if not init or Path(paths.resolve(init)).resolve() != target.resolve():
        return {}
    return curves.continued(History.load(target / "history.json"),
                            json.loads((target / "train_config.json").read_text()))


def ship_student(rounds: list[Path], logs: Path | None) -> None:
    """The last of ``rounds`` (SDTT runs, each distilling the one before) as ``weights/roberta-diffusion-small-fast``;
    history.json is that round's with every round's summary under ``rounds``."""
    target, source = paths.SHIPPED_FAST, rounds[-1] / "mlm"
    config = portable(json.loads((source / "config.json").read_text()))
    summary = []
    for run in rounds:
        one = History.load(run / "mlm" / "history.json")
        own = json.loads((run / "mlm" / "config.json").read_text())
        summary.append({"run": run.name, "teacher": paths.portable(own["teacher"]), "steps": own["distill_steps"],
                        "tokens": one.tokens, "seconds": round(one.seconds, 1), "eval_step": one.eval_step,
                        "eval_bound": one.eval_bound, "final_train_kl": one.train_loss[-1]})
    history = dataclasses.replace(History.load(source / "history.json"), rounds=summary)
    export_model(target, load_mlm(source / "model", device="cpu"), load_tokenizer(source / "model"),
                 dtype=torch.bfloat16, max_shard_size="15MB")
    (target / "token_counts.json").write_text((source / "model" / "token_counts.json").read_text())
    history.save(target / "history.json")
    (target / "train_config.json").write_text(json.dumps(config, indent=2))
    if logs:
        text = "".join((logs / f"distill-{r['steps']}.log").read_text()[-20_000:] for r in summary
                       if (logs / f"distill-{r['steps']}.log").exists())
        (target / "training_log.txt").write_text(text)
    command = " && ".join(f"PROFILE=distill ROUNDS={r['steps']} TEACHER={r['teacher']} bash scripts/gpu_train.sh distill"
                            for r in summary)
    (target / "provenance.json").write_text(json.dumps({"training hardware": trained_on(rounds[-1]), "command": command,
                                                        "run": paths.portable(str(rounds[-1].resolve()))}))
    write_card("fast")
    print(f"shipped the {summary[-1]['steps']}-step student -> {target}")


def student_facts(history: History, config: dict) -> dict:
    rounds = history.rounds
    return {
        "objective": "self-distillation through time (distill.py): KL from the teacher's two ancestral half-steps to "
                     f"the student's one, on the student's grid of N steps, prompts of {config['prefix_len']} tokens; "
                     "rounds " + " -> ".join(f"{2 * r['steps']} to {r['steps']}" for r in rounds),
        "tokens seen": f"{sum(r['tokens'] for r in rounds) / 1e6:.1f}M over {len(rounds)} rounds of "
                       f"{config['max_steps']} steps of {config['batch_size']} x {config['block_size']}",
        "training compute (6 N D)": f"{6 * history.parameters * sum(r['tokens'] for r in rounds):.2e} FLOPs in the "
                                    "students' updates (the teachers' forward passes not counted), after the shipped "
                                    "masked LM's own training",
        "training wall time": f"{sum(r['seconds'] for r in rounds):.0f} s over the rounds",
        "exported weights": "the last round's last weights, averaged (EMA 0.999): a student's held-out bound is not "
                            "what it optimises, so none is picked by it; the rounds' bounds (collator noise "
                            f"{config['ratio_mode']}, not comparable with the teacher's card) are in history.json",
    }


def write_card(objective: str) -> None:
    target, loader, _ = SHIP[objective]
    model = loader(target, device="cpu")
    history = History.load(target / "history.json")
    config = json.loads((target / "train_config.json").read_text())
    provenance = json.loads((target / "provenance.json").read_text())
    block_tokens = history.train_blocks * config["block_size"]
    prior = history.prior_tokens
    path = curves.continued(history, config)  # what a run continuing these weights would count before it
    spent = path["prior_tokens"] + path["discarded_tokens"]  # with the training after them and discarded branches
    hyper = {k: v for k, v in config.items() if k != "out_dir" and (objective in ("mlm", "fast") or k not in MLM_ONLY)}
    facts = {
        "class": type(model).__name__,
        "architecture": model_summary(model),
        "objective": f"masked diffusion: DiffusionCollator (ratio mode {config['ratio_mode']}, weighting "
                     f"{config['weighting']}), pinned prompts of {config['prefix_len']} to {config['max_prefix_len']} "
                     f"tokens, pinned spans in {config['span_prob']:.0%} of rows" if objective == "mlm"
                     else "next-token prediction on the same blocks",
        "tokenizer": "byte-level BPE, 16,384 tokens, RoBERTa special tokens (weights/tokenizer, scripts/train_tokenizer.py)",
        "data": f"../shared/data/wikipedia-2018-extract/train.txt.gz (English Wikipedia, 2018 extract, cleaned "
                f"2026-11-29): {history.train_blocks * config['block_size'] / 1e6:.1f}M tokens in "
                f"{history.train_blocks:,} blocks of {config['block_size']}",
        "licence of the data": "CC BY-SA (Wikipedia text)",
        "tokens seen": f"{history.tokens / 1e6:.1f}M in this training ({history.step[-1]} steps of "
                       f"{config['batch_size']} x {config['block_size']}, {history.tokens / block_tokens:.1f} epochs)"
                       + (f", after {prior / 1e6:.1f}M before it" if prior else ""),
        "training compute (6 N D)": f"{6 * history.parameters * path['prior_tokens']:.2e} FLOPs to the exported "
                                    f"weights, {6 * history.parameters * spent:.2e} "
                                    "on this model's path (with the training after them and the branches not carried forward; other runs, "
                                    "e.g. ablations, not counted)",
        "training hardware": f"{history.world_size} x {provenance['training hardware']}"
                             + (" (DDP)" if history.world_size > 1 else ""),
        "training wall time": f"{history.seconds:.0f} s ({history.tokens_per_second / 1e6:.2f}M tokens/s)",
        "exported weights": f"step {history.best_step} of {history.step[-1]}: the best held-out bound, "
                            f"{history.best_bound:.4f} nats/token (perplexity {math.exp(history.best_bound):.1f}) on "
                            "Wikipedia valid",
        "hyperparameters": json.dumps(hyper),
        "stored as": "bfloat16 safetensors shards (< 15 MB each); load_mlm / load_causal_lm give float32",
        "recipe": f"`roberta-diffusion finetune --profile {'judge' if objective == 'judge' else 'converge'}` per model (notebook 02's calls; on lent GPUs "
                  "`scripts/gpu_train.sh` drives it), then `scripts/ship_models.py`; the training log is "
                  "training_log.txt, the held-out curve history.json"
                  + (f"; this run: `{provenance['command']}`" if provenance.get("command") else ""),
    }
    if objective == "fast":
        facts |= student_facts(history, config)
        facts["recipe"] = f"`{provenance['command']}` on a lent GPU, then `scripts/ship_models.py --student`; the " \
                          "rounds' logs are training_log.txt"
    eval_path = target / "eval.json"
    metrics = results_markdown(json.loads(eval_path.read_text())) if eval_path.exists() else None
    titles = {"mlm": "Diffusion masked LM, small", "ar": "GPT-2 baseline, small", "judge": "Independent judge (GPT-2)",
              "fast": "Diffusion masked LM, small, distilled for few steps"}
    title = titles[objective] + f" ({type(model).__name__})"
    write_model_card(target, title, SUMMARY[objective], facts, metrics=metrics, usage=USAGE[objective])


if __name__ == "__main__":
    if sys.argv[1:] == ["--cards"]:
        for objective in (name for name in SHIP if SHIP[name][0].exists()):
            target = SHIP[objective][0]
            config = portable(json.loads((target / "train_config.json").read_text()))
            (target / "train_config.json").write_text(json.dumps(config, indent=2))
            write_card(objective)
            print(f"wrote {SHIP[objective][0] / 'README.md'}")
        figure = paths.ROOT / "docs" / "data_constrained.png"
        curves.plot_data_constrained([curves.load_curve(paths.SHIPPED_MLM, "masked LM (diffusion RoBERTa)"),
                                      curves.load_curve(paths.SHIPPED_AR, "GPT-2 twin")], figure,
                                     title="Held-out perplexity on Wikipedia valid: the masked LM keeps gaining from "
                                           "repeated data long after GPT-2 stops")
        print(f"wrote {figure}")
        sys.exit(0)
    if sys.argv[1] == "--student":
        folders = [Path(a) for a in sys.argv[2:]]
        logs = folders.pop() if not (folders[-1] / "mlm").exists() else None
        ship_student(folders, logs)
        sys.exit(0)
    run = Path(sys.argv[1])
    logs = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    for objective in sys.argv[3:] or ["mlm", "ar"]:  # the pair; judge and fast are shipped by name
        ship(run, objective, logs)
