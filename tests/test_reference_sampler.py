"""The fast sampler equals a plain, readable one (``reference_generate``, LLaDA's ``generate.py`` in spirit).

The reference is the spec: one function, one loop over blocks and steps, the full model on the whole canvas
at every step, Python loops over rows and positions, no plan, no gathering. It takes its random numbers in
the library's documented order (``plan.make_plan``: one float64 uniform per step, row and free slot, then one
float32 noise value per step, row and position, from ``torch.Generator().manual_seed(seed)``), so the two
must give the same tokens, not merely the same distribution.

Covered: every policy (with and without blocks, top-k/top-p, temperature, both schedules). ``entropy`` joined
once its score stopped being NaN where ``<mask>`` has probability 0 (``0 * -inf``; ``xlogy`` now): before, every
position tied and it committed left to right.
"""

from __future__ import annotations

import math

import pytest
import torch
from roberta_diffusion.canvas import infill_canvas, prompt_canvas
from roberta_diffusion.sampler import generate_diffusion


def reference_generate(model, tokenizer, canvas, *, steps, policy, schedule="linear", temperature=1.0,
                       top_k=50, top_p=0.95, block_size=None, threshold=0.9, seed=0):
    mask_id, (rows, length) = tokenizer.mask_token_id, canvas.ids.shape
    free = ~canvas.fixed & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, mask_id)
    slot = free.long().cumsum(dim=1) - 1  # a free position's column among its row's free positions
    block = torch.where(free, slot // block_size if block_size else 0, -1)
    width, n_blocks = max(int(free.sum(dim=1).max()), 1), int(block.max()) + 1
    generator = torch.Generator().manual_seed(seed)
    draw = torch.rand((steps, rows * width), dtype=torch.float64, generator=generator).view(steps, rows, width)
    noise = torch.rand((steps, rows, length), generator=generator)
    j = -1
    for b in range(n_blocks):
        block_steps = steps // n_blocks + (b < steps % n_blocks)
        in_block = block == b
        for k in range(block_steps):
            j += 1
            masked = (x == mask_id) & in_block
            if policy == "threshold" and not masked.any():
                continue  # the block is done early
            logits = model(input_ids=x, attention_mask=canvas.attention).logits.float()
            logits[..., mask_id] = float("-inf")  # never draw <mask>
            scaled = logits / temperature
            new_x, score = x.clone(), torch.full((rows, length), float("-inf"))
            for r, pos in in_block.nonzero().tolist():  # draw a token at every position of the block
                values, ids = scaled[r, pos], torch.arange(scaled.shape[-1])  # unfiltered: vocabulary order
                filtered = 0 < top_k < len(ids) or top_p < 1
                if filtered:  # filtered: most probable first, top-k, then the nucleus
                    values, ids = values.sort(descending=True)
                    values, ids = values[: top_k or None], ids[: top_k or None]
                    probs = values.softmax(dim=0)
                    values = values.masked_fill(probs.cumsum(dim=0) - probs >= top_p, float("-inf"))
                cdf = values.double().softmax(dim=0).cumsum(dim=0)  # inverse CDF: the first token whose mass
                pick = int(torch.searchsorted(cdf, draw[j, r, slot[r, pos]] * cdf[-1]))  # reaches the uniform
                pick = min(pick, int((values > -math.inf).sum()) - 1 if filtered else len(ids) - 1)
                new_x[r, pos] = ids[pick]
                p = scaled[r, pos].softmax(dim=0)
                top2 = p.topk(2).values
                score[r, pos] = {"random": noise[0, r, pos], "confidence": p[ids[pick]], "threshold": p[ids[pick]],
                                 "margin": top2[0] - top2[1], "entropy": (p * p.clamp(min=1e-30).log()).sum()}.get(policy, 0)
            # how many stay masked after step k of this block: round(n * (1 - k/K)) or the cosine of it
            frac = (lambda t: 1 - t) if schedule == "linear" else (lambda t: math.cos(math.pi / 2 * t))
            n = in_block.sum(dim=1).tolist()
            left = [0 if k + 1 == block_steps else round(n[r] * frac((k + 1) / block_steps)) for r in range(rows)]
            if policy == "seed-remask":  # keep every draw, then re-mask the `left` positions of highest noise
                x = torch.where(in_block, new_x, x)
                for r in range(rows):
                    order = sorted(in_block[r].nonzero().flatten().tolist(), key=lambda p: -noise[j, r, p])
                    x[r, order[: left[r]]] = mask_id
                continue
            for r in range(rows):
                candidates = sorted(masked[r].nonzero().flatten().tolist(), key=lambda p: -score[r, p])
                before = round(n[r] * frac(k / block_steps)) if k else n[r]
                if policy == "threshold":
                    chosen = [p for p in candidates if score[r, p] >= threshold] or candidates[:1]
                else:
                    chosen = candidates[: before - left[r]]
                if k + 1 == block_steps:
                    chosen = candidates  # a block's last step commits all that is left
                x[r, chosen] = new_x[r, chosen]
    return x


PROMPTS = ["The cat sat on the mat and", "A"]
CASES = {
    "seed-remask": {"policy": "seed-remask"},
    "random": {"policy": "random", "seed": 3},
    "random-block": {"policy": "random", "block_size": 5, "steps": 8},
    "confidence": {"policy": "confidence"},
    "confidence-cosine": {"policy": "confidence", "schedule": "cosine", "temperature": 0.7, "seed": 2},
    "confidence-block": {"policy": "confidence", "block_size": 4, "steps": 8},
    "margin": {"policy": "margin", "top_k": 0, "top_p": 1.0, "seed": 1},
    "threshold": {"policy": "threshold", "threshold": 0.05},
    "entropy": {"policy": "entropy"},
}


@pytest.mark.parametrize("infill", [False, True], ids=["prompt", "infill"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fast_sampler_equals_the_reference(mlm, tokenizer, case, infill):
    settings = {"steps": 6, **case}
    canvas = infill_canvas(tokenizer, ["The <mask*5> sat down.", "A <mask*7> on the <mask*3> mat"]) if infill \
        else prompt_canvas(tokenizer, PROMPTS, None, 20)
    policy = settings.pop("policy")
    fast = generate_diffusion(mlm, tokenizer, canvas=canvas, policy=policy, **settings).final
    with torch.no_grad():
        slow = reference_generate(mlm, tokenizer, canvas, policy=policy, **settings)
    assert (fast != tokenizer.mask_token_id).all(), "the fast sampler left a <mask>"
    assert torch.equal(fast, slow)
