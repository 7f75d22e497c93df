"""Copy a training run's models into weights/ as bf16 safetensors (loaded as fp32 on CPU) and write model cards.

python scripts/ship_models.py runs/full [train logs folder] [mlm|ar ...]   # ship (on the GPU machine)
python scripts/ship_models.py --cards                                      # rewrite both cards from their folders

A card is built only from files in its folder (train_config.json, history.json, provenance.json, eval.json), so
it can be rewritten after `roberta-diffusion eval` without the run.
"""

import json
import sys
from pathlib import Path

import torch
from roberta_diffusion import paths
from roberta_diffusion.cards import results_markdown, write_model_card
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, model_summary
from roberta_diffusion.train import export_model

SHIP = {"mlm": (paths.SHIPPED_MLM, load_mlm), "ar": (paths.SHIPPED_AR, load_causal_lm)}
MLM_ONLY = {"arch", "locality_init", "plateau_escape", "escape_lr", "escape_steps", "ratio_mode", "n_levels",
            "weighting", "prefix_len"}
SUMMARY = {
    "mlm": "A diffusion masked LM with ModernBERT's architecture (rotary positions), trained from scratch with "
           "`DiffusionCollator` to denoise 256-token canvases (first 16 tokens never masked). Shipped until session 5 "
           "(reports/2026-11-29-h200-session5/modernbert-shipped-until-now/), when a `RobertaForMaskedLM` learnt to "
           "within 27 % of its ELBO perplexity. Any masked LM works with the sampler.",
    "mlm-roberta": "The workbook's offline diffusion model: a `RobertaForMaskedLM` trained from scratch with "
                   "`DiffusionCollator` to denoise 256-token canvases (first 16 tokens never masked). From a plain "
                   "start RoBERTa stays at the unigram loss (every position's hidden state collapses onto one "
                   "vector), so it starts with `plateau_escape_init` and a two-phase rate: 2e-4 until step 1,000, "
                   "then 1.5e-3 (reports/2026-11-29-h200-session4/ and -session5/). The rotary ModernBERT, on the "
                   "same data and number of tokens, reaches a lower ELBO perplexity (133 against 168). Online, fine-tune roberta-base "
                   "instead with `--set 'init=\"roberta-base\"'`.",
    "ar": "The autoregressive baseline: a GPT-2 of the diffusion model's depth and width, trained from scratch on "
          "the same blocks, tokenizer and number of tokens, so that the comparison is between methods, not data.",
}
# how each kind of shipped model was made: (script, how many trainings shared the GPU, extra settings)
RECIPE = {
    "mlm": ("gpu_ship_v2.sh", "four trainings", ""),
    "mlm-roberta": ("gpu_ship_v5.sh", "several trainings", ' with `arch="roberta" plateau_escape=true` and a two-phase rate (`escape_lr`, `escape_steps`)'),
    "ar": ("gpu_ship_v2.sh", "four trainings", ""),
}
USAGE = {
    "mlm": 'from roberta_diffusion import models, generate_diffusion\n'
           'mlm, tok = models.load_mlm("weights/roberta-diffusion-small"), models.load_tokenizer("weights/roberta-diffusion-small")\n'
           'print(generate_diffusion(mlm, tok, "The history of the city", steps=10).texts[0])',
    "ar": 'from roberta_diffusion import models, generate_ar\n'
          'ar, tok = models.load_causal_lm("weights/gpt2-small-baseline"), models.load_tokenizer("weights/gpt2-small-baseline")\n'
          'print(generate_ar(ar, tok, "The history of the city").texts[0])',
}


def ship(run: Path, objective: str, logs: Path | None) -> None:
    target, loader = SHIP[objective]
    source = run / objective
    model = loader(source / "model", device="cpu")
    export_model(target, model, load_tokenizer(source / "model"), dtype=torch.bfloat16, max_shard_size="15MB")
    (target / "history.json").write_text((source / "history.json").read_text())
    config = json.loads((source / "config.json").read_text())  # paths relative to the project root, not this machine's
    config = {k: paths.portable(v) if isinstance(v, str) else v for k, v in config.items()}
    (target / "train_config.json").write_text(json.dumps(config, indent=2))
    if logs and (logs / f"train_{objective}.log").exists():
        (target / "training_log.txt").write_text((logs / f"train_{objective}.log").read_text()[-200_000:])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    (target / "provenance.json").write_text(json.dumps({"training hardware": device, "run": paths.portable(str(run.resolve()))}))
    write_card(objective)
    print(f"shipped {objective} -> {target}")


def write_card(objective: str) -> None:
    target, loader = SHIP[objective]
    model = loader(target, device="cpu")
    history = json.loads((target / "history.json").read_text())
    config = json.loads((target / "train_config.json").read_text())
    provenance = json.loads((target / "provenance.json").read_text())
    kind = "mlm-roberta" if type(model).__name__ == "RobertaForMaskedLM" else objective
    script, sharing, settings = RECIPE[kind]
    hyper = {k: v for k, v in config.items() if k != "out_dir" and (objective == "mlm" or k not in MLM_ONLY)}
    facts = {
        "class": type(model).__name__,
        "architecture": model_summary(model),
        "objective": f"masked diffusion: DiffusionCollator (ratio mode {config['ratio_mode']}, weighting {config['weighting']}), "
                     "prefix 16 never masked" if objective == "mlm" else "next-token prediction on the same blocks",
        "tokenizer": "byte-level BPE, 16,384 tokens, RoBERTa special tokens (weights/tokenizer, scripts/train_tokenizer.py)",
        "data": "../shared/data/wikipedia-2018-extract/train.txt.gz (English Wikipedia, 2018 extract): 12.9M tokens "
                "in 50,418 blocks of 256",
        "licence of the data": "CC BY-SA (Wikipedia text)",
        "tokens seen": f"{history['tokens'] / 1e6:.1f}M ({history['step'][-1]} steps of {config['batch_size']} x "
                       f"{config['block_size']}, about {history['tokens'] / 12.91e6:.1f} passes)",
        "training hardware": provenance["training hardware"],
        "training wall time": f"{history['seconds']:.0f} s ({history['tokens_per_second'] / 1e3:.0f}k tokens/s, "
                              f"{sharing} sharing the GPU)",
        "final held-out loss (Wikipedia valid, training objective)": history["eval_loss"][-1],
        "hyperparameters": json.dumps(hyper),
        "stored as": "bfloat16 safetensors shards (< 15 MB each); load_mlm / load_causal_lm give float32",
        "recipe": f"`bash scripts/{script}` on a GPU: `roberta-diffusion finetune --profile full`{settings} "
                  "(notebooks/02_finetune.py) per model, then `scripts/ship_models.py`; record in training_log.txt",
    }
    eval_path = target / "eval.json"
    metrics = results_markdown(json.loads(eval_path.read_text())) if eval_path.exists() else None
    title = ("Diffusion masked LM, small" if objective == "mlm" else "GPT-2 baseline, small") + f" ({type(model).__name__})"
    write_model_card(target, title, SUMMARY[kind], facts, metrics=metrics, usage=USAGE[objective])


if __name__ == "__main__":
    if sys.argv[1:] == ["--cards"]:
        for objective in SHIP:
            write_card(objective)
            print(f"wrote {SHIP[objective][0] / 'README.md'}")
        sys.exit(0)
    run = Path(sys.argv[1])
    logs = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    for objective in sys.argv[3:] or list(SHIP):
        ship(run, objective, logs)
