"""Train the shipped byte-level BPE tokenizer on the Wikipedia extract: python scripts/train_tokenizer.py"""

import sys
import time

from roberta_diffusion import bpe, data, paths

VOCAB_SIZE = 16384  # a multiple of 64; small enough that two small models fit the 80 MB budget

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else paths.SHIPPED_TOKENIZER
    start = time.time()
    tokenizer = bpe.train_tokenizer(data.iter_lines(paths.WIKI_TRAIN), vocab_size=VOCAB_SIZE, save_to=out)
    print(f"trained {len(tokenizer)} tokens on {paths.WIKI_TRAIN} in {time.time() - start:.0f} s -> {out}")
