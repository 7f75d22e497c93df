"""The diffusion sampler (one loop, many policies) and the autoregressive baseline; both return a Trace.

Diffusion step: one forward pass -> sample a token for every candidate position -> commit some of them
(which ones: the policy; how many: the schedule) -> the rest stay ``<mask>``. Policies:

- ``seed-remask``: the seed's decoder. Resample every generated position, then re-mask a random share
  that falls with the schedule ((N-1)/N, ..., 1/N, 0 for ``linear``).
- ``random`` (MDLM ancestral), ``confidence`` (MaskGIT/LLaDA), ``margin`` (top1 - top2), ``entropy``
  (lowest first): commit the scheduled number per step, best-scored first.
- ``threshold``: commit every position whose probability is >= ``threshold``, at least the best one;
  a block's last step commits all that is left, and the loop stops early once nothing is masked.

``block_size`` fills the canvas block by block (semi-autoregressive, as in LLaDA), splitting the steps
evenly between blocks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

import torch

from . import graphs
from .autoregressive import generate_ar  # re-exported: one import for both samplers
from .canvas import Canvas, prompt_canvas
from .graphs import check_graph_device
from .models import gathered_logits, is_masked_lm, max_canvas_len
from .sampling import (
    SCHEDULES,
    check_sampling_args,
    chosen_probability,
    make_generator,
    policy_scores,
    sample_tokens,
    still_masked_counts,
    sync,
    top_count_mask,
)
from .trace import Trace

STRATEGIES = ("seed-remask", "random", "confidence", "margin", "entropy", "threshold")


def check_diffusion_model(model, tokenizer) -> None:
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    if not is_masked_lm(model):
        raise ValueError(f"{type(model).__name__} is not a masked LM: pass e.g. RobertaForMaskedLM (a causal LM goes to `ar`)")


def _check_args(steps, strategy, schedule, temperature, top_k, top_p, block_size, threshold):
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (or None for the whole canvas)")
    if block_size is not None and strategy == "seed-remask":
        raise ValueError("seed-remask resamples the whole canvas each step: drop block_size or pick another strategy")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1]")
    check_sampling_args(temperature, top_k, top_p)


def _block_ids(free: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """``[B, L]`` block index of each free position (-1 elsewhere), counting free positions left to right."""
    if block_size is None:
        return torch.where(free, 0, -1)
    order = free.long().cumsum(dim=1) - 1
    return torch.where(free, order // block_size, -1)


@dataclass
class Plan:
    """Everything a step reads, fixed before the loop, so that every step runs the same code on the same
    shapes (what lets a CUDA graph replay it). ``S`` steps, ``B`` rows, ``L`` positions, ``F`` candidates.

    in_block [S, B, L] bool    positions of the block being filled at each step
    counts [S, B] long         how many to commit at each step (unmasking policies)
    n_remask [S, B] long       how many to re-mask after each step (seed-remask)
    last [S] bool              the last step of its block: commit everything still masked
    candidates [B, F] long     the free positions, where tokens are drawn (padded rows repeat a fixed one)
    valid [B, F] bool          False on that padding
    draw [S, B * F] float64    the inverse-CDF uniform of every draw
    noise [S, B, L] float32    random policy scores / seed-remask noise
    commit_pos [S, B, C] long  ``random`` only (C = 0 otherwise): the positions each step commits, known before
                               the loop because that policy's choice reads only the noise; padded slots hold
                               positions the step leaves alone
    commit_ok [S, B, C] bool   False on that padding
    commit_draw [S, B * C]     the uniforms of ``draw`` that belong to those positions (float64)
    """

    in_block: torch.Tensor
    counts: torch.Tensor
    n_remask: torch.Tensor
    last: torch.Tensor
    candidates: torch.Tensor
    valid: torch.Tensor
    draw: torch.Tensor
    noise: torch.Tensor
    commit_pos: torch.Tensor
    commit_ok: torch.Tensor
    commit_draw: torch.Tensor

    def tensors(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def model_attention_mask(model, attention: torch.Tensor) -> torch.Tensor:
    """The mask argument the sampler gives ``model`` for a canvas whose real tokens are ``attention [B, L]``.

    A prepared 4D mask (``additive_attention_mask``), which transformers passes through untouched, wherever it
    means the same as the 2D one: not for sliding-window layers (ModernBERT's local layers would silently attend
    to the whole canvas). Those get the 2D mask, and then a CUDA graph may run another attention kernel than the
    eager loop (tokens can differ in the last bits).
    """
    if "sliding_attention" in (getattr(model.config, "layer_types", None) or []):
        return attention
    return additive_attention_mask(attention, next(model.parameters()).dtype)


def additive_attention_mask(attention: torch.Tensor, dtype) -> torch.Tensor:
    """``attention [B, L]`` (1 = real token) -> ``[B, 1, 1, L]``: 0 where a key may be attended, the dtype's
    minimum where not.

    transformers passes a 4D mask through untouched. Given a 2D (or no) mask it decides itself whether to
    materialise one, and that decision reads the data, except while a CUDA graph is being captured, when it
    always materialises: eager steps then ran the flash kernel and captured ones the masked kernel, and
    their tokens drifted apart (seen on an H200). One prepared mask for both paths keeps them identical.
    Even an unpadded canvas gets it: with no mask (torch 2.11, an H200) eager steps ran cuDNN's attention, and
    captured steps neither reproduced their tokens nor kept their speed (twice as slow at B=64; the A/B in
    reports/2026-11-28-h200-session3/).
    """
    return torch.zeros(attention.shape, dtype=dtype, device=attention.device).masked_fill(
        attention == 0, torch.finfo(dtype).min)[:, None, None, :]


def make_plan(free, steps, strategy, schedule, block_size, generator) -> Plan:
    """The schedule, blocks and every random number of a run. ``free [B, L]`` bool: positions to generate.

    Everything that depends on ``free`` alone (schedule, blocks, candidates) is worked out on the host and copied
    over once: on a GPU each small operation costs a kernel launch (microseconds, whatever its size), and this runs
    once per call, outside the replayed loop (at B=1 it was a sixth of a 10-step call). The random numbers, and the
    ranking that reads them, are made on the device.
    """
    device = free.device
    free = free.cpu()
    batch, length = free.shape
    blocks = _block_ids(free, block_size)
    n_blocks = (int(blocks.max()) + 1 if block_size is not None else 1) if free.any() else 0
    if n_blocks > steps:
        raise ValueError(f"{n_blocks} blocks of {block_size} need at least {n_blocks} steps: raise steps or block_size")
    n_free = free.sum(dim=1)
    if n_blocks:
        in_block, counts, n_remask, last = _block_schedule(blocks, n_blocks, steps, schedule)
    else:  # nothing to generate: one no-op step keeps the shapes valid
        in_block, counts, n_remask, last = free.unsqueeze(0), n_free.unsqueeze(0), n_free.unsqueeze(0), torch.ones(1, dtype=torch.bool)
    width = max(int(n_free.max()), 1)
    # stable sort puts each row's free positions first, in order; the rest pad the row
    order = (~free).long().argsort(dim=1, stable=True)
    candidates = order[:, :width]
    valid = torch.arange(width).unsqueeze(0) < n_free.unsqueeze(1)
    first_fixed = order[:, -1:].expand(-1, width)  # a non-free position wherever a row has padding
    candidates = torch.where(valid, candidates, first_fixed)
    n_steps = in_block.shape[0]
    draw = torch.rand((n_steps, batch * width), dtype=torch.float64, device=device, generator=generator)
    noise = torch.rand((n_steps, batch, length), device=device, generator=generator)
    commits = _planned_commits(noise, free, blocks, in_block, counts, last, draw) if strategy == "random" else \
        _no_commits(n_steps, batch, device)
    on_device = [t.to(device) for t in (in_block, counts, n_remask, last, candidates, valid)]
    return Plan(*on_device, draw, noise, *commits)


def _block_schedule(blocks, n_blocks, steps, schedule):
    """Split ``steps`` evenly between blocks (earlier blocks take the remainder) and schedule each block.
    ``blocks [B, L]`` -> ``in_block [S, B, L]``, ``counts [S, B]`` (commits per step), ``n_remask [S, B]`` (still
    masked after each step, the seed-remask share) and ``last [S]`` (a block's final step)."""
    in_block, counts, n_remask, last = [], [], [], []
    for block in range(n_blocks):
        block_steps = steps // n_blocks + (block < steps % n_blocks)
        mask = blocks == block
        left = still_masked_counts(mask.sum(dim=1), block_steps, schedule)  # [block_steps + 1, B]
        in_block.append(mask.unsqueeze(0).expand(block_steps, -1, -1))
        counts.append(left[:-1] - left[1:])
        n_remask.append(left[1:])
        last.append(torch.arange(block_steps) == block_steps - 1)
    return torch.cat(in_block), torch.cat(counts), torch.cat(n_remask), torch.cat(last)


def _no_commits(n_steps, batch, device):
    return (torch.zeros((n_steps, batch, 0), dtype=torch.long, device=device),
            torch.zeros((n_steps, batch, 0), dtype=torch.bool, device=device),
            torch.zeros((n_steps, 0), dtype=torch.float64, device=device))


def random_order_key(noise: torch.Tensor) -> torch.Tensor:
    """``[B, L]``: the ``random`` policy's one key per position, from the plan's ``noise [S, B, L]``. Revealing the
    highest keys first, the scheduled number per step, reveals the canvas in a uniformly random order: the same
    distribution as fresh noise at every step (MDLM's ancestral sampler picks each step's positions uniformly among
    those still masked), and what lets the plan know every step's positions before the loop."""
    return noise[0]


def _planned_commits(noise, free, blocks, in_block, counts, last, draw):
    """``random`` picks its positions by ``random_order_key`` alone, never by the model's output, so the positions of
    every step are fixed before the loop. The step then computes logits and draws tokens at those ``C`` positions
    only (about 1/S of the canvas per step) instead of at every free position.

    The choice is the one the generic step makes: within its block, a position of key rank ``r`` (0 = highest,
    ties to the left, as ``top_count_mask`` breaks them) is committed by the block's step whose cumulative count
    first exceeds ``r``. Each position keeps the uniform it has in ``draw``, so the tokens are the same as drawing
    everywhere and committing some.

    ``noise`` and ``draw`` live on the device; ``free``, ``blocks [B, L]``, ``in_block [S, B, L]``, ``counts [S, B]``
    and ``last [S]`` on the host, where everything that needs no random number is worked out.
    """
    device, (n_steps, batch, length) = noise.device, in_block.shape
    width = draw.shape[1] // batch
    # host: a step commits the ranks [before, before + count) of its block (what the block's earlier steps took)
    new_block = torch.ones_like(last)  # [S] the first step of a block: the first, or one after a block's last
    new_block[1:] = last[:-1]
    taken = counts.cumsum(dim=0)
    block_start = torch.where(new_block.unsqueeze(1), taken - counts, 0).cummax(dim=0).values
    before = taken - counts - block_start  # [S, B]
    size = max(int(counts.max()), 1)  # every step commits exactly its count
    ok = torch.arange(size) < counts.unsqueeze(-1)  # [S, B, C]
    slot = (free.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, L]: a free position's column in ``candidates``
    in_block, before, counts, ok, slot, blocks, free = (
        t.to(device) for t in (in_block, before, counts, ok, slot, blocks, free))
    # device: each free position's key rank within its block
    key = random_order_key(noise).masked_fill(~free, float("-inf"))
    by_key = key.argsort(dim=1, descending=True, stable=True)  # [B, L]
    by_block_then_key = by_key.gather(1, blocks.gather(1, by_key).argsort(dim=1, stable=True))
    sorted_blocks = blocks.gather(1, by_block_then_key)
    first_of_block = torch.searchsorted(sorted_blocks, sorted_blocks, right=False)
    rank_sorted = torch.arange(length, device=device) - first_of_block
    rank = torch.empty_like(rank_sorted).scatter_(1, by_block_then_key, rank_sorted)  # [B, L] rank in its block
    commit = in_block & (rank >= before.unsqueeze(-1)) & (rank < (before + counts).unsqueeze(-1))  # [S, B, L]
    # stable sort: each row's committed positions first, in order, then positions the step leaves alone
    pos = (~commit).long().argsort(dim=2, stable=True)[..., :size]  # [S, B, C]
    pos_slot = slot.unsqueeze(0).expand(n_steps, -1, -1).gather(2, pos)  # [S, B, C]
    picked_draw = draw.view(-1, batch, width).gather(2, pos_slot.clamp(max=width - 1))
    return pos, ok, picked_draw.reshape(n_steps, -1)


def diffusion_step(model, x, confidence, attention, plan: Plan, j, *, strategy, mask_id, temperature, top_k, top_p,
                   threshold):
    """One step, fixed shapes throughout. ``x [B, L]`` ids, ``confidence [B, L]``, ``j [1]`` long (the step,
    as a tensor so a captured graph can read it) -> new ``(x, confidence)``."""
    if plan.commit_pos.shape[-1]:
        return _planned_step(model, x, confidence, attention, plan, j, mask_id=mask_id, temperature=temperature,
                             top_k=top_k, top_p=top_p)
    in_block = plan.in_block.index_select(0, j)[0]
    index, valid = plan.candidates, plan.valid
    logits = gathered_logits(model, x, attention, index)  # [B * F, V]: only where a token can be drawn
    # never draw <mask> itself: "== mask_id" is how the loop tells masked from committed, so a drawn
    # <mask> would be re-generated (breaking the per-step counts) or survive the last step
    logits[:, mask_id] = float("-inf")
    tokens, scaled = sample_tokens(logits, temperature, top_k, top_p, uniforms=plan.draw.index_select(0, j)[0])
    shape = index.shape
    drawn = x.scatter(1, index, torch.where(valid, tokens.view(shape), x.gather(1, index)))
    chosen = chosen_probability(scaled, tokens).view(shape)
    chosen_conf = torch.zeros_like(confidence).scatter(1, index, torch.where(valid, chosen, 0.0))
    if strategy == "seed-remask":
        # write every drawn token, then re-mask the scheduled share of the free positions at random
        remask = top_count_mask(plan.noise.index_select(0, j)[0], in_block, plan.n_remask.index_select(0, j)[0])
        confidence = torch.where(in_block, chosen_conf, confidence)
        return torch.where(in_block, drawn, x).masked_fill(remask, mask_id), confidence
    masked = (x == mask_id) & in_block
    if strategy in ("confidence", "threshold"):
        picked = chosen  # the same score: one pass over the vocabulary, not two
    else:
        noise = random_order_key(plan.noise).gather(1, index).view(-1) if strategy == "random" else None
        picked = policy_scores(strategy, scaled, tokens, uniforms=noise).float().view(shape)
    score = torch.full_like(confidence, float("-inf")).scatter(1, index, torch.where(valid, picked, float("-inf")))
    if strategy == "threshold":
        commit = masked & (score >= threshold)
        commit |= top_count_mask(score, masked, masked.any(dim=1).long())
    else:
        commit = top_count_mask(score, masked, plan.counts.index_select(0, j)[0])
    commit = torch.where(plan.last.index_select(0, j), masked, commit)
    return torch.where(commit, drawn, x), torch.where(commit, chosen_conf, confidence)


def _planned_step(model, x, confidence, attention, plan: Plan, j, *, mask_id, temperature, top_k, top_p):
    """A step whose positions the plan fixed (``random``): logits and draws at those ``C`` positions only."""
    index, ok = plan.commit_pos.index_select(0, j)[0], plan.commit_ok.index_select(0, j)[0]  # [B, C]
    logits = gathered_logits(model, x, attention, index)  # [B * C, V]
    logits[:, mask_id] = float("-inf")  # never draw <mask> (see diffusion_step)
    tokens, scaled = sample_tokens(logits, temperature, top_k, top_p, uniforms=plan.commit_draw.index_select(0, j)[0])
    tokens, chosen = tokens.view(index.shape), chosen_probability(scaled, tokens).view(index.shape)
    # padded slots write back what is there (they never share a position with a real slot)
    new_x = x.scatter(1, index, torch.where(ok, tokens, x.gather(1, index)))
    return new_x, confidence.scatter(1, index, torch.where(ok, chosen, confidence.gather(1, index)))


@torch.no_grad()
def generate_diffusion(
    model,
    tokenizer,
    prompts: str | list[str] | None = None,
    *,
    canvas: Canvas | None = None,
    steps: int = 10,
    strategy: str = "seed-remask",
    schedule: str = "linear",
    temperature: float = 1.0,
    top_k: int = 50,
    top_p: float = 0.95,
    prefix_len: int = 16,
    max_len: int = 256,
    block_size: int | None = None,
    threshold: float = 0.9,
    seed: int | None = 0,
    graph: bool = False,
    compile: bool | str = False,
    on_step=None,
) -> Trace:
    """Generate by iterative unmasking. Give ``prompts`` (seed layout) or a ready ``canvas`` (infilling).

    ``graph=True`` (CUDA): capture one step as a CUDA graph and replay it, with no host synchronisation until
    the end; the same tokens as ``graph=False`` for the same seed (same kernels, random numbers drawn before
    the loop). The graph is kept on the model for the next call of the same shape. Per-step times are then
    the loop's time divided evenly. ``compile=True`` (CUDA) runs the whole step (model and sampling) through
    ``torch.compile`` (kept on the model; each new shape compiles once): fused kernels, so the float results
    differ from the plain step's in the last bits (``bench`` reports the token agreement). A string is taken as
    the ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"`` (slower to compile, tuned matmuls).
    ``on_step(step, ids_cpu [B, L])`` is called after every step.
    """
    check_diffusion_model(model, tokenizer)
    _check_args(steps, strategy, schedule, temperature, top_k, top_p, block_size, threshold)
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        if max_len > max_canvas_len(model):
            raise ValueError(f"max_len={max_len} is longer than the model's {max_canvas_len(model)} positions: lower --max-len")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, max_len)
    elif canvas.ids.shape[1] > max_canvas_len(model):
        raise ValueError(f"the canvas is {canvas.ids.shape[1]} tokens, longer than the model's {max_canvas_len(model)}")
    device = next(model.parameters()).device
    if graph:
        check_graph_device(device)
    if compile and device.type != "cuda":
        # inductor's CPU code for this step commits nothing when rows differ (torch 2.13, seen in a test): CUDA only
        raise ValueError(f"compile=True is for CUDA devices, the model is on {device.type}: drop --compile")
    if graph and strategy == "threshold":
        raise ValueError("threshold stops when nothing is masked, which a fixed graph cannot: drop --graph (graph=False)")
    canvas = canvas.to(device)
    mask_id = tokenizer.mask_token_id
    free = ~canvas.fixed & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, mask_id)
    plan = make_plan(free, steps, strategy, schedule, block_size, make_generator(seed, device))
    attention = model_attention_mask(model, canvas.attention)
    knobs = dict(strategy=strategy, mask_id=mask_id, temperature=temperature, top_k=top_k, top_p=top_p,
                 threshold=threshold)
    confidence = torch.full(x.shape, float("nan"), device=device)
    step_fn = compiled_step(model, compile if isinstance(compile, str) else None) if compile else diffusion_step
    if graph:
        history, confidence, step_times = _run_graphed(model, x, confidence, attention, plan, knobs, step_fn)
    else:
        history, step_times = [x.cpu()], []
        step = torch.zeros(1, dtype=torch.long, device=device)
        for j in range(plan.in_block.shape[0]):
            if strategy == "threshold" and not bool(((x == mask_id) & plan.in_block[j]).any()):
                continue  # this block is done early: skip its remaining steps
            start = time.perf_counter()
            step.fill_(j)
            x, confidence = step_fn(model, x, confidence, attention, plan, step, **knobs)
            sync(device)
            step_times.append(time.perf_counter() - start)
            history.append(x.cpu())
            if on_step is not None:
                on_step(len(history) - 1, history[-1])
    settings = dict(steps=steps, strategy=strategy, schedule=schedule, temperature=temperature, top_k=top_k,
                    top_p=top_p, prefix_len=prefix_len, max_len=int(x.shape[1]), block_size=block_size,
                    threshold=threshold, seed=seed, graph=graph, compile=compile)
    trace = Trace.from_history(history, canvas, confidence, step_times, mask_id, tokenizer, "diffusion", settings)
    if graph and on_step is not None:
        for i in range(1, len(history)):
            on_step(i, history[i])
    return trace


