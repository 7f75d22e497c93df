"""Helpers the workbook notebooks share: which model to use, tables, figures, held-out scores per tokenizer.
Sample quality across tokenizers (``sample_quality``) lives in ``evaluate`` and is re-exported here.

Model resolution (``resolve_model``), in order: an explicit path or hub name; ``runs/<run_name>/<kind>/model``
written by notebook 02; the shipped weights (``weights/roberta-diffusion-small``, ``weights/gpt2-small-baseline``);
else a tiny random model, with a line saying its text is noise.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from roberta_diffusion import metrics, paths
from roberta_diffusion.data import cached_blocks
from roberta_diffusion.evaluate import (  # noqa: F401 (notebook API)
    prompts_for,
    quality_in_judge_vocab,
    same_vocab,
    sample_quality,
    shipped_judge_for,
    spread_blocks,
)
from roberta_diffusion.models import (
    TOKENIZER_FILES,
    default_models,
    load_causal_lm,
    load_mlm,
    load_tokenizer,
    model_summary,
    pick_device,
)
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling

KINDS = {"mlm": ("masked LM (diffusion)", paths.SHIPPED_MLM), "ar": ("causal LM (autoregressive)", paths.SHIPPED_AR)}


def trained_model_dir(kind: str, run_name: str) -> Path:
    """``runs/<run_name>/<kind>/model``: where notebook 02 saves the model of ``kind`` (``mlm`` or ``ar``)."""
    return paths.RUNS / run_name / kind / "model"


def has_model(folder: Path) -> bool:
    return (Path(folder) / "config.json").exists()


def resolve_model(kind: str, run_name: str, path: str | None = None, device: str | None = None, say=print):
    """``(model, tokenizer, description)`` for ``kind`` in ``{"mlm", "ar"}``; see the module docstring for the
    order. The tokenizer is the model's own (its folder's), so two resolved models may not share one."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use 'mlm' or 'ar'")
    loader = load_mlm if kind == "mlm" else load_causal_lm
    device = pick_device(device)
    trained = trained_model_dir(kind, run_name)
    if path is not None:
        source, where = paths.resolve(path), f"{path} (given)"
    elif has_model(trained):  # named by its final place: a staged run's folder is gone once swapped in
        source, where = str(trained), f"{paths.portable(str(trained))} (trained by notebook 02, run {run_name!r})"
    elif has_model(KINDS[kind][1]):
        source, where = str(KINDS[kind][1]), f"{paths.portable(str(KINDS[kind][1]))} (shipped weights)"
    else:
        model, tokenizer = default_models(kind, say=say)
        desc = f"{kind}: tiny RANDOM {KINDS[kind][0]} — its text is noise ({model_summary(model)})"
        return model.to(device).eval(), tokenizer, desc
    model = loader(source, device=device)
    local = Path(source)
    if local.is_dir() and not any((local / f).exists() for f in TOKENIZER_FILES):
        say(f"note: {source} has no tokenizer files; using {paths.SHIPPED_TOKENIZER}")
        tokenizer = load_tokenizer(paths.SHIPPED_TOKENIZER)
    else:
        tokenizer = load_tokenizer(source)
    return model, tokenizer, f"{kind}: {where} — {model_summary(model)}"


