"""A deeper masked LM that starts where a trained one ended: its layers stacked on themselves (progressive stacking,
Gong et al. 2019, which found BERT trained this way reaches the deep model's loss in far fewer steps than from
scratch). The stacked model is the starting point of a training run (`init=` of `finetune`), not a model to sample:
its second copy of the layers reads representations it was not trained on.

    python scripts/stack_layers.py weights/roberta-diffusion-small runs/stacked-12 --times 2
"""

from __future__ import annotations

import argparse
import copy
import shutil
from pathlib import Path

import torch
from roberta_diffusion import models

# files of a model folder that describe its data or its tokens, not its weights: they stay true of the stacked copy
CARRIED = ("tokenizer.json", "tokenizer_config.json", "token_counts.json", "special_tokens_map.json", "vocab.json",
           "merges.txt")


def stack_layers(model, times: int):
    """``model`` (a RoBERTa-style masked LM, changed in place and returned) with its encoder layers repeated
    ``times`` times, bottom to top: layers ``0..n-1, 0..n-1, ...``."""
    if times < 1:
        raise ValueError(f"times={times} must be >= 1")
    layers = model.base_model.encoder.layer
    model.base_model.encoder.layer = torch.nn.ModuleList(copy.deepcopy(layer) for _ in range(times) for layer in layers)
    model.config.num_hidden_layers = len(model.base_model.encoder.layer)
    return model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a trained masked LM's folder")
    parser.add_argument("out", help="the folder to write (must not exist)")
    parser.add_argument("--times", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists: give a new folder")
    model = stack_layers(models.load_mlm(args.source, device="cpu"), args.times)
    model.save_pretrained(out, max_shard_size="19MB")
    for name in CARRIED:
        if (Path(args.source) / name).exists():
            shutil.copy(Path(args.source) / name, out / name)
    print(f"{args.source} -> {out}: {model.config.num_hidden_layers} layers, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
