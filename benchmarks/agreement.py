"""How closely a fast sampler follows the plain one when their kernels differ: the compiled diffusion step, and the
static-cache GPT-2 decoder (``ar_teacher_forced``).

Graph replay runs the plain step's kernels and gives the same tokens (tests check it). A compiled step fuses
kernels, so its floats differ in the last bits; a draw whose uniform falls near a boundary of the cumulative
probabilities then picks the neighbouring token, and from there the two runs write different text. Comparing
finished texts therefore says little. Instead, both steps are run *teacher-forced*: on every canvas of the plain
run's trajectory, with the same plan (the same random numbers), and their draws are compared one step at a time.

The tolerance (``within_tolerance``) is set by the working precision: the plain step in the model's dtype against
the same step in float32 (float64 for a float32 model) shows how far rounding alone moves the draws. Two computations
that each round at that precision, in different orders, differ from each other by about sqrt(2) times what one
differs from the exact result; the fast step may therefore differ from the plain one by at most twice the precision's
own figures, in the share of draws that pick another token and in the mean gap of the chosen token's probability.

Why not "no more than precision": with random weights (the ``base`` benchmark) the logits are nearly flat, top-k
keeps near-ties, and rounding alone changes 56 % of the draws (H200, bf16 against float32, run ``-p``); the
compiled step changed 59 %, the same order, which a factor of one cannot tell from noise.

The GPT-2 decoders get the same treatment (``ar_teacher_forced``): the static-cache decoder, replayed or not, is
forced along the plain KV-cache loop's run (each step reads the loop's tokens as its context, not its own draws) and
compared draw by draw, against the loop in float32 on the same trajectory.
"""

from __future__ import annotations

import copy
import functools

import torch
from roberta_diffusion import graphs
from roberta_diffusion.draws import make_generator
from roberta_diffusion.plan import make_plan
from roberta_diffusion.sampler import (
    compiled_step,
    diffusion_step,
    generate_ar,
    generate_diffusion,
    model_attention_mask,
)
from roberta_diffusion.sampling import Sampling


def teacher_forced_agreement(model, tokenizer, canvas, candidate, **settings) -> dict:
    """Run the plain sampler, then ``reference`` and ``candidate`` on each of its canvases; compare their draws.

    ``candidate`` / ``reference``: a step with ``diffusion_step``'s signature less the model, e.g.
    ``plain_step(other_model)`` (default reference: ``plain_step(model)``).
    Returns the number of compared draws (positions either step commits, over all steps), the share where both
    wrote the same token, and the largest and mean gap of the chosen token's probability where they agree. (For
    ``redraw``, which redraws positions already written, only the draws at still-masked positions count.)
    """
    return teacher_forced_agreements(model, tokenizer, canvas, {"candidate": candidate}, **settings)["candidate"]


@torch.no_grad()
def teacher_forced_agreements(model, tokenizer, canvas, candidates: dict, *, reference=None, **settings) -> dict:
    """``teacher_forced_agreement`` for several ``candidates`` (name -> step) along one plain run and one pass of
    the reference step: name -> the comparison. ``settings``: ``Sampling`` fields (default: its own, 10 steps)."""
    reference = reference or plain_step(model)
    sampling = Sampling(**{"steps": 10, **settings})
    trace = generate_diffusion(model, tokenizer, sampling=sampling, canvas=canvas)
    device = next(model.parameters()).device
    canvas = canvas.to(device)
    free = ~canvas.pinned & canvas.attention.bool()
    plan = make_plan(free, sampling, make_generator(sampling.seed, device))
    attention = model_attention_mask(model, canvas.attention)
    knobs = (sampling, tokenizer.mask_token_id)
    compared = {name: [] for name in candidates}
    for j in range(trace.steps):
        x = trace.ids[j].to(device)
        start = torch.full(x.shape, float("nan"), device=device)
        step = torch.tensor([j], device=device)
        ref_x, ref_conf, _ = reference(x, start, start, attention, plan, step, *knobs)
        masked = x == tokenizer.mask_token_id
        for name, candidate in candidates.items():
            new_x, new_conf, _ = candidate(x, start, start, attention, plan, step, *knobs)
            drawn = masked & ((ref_x != x) | (new_x != x))  # [B, L] committed by either
            compared[name].append(_draws(ref_x, ref_conf, new_x, new_conf, drawn))
    return {name: _summary(found) for name, found in compared.items()}


def _draws(ref_ids, ref_conf, ids, conf, drawn) -> tuple[int, int, torch.Tensor]:
    """Of the ``drawn [B, L]`` positions: how many, how many with the same token, and the probability gaps there."""
    agree = drawn & (ref_ids == ids)
    return int(drawn.sum()), int(agree.sum()), (ref_conf.float() - conf.float()).abs()[agree].cpu()


