"""The diffusion sampler (one loop, many policies) and the autoregressive baseline; both return a Trace.

Diffusion step: one forward pass -> sample a token for every candidate position -> commit some of them
(which ones: the policy; how many: the schedule) -> the rest stay ``<mask>``. The policies are registered in
``policies.py`` (one small scoring function each, with flags for the ones that re-mask or stop early); the readable
spec of the whole loop is ``reference.py``, which this sampler equals token for token.

Every setting of what is sampled is one ``Sampling`` (``sampling.py``): checked there, recorded whole in the Trace.
``semi_ar_block`` fills the canvas block by block (semi-autoregressive, as in LLaDA), splitting the steps evenly
between blocks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch

from . import corpus, defaults, graphs, policies
from .autoregressive import generate_ar  # re-exported: one import for both samplers
from .canvas import Canvas, prompt_canvas
from .draws import (
    SCHEDULES,
    chosen_probability,
    make_generator,
    sample_tokens,
    sync,
    top_count_mask,
)
from .graphs import check_graph_device
from .models import gathered_logits, is_masked_lm, max_canvas_len
from .plan import Plan, make_plan, random_order_key
from .sampling import Sampling
from .trace import Trace

POLICIES = tuple(policies.POLICIES)  # the registry's names, in its order


def check_diffusion_model(model, tokenizer) -> None:
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: the diffusion sampler needs a masked-LM tokenizer")
    if not is_masked_lm(model):
        raise ValueError(f"{type(model).__name__} is not a masked LM: pass e.g. RobertaForMaskedLM (a causal LM goes to `ar`)")


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


def diffusion_step(model, x, confidence, proposal, attention, plan: Plan, j, sampling: Sampling, mask_id: int):
    """One step, fixed shapes throughout. ``x [B, L]`` ids, ``confidence [B, L]`` (each written token's model
    probability, tempered), ``proposal [B, L]`` (its log-probability under what it was drawn from: tempered and
    filtered), ``j [1]`` long (the step, as a tensor so a captured graph can read it) -> new ``(x, confidence,
    proposal)``."""
    rule = policies.get(sampling.policy)
    if plan.commit_pos.shape[-1]:  # the plan fixed this step's positions (a planned policy): draw only there
        return _planned_step(model, x, confidence, proposal, attention, plan, j, sampling, mask_id)
    in_block = plan.in_block.index_select(0, j)[0]
    index, valid = plan.candidates, plan.valid
    logits = gathered_logits(model, x, attention, index)  # [B * F, V]: only where a token can be drawn
    # never draw <mask> itself: "== mask_id" is how the loop tells masked from committed, so a drawn
    # <mask> would be re-generated (breaking the per-step counts) or survive the last step
    logits[:, mask_id] = float("-inf")
    tokens, scaled, kept = sample_tokens(logits, sampling.temperature, sampling.top_k, sampling.top_p,
                                         uniforms=plan.draw.index_select(0, j)[0])
    shape = index.shape
    drawn = x.scatter(1, index, torch.where(valid, tokens.view(shape), x.gather(1, index)))
    chosen = chosen_probability(scaled, tokens).view(shape)
    chosen_conf = torch.zeros_like(confidence).scatter(1, index, torch.where(valid, chosen, 0.0))
    chosen_log_q = torch.zeros_like(proposal).scatter(1, index, torch.where(valid, kept.log().float().view(shape), 0.0))
    noise = plan.noise.index_select(0, j)[0]
    if rule.remask == "resample":
        # write every drawn token, then re-mask the scheduled share of the free positions at random
        remask = top_count_mask(noise, in_block, plan.n_remask.index_select(0, j)[0])
        confidence = torch.where(in_block, chosen_conf, confidence)
        proposal = torch.where(in_block, chosen_log_q, proposal)
        return torch.where(in_block, drawn, x).masked_fill(remask, mask_id), confidence, proposal
    masked = (x == mask_id) & in_block
    picked = rule.score(policies.Drawn(scaled, tokens, chosen.view(-1), index, noise, random_order_key(plan.noise),
                                       plan.salience, sampling.position_decay,
                                       sampling.order_temperature)).float().view(shape)
    score = torch.full_like(confidence, float("-inf")).scatter(1, index, torch.where(valid, picked, float("-inf")))
    if rule.adaptive:
        commit = masked & (score >= sampling.threshold)
        commit |= top_count_mask(score, masked, masked.any(dim=1).long())
    else:
        commit = top_count_mask(score, masked, plan.counts.index_select(0, j)[0])
    commit = torch.where(plan.last.index_select(0, j), masked, commit)
    x, confidence = torch.where(commit, drawn, x), torch.where(commit, chosen_conf, confidence)
    proposal = torch.where(commit, chosen_log_q, proposal)
    if rule.remask == "lowest":
        # tokens committed before this step, least confident first, go back to <mask> for a later step to redraw
        # with more context (never the ones just drawn: their logits saw nothing new)
        earlier = in_block & ~masked & ~commit
        x = x.masked_fill(top_count_mask(-confidence, earlier, plan.n_remask.index_select(0, j)[0]), mask_id)
    return x, confidence, proposal


def _planned_step(model, x, confidence, proposal, attention, plan: Plan, j, sampling: Sampling, mask_id: int):
    """A step whose positions the plan fixed (``random``): logits and draws at those ``C`` positions only."""
    index, ok = plan.commit_pos.index_select(0, j)[0], plan.commit_ok.index_select(0, j)[0]  # [B, C]
    logits = gathered_logits(model, x, attention, index)  # [B * C, V]
    logits[:, mask_id] = float("-inf")  # never draw <mask> (see diffusion_step)
    tokens, scaled, kept = sample_tokens(logits, sampling.temperature, sampling.top_k, sampling.top_p,
                                         uniforms=plan.commit_draw.index_select(0, j)[0])
    tokens, chosen = tokens.view(index.shape), chosen_probability(scaled, tokens).view(index.shape)
    log_q = kept.log().float().view(index.shape)
    # padded slots write back what is there (they never share a position with a real slot)
    new_x = x.scatter(1, index, torch.where(ok, tokens, x.gather(1, index)))
    return (new_x, confidence.scatter(1, index, torch.where(ok, chosen, confidence.gather(1, index))),
            proposal.scatter(1, index, torch.where(ok, log_q, proposal.gather(1, index))))


@torch.no_grad()
def generate_diffusion(model, tokenizer, prompts: str | list[str] | None = None, sampling: Sampling | None = None, *,
                       canvas: Canvas | None = None, prefix_len: int | None = defaults.PREFIX_LEN,
                       max_len: int = defaults.MAX_LEN, salience: torch.Tensor | None = None, graph: bool = False,
                       compile: bool | str = False, on_step=None, **settings) -> Trace:
    """Generate by iterative unmasking. Give ``prompts`` (seed layout) or a ready ``canvas`` (infilling).

    ``sampling``: what is sampled (``Sampling``; None: ``Sampling.redraw_decoder()``, the original project's decoder);
    ``settings``: any of its fields to change, e.g. ``steps=10`` (``generate_diffusion(m, t, p, steps=10)``).
    ``graph=True`` (CUDA): capture one step as a CUDA graph and replay it, with no host synchronisation until
    the end; the same tokens as ``graph=False`` for the same seed (same kernels, random numbers drawn before
    the loop). The graph is kept on the model for the next call of the same shape. Per-step times are then
    the loop's time divided evenly. ``compile=True`` (CUDA) runs the whole step (model and sampling) through
    ``torch.compile`` (kept on the model; each new shape compiles once): fused kernels, so the float results
    differ from the plain step's in the last bits (``benchmarks/bench.py`` reports the token agreement). A string is taken as
    the ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"`` (slower to compile, tuned matmuls).
    ``on_step(step, ids_cpu [B, L])`` is called after every step. ``salience [V]`` (policy ``calibrated``): each
    token's ``-log`` corpus frequency (default: ``token_counts.json`` beside the tokenizer, ``corpus.salience``).
    """
    if isinstance(prompts, Sampling):
        raise TypeError("the third argument is the prompts: pass the Sampling as sampling=..., with canvas=...")
    sampling = replace(sampling or Sampling.redraw_decoder(), **settings)
    check_diffusion_model(model, tokenizer)
    rule = policies.get(sampling.policy)
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        if max_len > max_canvas_len(model):
            raise ValueError(f"max_len={max_len} is longer than the model's {max_canvas_len(model)} positions: lower max_len")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, max_len)
        prefix_len = int(canvas.pinned.all(dim=0).sum())  # the pinned width: the whole prompt unless given
    elif canvas.ids.shape[1] > max_canvas_len(model):
        raise ValueError(f"the canvas is {canvas.ids.shape[1]} tokens, longer than the model's {max_canvas_len(model)}")
    device = next(model.parameters()).device
    if graph:
        check_graph_device(device)
    if compile and device.type != "cuda":
        # inductor's CPU code for this step has committed nothing when rows differ (tests/test_fast_paths.py): CUDA only
        raise ValueError(f"compile=True is for CUDA devices, the model is on {device.type}: set compile=False")
    if graph and rule.adaptive:
        raise ValueError(f"{sampling.policy} stops when nothing is masked, which a fixed graph cannot: set graph=False")
    if rule.reads_corpus:
        salience = corpus.fit_vocabulary(corpus.salience_beside(tokenizer) if salience is None else salience,
                                         model.config.vocab_size)
    canvas = canvas.to(device)
    mask_id = tokenizer.mask_token_id
    free = ~canvas.pinned & canvas.attention.bool()
    x = canvas.ids.masked_fill(free, mask_id)
    plan = make_plan(free, sampling, make_generator(sampling.seed, device), salience=salience)
    attention = model_attention_mask(model, canvas.attention)
    confidence = torch.full(x.shape, float("nan"), device=device)
    proposal = confidence.clone()
    step_fn = compiled_step(model, compile if isinstance(compile, str) else None) if compile else diffusion_step
    if graph:
        history, confidence, proposal, step_times = _run_graphed(model, x, confidence, proposal, attention, plan,
                                                                 sampling, mask_id, step_fn)
    else:
        history, step_times = [x.cpu()], []
        step = torch.zeros(1, dtype=torch.long, device=device)
        for j in range(plan.in_block.shape[0]):
            if rule.adaptive and not bool(((x == mask_id) & plan.in_block[j]).any()):
                continue  # this block is done early: skip its remaining steps
            start = time.perf_counter()
            step.fill_(j)
            x, confidence, proposal = step_fn(model, x, confidence, proposal, attention, plan, step, sampling, mask_id)
            sync(device)
            step_times.append(time.perf_counter() - start)
            history.append(x.cpu())
            if on_step is not None:
                on_step(len(history) - 1, history[-1])
    settings = {**asdict(sampling), "prefix_len": prefix_len, "max_len": int(x.shape[1]), "graph": graph,
                "compile": compile}
    trace = Trace.from_history(history, canvas, confidence, step_times, mask_id, tokenizer, "diffusion", settings,
                               proposal=proposal)
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


def _run_graphed(model, x, confidence, proposal, attention, plan: Plan, sampling: Sampling, mask_id: int, step_fn):
    """Replay a captured step ``S`` times; the graph and its buffers live on the model, keyed by shape and by what
    the step reads (the seed and the step count only shape the plan's numbers, which are copied in)."""
    n_steps = plan.in_block.shape[0]
    first = next(model.parameters())
    key = ("diffusion", tuple(x.shape), plan.candidates.shape[1], plan.commit_pos.shape[-1], n_steps, first.dtype,
           tuple(attention.shape), step_fn, first.data_ptr(), replace(sampling, seed=0, steps=1), mask_id)
    cache = graphs.model_cache(model)
    if key not in cache:
        state = {"x": x.clone(), "confidence": confidence.clone(), "proposal": proposal.clone(),
                 "step": torch.zeros(1, dtype=torch.long, device=x.device),
                 "history": torch.empty((n_steps + 1, *x.shape), dtype=x.dtype, device=x.device),
                 "attention": attention.clone(), "plan": Plan(**{k: v.clone() for k, v in plan.tensors().items()})}

        def one_step():
            new_x, new_conf, new_log_q = step_fn(model, state["x"], state["confidence"], state["proposal"],
                                                 state["attention"], state["plan"], state["step"], sampling, mask_id)
            state["x"].copy_(new_x)
            state["confidence"].copy_(new_conf)
            state["proposal"].copy_(new_log_q)
            state["history"].index_copy_(0, state["step"] + 1, new_x.unsqueeze(0))

        state["graph"] = graphs.capture(one_step)
        cache[key] = state
    state = cache[key]
    for name, value in plan.tensors().items():
        getattr(state["plan"], name).copy_(value)
    state["attention"].copy_(attention)
    state["x"].copy_(x)
    state["confidence"].copy_(confidence)
    state["proposal"].copy_(proposal)
    state["history"][0].copy_(x)
    sync(x.device)
    start = time.perf_counter()
    for j in range(n_steps):
        state["step"].fill_(j)
        state["graph"].replay()
    sync(x.device)
    seconds = time.perf_counter() - start
    history = list(state["history"].cpu().unbind(0))
    return history, state["confidence"].clone(), state["proposal"].clone(), [seconds / n_steps] * n_steps


__all__ = ["generate_diffusion", "generate_ar", "POLICIES", "SCHEDULES", "Trace"]
