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

from .canvas import Canvas, prompt_canvas
from .draws import chosen_probability, make_generator, sample_tokens, sync, top_count_mask
from .models import masked_lm_logits, max_canvas_len
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
def token_logprob(model, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` log-probability under causal ``model`` of each token given all before it (0 in the first column,
    which nothing predicts). Positions count from each row's first real token, so a left-padded row scores as if
    unpadded. Rows go through in chunks of at most ``LOGITS_BUDGET`` logits."""
    rows = max(1, LOGITS_BUDGET // (ids.shape[1] * model.config.vocab_size))
    return torch.cat([_chunk_logprob(model, ids[i:i + rows], attention[i:i + rows])
                      for i in range(0, ids.shape[0], rows)])


def _chunk_logprob(model, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    positions = (attention.long().cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float()
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
def correct(mlm, guide, trace: Trace, rounds: int, share: float = CORRECTION_SHARE) -> Trace:
    """Twin-pointed corrections of a finished diffusion ``trace``. Each of ``rounds`` rounds: the guide reads the
    text in one parallel pass; in each row the ``share`` of the generated tokens (at least one) whose guide
    log-probability most undercuts the log-probability they were drawn with (``log p_guide - log q``, ``Trace.proposal``) go back to
    ``<mask>``; the masked LM redraws them in one pass with all the rest as context, at the draw's temperature and
    filter. Tokens drawn side by side in one step never saw each other; the guide points at the ones that do not fit
    their neighbours (a doubled word, a broken name) rather than at the merely rare ones, which ``q`` already
    expected. Each round adds two frames to the trace: the re-masked canvas and the redrawn one."""
    check_corrections(rounds, share)
    if rounds == 0:
        return trace
    check_guide(mlm, guide)
    if trace.proposal is None:
        raise ValueError("correct needs a diffusion trace that records each token's proposal (generate_diffusion's)")
    device, mask_id, s = next(mlm.parameters()).device, trace.mask_token_id, trace.settings
    guide_device = next(guide.parameters()).device
    x, attention, generated = trace.final.to(device), trace.attention.to(device), trace.generated.to(device)
    confidence, proposal = trace.confidence.to(device), trace.proposal.to(device)
    counts = (generated.sum(dim=1) * share).round().long().clamp(min=1)
    mlm_attention = model_attention_mask(mlm, attention)
    seed = s.get("seed")
    generator = make_generator(None if seed is None else seed + 2, device)  # not the sampler's or the pick's stream
    history, times = list(trace.ids.unbind(0)), list(trace.step_times)
    for _ in range(rounds):
        start = time.perf_counter()
        fit = token_logprob(guide, x.to(guide_device), attention.to(guide_device)).to(device)
        pointed = top_count_mask(proposal - fit, generated, counts)  # the most undercut first
        x = x.masked_fill(pointed, mask_id)
        sync(device)
        times.append(time.perf_counter() - start)
        history.append(x.cpu())
        start = time.perf_counter()
        logits = masked_lm_logits(mlm, x, mlm_attention, pointed)
        logits[:, mask_id] = float("-inf")  # never draw <mask> (as the sampler)
        tokens, scaled, drawn = sample_tokens(logits, s["temperature"], s["top_k"], s["top_p"], generator=generator)
        x = x.masked_scatter(pointed, tokens)
        confidence = confidence.masked_scatter(pointed, chosen_probability(scaled, tokens))
        proposal = proposal.masked_scatter(pointed, drawn.log().float())
        sync(device)
        times.append(time.perf_counter() - start)
        history.append(x.cpu())
    return replace(trace, ids=torch.stack(history), confidence=confidence.float().cpu(), proposal=proposal.float().cpu(),
                   step_times=times, forward_passes=trace.forward_passes + 2 * rounds,
                   settings={**s, "corrections": rounds, "correction_share": share}, _texts=None, _completions=None)


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
    trace = correct(mlm, guide, trace, corrections, correction_share)
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
