"""The training losses: the masked LM's diffusion loss (three ways to shape the head's work) and GPT-2's.

``masked_lm_loss`` runs the vocabulary head only on masked rows (data-dependent shape); ``masked_lm_loss_fixed``
on a fixed number of rows a stratified collator bounds (one shape: the whole step compiles once);
``masked_lm_loss_dense`` on every position. All give the same value.

``elbo`` is the held-out bound every report uses (training's ``HeldOutScorer``, ``eval``, the notebooks): the
loss of a ``weighting="elbo"`` collator, so the objective and the bound are one definition.
"""

from __future__ import annotations

import functools

import torch

from .collator import DiffusionCollator, diffusion_loss, reduce_masked_ce
from .defaults import PROMPT_LEN
from .models import flat_logits, masked_lm_logits


def masked_lm_loss(model, batch) -> torch.Tensor:
    """The diffusion loss (see ``collator.diffusion_loss``), projecting onto the vocabulary only where masked."""
    labels = batch["labels"]
    where = labels != -100
    logits = masked_lm_logits(model, batch["input_ids"], batch["attention_mask"], where)  # [N, V]
    ce = torch.nn.functional.cross_entropy(logits.float(), labels[where], reduction="none")
    per_token = torch.zeros(labels.shape, dtype=ce.dtype, device=ce.device).masked_scatter(where, ce)
    return reduce_masked_ce(per_token, labels, batch.get("loss_weight"))


def masked_lm_loss_dense(model, batch) -> torch.Tensor:
    """``masked_lm_loss`` with fixed shapes: logits at every position, the unmasked ones dropped by the loss.
    More FLOPs in the head, but no data-dependent shape, so a compiler can capture the whole step."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, L, V]
    return diffusion_loss(logits, batch["labels"], batch.get("loss_weight"))


def masked_lm_loss_fixed(model, batch, capacity: int) -> torch.Tensor:
    """``masked_lm_loss`` with fixed shapes and the head on ``capacity`` positions only.

    ``capacity`` must be at least the batch's number of masked tokens (``DiffusionCollator.max_masked`` bounds it in
    ``"stratified"`` mode). The masked positions come first in a stable sort of ``[B * L]`` flags and fill the rest
    with unmasked ones, whose labels are -100; so the shapes never depend on the data, a compiler can capture the
    whole step, and the head does about half the work of ``masked_lm_loss_dense``.
    """
    labels = batch["labels"]  # [B, L]
    flat_labels = labels.flatten()
    index = torch.argsort((flat_labels != -100).to(torch.int8), descending=True, stable=True)[:capacity]  # [K]
    logits = flat_logits(model, batch["input_ids"], batch.get("attention_mask"), index)  # [K, V]
    ce = torch.nn.functional.cross_entropy(logits.float(), flat_labels[index], ignore_index=-100, reduction="none")
    per_token = torch.zeros_like(flat_labels, dtype=ce.dtype).scatter(0, index, ce).view(labels.shape)  # [B, L]
    return reduce_masked_ce(per_token, labels, batch.get("loss_weight"))


def bounded_head_loss(collator: DiffusionCollator, batch_size: int, block_len: int):
    """``masked_lm_loss_fixed`` with the capacity a ``"stratified"`` collator bounds its batches by: one shape every
    step, so the whole step compiles once."""
    return functools.partial(masked_lm_loss_fixed, capacity=collator.max_masked(batch_size, block_len))


def causal_lm_loss(model, batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


class LossModule(torch.nn.Module):
    """``loss_fn(model, batch)`` as a module, so that DDP wraps the whole step: the losses that run the encoder and
    the head apart (the head only where masked) then keep DDP's gradient hooks, which wrapping the model alone
    would bypass."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def noisy_batch(collator: DiffusionCollator, ids: torch.Tensor, seed: int, device, rows=slice(None),
                noise_device=None) -> dict:
    """``collator(ids)`` with the noise of ``seed``, its ``rows`` on ``device`` (without the ratios, which no loss
    reads). The noise is drawn for every row, so a row's noise does not depend on which rows are kept.

    The noise is drawn on ``noise_device`` (default ``device``): on a GPU, drawing it there keeps the host out of
    the step. A seed gives the same noise on every device of one type, not across types (CPU vs CUDA)."""
    noise_device = torch.device(noise_device or device)
    collator.generator = torch.Generator(device=noise_device).manual_seed(seed)
    batch = collator(ids.to(noise_device, non_blocking=True))
    batch.pop("mask_ratio")
    return {k: v[rows].to(device, non_blocking=True) for k, v in batch.items()}


# the held-out noise's seeds are HELDOUT_SEED + the batch's first block (+ len(blocks) per further sample): apart
# from the training steps' (seed * 1_000_003 + step), and drawn on the CPU, so a bound is the same on any device
HELDOUT_SEED = 10_000