def set_cpu_threads(n: int | None) -> int:
    """Torch intra-op threads (``None`` leaves torch's default); returns the count in use. On a small shared
    CPU one thread gives steadier and often faster timings: a second OpenMP thread spin-waits against other
    processes (a 0.1M-parameter AR run measured 0.1 s with 1 thread, 1.5 s with 2 under load)."""
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def table(rows: list[dict]):
    """A pandas DataFrame of ``rows`` when pandas is installed (pretty in Jupyter), else aligned text."""
    try:
        import pandas as pd

        pd.set_option("display.width", 250)  # plain-text output (scripts, logs): no wrapped or elided columns
        pd.set_option("display.max_columns", 30)
        pd.set_option("display.max_colwidth", 90)
        return pd.DataFrame(rows)
    except ImportError:
        keys = list(dict.fromkeys(k for row in rows for k in row))
        cells = [[str(row.get(k, "")) for k in keys] for row in rows]
        widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
        lines = ["  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
        return "\n".join(lines)


def save_figure(fig, path) -> Path:
    """Save ``fig`` (tight, 100 dpi) and return the path; the notebook then shows and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def finite(obj):
    """``obj`` with every non-finite float replaced by None (JSON files stay valid and honest)."""
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# -- held-out blocks and scores in any tokenizer ----------------------------------------------------------
def heldout_blocks(tokenizer, corpus: str, block_size: int, n: int) -> torch.Tensor:
    """``n`` blocks of ``block_size`` tokens spread through ``corpus`` (an alias or path), cached by tokenizer."""
    blocks = cached_blocks(paths.corpus(corpus), tokenizer, block_size, paths.CACHE)
    return spread_blocks(blocks, min(n, len(blocks)))


def bits_per_byte(nll_summary: dict, tokenizer, blocks: torch.Tensor, prefix_len: int) -> float:
    """Per-token NLL (nats) of the scored part of ``blocks`` turned into bits per UTF-8 byte of that text:
    comparable across tokenizers, where per-token perplexities are not."""
    text_bytes = sum(len(tokenizer.decode(row[prefix_len:], skip_special_tokens=True).encode()) for row in blocks)
    return round(nll_summary["nll"] * nll_summary["tokens"] / max(1, text_bytes) / math.log(2), 5)


def heldout_quality(mlm, mlm_tokenizer, ar, ar_tokenizer, corpus: str, n_blocks: int, block_size: int,
                    prefix_len: int, elbo_samples: int = 8, batch_size: int = 16) -> dict:
    """Held-out NLL of both models on ``n_blocks`` blocks of ``corpus``: the AR's exact perplexity and the MLM's
    ELBO bound, each on blocks in its own tokenizer, plus bits per byte (comparable even when the tokenizers
    differ). With one shared vocabulary the blocks and scored tokens are the same, and the ratio of the two
    perplexities is reported."""
    out = {"corpus": corpus, "blocks": n_blocks, "block_size": block_size, "prefix_len": prefix_len,
           "same_tokenizer": same_vocab(mlm_tokenizer, ar_tokenizer)}
    ar_blocks = heldout_blocks(ar_tokenizer, corpus, block_size, n_blocks)
    out["ar"] = metrics.ar_nll(ar, ar_blocks, prefix_len, batch_size)
    out["ar"]["bits_per_byte"] = bits_per_byte(out["ar"], ar_tokenizer, ar_blocks, prefix_len)
    mlm_blocks = ar_blocks if out["same_tokenizer"] else heldout_blocks(mlm_tokenizer, corpus, block_size, n_blocks)
    out["mlm_elbo"] = metrics.mlm_elbo(mlm, mlm_tokenizer, mlm_blocks, prefix_len, elbo_samples, batch_size)
    out["mlm_elbo"]["bits_per_byte"] = bits_per_byte(out["mlm_elbo"], mlm_tokenizer, mlm_blocks, prefix_len)
    if out["same_tokenizer"]:
        out["elbo_ppl_over_ar_ppl"] = round(out["mlm_elbo"]["ppl"] / out["ar"]["ppl"], 4)
    return out


def steps_sweep_figure(sweep: list[dict], samples: dict, policy: str, n_prompts: int, path):
    """Notebook 04's steps sweep: generative perplexity, unigram entropy and latency against diffusion steps,
    with the AR samples (dashed) and the real text (dotted) as lines. An axis whose values (lines included)
    span more than 10x is logarithmic: on a linear one the AR's gen-ppl of ~8 sat on the bottom edge under
    diffusion's hundreds. Returns the saved figure (the notebook shows and closes it)."""
    steps = [row["steps"] for row in sweep]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (("gen_ppl", "generative perplexity (judge)"), ("unigram_entropy", "unigram entropy (nats)"),
              ("seconds", f"latency, {n_prompts} prompts (s)"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = [row[key] for row in sweep]
        ax.plot(steps, values, "o-", label=f"diffusion ({policy})")
        lines = [(samples["ar"][key], dict(color="tab:red", linestyle="--", label="autoregressive"))]
        if key in samples.get("real", {}):
            lines.append((samples["real"][key], dict(color="gray", linestyle=":", label="real text")))
        for value, style in lines:
            ax.axhline(value, **style)
        shown = [v for v in values + [v for v, _ in lines] if v is not None and v > 0]
        if shown:  # explicit limits with room: a line at the data's edge hid under the axis frame
            lo, hi = min(shown), max(shown)
            if hi / lo > 10:
                ax.set_yscale("log")
                ax.set_ylim(lo / 1.5, hi * 1.5)
            else:
                pad = 0.1 * (hi - lo) or 0.05 * hi
                ax.set_ylim(lo - pad, hi + pad)
        ax.set(title=title, xlabel="diffusion steps", xscale="log")
        ax.set_xticks(steps, [str(s) for s in steps])
        ax.xaxis.set_minor_locator(plt.NullLocator())  # only the swept step counts as x ticks
    axes[0].legend(fontsize=8)
    save_figure(fig, path)
    return fig


def resolve_judge(judge_path: str | None, run_name: str, mlm_tokenizer, ar, ar_tokenizer, ar_desc: str):
    """``(judge, tokenizer, description)``: the given causal LM; else the shipped independent judge where it reads the
    masked LM's vocabulary; else the AR baseline itself, said in the description (it flatters its own samples)."""
    path = judge_path or shipped_judge_for(mlm_tokenizer)
    if path is None:
        return ar, ar_tokenizer, f"the AR baseline itself ({ar_desc}): it favours its own samples, so AR gen-ppl is " \
                                 "optimistic"
    return resolve_model("ar", run_name, path)


def quality_rows(result: dict) -> list[dict]:
    """The matched-entropy table of a ``benchmarks.quality`` result: one row per sampler and steps, and AR."""
    real = result["rows"]["real"]["report"]
    rows = [{"setting": "real text", "gen_ppl": real["gen_ppl"], "x real": 1.0,
             "unigram_entropy": real["unigram_entropy"], "rep_4": real["rep_4"], "ms (B=1)": None}]
    for group, row in result["matched"].items():
        if row is not None:
            ms = round(1000 * row["latency_s"], 1) if row.get("latency_s") else None
            rows.append({"setting": f"{group}: {row['setting']}", "gen_ppl": row["gen_ppl"],
                         "x real": round(row["gen_ppl"] / real["gen_ppl"], 2),
                         "unigram_entropy": row["unigram_entropy"], "rep_4": row["rep_4"], "ms (B=1)": ms})
    return rows


def distilled_model(device: str | None = None):
    """``(model, tokenizer)`` of the shipped distilled student (``paths.SHIPPED_FAST``), or None where it is absent."""
    if not has_model(paths.SHIPPED_FAST):
        return None
    return load_mlm(paths.SHIPPED_FAST, device=pick_device(device)), load_tokenizer(paths.SHIPPED_FAST)


def compare_models(models: dict, prompt: str, sampling: Sampling, **canvas) -> list[dict]:
    """One row per ``label -> (model, tokenizer)`` on the same prompt, settings and seed (each its own tokenizer)."""
    rows = []
    for label, (model, tokenizer) in models.items():
        t = generate_diffusion(model, tokenizer, prompt, sampling, **canvas)
        rows.append({"model": label, "steps": t.steps, "seconds": round(t.total_time, 3),
                     "text (start)": t.completions[0][:100]})
    return rows


def compare_policies(model, tokenizer, prompt: str, sampling: Sampling, **canvas) -> list[dict]:
    """One row per registered policy on the same prompt and seed, each ``sampling.with_policy`` (its own knob at the
    measured value). A policy that reads corpus counts the model folder lacks gets a row saying so instead of a text
    (a model trained here has them beside it)."""
    rows = []
    for name in POLICIES:
        try:
            t = generate_diffusion(model, tokenizer, prompt, sampling.with_policy(name), **canvas)
        except FileNotFoundError as err:
            rows.append({"policy": name, "steps": sampling.steps, "text (start)": f"not run: {err}"})
            continue
        rows.append({"policy": name, "steps": t.steps, "forward passes": t.forward_passes,
                     "seconds": round(t.total_time, 3), "text (start)": t.completions[0][:80]})
    return rows
