"""Twin-guided sampling: draw several diffusion candidates per prompt in one batch, let the AR twin point at what to
redraw, keep the candidate it likes.

Few diffusion steps give a text whose tokens were each drawn with too little context; a left-to-right model reads the
whole candidate in one parallel pass (no decoding) and tells the fluent ones from the rest. Two rules:

- ``likelihood``: keep the candidate with the highest log-likelihood under the twin (a best-of-N: it lowers
  perplexity and, like any best-of, some entropy).
- ``importance``: draw one candidate with probability proportional to ``p_twin(x) / q(x)``, with ``q`` the product
  of the probabilities the drawn tokens had under the distributions they were drawn from, tempered and filtered
  (``Trace.proposal``). Resampling by this ratio moves the samples towards the twin's distribution instead of its
  mode, so entropy holds better. It is exact sampling-importance-resampling under ``random`` (and ``redraw``), whose
  order has the same probability for every candidate; under an order that reads the model (``sampled``,
  ``confidence``) the order's own probability is left out and the resampling is not exact. (Until issue 24's third
  pass ``q`` was the probability before the filter: under top-k it favoured candidates drawn from flat, heavily cut
  distributions, more so the more candidates there were.)

Before the choice each candidate may be corrected (``correct``, ``corrections`` rounds): the twin points at the
tokens that fit their neighbours worst for how likely they were drawn, and the masked LM redraws them in context.

The result is an ordinary ``Trace`` of the kept rows: every viewer and metric works on it. Its ``settings`` name the
guide, the rule and the candidates, and ``guide_seconds`` is the scoring pass's time (its steps' times do not hold it).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from . import graphs
from .canvas import Canvas, prompt_canvas
from .draws import chosen_probability, make_generator, sample_tokens, sync, top_count_mask
from .graphs import check_graph_device
from .models import gathered_logits, max_canvas_len
from .sampler import generate_diffusion, model_attention_mask
from .sampling import Sampling
from .trace import Trace

PICKS = ("likelihood", "importance")
CORRECTION_SHARE = 0.1  # of each row's generated tokens, redrawn a correction round


# the most logits one scoring pass holds (elements: 4 GiB in fp32, about 3x that at the peak with the upcast copy and
# log_softmax); 32 candidates x 128 prompts x 256 x 32k in one pass would be 134 GB
LOGITS_BUDGET = 2**30


@torch.no_grad()
def sequence_logprob(model, ids: torch.Tensor, attention: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """``[B]`` log-probability under causal ``model`` of the tokens at ``scored [B, L]`` (bool) given all before
    them (``token_logprob`` summed)."""
    return (token_logprob(model, ids, attention) * scored).double().sum(dim=1)


@torch.no_grad()
def token_logprob(model, ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, L]`` log-probability under causal ``model`` of each token given all before it (0 in the first column,
    which nothing predicts). Positions count from each row's first real token, so a left-padded row scores as if
    unpadded. ``mask``: a prepared causal mask (``causal_attention_mask``) to give the model instead of ``attention``,
    which runs the same kernels whether or not a CUDA graph replays the call (transformers passes a 4D mask through
    untouched). Rows go through in chunks of at most ``LOGITS_BUDGET`` logits."""
    rows = max(1, LOGITS_BUDGET // (ids.shape[1] * model.config.vocab_size))
    positions = (attention.long().cumsum(dim=1) - 1).clamp(min=0)
    given = attention if mask is None else mask
    return torch.cat([_logprob(model(input_ids=ids[i:i + rows], attention_mask=given[i:i + rows],
                                     position_ids=positions[i:i + rows]).logits, ids[i:i + rows])
                      for i in range(0, ids.shape[0], rows)])


def causal_attention_mask(attention: torch.Tensor, dtype) -> torch.Tensor:
    """``attention [B, L]`` (1 = real token) -> ``[B, 1, L, L]``: 0 where a query may read a key (an earlier or
    the same position, a real token), the dtype's minimum where not."""
    length = attention.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention.device).tril()
    allowed = causal[None, None] & attention.bool()[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=attention.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _logprob(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    logits = logits[:, :-1].float()
    return torch.nn.functional.pad(logits.log_softmax(dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1), (1, 0))


def repeat_rows(canvas: Canvas, n: int) -> Canvas:
    return Canvas(*(t.repeat_interleave(n, dim=0) for t in (canvas.ids, canvas.pinned, canvas.attention)))


def select_rows(trace: Trace, rows: torch.Tensor, settings: dict) -> Trace:
    return replace(trace, ids=trace.ids[:, rows], pinned=trace.pinned[rows], attention=trace.attention[rows],
                   confidence=trace.confidence[rows], proposal=trace.proposal[rows], settings=settings,
                   _texts=None, _completions=None)


def _choose(guide, trace: Trace, n_prompts: int, candidates: int, pick: str, seed) -> torch.Tensor:
    """``[n_prompts]``: which of each prompt's ``candidates`` consecutive rows of ``trace`` to keep, by ``pick``
    (``generate_guided`` has checked the pick against the corrections)."""
    device = next(guide.parameters()).device
    final, generated = trace.final.to(device), trace.generated.to(device)
    score = sequence_logprob(guide, final, trace.attention.to(device), generated).view(n_prompts, candidates)
    if pick == "likelihood":
        return score.argmax(dim=1)
    proposal = torch.where(generated, trace.proposal.to(device).double(), 0.0).sum(dim=1)  # NaN where pinned
    weights = (score - proposal.view(n_prompts, candidates)).softmax(dim=1)
    generator = make_generator(None if seed is None else seed + 1, device)  # not the sampler's own stream
    return torch.multinomial(weights.float(), 1, generator=generator).squeeze(1)


def check_guide(mlm, guide) -> None:
    if guide.config.vocab_size != mlm.config.vocab_size:
        raise ValueError(f"the guide's vocabulary ({guide.config.vocab_size}) is not the masked LM's "
                         f"({mlm.config.vocab_size}): guide with the twin trained on the same tokenizer")


def check_corrections(rounds: int, share: float) -> None:
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"corrections={rounds!r} must be a whole number >= 0")
    if not 0 < share <= 1:
        raise ValueError(f"correction_share={share} must be in (0, 1]: the share of each row's generated tokens a "
                         "correction round redraws")


@torch.no_grad()
def correct(mlm, guide, trace: Trace, rounds: int, share: float = CORRECTION_SHARE, graph: bool = False) -> Trace:
    """Twin-pointed corrections of a finished diffusion ``trace``. Each of ``rounds`` rounds: the guide reads the
    text in one parallel pass; in each row the ``share`` of the generated tokens (at least one) whose guide
    log-probability most undercuts the log-probability they were drawn with (``log p_guide - log q``, ``Trace.proposal``) go back to
    ``<mask>``; the masked LM redraws them in one pass with all the rest as context, at the draw's temperature and
    filter. Tokens drawn side by side in one step never saw each other; the guide points at the ones that do not fit
    their neighbours (a doubled word, a broken name) rather than at the merely rare ones, which ``q`` already
    expected. Each round adds two frames to the trace: the re-masked canvas and the redrawn one. ``graph``: replay
    the round as one CUDA graph (same tokens as without: every round has the same shapes and draws its uniforms
    up front)."""
    check_corrections(rounds, share)
    if rounds == 0:
        return trace
    check_guide(mlm, guide)
    if trace.proposal is None:
        raise ValueError("correct needs a diffusion trace that records each token's proposal (generate_diffusion's)")
    device, s = next(mlm.parameters()).device, trace.settings
    if next(guide.parameters()).device != device:
        raise ValueError(f"the guide is on {next(guide.parameters()).device}, the masked LM on {device}: put both "
                         "on one device")
    if graph:
        check_graph_device(device)
    attention, generated = trace.attention.to(device), trace.generated.to(device)
    counts = (generated.sum(dim=1) * share).round().long().clamp(min=1)
    fixed = {"attention": attention, "guide_mask": causal_attention_mask(attention, next(guide.parameters()).dtype),
             "generated": generated, "counts": counts, "mlm_mask": model_attention_mask(mlm, attention)}
    knobs = (int(counts.max()), s["temperature"], s["top_k"], s["top_p"], trace.mask_token_id)
    seed = s.get("seed")
    generator = make_generator(None if seed is None else seed + 2, device)  # not the sampler's or the pick's stream
    uniforms = torch.rand((rounds, *attention.shape), generator=generator, dtype=torch.float64, device=device)
    x = trace.final.to(device, copy=True)  # the rounds write into their state: never into the trace they read
    state = {"x": x, "masked": torch.empty_like(x), "confidence": trace.confidence.to(device, torch.float, copy=True),
             "proposal": trace.proposal.to(device, torch.float, copy=True), "uniforms": torch.empty_like(uniforms[0])}
    history, times = list(trace.ids.unbind(0)), list(trace.step_times)
    with graphs.repeatable_attention(device):  # the guide's masked attention: one kernel, graphed or not
        if graph:
            state, step = _graphed_round(mlm, guide, state, fixed, knobs)  # the graph's own buffers, this call's values
        else:
            step = lambda: _correction_round(mlm, guide, state, fixed, knobs)  # noqa: E731
        for r in range(rounds):
            state["uniforms"].copy_(uniforms[r])
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times += [(time.perf_counter() - start) / 2] * 2  # one round, timed whole, makes two frames
            history += [state[name].to("cpu", copy=True) for name in ("masked", "x")]  # the buffers live on
    return replace(trace, ids=torch.stack(history), confidence=state["confidence"].to("cpu", copy=True),
                   proposal=state["proposal"].to("cpu", copy=True), step_times=times,
                   forward_passes=trace.forward_passes + 2 * rounds,
                   settings={**s, "corrections": rounds, "correction_share": share}, _texts=None, _completions=None)


def _correction_round(mlm, guide, state: dict, fixed: dict, knobs: tuple) -> None:
    """One round on ``state`` in place (``masked``: the re-masked canvas; ``x``, ``confidence``, ``proposal``: after
    the redraw), with the same shapes every time (no boolean indexing, no host reads). Each row's pointed positions
    are gathered into ``width`` columns, the widest row's count; in a narrower row the extra columns point at
    unpointed positions and leave them as they are."""
    width, temperature, top_k, top_p, mask_id = knobs
    x = state["x"]
    fit = token_logprob(guide, x, fixed["attention"], fixed["guide_mask"])
    pointed = top_count_mask(state["proposal"] - fit, fixed["generated"], fixed["counts"])  # the most undercut first
    index = pointed.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :width]  # pointed, in order
    taken = pointed.gather(1, index)
    masked = state["masked"].copy_(x.masked_fill(pointed, mask_id))
    logits = gathered_logits(mlm, masked, fixed["mlm_mask"], index)
    logits[:, mask_id] = float("-inf")  # never draw <mask> (as the sampler)
    tokens, scaled, drawn = sample_tokens(logits, temperature, top_k, top_p,
                                          uniforms=state["uniforms"].gather(1, index).flatten())
    for name, base, new in (("x", masked, tokens), ("confidence", state["confidence"], chosen_probability(scaled, tokens)),
                            ("proposal", state["proposal"], drawn.log())):
        kept = base.gather(1, index)  # where a column is not pointed: the value it had
        state[name].copy_(base.scatter(1, index, torch.where(taken, new.view(index.shape).to(base.dtype), kept)))


