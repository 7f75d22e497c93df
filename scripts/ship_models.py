"""Copy a training run's models into weights/ as bf16 safetensors (loaded as fp32 on CPU) with model cards.

python scripts/ship_models.py runs/full [train logs folder] [mlm|ar ...]
"""

import json
import sys
from pathlib import Path

import torch
from roberta_diffusion import paths
from roberta_diffusion.cards import write_model_card
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, model_summary
from roberta_diffusion.train import export_model

SHIP = {"mlm": (paths.SHIPPED_MLM, load_mlm, "Diffusion masked LM (small, {cls})"),
        "ar": (paths.SHIPPED_AR, load_causal_lm, "GPT-2 baseline (small, same data, {cls})")}

if __name__ == "__main__":
    run = Path(sys.argv[1])
    logs = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    which = sys.argv[3:] or list(SHIP)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for objective in which:
        target, loader, title = SHIP[objective]
        source = run / objective
        model = loader(source / "model", device="cpu")
        tokenizer = load_tokenizer(source / "model")
        export_model(target, model, tokenizer, dtype=torch.bfloat16, max_shard_size="15MB")
        history = json.loads((source / "history.json").read_text())
        config = json.loads((source / "config.json").read_text())
        (target / "history.json").write_text(json.dumps(history))
        (target / "train_config.json").write_text(json.dumps(config, indent=2))
        if logs and (logs / f"train_{objective}.log").exists():
            (target / "training_log.txt").write_text((logs / f"train_{objective}.log").read_text()[-200_000:])
        facts = {
            "architecture": model_summary(model),
            "objective": f"masked diffusion: DiffusionCollator (ratio mode {config['ratio_mode']}, weighting {config['weighting']}), prefix 16 never masked"
            if objective == "mlm" else "next-token prediction on the same blocks",
            "tokenizer": "byte-level BPE, 16,384 tokens, RoBERTa special tokens (weights/tokenizer, trained by scripts/train_tokenizer.py)",
            "data": "../shared/data/wikipedia-2018-extract/train.txt.gz (English Wikipedia, 2018 extract), blocks of 256 tokens",
            "licence of the data": "CC BY-SA (Wikipedia text)",
            "tokens seen": f"{history['tokens'] / 1e6:.1f}M in {history['step'][-1]} steps of {config['batch_size']} x {config['block_size']}",
            "training hardware": device,
            "training wall time (s)": round(history["seconds"], 1),
            "final held-out loss (wikipedia valid)": history["eval_loss"][-1],
            "hyperparameters": json.dumps({k: v for k, v in config.items() if k != "out_dir"}),
            "class": type(model).__name__,
            "stored as": "bfloat16 safetensors shards (< 15 MB each); load_mlm / load_causal_lm give float32",
            "recipe": "roberta-diffusion finetune --profile full (notebooks/02_finetune.py), then scripts/ship_models.py",
        }
        write_model_card(target, title.format(cls=type(model).__name__), "Trained from scratch for this workbook. Metrics: see eval.json beside this card.", facts)
        print(f"shipped {objective} -> {target}")
