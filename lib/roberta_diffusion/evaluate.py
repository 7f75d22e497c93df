"""The evaluation behind ``eval.json``: held-out perplexities and sample quality of both models.

- Held-out text: AR perplexity (exact) and the MLM's perplexity bound (Monte-Carlo masked-diffusion ELBO)
  on the same blocks and tokens, for each corpus given.
- Samples: ``n_prompts`` prompts = the first ``prefix_len`` tokens of held-out blocks; the rest of each block
  is the real continuation. Diffusion at several step counts and policies, AR with the same sampling knobs;
  generative perplexity under a judge, unigram entropy and distinct-2, next to the real continuations'. When
  a model's tokenizer differs from the judge's, its text is re-tokenised for the judge (``sample_quality``).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, replace

import torch
import transformers

from . import metrics, paths
from .canvas import Canvas
from .defaults import PROMPT_LEN
from .guided import CORRECTION_SHARE, correct
from .models import load_tokenizer, max_canvas_len
from .sampler import generate_ar, generate_diffusion
from .sampling import Sampling


def spread_indices(n_blocks: int, n: int) -> torch.Tensor:
    """Indices of ``n`` blocks evenly spaced through ``n_blocks`` (many articles, not the first few)."""
    if n > n_blocks:
        raise ValueError(f"asked for {n} held-out blocks but the text gives {n_blocks}: lower the count")
    return torch.linspace(0, n_blocks - 1, n).round().long()


def spread_blocks(blocks: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` blocks evenly spaced through ``blocks`` (``spread_indices``)."""
    return blocks[spread_indices(len(blocks), n)]


def prompt_canvas_from_blocks(blocks: torch.Tensor, prefix_len: int, mask_id: int) -> Canvas:
    ids = blocks.clone()
    ids[:, prefix_len:] = mask_id
    pinned = torch.zeros_like(ids, dtype=torch.bool)
    pinned[:, :prefix_len] = True
    return Canvas(ids, pinned, torch.ones_like(ids))


def heldout_scores(mlm, ar, tokenizer, blocks: torch.Tensor, prefix_len: int, elbo_samples: int, batch_size: int) -> dict:
    out = {"blocks": len(blocks)}
    if ar is not None:
        out["ar"] = metrics.ar_nll(ar, blocks, prefix_len, batch_size)
    if mlm is not None:
        out["mlm_elbo"] = metrics.mlm_elbo(mlm, tokenizer, blocks, prefix_len, elbo_samples, batch_size)
    if ar is not None and mlm is not None:
        out["elbo_ppl_over_ar_ppl"] = round(out["mlm_elbo"]["ppl"] / out["ar"]["ppl"], 4)
    return out


def same_vocab(*tokenizers) -> bool:
    """True when every tokenizer maps the same strings to the same ids (scores in tokens are comparable)."""
    first = tokenizers[0].get_vocab()
    return all(t is tokenizers[0] or t.get_vocab() == first for t in tokenizers[1:])



def shipped_judge_for(tokenizer) -> str | None:
    """``weights/judge`` (the independent judge) where it is there and reads ``tokenizer``'s vocabulary, else None
    (another model family needs its own judge: the caller says which it falls back to)."""
    if not (paths.SHIPPED_JUDGE / "config.json").is_file():
        return None
    return paths.portable(str(paths.SHIPPED_JUDGE)) if same_vocab(load_tokenizer(paths.SHIPPED_JUDGE), tokenizer) \
        else None


def _judge_rows(judge, judge_tokenizer, prefix_ids: torch.Tensor, completions: list[str]) -> tuple[dict, list]:
    """Score text ``completions`` after the judge-vocabulary ``prefix_ids [N, P]`` row by row (lengths differ)."""
    total, count, seqs = 0.0, 0, []
    limit = max_canvas_len(judge)
    device = next(judge.parameters()).device
    for prefix, text in zip(prefix_ids, completions, strict=True):
        ids = judge_tokenizer(text, add_special_tokens=False)["input_ids"][: limit - len(prefix)]
        seqs.append(ids)
        if not ids:
            continue
        row = torch.cat([prefix, torch.tensor(ids, dtype=torch.long)]).unsqueeze(0).to(device)
        scored = metrics.ar_nll(judge, row, prefix_len=len(prefix))
        total += scored["nll"] * scored["tokens"]
        count += scored["tokens"]
    return metrics.nll_summary(total, count), seqs