def _graphed_round(mlm, guide, state: dict, fixed: dict, knobs: tuple):
    """``_correction_round`` captured once per shape and settings (kept on the masked LM, as the sampler keeps its
    step): ``(its state buffers, filled with this call's state, its replay)``. The round updates those buffers in
    place, so a call copies its values in once and each round only its uniforms."""
    key = ("correction", tuple(state["x"].shape), knobs, next(guide.parameters()).data_ptr(),
           next(mlm.parameters()).data_ptr())
    cache = graphs.model_cache(mlm)
    if key not in cache:
        own, fixed_own = {k: v.clone() for k, v in state.items()}, {k: v.clone() for k, v in fixed.items()}
        cache[key] = (own, fixed_own, graphs.capture(lambda: _correction_round(mlm, guide, own, fixed_own, knobs)))
    own, fixed_own, graph = cache[key]
    for buffers, values in ((own, state), (fixed_own, fixed)):
        for name, value in values.items():
            buffers[name].copy_(value)
    return own, graph.replay


@torch.no_grad()
def generate_guided(mlm, guide, tokenizer, prompts=None, sampling: Sampling | None = None, *,
                    canvas: Canvas | None = None, candidates: int = 8, pick: str = "likelihood", corrections: int = 0,
                    correction_share: float = CORRECTION_SHARE, prefix_len=None, max_len: int = 256,
                    **settings) -> Trace:
    """``generate_diffusion`` with ``candidates`` rows per prompt in one batch, each given ``corrections`` rounds of
    ``correct`` (``correction_share`` of its tokens a round), one kept per prompt by ``guide`` (a causal LM sharing
    ``tokenizer``'s vocabulary). ``sampling``, ``settings``: as ``generate_diffusion`` takes them (``on_step``,
    ``graph`` and ``salience`` included). What the guide does is its own business, not the sampler's, so these
    settings are this function's and stay out of ``Sampling``."""
    if candidates < 1:
        raise ValueError(f"candidates={candidates} must be >= 1")
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}: choose one of {', '.join(PICKS)}")
    check_corrections(corrections, correction_share)
    if pick == "importance" and candidates > 1 and corrections:
        raise ValueError("pick='importance' with corrections: a corrected text's probability under the sampler is no "
                         "longer the product the weights divide by; use pick='likelihood' or corrections=0")
    check_guide(mlm, guide)
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, min(max_len, max_canvas_len(mlm)))
    n_prompts = canvas.ids.shape[0]
    trace = generate_diffusion(mlm, tokenizer, sampling=sampling, canvas=repeat_rows(canvas, candidates), **settings)
    trace = correct(mlm, guide, trace, corrections, correction_share, graph=bool(settings.get("graph")))
    seed = trace.settings["seed"]
    device = next(guide.parameters()).device
    start = time.perf_counter()
    if candidates == 1:  # nothing to choose: no scoring pass
        kept = torch.zeros(n_prompts, dtype=torch.long, device=device)
    else:
        kept = _choose(guide, trace, n_prompts, candidates, pick, seed)
    sync(device)
    rows = (torch.arange(n_prompts, device=device) * candidates + kept).cpu()
    settings = {**trace.settings, "candidates": candidates, "pick": pick, "corrections": corrections,
                "correction_share": correction_share,
                "guide": getattr(guide.config, "name_or_path", "") or type(guide).__name__,
                "guide_seconds": round(time.perf_counter() - start, 6)}
    return select_rows(trace, rows, settings)
