"""The matched-entropy quality protocol: every sampler and the AR twin judged by the independent judge at equal entropy.

``python -m benchmarks.quality sample --out S.pt`` draws, for two disjoint sets of held-out Wikipedia-valid prompts,
the samples of every setting of the grid (sampler family x steps x temperature x filter) and of the AR twin
(temperature x filter), and times each family and step count at batch 1 (graphed on CUDA).
``python -m benchmarks.quality score S.pt --out Q.json`` scores them under the judge: generative perplexity,
unigram entropy, distinct-2 and 4-gram repetition, next to the real continuations of the same prompts. The two
halves can run on different machines (a lent GPU carries at most one or two models); ``all`` does both.

Settings are compared at matched entropy, never by perplexity alone: for each family and step count (and for AR) the
*tuning* prompts pick, among the temperatures and filters whose mean unigram entropy is within ``TOLERANCE`` of the
real text's, the one of lowest judge perplexity; the *report* prompts, which no choice looked at, give its numbers.
Every row keeps a bootstrap interval of its judge perplexity over the prompts and each prompt's NLL, and every pick
its ratio to the real text with a paired interval (``metrics.ppl_interval``, ``metrics.ratio_interval``): how far
64 prompts can tell two numbers apart.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from roberta_diffusion import corpus, evaluate, metrics, paths
from roberta_diffusion.autoregressive import generate_ar
from roberta_diffusion.data import cached_blocks
from roberta_diffusion.defaults import PROMPT_LEN
from roberta_diffusion.guided import generate_guided
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer, pick_device
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion
from workbench import cli
from workbench.cells import save_figure
from workbench.cli import Parser

from .at_entropy import at_real_entropy, groups, print_rows
from .common import int_list, timed_median
from .frontier import shifted  # one definition of eval's prompts and a second set sharing none

TOLERANCE = 0.03  # "matched entropy": mean unigram entropy within 3 % of the real continuations'
TEMPERATURES = (0.7, 0.8, 0.9, 1.0)
FILTERS = {"plain": {"top_k": 0, "top_p": 1.0}, "k190": {"top_k": 190, "top_p": 1.0},
           "k50p95": {"top_k": 50, "top_p": 0.95}}
FAMILIES = {  # in the order a time budget spends on them: the cheap and the likely best first
    "random": {"policy": "random"},
    "guided-8": {"policy": "random", "candidates": 8},
    "guided-8-is": {"policy": "random", "candidates": 8, "pick": "importance"},
    "remdm-0.2": {"policy": "remdm", "remask": 0.2},
    "calibrated": {"policy": "calibrated"},
    "confidence": {"policy": "confidence"},
    "remdm-0.05": {"policy": "remdm", "remask": 0.05},
    "calibrated-pos": {"policy": "calibrated", "position_decay": 0.05},
    "calibrated-left": {"policy": "calibrated", "position_decay": 0.3},
    "sampled-2": {"policy": "sampled", "order_temperature": 2.0},
    "sampled-4": {"policy": "sampled", "order_temperature": 4.0},
    "sampled-6": {"policy": "sampled", "order_temperature": 6.0},
    "guided-16-is": {"policy": "random", "candidates": 16, "pick": "importance"},
    "guided-32": {"policy": "random", "candidates": 32},
    "guided-32-is": {"policy": "random", "candidates": 32, "pick": "importance"},
    "guided-8-is-sampled-4": {"policy": "sampled", "order_temperature": 4.0, "candidates": 8, "pick": "importance"},
    "corrected-4": {"policy": "random", "candidates": 1, "corrections": 4},
    "corrected-8": {"policy": "random", "candidates": 1, "corrections": 8},
    "guided-8-corrected-4": {"policy": "random", "candidates": 8, "corrections": 4},
    "corrected-8-s20": {"policy": "random", "candidates": 1, "corrections": 8, "correction_share": 0.2},
    "corrected-16": {"policy": "random", "candidates": 1, "corrections": 16},
    "corrected-32": {"policy": "random", "candidates": 1, "corrections": 32},
    "sampled-4-corrected-8": {"policy": "sampled", "order_temperature": 4.0, "candidates": 1, "corrections": 8},
    "sampled-4-corrected-16": {"policy": "sampled", "order_temperature": 4.0, "candidates": 1, "corrections": 16},
}
TWIN = ("candidates", "corrections")  # the keys that make a family read the AR twin (guided.py)
STEPS = (4, 8, 16, 32, 64, 128)
LATENCY_REPEATS = 5  # B=1 calls timed per setting (median, after a warm-up)
GUIDED_MAX_STEPS = 32  # N candidates cost N rows: the grid keeps guidance where diffusion is fast


def grid(families, steps_list, temperatures=TEMPERATURES, filters=tuple(FILTERS)) -> list[dict]:
    """One dict per setting: ``name``, ``family``, ``steps`` and every sampler keyword."""
    return [{"name": f"{family}@{steps}/t{temperature:g}/{name}", "family": family, "steps": steps,
             "temperature": temperature, "filter": name, **FILTERS[name], **FAMILIES[family]}
            for family, steps, temperature, name in itertools.product(families, steps_list, temperatures, filters)
            if FAMILIES[family].get("candidates", 1) == 1 or steps <= GUIDED_MAX_STEPS]


def sampler_kwargs(setting: dict) -> dict:
    return {k: v for k, v in setting.items() if k not in ("name", "family", "filter")}


def diffuse(mlm, ar, tokenizer, canvas, setting: dict, seed: int, **extra):
    kwargs = {**sampler_kwargs(setting), **extra}
    if any(key in kwargs for key in TWIN):
        return generate_guided(mlm, ar, tokenizer, canvas=canvas, seed=seed, **kwargs)
    return generate_diffusion(mlm, tokenizer, canvas=canvas, seed=seed, **kwargs)


def id_dtype(tokenizer) -> torch.dtype:
    """The smallest integer type that holds every id (int16 halves what a lent GPU sends back)."""
    return torch.int16 if len(tokenizer) <= torch.iinfo(torch.int16).max else torch.int32


def sample(mlm, ar, tokenizer, blocks: torch.Tensor, settings: list[dict], prefix_len: int, seed: int = 0,
           max_seconds: float | None = None, say=print, ar_temperatures=TEMPERATURES, ar_filters=tuple(FILTERS)) -> dict:
    """Samples of every setting and of AR for the prompt ``blocks [N, L]`` (ids, CPU), and B=1 latencies."""
    device, started = next(mlm.parameters()).device, time.time()
    prefix, length = blocks[:, :prefix_len], blocks.shape[1]
    canvas = evaluate.prompt_canvas_from_blocks(blocks, prefix_len, tokenizer.mask_token_id)
    ids_as = id_dtype(tokenizer)
    out = {"environment": evaluate.environment(), "prefix_len": prefix_len, "real": blocks.to(ids_as),
           "settings": [], "ids": {}, "ar": {}, "latency": {}, "skipped": []}
    graphed = device.type == "cuda"
    for temperature in ar_temperatures:
        for name in ar_filters:
            trace = generate_ar(ar, tokenizer, prefix, max_len=length, seed=seed, temperature=temperature,
                                graph=graphed, **FILTERS[name])
            out["ar"][f"ar/t{temperature:g}/{name}"] = trace.final.to(ids_as)
    for setting in settings:
        if max_seconds is not None and time.time() - started > max_seconds:
            out["skipped"].append(setting["name"])  # said in the JSON and printed: never dropped silently
            continue
        trace = diffuse(mlm, ar, tokenizer, canvas, setting, seed)
        out["ids"][setting["name"]] = trace.final.to(ids_as)
        out["settings"].append(setting)
        say(f"{setting['name']:<40} {trace.total_time:8.3f} s")
    one = evaluate.prompt_canvas_from_blocks(blocks[:1], prefix_len, tokenizer.mask_token_id)
    timed = {(s["family"], s["steps"]): s for s in out["settings"]}  # one setting each: latency hardly depends on it
    for (family, steps), setting in timed.items():
        out["latency"][f"{family}@{steps}"] = timed_median(
            lambda s=setting: diffuse(mlm, ar, tokenizer, one, s, seed, graph=graphed), device, LATENCY_REPEATS)
    out["latency"]["ar"] = timed_median(lambda: generate_ar(ar, tokenizer, prefix[:1], max_len=length, seed=seed,
                                                            graph=graphed, top_k=0, top_p=1.0), device, LATENCY_REPEATS)
    if out["skipped"]:
        say(f"skipped {len(out['skipped'])} settings past --max-seconds {max_seconds} (listed in the output)")
    out["seconds"] = round(time.time() - started, 1)
    return out


def quality(judge, ids: torch.Tensor, prefix_len: int) -> dict:
    return metrics.text_quality(ids.long(), prefix_len, judge, per_prompt=True)


def score(samples: dict, judge, tune: slice, report: slice) -> dict:
    """Judge every sample set on the tuning and the report prompts; then the matched-entropy picks."""
    p = samples["prefix_len"]
    halves = {"tune": tune, "report": report}
    rows = {"real": {h: quality(judge, samples["real"][s], p) for h, s in halves.items()}}
    for name, ids in {**samples["ar"], **samples["ids"]}.items():
        rows[name] = {h: quality(judge, ids[s], p) for h, s in halves.items()}
    result = {"environment": samples["environment"], "prefix_len": p, "rows": rows,
              "settings": samples["settings"], "latency": samples["latency"], "skipped": samples["skipped"]}
    result["matched"] = matched(result)
    result["at_real_entropy"] = at_real_entropy(result)
    result["speed_at_equal_quality"] = speed_at_equal_quality(result)
    return result


def matched(result: dict, tolerance: float = TOLERANCE) -> dict:
    """For AR and each family@steps: the setting of lowest tuning-set judge perplexity among those whose tuning-set
    entropy is within ``tolerance`` of the real text's, with its report-set scores (None where none qualifies).
    ``report_in_band`` says whether the report prompts' entropy is inside the band too: a knob that lowers entropy
    wins the band at its lower edge, and such a pick is compared with the real text at less entropy than it has."""
    rows, real = result["rows"], result["rows"]["real"]["tune"]["unigram_entropy"]
    real_report = result["rows"]["real"]["report"]["unigram_entropy"]
    out = {}
    for group, names in groups(result).items():
        ok = [n for n in names if in_band(rows[n]["tune"], real, tolerance)]
        best = min(ok, key=lambda n: rows[n]["tune"]["gen_ppl"]) if ok else None
        out[group] = None if best is None else {"setting": best, **lean(rows[best]["report"]),
                                                **against_real(rows[best]["report"], rows["real"]["report"]),
                                                "tune": lean(rows[best]["tune"]), "latency_s": result["latency"].get(group),
                                                "report_in_band": in_band(rows[best]["report"], real_report, tolerance)}
    return out


def in_band(scores: dict, real_entropy: float, tolerance: float = TOLERANCE) -> bool:
    return abs(scores["unigram_entropy"] - real_entropy) <= tolerance * real_entropy


def lean(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k not in ("prompt_nll", "prompt_tokens")}


def against_real(scores: dict, real: dict) -> dict:
    """``x_real``, the perplexity over the real text's on the same prompts, and its paired interval (for results
    scored with each prompt's NLL; older ones have the ratio alone)."""
    out = {"x_real": round(scores["gen_ppl"] / real["gen_ppl"], 3)}
    if "prompt_nll" in scores and "prompt_nll" in real:
        mine, theirs = (torch.tensor(s["prompt_nll"], dtype=torch.float64) for s in (scores, real))
        out["x_real_interval"] = metrics.ratio_interval(mine, theirs, scores["prompt_tokens"])
    return out


