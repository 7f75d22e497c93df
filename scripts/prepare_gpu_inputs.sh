#!/usr/bin/env bash
# Before a lent-GPU run: ../shared does not travel, so put what training and evaluation read into .gpu/
# (ignored by git, named in the device call's `carry`): the Wikipedia train split as 256-token blocks (int16,
# ~26 MB) and copies of the two held-out texts. Scripts there set ROBERTA_DIFFUSION_DATA=$PWD/.gpu/data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .gpu/data/wikipedia-2018-extract .gpu/data/wikitext-2-raw
cp ../shared/data/wikipedia-2018-extract/valid.txt .gpu/data/wikipedia-2018-extract/
cp ../shared/data/wikitext-2-raw/wiki.valid.raw .gpu/data/wikitext-2-raw/
"$PY" - <<'PYEOF'
import torch
from roberta_diffusion import data, models, paths
tok = models.load_tokenizer(paths.SHIPPED_TOKENIZER)
blocks = data.load_blocks(paths.WIKI_TRAIN, tok, 256)
torch.save(blocks.to(torch.int16), ".gpu/train_blocks.pt")
print(f"{tuple(blocks.shape)} blocks -> .gpu/train_blocks.pt")
PYEOF
du -sh .gpu
