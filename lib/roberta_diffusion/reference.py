"""The readable diffusion sampler: the spec that the fast one (``sampler.generate_diffusion``) equals token for token.

One function, one loop over blocks and steps, the full model on the whole canvas at every step, Python loops over
rows and positions, no plan and no gathering: slow, and meant to be read (LLaDA's ``generate.py`` in spirit). It
takes its random numbers in the library's documented order (``plan.make_plan``: one float64 uniform per step, row and
free slot, then one float32 noise value per step, row and position, from ``torch.Generator().manual_seed(sampling.seed)``),
so the two give the same tokens, not merely the same distribution (``tests/test_reference_sampler.py``).
"""

from __future__ import annotations

import math

import torch

from .policies import SALIENCE_CLIP

TINY = torch.finfo(torch.float32).tiny  # policy sampled: the noise's floor (noise 0 would give a NaN score)
from .sampling import Sampling


@torch.no_grad()
def reference_generate(model, tokenizer, canvas, sampling: Sampling, salience=None):
    steps, policy, schedule, top_k, top_p = (sampling.steps, sampling.policy, sampling.schedule, sampling.top_k,
                                             sampling.top_p)
    mask_id, (rows, length) = tokenizer.mask_token_id, canvas.ids.shape
    free = ~canvas.pinned & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, mask_id)
    slot = free.long().cumsum(dim=1) - 1  # a free position's column among its row's free positions
    first_free = [int(free[r].nonzero()[0]) if free[r].any() else 0 for r in range(rows)]
    block = torch.where(free, slot // sampling.semi_ar_block if sampling.semi_ar_block else 0, -1)
    width, n_blocks = max(int(free.sum(dim=1).max()), 1), int(block.max()) + 1
    generator = torch.Generator().manual_seed(sampling.seed)
    draw = torch.rand((steps, rows * width), dtype=torch.float64, generator=generator).view(steps, rows, width)
    noise = torch.rand((steps, rows, length), generator=generator)
    confidence = torch.zeros(rows, length)
    j = -1
    for b in range(n_blocks):
        block_steps = steps // n_blocks + (b < steps % n_blocks)
        in_block = block == b
        revised = [0] * rows  # remdm: how many the previous step sent back to <mask>
        for k in range(block_steps):
            j += 1
            masked = (x == mask_id) & in_block
            if policy == "threshold" and not masked.any():
                continue  # the block is done early
            logits = model(input_ids=x, attention_mask=canvas.attention).logits.float()
            logits[..., mask_id] = float("-inf")  # never draw <mask>
            scaled = logits / sampling.temperature
            new_x, score, p_drawn = x.clone(), torch.full((rows, length), float("-inf")), torch.zeros(rows, length)
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
                token = int(ids[pick])
                new_x[r, pos] = token
                p = scaled[r, pos].softmax(dim=0)
                p_drawn[r, pos] = p[token]
                top2 = p.topk(2).values
                score[r, pos] = {
                    "random": noise[0, r, pos], "remdm": noise[j, r, pos], "confidence": p[token],
                    "threshold": p[token], "margin": top2[0] - top2[1], "entropy": (p * p.clamp(min=1e-30).log()).sum(),
                    "calibrated": math.exp(-sampling.position_decay * (pos - first_free[r]))
                    * min(float(p[token] * salience[token]) if salience is not None else 0.0, SALIENCE_CLIP),
                    "sampled": p[token].log() + sampling.order_temperature * -(-noise[j, r, pos].clamp(min=TINY).log()).log(),
                }.get(policy, 0)
            # how many stay masked after step k of this block: round(n * (1 - k/K)) or the cosine of it
            frac = (lambda t: 1 - t) if schedule == "linear" else (lambda t: math.cos(math.pi / 2 * t))
            n = in_block.sum(dim=1).tolist()
            left = [0 if k + 1 == block_steps else round(n[r] * frac((k + 1) / block_steps)) for r in range(rows)]
            if policy == "redraw":  # keep every draw, then re-mask the `left` positions of highest noise
                x = torch.where(in_block, new_x, x)
                confidence = torch.where(in_block, p_drawn, confidence)
                for r in range(rows):
                    order = sorted(in_block[r].nonzero().flatten().tolist(), key=lambda p: -noise[j, r, p])
                    x[r, order[: left[r]]] = mask_id
                continue
            for r in range(rows):
                candidates = sorted(masked[r].nonzero().flatten().tolist(), key=lambda p: -score[r, p])
                before = round(n[r] * frac(k / block_steps)) if k else n[r]
                if policy == "threshold":
                    chosen = [p for p in candidates if score[r, p] >= sampling.threshold] or candidates[:1]
                else:
                    chosen = candidates[: before - left[r] + revised[r]]
                if k + 1 == block_steps:
                    chosen = candidates  # a block's last step commits all that is left
                earlier = [p for p in in_block[r].nonzero().flatten().tolist() if p not in candidates]
                x[r, chosen] = new_x[r, chosen]
                confidence[r, chosen] = p_drawn[r, chosen]
                if policy == "remdm":  # send the least confident earlier tokens back for a later step to redraw
                    revised[r] = 0 if k + 1 == block_steps else math.floor(sampling.remask * len(earlier))
                    x[r, sorted(earlier, key=lambda p: confidence[r, p])[: revised[r]]] = mask_id
    return x
