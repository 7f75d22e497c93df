"""Score several trained MLM runs by their masked-diffusion ELBO on held-out text; print a table, name the best.

python scripts/pick_best_mlm.py runs/sweep-a runs/sweep-b ...   (writes the best run folder to stdout last)
"""

import json
import sys
from pathlib import Path

import torch
from roberta_diffusion import metrics, paths
from roberta_diffusion.models import load_mlm, load_tokenizer
from roberta_diffusion.train import cached_blocks

if __name__ == "__main__":
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for run in map(Path, sys.argv[1:]):
        folder = run / "mlm" / "model"
        if not folder.exists():
            print(f"{run}: no model", file=sys.stderr)
            continue
        tok = load_tokenizer(folder)
        model = load_mlm(folder, device=device)
        blocks = cached_blocks(paths.WIKI_VALID, tok, 256, paths.RUNS / "cache")[::4]
        elbo = metrics.mlm_elbo(model, tok, blocks, 16, samples=4, batch_size=32)
        cfg = json.loads((run / "mlm" / "config.json").read_text())
        hist = json.loads((run / "mlm" / "history.json").read_text())
        rows.append({"run": str(run), "elbo_ppl": elbo["ppl"], "steps": hist["step"][-1], "arch": cfg["arch"],
                     "lr": cfg["lr"], "ratio_mode": cfg["ratio_mode"], "weighting": cfg["weighting"],
                     "eval_loss": hist["eval_loss"]})
    for row in sorted(rows, key=lambda r: r["elbo_ppl"]):
        print(json.dumps(row))
    print(min(rows, key=lambda r: r["elbo_ppl"])["run"])
