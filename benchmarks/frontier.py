"""The quality frontier behind the default policy (``python -m benchmarks.frontier``): for each policy and step
count, the generative perplexity of the samples under a judge against their unigram entropy, next to the real
continuations and the AR baseline, from the same machinery as ``eval`` (``evaluate.sample_scores``).

Low perplexity alone rewards repetition (``confidence`` reaches it by repeating itself), high entropy alone
rewards noise. ``pick_readable`` states the rule the default follows: among the settings whose entropy keeps
at least ``entropy_floor`` of the real text's, the lowest generative perplexity.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from roberta_diffusion import evaluate, paths
from roberta_diffusion.data import cached_blocks
from roberta_diffusion.defaults import PROMPT_LEN
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, max_canvas_len, pick_device
from roberta_diffusion.sampling import Sampling
from workbench import checks, cli
from workbench.cells import save_figure
from workbench.cli import Parser

# share of the real text's unigram entropy a readable setting keeps (the repetition guard): the GPT-2 baseline's
# samples keep 0.88-0.93 of it on the shipped models, confidence's 0.36-0.46 (README's tables)
ENTROPY_FLOOR = 0.85


def measure(mlm, ar, tokenizer, prompt_blocks, judge=None, policies=("random", "confidence", "redraw"),
            steps_list=(10, 32), prefix_len: int = PROMPT_LEN, sampling: Sampling | None = None,
            batch_size: int = 16) -> dict:
    """Sample scores per ``policy@steps`` plus ``real`` and ``ar``; the points, the readable pick, the settings
    (``sampling``, default ``Sampling.readable()``, under each policy and step count)."""
    sampling = sampling or Sampling.readable()
    start = time.time()
    scores = evaluate.sample_scores(mlm, ar, tokenizer, prompt_blocks, judge if judge is not None else ar, prefix_len,
                                    steps_list, policies, sampling, batch_size)
    points = [{"setting": key, "policy": value["policy"], "steps": value["steps"], "gen_ppl": value["gen_ppl"],
               "unigram_entropy": value["unigram_entropy"], "distinct_2": value["distinct_2"],
               "seconds": value["seconds"]} for key, value in scores["diffusion"].items()]
    result = {"environment": evaluate.environment(), "prompts": len(prompt_blocks), "prefix_len": prefix_len,
              "sampling": asdict(sampling), "real": _strip(scores.get("real", {})), "ar": _strip(scores.get("ar", {})),
              "points": points, "examples": {k: v["text"] for k, v in scores["diffusion"].items()}}
    result["pick"] = pick_readable(result)
    result["seconds"] = round(time.time() - start, 1)
    return result


def _strip(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k != "text"}


def pick_readable(result: dict, entropy_floor: float = ENTROPY_FLOOR) -> dict | None:
    """The point with the lowest ``gen_ppl`` among those with ``unigram_entropy >= entropy_floor x`` the real
    text's (all points when there is no real text); None when no point qualifies."""
    real = result.get("real", {}).get("unigram_entropy")
    floor = entropy_floor * real if real else float("-inf")
    keep = [p for p in result["points"] if p["unigram_entropy"] >= floor]
    if not keep:
        return None
    best = min(keep, key=lambda p: p["gen_ppl"])
    return {**best, "rule": f"lowest gen_ppl with unigram entropy >= {entropy_floor:g} x the real text's ({floor:.3f})"}


