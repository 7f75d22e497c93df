"""The diffusion sampler (one loop, many policies) and the autoregressive baseline; both return a Trace.

Diffusion step: one forward pass -> sample a token for every candidate position -> commit some of them
(which ones: the policy; how many: the schedule) -> the rest stay ``<mask>``. The policies are registered in
``policies.py`` (one small scoring function each, with flags for the ones that re-mask or stop early); the readable
spec of the whole loop is ``reference.py``, which this sampler equals token for token.

``block_size`` fills the canvas block by block (semi-autoregressive, as in LLaDA), splitting the steps
evenly between blocks.
"""

from __future__ import annotations

import time

import torch

from . import corpus, defaults, graphs, policies
from .autoregressive import generate_ar  # re-exported: one import for both samplers
from .canvas import Canvas, prompt_canvas
from .draws import (
    SCHEDULES,
    check_sampling_args,
    chosen_probability,
    make_generator,
    sample_tokens,
    sync,
    top_count_mask,
)
from .graphs import check_graph_device
from .models import gathered_logits, is_masked_lm, max_canvas_len
from .plan import Plan, make_plan, random_order_key
from .trace import Trace

POLICIES = tuple(policies.POLICIES)  # the registry's names, in its order


def check_diffusion_model(model, tokenizer) -> None:
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    if not is_masked_lm(model):
        raise ValueError(f"{type(model).__name__} is not a masked LM: pass e.g. RobertaForMaskedLM (a causal LM goes to `ar`)")


