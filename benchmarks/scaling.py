"""Data-parallel scaling of training from the histories of two short runs of one recipe on 1 and N processes.

python -m benchmarks.scaling runs/probe-1/mlm runs/probe-2/mlm [--out scaling.json]

Tokens/s is the median over the evaluation intervals after the first (the first holds compilation); MFU counts
the FLOPs the step needs (common.training_flops_per_token: 6 x matmul weights, the head on the masked share, the
attention products) against the card's dense bf16 peak.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from roberta_diffusion.history import History
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer
from roberta_diffusion.speed import trained_on
from roberta_diffusion.train import TrainConfig, make_collator

from .common import spec_peak_tflops, training_flops_per_token


def steady_speed(history: History) -> float:
    speeds = history.speed[1:] or history.speed
    return statistics.median(speeds)


def masked_share(cfg: TrainConfig, tokenizer, blocks: int = 256) -> float:
    """Mean share of a block's positions the loss predicts, under the recipe's noise (random ids, no specials)."""
    collator = make_collator(cfg, tokenizer)
    collator.generator = torch.Generator().manual_seed(0)
    ids = torch.randint(len(tokenizer.all_special_ids) + 10, len(tokenizer), (blocks, cfg.block_size))
    return float((collator(ids)["labels"] != -100).float().mean())


def describe(run: Path) -> dict:
    history = History.load(run / "history.json")
    saved = json.loads((run / "config.json").read_text())  # runs of older versions may hold fields since removed
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    model = (load_mlm if cfg.objective == "mlm" else load_causal_lm)(run / "model", device="cpu")
    share = masked_share(cfg, load_tokenizer(run / "model")) if cfg.objective == "mlm" else 1.0
    flops = training_flops_per_token(model, cfg.block_size, share)
    speed = steady_speed(history)
    world = history.world_size
    device = trained_on(run.parent)  # the run folder, above the objective's
    peak = spec_peak_tflops(device)
    mfu = speed / world * flops / (peak * 1e12) if peak else None
    return {"run": str(run), "objective": cfg.objective, "processes": world, "global_batch": cfg.batch_size,
            "block": cfg.block_size, "tokens_per_s": round(speed), "speeds": history.speed,
            "predicted_share": round(share, 4), "flops_per_token": round(flops), "spec_peak_tflops": peak,
            "mfu": round(mfu, 4) if mfu is not None else None, "device": device, "compile": cfg.compile}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("one", type=Path)
    parser.add_argument("many", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    one, many = describe(args.one), describe(args.many)
    result = {"one": one, "many": many, "torch": torch.__version__,
              "efficiency": round(many["tokens_per_s"] / (many["processes"] * one["tokens_per_s"]), 4)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
