"""Where a graphed sampler call spends its time beyond the step loop (issue 5: the whole call at B=1, 10 steps).

On a CUDA device, roberta-base shapes with random weights: times the whole ``generate_diffusion`` call, the
replayed loop, and the planning alone, then a cProfile of the host side of 20 calls. Prints JSON, then the
profile's top functions by cumulative time.

python -m benchmarks.profile_call [--batch 1] [--steps 10] [--policy random]
"""

import argparse
import cProfile
import io
import json
import pstats

import torch
from roberta_diffusion import bpe
from roberta_diffusion.draws import make_generator
from roberta_diffusion.evaluate import prompt_canvas_from_blocks
from roberta_diffusion.plan import make_plan
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling

from .common import preset_model, timed_median


def median_ms(fn, repeats=20) -> float:
    return round(1e3 * timed_median(fn, torch.device("cuda"), repeats), 3)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--policy", default="random")
    args = parser.parse_args()
    tok = bpe.fallback_tokenizer()
    mlm = preset_model("mlm", tok, "base", 256, vocab_multiple=64).to("cuda", torch.bfloat16).eval()
    blocks = torch.randint(5, len(tok), (args.batch, 256), generator=torch.Generator().manual_seed(0))
    canvas = prompt_canvas_from_blocks(blocks, 16, tok.mask_token_id)
    on_device = canvas.to("cuda")
    free = ~on_device.pinned & on_device.attention.bool()
    sampling = Sampling(policy=args.policy, steps=args.steps)

    def call(c=canvas):
        return generate_diffusion(mlm, tok, sampling=sampling, canvas=c, graph=True)

    call()
    loops = []
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, **vars(args)}
    out["whole call, canvas on CPU, ms"] = median_ms(lambda: loops.append(call().total_time))
    out["whole call, canvas on the GPU, ms"] = median_ms(lambda: call(on_device))
    out["loop, ms"] = round(1e3 * sorted(loops)[len(loops) // 2], 3)
    out["make_plan, ms"] = median_ms(lambda: make_plan(free, sampling, make_generator(0, "cuda")))
    out["canvas to the GPU, ms"] = median_ms(lambda: canvas.to("cuda"))
    print(json.dumps(out, indent=1))
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(35)
    print(text.getvalue())