def quality_in_judge_vocab(seqs: torch.Tensor, tokenizer, prefix: torch.Tensor, judge, judge_tokenizer,
                           prefix_len: int) -> dict:
    """Generative perplexity, unigram entropy and distinct-2 of generated ``seqs [N, L]`` (``tokenizer``'s ids),
    measured in the judge's vocabulary: ids as they are when the vocabularies match, else the decoded text
    re-tokenised after the judge-vocabulary ``prefix [N, P]``."""
    if same_vocab(tokenizer, judge_tokenizer):
        return metrics.text_quality(seqs, prefix_len, judge)
    texts = [tokenizer.decode(row[prefix_len:][row[prefix_len:] >= 0], skip_special_tokens=True) for row in seqs]
    nll, judge_seqs = _judge_rows(judge, judge_tokenizer, prefix, texts)
    return {"unigram_entropy": round(metrics.unigram_entropy(judge_seqs), 4),
            "distinct_2": round(metrics.distinct_n(judge_seqs, 2), 4), "rep_4": round(metrics.repetition(judge_seqs, 4), 4),
            "gen_ppl": nll["ppl"], "retokenised": True}


def prompts_for(tokenizer, judge_tokenizer, prompt_blocks: torch.Tensor, prefix_len: int):
    """The judge-vocabulary prompt blocks as the generator's input: the prefix ids themselves when the
    vocabularies match, else the prefix text (the generator re-tokenises it)."""
    if same_vocab(tokenizer, judge_tokenizer):
        return prompt_blocks[:, :prefix_len]
    return [judge_tokenizer.decode(row[:prefix_len], skip_special_tokens=True) for row in prompt_blocks]


def sample_quality(mlm, mlm_tokenizer, ar, ar_tokenizer, judge, judge_tokenizer, prompt_blocks: torch.Tensor,
                   prefix_len: int, steps_list, sampling: Sampling, batch_size: int = 16, score_real: bool = True,
                   guide=None, corrections: int = 0, correction_share: float = CORRECTION_SHARE) -> dict:
    """Sample quality with each model in its own tokenizer (``sample_scores`` when they share one). ``prompt_blocks [N, L]`` are
    held-out blocks in the judge's vocabulary: the first ``prefix_len`` tokens prompt both models, the rest is
    the real continuation. Diffusion samples with ``sampling`` at each of ``steps_list``; AR with its temperature,
    top-k, top-p and seed. Returns ``real``, ``ar`` and ``diffusion`` (one entry per step count, its ``sampling``
    whole) with ``gen_ppl``, ``unigram_entropy``, ``distinct_2``, ``seconds`` and one example ``text`` each.
    ``guide`` (a causal LM of the masked LM's vocabulary) with ``corrections`` > 0: each diffusion sample gets that
    many rounds of twin-pointed redraws of ``correction_share`` of its tokens (``guided.correct``)."""
    if corrections and guide is None:
        raise ValueError(f"corrections={corrections} needs a guide: the causal LM that points at what to redraw")
    max_len = prompt_blocks.shape[1]
    prefix = prompt_blocks[:, :prefix_len]
    out = {"prompts": len(prompt_blocks)}
    if score_real:
        out["real"] = metrics.text_quality(prompt_blocks, prefix_len, judge) | {
            "text": judge_tokenizer.decode(prompt_blocks[0], skip_special_tokens=True)}

    def run(fn, tokenizer):
        prompts = prompts_for(tokenizer, judge_tokenizer, prompt_blocks, prefix_len)
        rows, texts, seconds = [], [], 0.0
        for start in range(0, len(prompt_blocks), batch_size):
            trace = fn(prompts[start : start + batch_size])
            rows.append(trace.final)
            texts += trace.texts
            seconds += trace.total_time
        seqs = torch.cat(rows)
        return quality_in_judge_vocab(seqs, tokenizer, prefix, judge, judge_tokenizer, prefix_len) | {
            "seconds": round(seconds, 4), "text": texts[0]}

    def canvas_of(prompts):
        if isinstance(prompts, torch.Tensor):
            blocks = torch.cat([prompts, prompts.new_zeros(len(prompts), max_len - prefix_len)], dim=1)
            return {"canvas": prompt_canvas_from_blocks(blocks, prefix_len, mlm_tokenizer.mask_token_id)}
        return {"prompts": list(prompts), "prefix_len": prefix_len, "max_len": max_len}

    if ar is not None:
        knobs = ar_knobs(sampling)
        out["ar"] = run(lambda p: generate_ar(ar, ar_tokenizer, p, max_len=max_len, prefix_len=prefix_len,
                                              seed=sampling.seed, **knobs), ar_tokenizer) | {"sampling": knobs}
    if mlm is not None:
        out["diffusion"] = {}
        for steps in steps_list:
            start = time.perf_counter()
            each = replace(sampling, steps=int(steps))
            out["diffusion"][int(steps)] = run(lambda p, each=each: correct(mlm, guide, generate_diffusion(
                mlm, mlm_tokenizer, sampling=each, **canvas_of(p)), corrections, correction_share), mlm_tokenizer)
            out["diffusion"][int(steps)] |= {"steps": int(steps), "policy": each.policy, "sampling": asdict(each),
                                             "corrections": corrections, "correction_share": correction_share,
                                             "wall_s": round(time.perf_counter() - start, 4)}
    return out