def speed_at_equal_quality(result: dict, ppl_margin: float = 0.10, entropy_margin: float = 0.03) -> dict:
    """The fastest diffusion setting whose samples match AR's (judge perplexity within 10 %, entropy within 3 %, or
    better on both), and its B=1 speed-up over the AR decoder. Which settings match is decided on the tuning prompts;
    the numbers reported are the report prompts'."""
    ar = result["matched"].get("ar")
    if not ar:
        return {"found": False, "why": "no AR setting at matched entropy"}
    fits = []
    for group, row in result["matched"].items():
        if group == "ar" or row is None or row.get("latency_s") is None:
            continue
        mine, theirs = row.get("tune", row), ar.get("tune", ar)
        close = mine["gen_ppl"] <= theirs["gen_ppl"] * (1 + ppl_margin) and \
            abs(mine["unigram_entropy"] - theirs["unigram_entropy"]) <= entropy_margin * theirs["unigram_entropy"]
        better = mine["gen_ppl"] <= theirs["gen_ppl"] and mine["unigram_entropy"] >= theirs["unigram_entropy"]
        if close or better:
            fits.append((row["latency_s"], group, row))
    if not fits:
        return {"found": False, "ar": ar, "why": "no diffusion setting within 10 % of AR's judge perplexity at "
                                                 "matched entropy"}
    seconds, group, row = min(fits, key=lambda f: f[0])
    return {"found": True, "setting": group, "ar_latency_s": result["latency"]["ar"], "latency_s": seconds,
            "speedup": round(result["latency"]["ar"] / seconds, 2), "ar": ar, "diffusion": row}


