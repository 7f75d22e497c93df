"""Subcommands beyond generation: finetune, eval, pipeline (bench and frontier register themselves from their modules)."""

from __future__ import annotations

import json
from pathlib import Path


def add_subcommands(sub) -> None:
    ft = sub.add_parser("finetune", help="run notebook 02 (fine-tune / train) with a profile's parameters")
    ft.add_argument("--profile", default="smoke", help="profile name in profiles/ or a YAML path")
    ft.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override parameters (JSON values)")
    ft.set_defaults(handler=run_finetune)

    ev = sub.add_parser("eval", help="held-out perplexities and sample quality -> eval.json")
    ev.add_argument("--mlm", default="weights/roberta-diffusion-small")
    ev.add_argument("--ar", default="weights/gpt2-small-baseline")
    ev.add_argument("--judge", default=None, help="causal LM judging samples (default: the AR baseline; say so)")
    ev.add_argument("--prompts", type=int, default=64)
    ev.add_argument("--steps", default="10,32,64,128")
    ev.add_argument("--policies", default="seed-remask,confidence")
    ev.add_argument("--elbo-samples", type=int, default=8)
    ev.add_argument("--max-blocks", type=int, default=None, help="cap the held-out blocks per corpus (quick runs)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--out", type=Path, required=True, help="eval.json to write")
    ev.set_defaults(handler=run_eval)

    pl = sub.add_parser("pipeline", help="run the four notebooks headless with papermill")
    pl.add_argument("--profile", default="smoke")
    pl.add_argument("--only", nargs="*", help="a subset of the notebooks, e.g. 03_generate")
    pl.set_defaults(handler=run_pipeline_command)

    from .bench import add_bench_command
    from .frontier import add_command as add_frontier_command

    add_bench_command(sub)
    add_frontier_command(sub)


def _parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. max_steps=100")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run_finetune(args) -> int:
    from .pipeline import load_profile, notebook_params, run_as_script

    params = {**notebook_params(load_profile(args.profile), "02_finetune"), **_parse_sets(args.set)}
    run_as_script("02_finetune", params)
    return 0


def run_eval(args) -> int:
    from . import evaluate, paths
    from .models import load_causal_lm, load_mlm, load_tokenizer, max_canvas_len, pick_device
    from .train import cached_blocks

    steps = [int(s) for s in args.steps.split(",")]
    policies = args.policies.split(",")
    from .sampler import STRATEGIES

    bad = [p for p in policies if p not in STRATEGIES]
    if bad or any(s < 1 for s in steps):
        raise ValueError(f"bad --policies {bad} or --steps {steps}: policies from {', '.join(STRATEGIES)}, steps >= 1")
    if args.out.suffix != ".json":
        raise ValueError(f"--out {args.out} must end in .json")
    device = pick_device(args.device)
    mlm = load_mlm(paths.resolve(args.mlm), device=device)
    ar = load_causal_lm(paths.resolve(args.ar), device=device)
    tokenizer = load_tokenizer(paths.resolve(args.mlm))
    judge = load_causal_lm(paths.resolve(args.judge), device=device) if args.judge else ar
    judge_name = args.judge or f"{args.ar} (the AR baseline itself: favours AR samples; no independent judge offline)"
    cache = paths.RUNS / "cache"
    block = min(max_canvas_len(mlm), 256)  # the shipped recipe's canvas, or less for a smaller model
    heldout = {"wikipedia-valid": cached_blocks(paths.WIKI_VALID, tokenizer, block, cache),
               "wikitext2-valid (detokenised)": cached_blocks(paths.WIKITEXT2_VALID, tokenizer, block, cache, detokenize=True)}
    if args.max_blocks:
        heldout = {k: v[: args.max_blocks] for k, v in heldout.items()}
    prompts = evaluate.spread_blocks(heldout["wikipedia-valid"], args.prompts)
    result = evaluate.evaluate(mlm, ar, tokenizer, heldout, prompts, judge, judge_name, steps_list=steps,
                               policies=policies, elbo_samples=args.elbo_samples)
    result["command"] = "roberta-diffusion eval " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("handler", "command") and v is not None)
    paths.atomic_write_text(args.out, json.dumps(result, indent=2))
    print(json.dumps(result["heldout"], indent=2))
    print(f"wrote {args.out}")
    return 0


def run_pipeline_command(args) -> int:
    from .pipeline import check_run, run_pipeline

    run = run_pipeline(args.profile, args.only)
    problems = [] if args.only else check_run(run)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"pipeline outputs: {run}")
    return 1 if problems else 0
