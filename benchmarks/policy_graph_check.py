"""Every registered policy gives the same tokens replayed as a CUDA graph as in the eager loop (shipped model, GPU),
and so do twin-pointed correction rounds (``guided.correct``).

``python -m benchmarks.policy_graph_check --out graph_check.json``: for each policy that runs a fixed number of steps
(``threshold`` stops early and takes no graph), a batch of prompts with and without ``graph=True``; then 8
correction rounds of one such draw, with and without.
"""

from __future__ import annotations

import argparse
import json

import torch
from roberta_diffusion import corpus, evaluate, paths
from roberta_diffusion.guided import correct
from roberta_diffusion.models import load_causal_lm, load_mlm, load_tokenizer
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampler import generate_diffusion

from .common import timed_median

KNOB_VALUES = {"remask": 0.2, "position_decay": 0.05, "order_temperature": 2.0}  # each policy knob, set off its default


def compare(eager: torch.Tensor, graphed: torch.Tensor) -> dict:
    return {"equal": bool(torch.equal(eager, graphed)), "agreement": round(float((eager == graphed).float().mean()), 6)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--mlm", default=str(paths.SHIPPED_MLM), help="masked LM (default: the shipped one)")
    parser.add_argument("--ar", default=str(paths.SHIPPED_AR), help="the twin that points the corrections")
    args = parser.parse_args()
    mlm, tokenizer = load_mlm(args.mlm, device="cuda"), load_tokenizer(args.mlm)
    salience = corpus.salience_beside(tokenizer)
    blocks = torch.randint(5, len(tokenizer), (8, 256), generator=torch.Generator().manual_seed(0))
    canvas = evaluate.prompt_canvas_from_blocks(blocks, 16, tokenizer.mask_token_id)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "policies": {}}
    for name, rule in POLICIES.items():
        if rule.adaptive:
            continue
        kwargs = dict(canvas=canvas, steps=24, policy=name, seed=5, salience=salience if rule.reads_corpus else None,
                      **({rule.knob: KNOB_VALUES[rule.knob]} if rule.knob else {}))
        eager = generate_diffusion(mlm, tokenizer, **kwargs).final
        graphed = generate_diffusion(mlm, tokenizer, graph=True, **kwargs).final
        out["policies"][name] = compare(eager, graphed)
        print(f"{name:<12} graph == eager: {out['policies'][name]['equal']} ({out['policies'][name]['agreement']})")
    twin = load_causal_lm(args.ar, device="cuda")
    drawn = generate_diffusion(mlm, tokenizer, canvas=canvas, steps=16, policy="random", top_k=190, seed=5)
    eager, graphed = (correct(mlm, twin, drawn, 8, graph=graph).final for graph in (False, True))
    out["policies"]["corrections"] = compare(eager, graphed)
    print(f"corrections  graph == eager: {out['policies']['corrections']['equal']}")
    one = generate_diffusion(mlm, tokenizer, canvas=evaluate.prompt_canvas_from_blocks(blocks[:1], 16, tokenizer.mask_token_id),
                             steps=16, policy="random", top_k=190, seed=5)
    for graph in (False, True):  # B=1: what a round costs a reader waiting for one text
        seconds = timed_median(lambda graph=graph: correct(mlm, twin, one, 16, graph=graph), torch.device("cuda"), 5)
        out[f"ms_per_round_b1_{'graphed' if graph else 'eager'}"] = round(1e3 * seconds / 16, 3)
    print(f"a correction round at B=1: {out['ms_per_round_b1_eager']} ms eager, {out['ms_per_round_b1_graphed']} ms graphed")
    paths.atomic_write_text(args.out, json.dumps(out, indent=2))
    return 0 if all(p["equal"] for p in out["policies"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
