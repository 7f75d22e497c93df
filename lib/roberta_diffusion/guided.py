"""Twin-guided selection: draw several diffusion candidates per prompt in one batch, keep the one the AR twin likes.

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

The result is an ordinary ``Trace`` of the kept rows: every viewer and metric works on it. Its ``settings`` name the
guide, the rule and the candidates, and ``guide_seconds`` is the scoring pass's time (its steps' times do not hold it).
"""

from __future__ import annotations

import time

import torch

from .canvas import Canvas, prompt_canvas
from .draws import make_generator, sync
from .models import max_canvas_len
from .sampler import generate_diffusion
from .sampling import Sampling
from .trace import Trace

PICKS = ("likelihood", "importance")


# the most logits one scoring pass holds (elements: 4 GiB in fp32, about 3x that at the peak with the upcast copy and
# log_softmax); 32 candidates x 128 prompts x 256 x 32k in one pass would be 134 GB
LOGITS_BUDGET = 2**30


@torch.no_grad()
def sequence_logprob(model, ids: torch.Tensor, attention: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """``[B]`` log-probability under causal ``model`` of the tokens at ``scored [B, L]`` (bool) given all before
    them. Positions count from each row's first real token, so a left-padded row scores as if unpadded. Rows go
    through in chunks of at most ``LOGITS_BUDGET`` logits."""
    rows = max(1, LOGITS_BUDGET // (ids.shape[1] * model.config.vocab_size))
    return torch.cat([_chunk_logprob(model, *(t[i:i + rows] for t in (ids, attention, scored)))
                      for i in range(0, ids.shape[0], rows)])


def _chunk_logprob(model, ids: torch.Tensor, attention: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    positions = (attention.long().cumsum(dim=1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float()
    logp = logits.log_softmax(dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * scored[:, 1:]).double().sum(dim=1)


def repeat_rows(canvas: Canvas, n: int) -> Canvas:
    return Canvas(*(t.repeat_interleave(n, dim=0) for t in (canvas.ids, canvas.pinned, canvas.attention)))


def select_rows(trace: Trace, rows: torch.Tensor, settings: dict) -> Trace:
    return Trace(ids=trace.ids[:, rows], pinned=trace.pinned[rows], attention=trace.attention[rows],
                 confidence=trace.confidence[rows], proposal=trace.proposal[rows], step_times=trace.step_times, mask_token_id=trace.mask_token_id,
                 kind=trace.kind, forward_passes=trace.forward_passes, settings=settings, tokenizer=trace.tokenizer)


@torch.no_grad()
def generate_guided(mlm, guide, tokenizer, prompts=None, sampling: Sampling | None = None, *,
                    canvas: Canvas | None = None, candidates: int = 8, pick: str = "likelihood", prefix_len=None,
                    max_len: int = 256, **settings) -> Trace:
    """``generate_diffusion`` with ``candidates`` rows per prompt in one batch, one kept per prompt by ``guide`` (a
    causal LM sharing ``tokenizer``'s vocabulary). ``sampling``, ``settings``: as ``generate_diffusion`` takes them
    (``on_step``, ``graph`` and ``salience`` included). Which candidate is kept is the guide's business, not the
    sampler's, so ``candidates`` and ``pick`` are this function's own and stay out of ``Sampling``."""
    if candidates < 1:
        raise ValueError(f"candidates={candidates} must be >= 1")
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}: choose one of {', '.join(PICKS)}")
    if guide.config.vocab_size != mlm.config.vocab_size:
        raise ValueError(f"the guide's vocabulary ({guide.config.vocab_size}) is not the masked LM's "
                         f"({mlm.config.vocab_size}): guide with the twin trained on the same tokenizer")
    if canvas is None:
        if prompts is None:
            raise ValueError("give prompts or a canvas")
        canvas = prompt_canvas(tokenizer, prompts, prefix_len, min(max_len, max_canvas_len(mlm)))
    n_prompts = canvas.ids.shape[0]
    trace = generate_diffusion(mlm, tokenizer, sampling=sampling, canvas=repeat_rows(canvas, candidates), **settings)
    seed = trace.settings["seed"]
    device = next(guide.parameters()).device
    start = time.perf_counter()
    final, generated = trace.final.to(device), trace.generated.to(device)
    score = sequence_logprob(guide, final, trace.attention.to(device), generated).view(n_prompts, candidates)
    if pick == "importance":
        proposal = torch.where(generated, trace.proposal.to(device).double(), 0.0).sum(dim=1)  # NaN where pinned
        weights = (score - proposal.view(n_prompts, candidates)).softmax(dim=1)
        generator = make_generator(None if seed is None else seed + 1, device)  # not the sampler's own stream
        kept = torch.multinomial(weights.float(), 1, generator=generator).squeeze(1)
    else:
        kept = score.argmax(dim=1)
    sync(device)
    rows = (torch.arange(n_prompts, device=device) * candidates + kept).cpu()
    settings = {**trace.settings, "candidates": candidates, "pick": pick,
                "guide": getattr(guide.config, "name_or_path", "") or type(guide).__name__,
                "guide_seconds": round(time.perf_counter() - start, 6)}
    return select_rows(trace, rows, settings)