def elbo_collator(tokenizer, prefix_len: int = PROMPT_LEN) -> DiffusionCollator:
    """The noise the bound is defined on: MDLM's stratified ``t`` over a batch, each row's masked CE weighted by
    ``1/(t n)``, the first ``prefix_len`` tokens pinned (the prompt scores condition on)."""
    return DiffusionCollator(tokenizer, prefix_len, "stratified", weighting="elbo")


def elbo_batches(collator: DiffusionCollator, blocks: torch.Tensor, batch_size: int, samples: int = 1,
                 seed: int = HELDOUT_SEED, device="cpu") -> list[dict]:
    """The noisy batches ``elbo`` averages over: ``samples`` draws of ``collator``'s noise per block, in batches of
    ``batch_size`` rows sharing one stratified draw of ``t``, drawn on the CPU (the same on any device)."""
    if collator.weighting != "elbo":
        raise ValueError(f"a collator with weighting={collator.weighting!r} gives no bound: use elbo_collator(...)")
    return [noisy_batch(collator, blocks[start : start + batch_size], seed + k * len(blocks) + start, device,
                        noise_device="cpu")
            for k in range(samples) for start in range(0, len(blocks), batch_size)]


@torch.no_grad()
def elbo(model, collator: DiffusionCollator, blocks: torch.Tensor, batch_size: int, samples: int = 1,
         seed: int = HELDOUT_SEED, device=None, batches: list[dict] | None = None) -> float:
    """The masked LM's negative ELBO per token (nats) on ``blocks [N, L]``, an upper bound on its NLL of the free
    positions given the pinned ones: ``samples`` draws of ``collator``'s noise per block, the training loss of a
    ``weighting="elbo"`` collator averaged over them and the blocks (MDLM, linear schedule). The one bound the
    training history, ``eval`` and the notebooks report: the same blocks, batches, samples and seed give the same
    number. ``batches``: those ``elbo_batches`` drew for these arguments, kept by a caller that scores often."""
    device = torch.device(device or next(model.parameters()).device)
    if batches is None:
        batches = elbo_batches(collator, blocks, batch_size, samples, seed, device)
    model.eval()
    total = 0.0
    for batch in batches:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            total += masked_lm_loss(model, batch).float().item() * len(batch["input_ids"])
    return total / max(1, samples * len(blocks))


class HeldOutScorer:
    """The held-out score of a checkpoint, the same at every step: the training objective's loss (``cfg``'s) and a
    bound on the NLL per token (nats) of positions past the ``PROMPT_LEN``-token prompt (half the block, for
    shorter blocks). For the masked LM the bound is ``elbo`` with one sample per block; for GPT-2 the exact NLL. Up
    to ``eval_batches`` batches of ``batch_size`` blocks (all of Wikipedia valid with the shipped recipe)."""

    def __init__(self, cfg, collator: DiffusionCollator, valid_blocks: torch.Tensor, device):
        self.cfg, self.device, self.block_size = cfg, device, cfg.block_size
        self.blocks = valid_blocks[: cfg.eval_batches * cfg.batch_size]
        self.prompt = min(PROMPT_LEN, cfg.block_size // 2)
        chunks = [self.blocks[i : i + cfg.batch_size] for i in range(0, len(self.blocks), cfg.batch_size)]
        if cfg.objective == "mlm":  # every noise drawn once, on the CPU: the same held-out score at every evaluation
            self.bound_noise = elbo_collator(collator.tokenizer, self.prompt)
            self.bound_batches = elbo_batches(self.bound_noise, self.blocks, cfg.batch_size, device=device)
            self.batches = [noisy_batch(collator, ids, HELDOUT_SEED + i * cfg.batch_size, device, noise_device="cpu")
                            for i, ids in enumerate(chunks)]
        else:
            self.batches = [ids.to(device) for ids in chunks]

    @torch.no_grad()
    def score(self, model, objective: bool = True) -> tuple[float | None, float]:
        """``(objective loss, bound)``; with ``objective=False`` the loss is skipped (None) for the masked LM."""
        model.eval()
        autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=self.device.type == "cuda")
        if self.cfg.objective == "mlm":
            loss = None
            if objective:
                with autocast:
                    losses = [masked_lm_loss(model, batch).float().item() for batch in self.batches]
                loss = sum(losses) / len(losses) if losses else None
            return loss, elbo(model, self.bound_noise, self.blocks, self.cfg.batch_size, device=self.device,
                              batches=self.bound_batches)
        losses, bound_sum = [], 0.0
        for batch in self.batches:
            with autocast:
                logits = model(input_ids=batch).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
            losses.append(nll.mean().item())
            bound_sum += nll[:, self.prompt - 1 :].mean(dim=1).sum().item()
        return (sum(losses) / len(losses) if losses else None), bound_sum / max(1, len(self.blocks))
