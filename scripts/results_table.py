"""Print README.md's results table (markdown) from an eval.json, so the numbers there are copied, not typed.

python scripts/results_table.py weights/roberta-diffusion-small/eval.json
"""

import json
import sys

if __name__ == "__main__":
    result = json.loads(open(sys.argv[1]).read())
    env = result["environment"]
    print(f"Held-out perplexity (lower is better; {env['device']}, {env['date']}, torch {env['torch']}, "
          f"transformers {env['transformers']}):\n")
    print("| text | GPT-2 baseline PPL | diffusion MLM ELBO PPL (bound) | ratio |")
    print("|---|---:|---:|---:|")
    for name, h in result["heldout"].items():
        print(f"| {name} ({h['ar']['tokens']:,} tokens) | {h['ar']['ppl']:.1f} | {h['mlm_elbo']['ppl']:.1f} "
              f"| {h['elbo_ppl_over_ar_ppl']:.2f} |")
    s = result["samples"]
    print(f"\nSamples: {s['prompts']} held-out prompts (16-token prefix, 240 new tokens), top-k {s['sampling']['top_k']}, "
          f"top-p {s['sampling']['top_p']}, temperature {s['sampling']['temperature']}; judge: {s['judge']}.\n")
    print("| source | steps | gen. PPL (judge) | unigram entropy | distinct-2 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| real continuations | – | {s['real']['gen_ppl']:.1f} | {s['real']['unigram_entropy']:.2f} | {s['real']['distinct_2']:.3f} |")
    print(f"| GPT-2 baseline | 240 | {s['ar']['gen_ppl']:.1f} | {s['ar']['unigram_entropy']:.2f} | {s['ar']['distinct_2']:.3f} |")
    for row in s["diffusion"].values():
        print(f"| diffusion, {row['policy']} | {row['steps']} | {row['gen_ppl']:.1f} | {row['unigram_entropy']:.2f} "
              f"| {row['distinct_2']:.3f} |")