def plot(result: dict, path) -> Path:
    """Generative perplexity (log) against unigram entropy: one marker per policy, labelled by steps."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    policies = sorted({p["policy"] for p in result["points"]})
    for policy in policies:
        mine = sorted((p for p in result["points"] if p["policy"] == policy), key=lambda p: p["steps"])
        ax.plot([p["unigram_entropy"] for p in mine], [p["gen_ppl"] for p in mine], "o-", label=policy)
        for p in mine:
            ax.annotate(str(p["steps"]), (p["unigram_entropy"], p["gen_ppl"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    for name, marker in (("real", "*"), ("ar", "s")):
        if "gen_ppl" in result.get(name, {}):
            ax.plot(result[name]["unigram_entropy"], result[name]["gen_ppl"], marker, color="black", markersize=9,
                    label="real text" if name == "real" else "autoregressive")
    ax.set(xlabel="unigram entropy (nats; higher = less repetitive)", ylabel="generative perplexity (judge)",
           yscale="log", title=f"quality frontier, {result['prompts']} prompts (numbers: steps)")
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def shifted(blocks: torch.Tensor, n: int, shift: int = 0) -> torch.Tensor:
    """``eval``'s ``n`` prompt blocks (``evaluate.spread_blocks``), or with ``shift`` > 0 the blocks that many places
    after each of them (before, for one that would run off the end): a second prompt set sharing no block."""
    spread = evaluate.spread_indices(len(blocks), n)
    gap = int((spread[1:] - spread[:-1]).min()) if n > 1 else len(blocks)
    if not 0 <= shift < gap:
        raise ValueError(f"--shift {shift}: use 0 (eval's prompts) up to {gap - 1}, so the set shares no block with "
                         f"eval's {n}")
    return blocks[torch.where(spread + shift < len(blocks), spread + shift, spread - shift)]


def run(args) -> int:
    """``python -m benchmarks.frontier``: measure, write JSON (and a PNG beside it), print the table and the pick."""
    policies, steps = checks.policy_list("--policies", args.policies), [int(s) for s in args.steps.split(",")]
    if any(s < 1 for s in steps) or args.prompts < 1:
        raise ValueError(f"--steps {steps} / --prompts {args.prompts}: steps >= 1, prompts >= 1")
    if args.out.suffix != ".json":
        raise ValueError(f"--out {args.out} must end in .json")
    device = pick_device(args.device)
    mlm = load_mlm(paths.resolve(args.mlm), device=device)
    ar = load_causal_lm(paths.resolve(args.ar), device=device)
    tokenizer = load_tokenizer(paths.resolve(args.mlm))
    args.judge = args.judge or evaluate.shipped_judge_for(tokenizer)
    judge = load_causal_lm(paths.resolve(args.judge), device=device) if args.judge else ar
    block = min(max_canvas_len(mlm), args.max_len)
    blocks = cached_blocks(paths.corpus(args.corpus), tokenizer, block, paths.CACHE)
    prompts = shifted(blocks, min(args.prompts, len(blocks)), args.shift)
    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(f"sampling: {sampling} under each of --policies and --steps")
    result = measure(mlm, ar, tokenizer, prompts, judge, policies, steps, args.prefix_len, sampling)
    result["shift"] = args.shift
    result["judge"] = args.judge or f"{args.ar} (the AR baseline itself: favours AR samples)"
    result["models"] = {"mlm": args.mlm, "ar": args.ar, "corpus": args.corpus}
    paths.atomic_write_text(args.out, json.dumps(result, indent=2, ensure_ascii=False))
    figure = plot(result, args.out.with_suffix(".png"))
    print(f"{'setting':<18}{'gen_ppl':>10}{'entropy':>10}{'distinct-2':>12}{'seconds':>10}")
    for name in ("real", "ar"):
        if result[name]:
            r = result[name]
            print(f"{name:<18}{r['gen_ppl']:>10.1f}{r['unigram_entropy']:>10.3f}{r['distinct_2']:>12.3f}"
                  f"{r.get('seconds', float('nan')):>10.2f}")
    for p in result["points"]:
        print(f"{p['setting']:<18}{p['gen_ppl']:>10.1f}{p['unigram_entropy']:>10.3f}{p['distinct_2']:>12.3f}"
              f"{p['seconds']:>10.2f}")
    pick = result["pick"]
    print(f"readable pick: {pick['setting'] if pick else 'none'} ({pick['rule'] if pick else 'no point qualifies'})")
    print(f"wrote {args.out} and {figure}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fr = Parser(prog="python -m benchmarks.frontier",
                description="generative perplexity vs unigram entropy per policy and steps -> JSON + PNG")
    fr.add_argument("--mlm", default="weights/roberta-diffusion-small")
    fr.add_argument("--ar", default="weights/gpt2-small-baseline")
    fr.add_argument("--judge", default=None, help="causal LM judging samples (default: weights/judge where it reads "
                    "the masked LM's vocabulary, else the AR baseline)")
    fr.add_argument("--corpus", default="wikipedia-valid", help="held-out text whose blocks give the prompts")
    fr.add_argument("--prompts", type=int, default=8, help="held-out prompts (default 8: minutes on a CPU)")
    fr.add_argument("--steps", default="10,32")
    fr.add_argument("--policies", default="random,confidence,margin,entropy,redraw")
    fr.add_argument("--max-len", type=int, default=256)
    fr.add_argument("--prefix-len", type=int, default=PROMPT_LEN)
    fr.add_argument("--seed", type=int, default=Sampling.seed)
    fr.add_argument("--temperature", type=float, default=Sampling.temperature)
    fr.add_argument("--top-k", type=int, default=Sampling.top_k, help="0: no top-k")
    fr.add_argument("--top-p", type=float, default=Sampling.top_p, help="1: no top-p")
    fr.add_argument("--shift", type=int, default=0,
                    help="prompts: the blocks this many places after eval's (a second set sharing none)")
    fr.add_argument("--device", default="auto")
    fr.add_argument("--out", type=Path, required=True, help="frontier.json to write (the plot goes beside it)")
    return fr


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