def plot(result: dict, path) -> Path:
    """Left: judge perplexity against entropy, every setting (report prompts), AR and real text marked. Right: the
    matched-entropy perplexity of each family against its B=1 latency."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 6))
    families = sorted({s["family"] for s in result["settings"]})
    palette = plt.cm.tab10 if len(families) <= 10 else plt.cm.tab20  # 20 colours, then the next marker shape
    colours = {f: palette(i % palette.N) for i, f in enumerate(families)}
    marks = {f: "o^Dv"[i // palette.N % 4] for i, f in enumerate(families)}
    for s in result["settings"]:
        r = result["rows"][s["name"]]["report"]
        left.plot(r["unigram_entropy"], r["gen_ppl"], marks[s["family"]], color=colours[s["family"]], markersize=3,
                  alpha=0.6)
    for name, r in result["rows"].items():
        if name.startswith("ar/"):
            left.plot(r["report"]["unigram_entropy"], r["report"]["gen_ppl"], "s", color="black", markersize=4)
    real = result["rows"]["real"]["report"]
    left.axvspan(real["unigram_entropy"] * (1 - TOLERANCE), real["unigram_entropy"] * (1 + TOLERANCE), color="0.9")
    left.plot(real["unigram_entropy"], real["gen_ppl"], "*", color="red", markersize=12, label="real text")
    for family in families:
        left.plot([], [], marks[family] + "-", color=colours[family], label=family)
        mine = sorted(((int(g.split("@")[1]), row) for g, row in result["matched"].items()
                       if g.startswith(f"{family}@") and row and row.get("latency_s")), key=lambda t: t[0])
        if mine:
            right.plot([1000 * row["latency_s"] for _, row in mine], [row["gen_ppl"] for _, row in mine],
                       marks[family] + "-", color=colours[family])
            for steps, row in mine:
                right.annotate(str(steps), (1000 * row["latency_s"], row["gen_ppl"]), textcoords="offset points",
                               xytext=(3, 3), fontsize=7)
    left.plot([], [], "s", color="black", label="AR twin")
    ar = result["matched"].get("ar")
    if ar and ar.get("latency_s"):
        right.plot(1000 * ar["latency_s"], ar["gen_ppl"], "s", color="black", markersize=9)
    right.axhline(real["gen_ppl"], color="red", linestyle=":")
    left.set(xlabel="unigram entropy (nats)", ylabel="judge perplexity", yscale="log",
             title="every setting (report prompts); band: matched entropy")
    right.set(xlabel=f"B=1 latency (ms, {result['environment']['device']})", ylabel="judge perplexity at matched entropy",
              xscale="log", yscale="log", title="quality at matched entropy against speed (numbers: steps)")
    # one legend for both panels, beside them (tight_layout makes room for it): a family has one colour and marker
    right.legend(*left.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=7,
                 ncol=1 + len(families) // 36)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def prompt_sets(tokenizer, corpus: str, n: int, length: int) -> torch.Tensor:
    """``2n`` held-out blocks: ``n`` spread through the corpus (eval's) then the ``n`` blocks after each of them."""
    blocks = cached_blocks(paths.corpus(corpus), tokenizer, length, paths.CACHE)
    return torch.cat([shifted(blocks, n), shifted(blocks, n, 1)])


def run(args) -> int:
    if args.out.suffix != (".pt" if args.phase == "sample" else ".json"):
        raise ValueError(f"--out {args.out}: use a .pt for sample, a .json for score, all and merge")
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"--families {unknown[0]!r}: choose from {', '.join(FAMILIES)}")
    steps = int_list("--steps", args.steps)
    device = pick_device(args.device)
    if args.phase == "merge":
        return write(merge([tagged(str(p)) for p in args.inputs]), args.out)
    if args.phase in ("sample", "all"):
        mlm, ar = load_mlm(paths.resolve(args.mlm), device=device), load_causal_lm(paths.resolve(args.ar), device=device)
        tokenizer = load_tokenizer(paths.resolve(args.mlm))
        if any(POLICIES[FAMILIES[f]["policy"]].reads_corpus for f in families):
            corpus.salience_beside(tokenizer)  # a missing corpus count fails now, not after minutes of sampling
        blocks = prompt_sets(tokenizer, args.corpus, args.prompts, args.max_len)
        temperatures = [float(t) for t in args.temperatures.split(",")]
        filters = args.filters.split(",")
        if any(not t > 0 for t in temperatures) or any(f not in FILTERS for f in filters):
            raise ValueError(f"--temperatures {args.temperatures} / --filters {args.filters}: temperatures > 0, "
                             f"filters from {', '.join(FILTERS)}")
        samples = sample(mlm, ar, tokenizer, blocks, grid(families, steps, temperatures, filters), args.prefix_len,
                         args.seed, args.max_seconds, ar_temperatures=temperatures, ar_filters=filters)
        samples["models"] = {"mlm": args.mlm, "ar": args.ar, "corpus": args.corpus, "prompts_per_set": args.prompts}
        if args.phase == "sample":
            torch.save(samples, args.out)
            print(f"wrote {args.out}: {len(samples['ids'])} settings, {len(samples['skipped'])} skipped")
            return 0
    else:
        if len(args.inputs) != 1:
            raise ValueError("score takes one samples .pt (from `sample`)")
        samples = torch.load(args.inputs[0], weights_only=False)  # our own file: settings dicts and strings
    judge = load_causal_lm(paths.resolve(args.judge), device=device)
    n = samples["models"]["prompts_per_set"]
    result = score(samples, judge, slice(0, n), slice(n, 2 * n))
    result["models"] = {**samples["models"], "judge": args.judge}
    return write(result, args.out)


