"""Model cards: a README.md beside the weights saying what they are, how they were made and how well they do."""

from __future__ import annotations

import json
from pathlib import Path


def write_model_card(folder, title: str, summary: str, facts: dict, metrics: dict | str | None = None,
                     usage: str = "") -> Path:
    """Write ``folder/README.md``: a title, a paragraph, a table of facts, a usage snippet and the metrics
    (markdown text, or a dict shown as JSON)."""
    folder = Path(folder)
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts.items())
    text = f"# {title}\n\n{summary}\n\n| | |\n|---|---|\n{rows}\n"
    if usage:
        text += f"\n## Use\n\n```python\n{usage.strip()}\n```\n"
    if isinstance(metrics, str):
        text += f"\n## Metrics\n\n{metrics.strip()}\n"
    elif metrics:
        text += f"\n## Metrics\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n"
    path = folder / "README.md"
    path.write_text(text)
    return path


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
    knobs = s["sampling"]
    lines += ["", f"Samples: {s['prompts']} held-out prompts (16-token prefix, 240 new tokens), top-k {knobs['top_k']}, "
              f"top-p {knobs['top_p']}, temperature {knobs['temperature']}; judge: {s['judge']}.", "",
              "| text | steps | generative perplexity | unigram entropy | distinct-2 |", "|---|---:|---:|---:|---:|",
              f"| real continuations | – | {s['real']['gen_ppl']:.1f} | {s['real']['unigram_entropy']:.2f} "
              f"| {s['real']['distinct_2']:.3f} |",
              f"| GPT-2 baseline | 240 | {s['ar']['gen_ppl']:.1f} | {s['ar']['unigram_entropy']:.2f} | {s['ar']['distinct_2']:.3f} |"]
    for row in s["diffusion"].values():
        lines.append(f"| diffusion, {row['policy']} | {row['steps']} | {row['gen_ppl']:.1f} | {row['unigram_entropy']:.2f} "
                     f"| {row['distinct_2']:.3f} |")
    return "\n".join(lines)
