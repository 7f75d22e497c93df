"""Quality and speed measures, shared by the compare notebook, the evaluation command and the tests.

All scores cover the same tokens: positions ``[prefix_len, L)`` of each block, given the prefix, so the
autoregressive perplexity (exact) and the masked-diffusion perplexity bound are comparable when the two
models share a tokenizer.
"""

from __future__ import annotations

import math
from collections import Counter

import torch

from .collator import diffusion_loss
from .defaults import PROMPT_LEN
from .losses import HELDOUT_SEED, elbo, elbo_collator


def _batches(blocks: torch.Tensor, batch_size: int):
    for start in range(0, len(blocks), batch_size):
        yield blocks[start : start + batch_size]


def _device(model):
    return next(model.parameters()).device


@torch.no_grad()
def ar_nll(model, blocks: torch.Tensor, prefix_len: int = PROMPT_LEN, batch_size: int = 16) -> dict:
    """Exact NLL per token of positions ``[prefix_len, L)`` under a causal LM. ``blocks [N, L]``."""
    tokens = len(blocks) * (blocks.shape[1] - prefix_len)
    return nll_summary(float(row_nll(model, blocks, prefix_len, batch_size).sum()), tokens)


@torch.no_grad()
def row_nll(model, blocks: torch.Tensor, prefix_len: int = PROMPT_LEN, batch_size: int = 16) -> torch.Tensor:
    """``[N]`` float64: each block's summed NLL of positions ``[prefix_len, L)`` under a causal LM."""
    device, sums = _device(model), []
    for ids in _batches(blocks, batch_size):
        ids = ids.to(device)
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        sums.append(nll[:, prefix_len - 1 :].double().sum(dim=1).cpu())
    return torch.cat(sums)


def ppl_interval(sums: torch.Tensor, tokens_per_row: int, level: float = 0.9, draws: int = 2000,
                 seed: int = 0) -> list[float]:
    """A bootstrap interval of the perplexity of rows with summed NLLs ``sums [N]`` (prompts drawn with
    replacement): how far another draw of as many prompts could move the number. Settings whose intervals overlap
    are not told apart by this many prompts."""
    return _bootstrap_ppl(sums, tokens_per_row, level, draws, seed, digits=2)


def ratio_interval(sums: torch.Tensor, against: torch.Tensor, tokens_per_row: int, level: float = 0.9,
                   draws: int = 2000, seed: int = 0) -> list[float]:
    """A paired bootstrap interval of the perplexity ratio of two sample sets scored on the same prompts (row ``i``
    of ``sums`` and of ``against`` continue prompt ``i``): the prompts are drawn together, so what makes a prompt
    hard for both cancels, as far as the two sets share it. The ratio is the perplexity of the rows' differences."""
    if sums.shape != against.shape:
        raise ValueError(f"{len(sums)} and {len(against)} prompts: a paired interval needs the same prompts")
    return _bootstrap_ppl(sums - against, tokens_per_row, level, draws, seed, digits=3)


def _bootstrap_ppl(sums: torch.Tensor, tokens_per_row: int, level: float, draws: int, seed: int,
                   digits: int) -> list[float]:
    picks = torch.randint(len(sums), (draws, len(sums)), generator=torch.Generator().manual_seed(seed))
    ppl = (sums[picks].sum(dim=1) / (tokens_per_row * len(sums))).exp()
    low, high = torch.quantile(ppl, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=ppl.dtype)).tolist()
    return [round(low, digits), round(high, digits)]


def mlm_elbo(model, tokenizer, blocks: torch.Tensor, prefix_len: int = PROMPT_LEN, samples: int = 8, batch_size: int = 16,
             seed: int = HELDOUT_SEED) -> dict:
    """``losses.elbo`` (the bound training reports) of positions ``[prefix_len, L)`` with ``samples`` noise draws
    per block, as ``eval.json`` holds it; ``tokens`` counts the scored (maskable) tokens."""
    collator = elbo_collator(tokenizer, prefix_len)
    tokens = int(collator.maskable(blocks).sum())
    nll = elbo(model, collator, blocks, batch_size, samples, seed)
    return {"nll": round(nll, 5), "ppl": round(math.exp(nll), 3), "tokens": tokens, "mc_samples": samples}