def write(result: dict, out: Path) -> int:
    paths.atomic_write_text(out, json.dumps(result, indent=1))
    figure = plot(result, out.with_suffix(".png"))
    print_table(result)
    print(f"wrote {out} and {figure}")
    return 0


def tagged(item: str) -> dict:
    """A merge input, ``PATH`` or ``TAG=PATH``: a tag names another model's run (``fast=...``), its families
    prefixed (``fast:random``) so that they stand beside the first model's."""
    tag, _, path = item.rpartition("=")
    result = json.loads(Path(path).read_text())
    return relabel(result, tag) if tag else result


def relabel(result: dict, tag: str) -> dict:
    """``result`` with every diffusion family renamed ``tag:family`` (rows, settings, latencies); AR and real stay."""
    own = {s["name"] for s in result["settings"]}
    rename = lambda name: f"{tag}:{name}" if name in own else name  # noqa: E731
    settings = [{**s, "name": rename(s["name"]), "family": f"{tag}:{s['family']}"} for s in result["settings"]]
    return {**result, "settings": settings, "rows": {rename(k): v for k, v in result["rows"].items()},
            "latency": {(k if k == "ar" else f"{tag}:{k}"): v for k, v in result["latency"].items()},
            "skipped": [f"{tag}:{n}" for n in result["skipped"]]}