def _summary(compared: list) -> dict:
    draws, same = sum(c[0] for c in compared), sum(c[1] for c in compared)
    gap = torch.cat([c[2] for c in compared]) if compared else torch.zeros(0)
    return {"draws": draws, "token_agreement": same / max(draws, 1),
            "max_probability_gap": float(gap.max()) if gap.numel() else 0.0,
            "mean_probability_gap": float(gap.mean()) if gap.numel() else 0.0}


def ar_teacher_forced(model, tokenizer, prefix_ids, *, graph=False, **settings) -> dict:
    """The static-cache GPT-2 decoder (``graph``: replayed) against the plain KV-cache loop, teacher-forced along the
    loop's own run (same random numbers, same contexts), next to the loop in a wider dtype on the same trajectory:
    ``{"fast", "precision", "within_tolerance"}``, the tolerance as for the diffusion step. ``prefix_ids [B, P]``."""
    return ar_teacher_forced_all(model, tokenizer, prefix_ids, {"fast": dict(graph=graph)}, **settings)["fast"]


@torch.no_grad()
def ar_teacher_forced_all(model, tokenizer, prefix_ids, decoders: dict, *, seed=0, max_len=256, **sampling) -> dict:
    """``ar_teacher_forced`` for several static-cache ``decoders`` (name -> ``generate_ar`` options, e.g.
    ``{"graphed": {"graph": True}}``) along one plain run and one wider-dtype pass: name -> its comparison."""
    settings = dict(seed=seed, max_len=max_len, **sampling)
    plain = generate_ar(model, tokenizer, prefix_ids, **settings)
    generated = ~plain.pinned

    def forced(run_model, **how):
        run = generate_ar(run_model, tokenizer, prefix_ids, teacher_forced=plain.final, **settings, **how)
        return _summary([_draws(plain.final, plain.confidence, run.final, run.confidence, generated)])

    fast = {name: forced(model, **{"static_cache": True, **how}) for name, how in decoders.items()}
    precision = forced(wider_copy(model))
    return {name: {"fast": found, "precision": precision, "within_tolerance": within_tolerance(found, precision)}
            for name, found in fast.items()}


def plain_step(model):
    """``diffusion_step`` bound to ``model``, given the attention mask in the model's own dtype (the sampler prepares
    it for the reference model, whose dtype may differ)."""
    dtype = next(model.parameters()).dtype

    def step(x, confidence, proposal, attention, plan, j, sampling, mask_id):
        return diffusion_step(model, x, confidence, proposal, attention.to(dtype), plan, j, sampling, mask_id)

    return step


def fast_step(model, compile_mode: str | None = None):
    """The step ``generate_diffusion(compile=compile_mode or True)`` runs (CUDA), bound to ``model``: the same
    compiled function, so its kernels are the ones the timed runs replayed."""
    return functools.partial(compiled_step(model, compile_mode), model)


def wider_copy(model):
    """A copy of ``model`` in float32 (float64 for a float32 model), without the graphs, buffers and compiled steps
    the samplers keep on it: a captured CUDA graph cannot be copied, and a static KV cache need not be."""
    kept = model.__dict__.pop(graphs.CACHE, None)
    try:
        wide = copy.deepcopy(model)
    finally:
        if kept is not None:
            model.__dict__[graphs.CACHE] = kept
    dtype = next(model.parameters()).dtype
    return wide.to(torch.float64 if dtype == torch.float32 else torch.float32)


def step_tolerance(model, tokenizer, canvas, candidate, *, name="fast", **settings) -> dict:
    """The documented tolerance for a diffusion step: ``candidate`` and the plain step in a wider dtype (float32;
    float64 for a float32 model: how far the working precision alone moves the draws), both along one plain run:
    ``{name: ..., "precision": ..., "within_tolerance": ...}``."""
    found = teacher_forced_agreements(model, tokenizer, canvas, {name: candidate, "precision": plain_step(wider_copy(model))},
                                      **settings)
    return {**found, "within_tolerance": within_tolerance(found[name], found["precision"])}


TOLERANCE_FACTOR = 2.0  # two roundings at one precision: about sqrt(2) times one; see the module docstring


def within_tolerance(fast: dict, precision: dict, factor: float = TOLERANCE_FACTOR) -> bool:
    """The documented tolerance (module docstring): the fast step's share of changed draws and mean probability gap
    are each at most ``factor`` times the working precision's."""
    changed = 1 - fast["token_agreement"] <= factor * (1 - precision["token_agreement"])
    return changed and fast["mean_probability_gap"] <= factor * precision["mean_probability_gap"]
