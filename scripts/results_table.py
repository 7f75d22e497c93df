"""Print the results tables (markdown) of an eval.json, so the numbers in README.md, docs/results.md and the cards are copied, not typed.

python scripts/results_table.py weights/roberta-diffusion-small/eval.json
"""

import json
import sys


def results_markdown(result: dict) -> str:
    """The held-out and sample tables of an ``eval.json`` (``roberta-diffusion eval``) as markdown."""
    env = result["environment"]
    lines = [f"Measured on {env['device']}, {env['date']} (torch {env['torch']}, transformers {env['transformers']}) "
             f"by `{result.get('command', 'roberta-diffusion eval')}`.", "",
             "| held-out text | GPT-2 baseline perplexity | diffusion MLM ELBO perplexity (bound) | ratio |",
             "|---|---:|---:|---:|"]
    for name, h in result["heldout"].items():
        lines.append(f"| {name}, {h['blocks']} blocks ({h['ar']['tokens']:,} scored tokens) | {h['ar']['ppl']:.1f} "
                     f"| {h['mlm_elbo']['ppl']:.1f} | {h['elbo_ppl_over_ar_ppl']:.2f} |")
    s = result["samples"]
    knobs = s["sampling"]  # the whole Sampling (under each policy and step count below); older files: the filters
    lines += ["", f"Samples: {s['prompts']} held-out prompts (16-token prefix, 240 new tokens), top-k {knobs['top_k']}, "
              f"top-p {knobs['top_p']}, temperature {knobs['temperature']}; judge: {s['judge']}.", "",
              f"Sampling: `{json.dumps(knobs)}`", "",
              "| text | steps | generative perplexity | unigram entropy | distinct-2 | 4-gram repetition |",
              "|---|---:|---:|---:|---:|---:|",
              f"| real continuations | – | {s['real']['gen_ppl']:.1f} | {s['real']['unigram_entropy']:.2f} "
              f"| {s['real']['distinct_2']:.3f} | {_rep(s['real'])} |",
              f"| GPT-2 baseline | 240 | {s['ar']['gen_ppl']:.1f} | {s['ar']['unigram_entropy']:.2f} | {s['ar']['distinct_2']:.3f} "
              f"| {_rep(s['ar'])} |"]
    for row in s["diffusion"].values():
        lines.append(f"| diffusion, {row['policy']} | {row['steps']} | {row['gen_ppl']:.1f} | {row['unigram_entropy']:.2f} "
                     f"| {row['distinct_2']:.3f} | {_rep(row)} |")
    return "\n".join(lines)


def _rep(row: dict) -> str:
    return f"{row['rep_4']:.3f}" if "rep_4" in row else "–"  # eval.json before rep_4 was measured


if __name__ == "__main__":
    print(results_markdown(json.loads(open(sys.argv[1]).read())))
