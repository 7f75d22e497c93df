"""The plan of a diffusion run: its schedule, blocks, candidates and every random number, fixed before the loop.

A plan is what lets every step run the same code on the same shapes (what a CUDA graph needs) and what makes a run
repeatable: the sampler reads it and draws nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .draws import still_masked_counts
from .policies import POLICIES
from .sampling import Sampling


def _block_ids(free: torch.Tensor, semi_ar_block: int | None) -> torch.Tensor:
    """``[B, L]`` block index of each free position (-1 elsewhere), counting free positions left to right."""
    if semi_ar_block is None:
        return torch.where(free, 0, -1)
    order = free.long().cumsum(dim=1) - 1
    return torch.where(free, order // semi_ar_block, -1)


@dataclass
class Plan:
    """Everything a step reads, fixed before the loop, so that every step runs the same code on the same
    shapes (what lets a CUDA graph replay it). ``S`` steps, ``B`` rows, ``L`` positions, ``F`` candidates.

    in_block [S, B, L] bool    positions of the block being filled at each step
    counts [S, B] long         how many to commit at each step (unmasking policies; remdm: with what it re-masked)
    n_remask [S, B] long       how many to re-mask after each step (redraw: still masked; remdm: revised)
    last [S] bool              the last step of its block: commit everything still masked
    candidates [B, F] long     the free positions, where tokens are drawn (padded rows repeat a fixed one)
    valid [B, F] bool          False on that padding
    draw [S, B * F] float64    the inverse-CDF uniform of every draw
    noise [S, B, L] float32    per-step noise: redraw's re-mask order, remdm's commit order; ``random`` reads
                               step 0 as its order key
    commit_pos [S, B, C] long  ``random`` only (C = 0 otherwise): the positions each step commits, known before
                               the loop because that policy's choice reads only the noise; padded slots hold
                               positions the step leaves alone
    commit_ok [S, B, C] bool   False on that padding
    commit_draw [S, B * C]     the uniforms of ``draw`` that belong to those positions (float64)
    salience [V] float32       ``calibrated`` only (empty otherwise): each token's ``-log`` corpus frequency
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
    salience: torch.Tensor

    def tensors(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def make_plan(free, sampling: Sampling, generator, salience=None) -> Plan:
    """The schedule, blocks and every random number of a run. ``free [B, L]`` bool: positions to generate.

    Everything that depends on ``free`` alone (schedule, blocks, candidates) is worked out on the host and copied
    over once: on a GPU each small operation costs a kernel launch (microseconds, whatever its size), and this runs
    once per call, outside the replayed loop (at B=1 it was a sixth of a 10-step call). The random numbers, and the
    ranking that reads them, are made on the device.
    """
    device = free.device
    free = free.cpu()
    batch, length = free.shape
    steps, rule = sampling.steps, POLICIES[sampling.policy]
    blocks = _block_ids(free, sampling.semi_ar_block)
    n_blocks = int(blocks.max()) + 1  # 0 when nothing is free (every block id is -1)
    if n_blocks > steps:
        raise ValueError(f"{n_blocks} blocks of {sampling.semi_ar_block} need at least {n_blocks} steps: raise steps or "
                         "semi_ar_block")
    n_free = free.sum(dim=1)
    if n_blocks:
        in_block, counts, n_remask, last = _block_schedule(blocks, n_blocks, steps, sampling.schedule)
    else:  # nothing to generate: one no-op step keeps the shapes valid
        in_block, counts, n_remask, last = free.unsqueeze(0), n_free.unsqueeze(0), n_free.unsqueeze(0), torch.ones(1, dtype=torch.bool)
    if rule.remask == "lowest":  # n_remask then counts revisions, not what is still masked
        counts, n_remask = _revision_schedule(in_block, counts, n_remask, last, sampling.remask)
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
    commits = _planned_commits(noise, free, blocks, in_block, counts, n_remask, draw) if rule.planned \
        else _no_commits(n_steps, batch, device)
    on_device = [t.to(device) for t in (in_block, counts, n_remask, last, candidates, valid)]
    salience = torch.zeros(0, device=device) if salience is None else salience.float().to(device)
    return Plan(*on_device, draw, noise, *commits, salience)


def _block_schedule(blocks, n_blocks, steps, schedule):
    """Split ``steps`` evenly between blocks (earlier blocks take the remainder) and schedule each block.
    ``blocks [B, L]`` -> ``in_block [S, B, L]``, ``counts [S, B]`` (commits per step), ``n_remask [S, B]`` (still
    masked after each step, the redraw share) and ``last [S]`` (a block's final step)."""
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


def _revision_schedule(in_block, counts, still_masked, last, remask: float):
    """remdm's counts: after each step but a block's last, ``floor(remask x`` the tokens committed before it``)``
    go back to ``<mask>``, and the next step commits those on top of its scheduled count, so the block still ends
    fully committed. -> ``counts [S, B]`` (commits per step), ``n_remask [S, B]`` (re-masked after each step)."""
    size = in_block.sum(dim=2)  # [S, B]: the block's free positions
    commits, revised = counts.clone(), torch.zeros_like(counts)
    for j in range(len(counts)):
        start = j == 0 or bool(last[j - 1])
        carried = 0 if start else revised[j - 1]
        masked_before = size[j] if start else still_masked[j - 1] + carried  # masked when step j starts
        commits[j] = counts[j] + carried
        if not bool(last[j]):
            revised[j] = torch.floor(remask * (size[j] - masked_before).double()).long()
    return commits, revised


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


def _planned_commits(noise, free, blocks, in_block, counts, n_remask, draw):
    """``random`` picks its positions by ``random_order_key`` alone, never by the model's output, so the positions of
    every step are fixed before the loop. The step then computes logits and draws tokens at those ``C`` positions
    only (about 1/S of the canvas per step) instead of at every free position.

    The choice is the one the generic step makes: within its block, a position of key rank ``r`` (0 = highest,
    ties to the left, as ``top_count_mask`` breaks them) is committed by the block's step whose cumulative count
    first exceeds ``r``. Each position keeps the uniform it has in ``draw``, so the tokens are the same as drawing
    everywhere and committing some.

    ``noise`` and ``draw`` live on the device; ``free``, ``blocks [B, L]`` and the schedule (``in_block [S, B, L]``,
    ``counts``, ``n_remask [S, B]``) on the host, where everything that needs no random number is worked out.
    """
    device, (n_steps, batch, length) = noise.device, in_block.shape
    width = draw.shape[1] // batch
    # a step commits the ranks [before, before + count) of its block, ``before`` = the block's size less what is
    # still masked when the step starts (what it leaves masked plus what it commits)
    before = in_block.sum(dim=2) - n_remask - counts  # [S, B]
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