def merge(results: list[dict]) -> dict:
    """Several judged runs as one: they must share the prompts (the real text's scores) and the judge."""
    first = results[0]
    for other in results[1:]:
        same_judge = Path(other["models"]["judge"]).name == Path(first["models"]["judge"]).name  # where it was unpacked
        if other["rows"]["real"] != first["rows"]["real"] or not same_judge:
            raise ValueError("these runs judged other prompts or with another judge: merge runs of one protocol only")
    merged = {**first, "rows": {}, "settings": [], "latency": {}, "skipped": [], "merged_from": len(results)}
    seen = set()
    for result in results:
        merged["rows"] |= result["rows"]
        merged["settings"] += [s for s in result["settings"] if s["name"] not in seen]
        seen |= {s["name"] for s in result["settings"]}
        merged["latency"] |= result["latency"]
    # skipped by every run that could have sampled it: listed once, after all runs are in
    merged["skipped"] = sorted({name for result in results for name in result["skipped"]} - set(merged["rows"]))
    merged["matched"] = matched(merged)
    merged["at_real_entropy"] = at_real_entropy(merged)
    merged["speed_at_equal_quality"] = speed_at_equal_quality(merged)
    return merged


def print_table(result: dict) -> None:
    real = result["rows"]["real"]["report"]
    print(f"real text: judge ppl {real['gen_ppl']:.1f}, entropy {real['unigram_entropy']:.3f}")
    print(f"{'matched':<28}{'setting':<40}{'ppl':>8}{'90 % interval':>16}{'x real':>8}{'paired 90 %':>12}"
          f"{'entropy':>9}{'rep_4':>7}{'ms B=1':>9}")
    for group, row in result["matched"].items():
        if row is None:
            print(f"{group:<28}{'(none at matched entropy)':<34}")
            continue
        ms = f"{1000 * row['latency_s']:.1f}" if row.get("latency_s") else "-"
        # results scored before the interval was kept have none
        interval = "{:.1f}-{:.1f}".format(*row["gen_ppl_interval"]) if "gen_ppl_interval" in row else "-"
        ratio = "{:.2f}-{:.2f}".format(*row["x_real_interval"]) if "x_real_interval" in row else "-"
        edge = "*" if row.get("report_in_band") is False else " "
        print(f"{group:<28}{row['setting']:<40}{row['gen_ppl']:>8.1f}{interval:>16}"
              f"{row['x_real']:>8.2f}{ratio:>12}{row['unigram_entropy']:>8.3f}{edge}{row['rep_4']:>7.3f}"
              f"{ms:>9}")
    if any(row and row.get("report_in_band") is False for row in result["matched"].values()):
        print("* entropy outside the band on the report prompts (picked inside it on the tuning prompts): read this "
              "row at the real text's entropy, below")
    print_rows(result)
    print("speed at equal quality:", json.dumps(result["speed_at_equal_quality"])[:400])