def ar_knobs(sampling) -> dict:
    """The settings of ``sampling`` (a ``Sampling`` or the CLI's flags) the autoregressive baseline shares: its draw's
    temperature and filters."""
    return {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p}


def sample_scores(mlm, ar, tokenizer, prompts: torch.Tensor, judge, prefix_len: int, steps_list, policies,
                  sampling: Sampling, batch_size: int = 64) -> dict:
    """``sample_quality`` for models sharing ``tokenizer``, over several policies (each ``sampling`` with that
    policy): the real continuations and the AR samples are scored once; diffusion entries are keyed
    ``"<policy>@<steps>"``."""
    out = {"diffusion": {}}
    for i, policy in enumerate(policies or [None]):
        part = sample_quality(mlm if policy else None, tokenizer, ar if i == 0 else None, tokenizer, judge, tokenizer,
                              prompts, prefix_len, steps_list, sampling.with_policy(policy or sampling.policy),
                              batch_size, score_real=i == 0)
        out |= {k: v for k, v in part.items() if k != "diffusion"}
        for steps, scores in part.get("diffusion", {}).items():
            out["diffusion"][f"{policy}@{steps}"] = scores
    return out


def environment() -> dict:
    device = "cpu"
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


def evaluate(mlm, ar, tokenizer, heldout: dict[str, torch.Tensor], prompt_blocks: torch.Tensor, judge=None,
             judge_name: str = "", prefix_len: int = PROMPT_LEN, steps_list=(10, 32, 64, 128), policies=None,
             elbo_samples: int = 8, sampling: Sampling | None = None, batch_size: int = 16) -> dict:
    """Everything ``eval.json`` holds. ``heldout``: name -> blocks ``[N, L]``. Samples are drawn with ``sampling``
    (default ``Sampling.readable()``) under each of ``policies`` (default: its own) and ``steps_list``."""
    sampling = sampling or Sampling.readable()
    start = time.time()
    result = {"environment": environment(), "prefix_len": prefix_len,
              "heldout": {name: heldout_scores(mlm, ar, tokenizer, blocks, prefix_len, elbo_samples, batch_size)
                          for name, blocks in heldout.items()},
              "samples": {"prompts": len(prompt_blocks), "judge": judge_name, "sampling": asdict(sampling),
                          **sample_scores(mlm, ar, tokenizer, prompt_blocks, judge, prefix_len, steps_list,
                                          policies or (sampling.policy,), sampling)}}
    result["seconds"] = round(time.time() - start, 1)
    return result