def compiled_step(model, mode: str | None = None):
    """``diffusion_step`` compiled by inductor, one per model and mode (dynamo re-specialises it per shape)."""
    cache = graphs.model_cache(model)
    key = (graphs.COMPILED, mode)
    if key not in cache:
        cache[key] = torch.compile(diffusion_step, dynamic=False, mode=mode)
    return cache[key]


def _run_graphed(model, x, confidence, attention, plan: Plan, knobs, step_fn):
    """Replay a captured step ``S`` times; the graph and its buffers live on the model, keyed by shape."""
    n_steps = plan.in_block.shape[0]
    first = next(model.parameters())
    key = ("diffusion", tuple(x.shape), plan.candidates.shape[1], plan.commit_pos.shape[-1], n_steps, first.dtype,
           tuple(attention.shape), step_fn, first.data_ptr(), tuple(sorted(knobs.items())))
    cache = graphs.model_cache(model)
    if key not in cache:
        state = {"x": x.clone(), "confidence": confidence.clone(), "step": torch.zeros(1, dtype=torch.long, device=x.device),
                 "history": torch.empty((n_steps + 1, *x.shape), dtype=x.dtype, device=x.device),
                 "attention": attention.clone(), "plan": Plan(**{k: v.clone() for k, v in plan.tensors().items()})}

        def one_step():
            new_x, new_conf = step_fn(model, state["x"], state["confidence"], state["attention"], state["plan"],
                                             state["step"], **knobs)
            state["x"].copy_(new_x)
            state["confidence"].copy_(new_conf)
            state["history"].index_copy_(0, state["step"] + 1, new_x.unsqueeze(0))

        state["graph"] = graphs.capture(one_step)
        cache[key] = state
    state = cache[key]
    for name, value in plan.tensors().items():
        getattr(state["plan"], name).copy_(value)
    state["attention"].copy_(attention)
    state["x"].copy_(x)
    state["confidence"].copy_(confidence)
    state["history"][0].copy_(x)
    sync(x.device)
    start = time.perf_counter()
    for j in range(n_steps):
        state["step"].fill_(j)
        state["graph"].replay()
    sync(x.device)
    seconds = time.perf_counter() - start
    history = list(state["history"].cpu().unbind(0))
    return history, state["confidence"].clone(), [seconds / n_steps] * n_steps


__all__ = ["generate_diffusion", "generate_ar", "STRATEGIES", "SCHEDULES", "Trace"]