def build_parser() -> argparse.ArgumentParser:
    q = Parser(prog="python -m benchmarks.quality", description="judge every sampler and AR at matched entropy")
    q.add_argument("phase", choices=("sample", "score", "all", "merge"),
                   help="draw samples, judge them, both, or merge judged runs of the same prompts and judge")
    q.add_argument("inputs", nargs="*", type=Path, help="score: the .pt that `sample` wrote; merge: quality .json files, "
                   "TAG=FILE for another model's (its families shown as TAG:family)")
    q.add_argument("--mlm", default="weights/roberta-diffusion-small", help="masked LM (default: %(default)s)")
    q.add_argument("--ar", default="weights/gpt2-small-baseline", help="AR twin and guide (default: %(default)s)")
    q.add_argument("--judge", default="weights/judge", help="independent causal LM (default: %(default)s)")
    q.add_argument("--corpus", default="wikipedia-valid", help="held-out prompts (default: %(default)s)")
    q.add_argument("--prompts", type=int, default=64, help="prompts per set, tuning and report (default: %(default)s)")
    q.add_argument("--families", default=",".join(FAMILIES), help="sampler families (default: all)")
    q.add_argument("--steps", default=",".join(map(str, STEPS)), help="step counts (default: %(default)s)")
    q.add_argument("--temperatures", default=",".join(map(str, TEMPERATURES)), help="(default: %(default)s)")
    q.add_argument("--filters", default=",".join(FILTERS), help="top-k / top-p filters (default: %(default)s)")
    q.add_argument("--max-len", type=int, default=256, help="canvas (default: %(default)s)")
    q.add_argument("--prefix-len", type=int, default=PROMPT_LEN, help="prompt tokens (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--max-seconds", type=float, default=None, help="stop adding settings after this long (listed)")
    q.add_argument("--device", default="auto")
    q.add_argument("--out", type=Path, required=True, help="sample: a .pt; score / all: a .json (plot beside it)")
    return q


def main(argv: list[str] | None = None) -> int:
    return cli.run(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