def _check_args(steps, policy, schedule, temperature, top_k, top_p, block_size, threshold, remask, position_decay):
    rule = policies.get(policy)
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1 (or None for the whole canvas)")
    if not 0 <= remask < 1:
        raise ValueError(f"remask={remask} must be in [0, 1) (the share of committed tokens re-masked per step)")
    if remask and rule.remask != "lowest":
        raise ValueError(f"remask={remask} is for policy remdm, not {policy!r}: set remask=0 or policy='remdm'")
    if not position_decay >= 0:
        raise ValueError(f"position_decay={position_decay} must be >= 0 (0: no left-to-right pull)")
    if position_decay and not rule.reads_corpus:
        raise ValueError(f"position_decay={position_decay} is for policy calibrated, not {policy!r}: set it to 0")
    if block_size is not None and rule.remask == "resample":
        raise ValueError("seed-remask resamples the whole canvas each step: drop block_size or pick another policy")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold={threshold} must be in (0, 1]")
    check_sampling_args(temperature, top_k, top_p)
    return rule


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
    always materialises: eager steps could then run one attention kernel and captured ones another, and their
    tokens drift apart. One prepared mask for both paths keeps them identical. Even an unpadded canvas gets it:
    with no mask, eager steps may run yet another kernel that captured steps reproduce neither in tokens nor in
    speed.
    """
    return torch.zeros(attention.shape, dtype=dtype, device=attention.device).masked_fill(
        attention == 0, torch.finfo(dtype).min)[:, None, None, :]


def diffusion_step(model, x, confidence, attention, plan: Plan, j, *, policy, mask_id, temperature, top_k, top_p,
                   threshold, position_decay=0.0):
    """One step, fixed shapes throughout. ``x [B, L]`` ids, ``confidence [B, L]``, ``j [1]`` long (the step,
    as a tensor so a captured graph can read it) -> new ``(x, confidence)``."""
    rule = policies.get(policy)
    if plan.commit_pos.shape[-1]:  # the plan fixed this step's positions (a planned policy): draw only there
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
    noise = plan.noise.index_select(0, j)[0]
    if rule.remask == "resample":
        # write every drawn token, then re-mask the scheduled share of the free positions at random
        remask = top_count_mask(noise, in_block, plan.n_remask.index_select(0, j)[0])
        confidence = torch.where(in_block, chosen_conf, confidence)
        return torch.where(in_block, drawn, x).masked_fill(remask, mask_id), confidence
    masked = (x == mask_id) & in_block
    picked = rule.score(policies.Drawn(scaled, tokens, chosen.view(-1), index, noise, random_order_key(plan.noise),
                                       plan.salience, position_decay)).float().view(shape)
    score = torch.full_like(confidence, float("-inf")).scatter(1, index, torch.where(valid, picked, float("-inf")))
    if rule.adaptive:
        commit = masked & (score >= threshold)
        commit |= top_count_mask(score, masked, masked.any(dim=1).long())
    else:
        commit = top_count_mask(score, masked, plan.counts.index_select(0, j)[0])
    commit = torch.where(plan.last.index_select(0, j), masked, commit)
    x, confidence = torch.where(commit, drawn, x), torch.where(commit, chosen_conf, confidence)
    if rule.remask == "lowest":
        # tokens committed before this step, least confident first, go back to <mask> for a later step to redraw
        # with more context (never the ones just drawn: their logits saw nothing new)
        earlier = in_block & ~masked & ~commit
        x = x.masked_fill(top_count_mask(-confidence, earlier, plan.n_remask.index_select(0, j)[0]), mask_id)
    return x, confidence


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
    steps: int = defaults.STEPS,
    policy: str = defaults.SEED_POLICY,
    schedule: str = defaults.SCHEDULE,
    temperature: float = defaults.TEMPERATURE,
    top_k: int = defaults.TOP_K,
    top_p: float = defaults.TOP_P,
    prefix_len: int | None = defaults.PREFIX_LEN,
    max_len: int = defaults.MAX_LEN,
    block_size: int | None = None,
    threshold: float = defaults.THRESHOLD,
    remask: float = 0.0,
    position_decay: float = 0.0,
    salience: torch.Tensor | None = None,
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
    differ from the plain step's in the last bits (``benchmarks/bench.py`` reports the token agreement). A string is taken as
    the ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"`` (slower to compile, tuned matmuls).
    ``on_step(step, ids_cpu [B, L])`` is called after every step.

    ``remask`` (policy ``remdm``): the share of the tokens committed so far that each step sends back to ``<mask>``,
    least confident first. ``position_decay`` and ``salience [V]`` (policy ``calibrated``): the left-to-right pull and
    each token's ``-log`` corpus frequency (default: ``token_counts.json`` beside the tokenizer, ``corpus.salience``).
    """
    check_diffusion_model(model, tokenizer)
    rule = _check_args(steps, policy, schedule, temperature, top_k, top_p, block_size, threshold, remask,
                       position_decay)
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        if max_len > max_canvas_len(model):
            raise ValueError(f"max_len={max_len} is longer than the model's {max_canvas_len(model)} positions: lower max_len")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, max_len)
        prefix_len = int(canvas.fixed.all(dim=0).sum())  # the pinned width: the whole prompt unless given
    elif canvas.ids.shape[1] > max_canvas_len(model):
        raise ValueError(f"the canvas is {canvas.ids.shape[1]} tokens, longer than the model's {max_canvas_len(model)}")
    device = next(model.parameters()).device
    if graph:
        check_graph_device(device)
    if compile and device.type != "cuda":
        # inductor's CPU code for this step has committed nothing when rows differ (tests/test_fast_paths.py): CUDA only
        raise ValueError(f"compile=True is for CUDA devices, the model is on {device.type}: set compile=False")
    if graph and rule.adaptive:
        raise ValueError(f"{policy} stops when nothing is masked, which a fixed graph cannot: set graph=False")
    if rule.reads_corpus:
        salience = corpus.fit_vocabulary(corpus.salience_beside(tokenizer) if salience is None else salience,
                                         model.config.vocab_size)
    canvas = canvas.to(device)
    mask_id = tokenizer.mask_token_id
    free = ~canvas.fixed & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, mask_id)
    plan = make_plan(free, steps, policy, schedule, block_size, make_generator(seed, device), remask=remask,
                     salience=salience)
    attention = model_attention_mask(model, canvas.attention)
    knobs = dict(policy=policy, mask_id=mask_id, temperature=temperature, top_k=top_k, top_p=top_p,
                 threshold=threshold, position_decay=position_decay)
    confidence = torch.full(x.shape, float("nan"), device=device)
    step_fn = compiled_step(model, compile if isinstance(compile, str) else None) if compile else diffusion_step
    if graph:
        history, confidence, step_times = _run_graphed(model, x, confidence, attention, plan, knobs, step_fn)
    else:
        history, step_times = [x.cpu()], []
        step = torch.zeros(1, dtype=torch.long, device=device)
        for j in range(plan.in_block.shape[0]):
            if rule.adaptive and not bool(((x == mask_id) & plan.in_block[j]).any()):
                continue  # this block is done early: skip its remaining steps
            start = time.perf_counter()
            step.fill_(j)
            x, confidence = step_fn(model, x, confidence, attention, plan, step, **knobs)
            sync(device)
            step_times.append(time.perf_counter() - start)
            history.append(x.cpu())
            if on_step is not None:
                on_step(len(history) - 1, history[-1])
    settings = dict(steps=steps, policy=policy, schedule=schedule, temperature=temperature, top_k=top_k,
                    top_p=top_p, prefix_len=prefix_len, max_len=int(x.shape[1]), block_size=block_size,
                    threshold=threshold, remask=remask, position_decay=position_decay, seed=seed, graph=graph,
                    compile=compile)
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


__all__ = ["generate_diffusion", "generate_ar", "POLICIES", "SCHEDULES", "Trace"]