def nll_summary(total: float, count: int) -> dict:
    nll = total / max(1, count)
    return {"nll": round(nll, 5), "ppl": round(math.exp(nll), 3), "tokens": count}


@torch.no_grad()
def generative_ppl(judge, sequences: torch.Tensor, prefix_len: int, batch_size: int = 16) -> dict:
    """Perplexity of ``sequences [N, L]`` (ids in the judge's vocabulary) under a causal judge, scoring
    positions ``[prefix_len, L)`` given the prefix. Padding (id < 0) is not allowed here."""
    if (sequences < 0).any():
        raise ValueError("sequences contain placeholder ids: score finished generations only")
    sums, per_row = row_nll(judge, sequences, prefix_len, batch_size), sequences.shape[1] - prefix_len
    return {**nll_summary(float(sums.sum()), len(sums) * per_row), "ppl_interval": ppl_interval(sums, per_row),
            "row_nll": sums}


def unigram_entropy(sequences: list[list[int]]) -> float:
    """Mean over samples of the entropy (nats) of each sample's own token frequencies (as MDLM reports it):
    low values flag repetition."""
    values = []
    for seq in sequences:
        counts = torch.tensor(list(Counter(seq).values()), dtype=torch.float64)
        p = counts / counts.sum()
        values.append(float(-(p * p.log()).sum()))
    return sum(values) / max(1, len(values))


def distinct_n(sequences: list[list[int]], n: int = 2) -> float:
    """Mean over samples of unique n-grams / n-grams."""
    values = []
    for seq in sequences:
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        if grams:
            values.append(len(set(grams)) / len(grams))
    return sum(values) / max(1, len(values))


def repetition(sequences: list[list[int]], n: int = 4) -> float:
    """Mean over samples of the share of n-grams that repeat an earlier one (1 - distinct-n): loops show here."""
    return 1.0 - distinct_n(sequences, n) if any(len(seq) >= n for seq in sequences) else 0.0


def text_quality(sequences: torch.Tensor, prefix_len: int, judge=None, per_prompt: bool = False) -> dict:
    """Entropy, distinct-2, 4-gram repetition and (with a judge) generative perplexity of the generated part of
    ``[N, L]``; ``per_prompt``: also each row's summed judge NLL (``prompt_nll`` over ``prompt_tokens`` tokens a row,
    for ``ratio_interval``)."""
    generated = [row[prefix_len:].tolist() for row in sequences]
    out = {"unigram_entropy": round(unigram_entropy(generated), 4), "distinct_2": round(distinct_n(generated, 2), 4),
           "rep_4": round(repetition(generated, 4), 4)}
    if judge is not None:
        scored = generative_ppl(judge, sequences, prefix_len)
        out["gen_ppl"], out["gen_ppl_interval"] = scored["ppl"], scored["ppl_interval"]
        if per_prompt:
            out["prompt_nll"] = [round(x, 3) for x in scored["row_nll"].tolist()]
            out["prompt_tokens"] = sequences.shape[1] - prefix_len
    return out


@torch.no_grad()
def loss_by_ratio(model, collator, blocks: torch.Tensor, ratios=(0.1, 0.3, 0.5, 0.7, 0.9, 1.0), batch_size=16,
                  seed: int = 0) -> dict[float, float]:
    """Masked-token cross-entropy of a masked LM at each fixed mask ratio (how hard each noise level is)."""
    device, out = _device(model), {}
    for ratio in ratios:
        collator.generator = torch.Generator().manual_seed(seed)
        losses = []
        for ids in _batches(blocks, batch_size):
            masked = collator.mask(ids, torch.full((len(ids),), float(ratio)))
            labels = torch.where(masked, ids, -100)
            logits = model(input_ids=ids.masked_fill(masked, collator.mask_id).to(device)).logits
            losses.append(diffusion_loss(logits, labels.to(device)).item())
        out[float(ratio)] = round(sum(losses) / len(losses), 5)
    return out


def timing(trace) -> dict:
    """Latency and throughput of one generation Trace."""
    return {"latency_s": round(trace.total_time, 4), "forward_passes": trace.forward_passes,
            "new_tokens": trace.new_tokens, "tokens_per_s": round(trace.tokens_per_second, 1),
            "ms_per_step": round(1000 * trace.total_time / max(1, trace.steps), 3)}
