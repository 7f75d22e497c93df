"""Judge perplexity at exactly the real text's entropy, interpolated between the two temperatures that bracket it.

``quality.matched`` keeps the best grid setting inside a band of +-3 % around the real text's entropy. A coarse
temperature grid can then step over the band, or land one setting just outside it, and a row's number depends on
where the grid fell (session 15: 32 twin-guided candidates at t 1.0 missed the band by 0.3 % and the pick fell to
t 1.1, 34 % higher). Here every filter's temperature sweep is read as a curve: on the tuning prompts, the
temperature ``t*`` at which the entropy equals the real text's (linear between the two grid temperatures around it),
the filter whose log-perplexity there is lowest; then the report prompts' perplexity and entropy at that same ``t*``.
One number per family and step count, at one entropy, chosen where the reported numbers were not looked at.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from roberta_diffusion.paths import atomic_write_text
from workbench import cli
from workbench.cli import Parser


def parse(name: str) -> tuple[str, float, str]:
    """``"random@16/t1.1/k190"`` -> ``("random@16", 1.1, "k190")``; AR rows are ``"ar/t1/k190"``."""
    group, temperature, filter_name = name.rsplit("/", 2)
    return group, float(temperature[1:]), filter_name


def groups(result: dict) -> dict[str, list[str]]:
    """Row names by group: ``ar`` and each ``family@steps`` (their order as the settings list them)."""
    out: dict[str, list[str]] = {"ar": [n for n in result["rows"] if n.startswith("ar/")]}
    for s in result["settings"]:
        out.setdefault(f"{s['family']}@{s['steps']}", []).append(s["name"])
    return out


def crossing(rows: dict, names: list[str], entropy: float):
    """The first pair of neighbouring temperatures (by the tuning set) whose entropies bracket ``entropy``:
    ``(low, high, weight)`` with ``t* = (1 - weight) t_low + weight t_high``, or None."""
    curve = sorted(names, key=lambda n: parse(n)[1])
    for low, high in zip(curve, curve[1:], strict=False):
        e_low, e_high = (rows[n]["tune"]["unigram_entropy"] for n in (low, high))
        if e_low != e_high and (e_low - entropy) * (e_high - entropy) <= 0:
            return low, high, (entropy - e_low) / (e_high - e_low)
    return None


def between(a: float, b: float, weight: float, log: bool = False) -> float:
    if log:
        return math.exp((1 - weight) * math.log(a) + weight * math.log(b))
    return (1 - weight) * a + weight * b


def at_real_entropy(result: dict) -> dict:
    """Per group: the report set's judge perplexity and entropy at the temperature where the tuning set's entropy is
    the real text's, for the filter lowest there on the tuning set (None where no filter's sweep brackets it)."""
    rows = result["rows"]
    real = {half: rows["real"][half] for half in ("tune", "report")}
    out = {}
    for group, names in groups(result).items():
        by_filter: dict[str, list[str]] = {}
        for n in names:
            by_filter.setdefault(parse(n)[2], []).append(n)
        best = None
        for filter_name, members in by_filter.items():
            found = crossing(rows, members, real["tune"]["unigram_entropy"])
            if found is None:
                continue
            low, high, w = found
            tune_ppl = between(rows[low]["tune"]["gen_ppl"], rows[high]["tune"]["gen_ppl"], w, log=True)
            if best is None or tune_ppl < best[0]:
                best = (tune_ppl, filter_name, low, high, w)
        if best is None:
            out[group] = None
            continue
        tune_ppl, filter_name, low, high, w = best
        ppl = between(rows[low]["report"]["gen_ppl"], rows[high]["report"]["gen_ppl"], w, log=True)
        out[group] = {"filter": filter_name, "temperature": round(between(parse(low)[1], parse(high)[1], w), 3),
                      "between": [low, high], "gen_ppl": round(ppl, 2),
                      "unigram_entropy": round(between(rows[low]["report"]["unigram_entropy"],
                                                       rows[high]["report"]["unigram_entropy"], w), 4),
                      "x_real": round(ppl / real["report"]["gen_ppl"], 3), "tune_gen_ppl": round(tune_ppl, 2)}
    return out


def print_rows(result: dict) -> None:
    found = result.get("at_real_entropy") or at_real_entropy(result)
    print(f"at the real text's entropy ({result['rows']['real']['tune']['unigram_entropy']:.3f} on the tuning set), "
          "interpolated between two temperatures:")
    for group, row in found.items():
        if row is None:
            print(f"  {group:<28}(no temperature sweep brackets it)")
        else:
            print(f"  {group:<28}{row['filter']:<8}t {row['temperature']:<7}{row['gen_ppl']:>8.1f}"
                  f"{row['x_real']:>7.2f}x real{row['unigram_entropy']:>8.3f}")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.at_entropy RESULTS.json... --out AT.json``: the table of each judged results file."""
    parser = Parser(prog="python -m benchmarks.at_entropy", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="judged quality .json files (`benchmarks.quality`)")
    parser.add_argument("--out", type=Path, required=True, help="a .json: results file -> group -> its row")

    def run(args) -> int:
        if args.out.suffix != ".json":
            raise ValueError(f"--out {args.out}: give a .json file")
        tables = {}
        for path in args.results:
            result = json.loads(path.read_text())
            tables[str(path)] = at_real_entropy(result)
            print(f"== {path}")
            print_rows({**result, "at_real_entropy": tables[str(path)]})
        atomic_write_text(args.out, json.dumps(tables, indent=1))
        print(f"wrote {args.out}")
        return 0

    return cli.run(parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
