"""Print the results tables (markdown) of an eval.json, so the numbers in README.md and the cards are copied, not typed.

python scripts/results_table.py weights/roberta-diffusion-small/eval.json
"""

import json
import sys

from roberta_diffusion.cards import results_markdown

if __name__ == "__main__":
    print(results_markdown(json.loads(open(sys.argv[1]).read())))
