"""A fair, fast autoregressive baseline: GPT-2 decoding with a static KV cache and a CUDA-graph decode step.

HF ``generate`` spends most of a small model's decode step in Python and in a cache that grows every token.
Here the cache is preallocated ``[layers, B, heads, L, head_dim]``, every decode step has the same shapes
(one query against all ``L`` key slots, the not-yet-written ones masked out), and all state — next input,
position, step counter — lives on the device, so one CUDA graph replays the whole step. The forward reuses
the HF model's own modules (weights, layer norms, MLP), so it computes what ``GPT2LMHeadModel`` computes;
``tests/test_fast_paths.py`` checks its tokens against the plain KV-cache loop.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import graphs
from .draws import chosen_probability, sample_tokens, sync


class StaticCacheGPT2:
    """Decode ``GPT2LMHeadModel`` with a fixed-size cache. ``batch`` rows, ``max_len`` positions."""

    def __init__(self, model, batch: int, max_len: int):
        config = model.config
        if config.model_type != "gpt2":
            raise ValueError(f"the static-cache decoder supports GPT-2 only, not {config.model_type}: set graph=False")
        if (getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(config, "reorder_and_upcast_attn", False)
                or not getattr(config, "scale_attn_weights", True)):
            raise ValueError("this GPT-2 config scales attention unlike the static-cache decoder (1/sqrt(head dim)): "
                             "drop --graph (graph=False)")
        self.model = model
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        weight = model.transformer.wte.weight
        shape = (config.n_layer, batch, self.heads, max_len, self.head_dim)
        self.keys = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.values = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.slots = torch.arange(max_len, device=weight.device)

    def forward(self, ids, positions, first_slot, key_ok):
        """Logits ``[B, V]`` for the last of ``ids [B, T]``, whose cache slots start at ``first_slot [1]``.

        ``positions [B, T]``: position ids (they skip left padding); ``key_ok [B, L]``: slots holding real tokens.
        Writes the new keys/values into the cache.
        """
        t = self.model.transformer
        batch, length = ids.shape
        slots = first_slot + torch.arange(length, device=ids.device)  # [T]
        # a query sees filled slots up to its own; always itself, so a padding query never has an empty row
        visible = key_ok.unsqueeze(1) & (self.slots.unsqueeze(0) <= slots.unsqueeze(1)).unsqueeze(0)  # [B, T, L]
        visible = (visible | (self.slots.unsqueeze(0) == slots.unsqueeze(1)).unsqueeze(0)).unsqueeze(1)  # [B, 1, T, L]
        hidden = t.wte(ids) + t.wpe(positions)
        for layer, block in enumerate(t.h):
            q, k, v = block.attn.c_attn(block.ln_1(hidden)).split(hidden.shape[-1], dim=2)
            q, k, v = (z.view(batch, length, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
            self.keys[layer].index_copy_(2, slots, k)
            self.values[layer].index_copy_(2, slots, v)
            attended = F.scaled_dot_product_attention(q, self.keys[layer], self.values[layer], attn_mask=visible)
            hidden = hidden + block.attn.c_proj(attended.transpose(1, 2).reshape(batch, length, -1))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return self.model.lm_head(t.ln_f(hidden[:, -1]))


def decode_static(model, prefix_ids, prefix_attention, max_len, uniforms, temperature, top_k, top_p, graph=False,
                  forced=None):
    """Continue ``prefix_ids [B, P]`` to ``max_len`` tokens with ``uniforms [max_len - P, B]`` (one draw each).

    Returns ``ids [B, max_len]``, ``confidence [B, max_len]`` (on the device) and the seconds per new token
    (prefill included; graph capture, done once per shape, is not). ``forced [B, max_len]``: teacher forcing, each
    step reads these ids as its context; the returned ids are the drawn ones.
    """
    with graphs.repeatable_attention(prefix_ids.device):  # the same text for the same seed, at every batch size
        return _decode_static(model, prefix_ids, prefix_attention, max_len, uniforms, temperature, top_k, top_p, graph,
                              forced)


@torch.no_grad()  # the cache outlives the call: autograd history written into it would chain across calls
def _decode_static(model, prefix_ids, prefix_attention, max_len, uniforms, temperature, top_k, top_p, graph,
                   forced=None):
    device = prefix_ids.device
    batch, prefix_len = prefix_ids.shape
    decoder = _decoder(model, batch, max_len, (temperature, top_k, top_p), graph)
    state = decoder.state
    state["key_ok"].fill_(True)
    state["key_ok"][:, :prefix_len] = prefix_attention.bool()
    state["uniforms"][: max_len - prefix_len].copy_(uniforms)
    state["ids"].zero_()
    state["ids"][:, :prefix_len] = prefix_ids
    state["confidence"].fill_(float("nan"))
    state["prefix_len"].fill_(prefix_len)
    positions = (prefix_attention.cumsum(dim=1) - 1).clamp(min=0)
    sync(device)
    start = time.perf_counter()
    # the prefill draws the first new token; each decode step (one graph replay) the next
    logits = decoder.forward(prefix_ids, positions, torch.zeros(1, dtype=torch.long, device=device), state["key_ok"])
    state["slot"].fill_(prefix_len)
    state["position"].copy_(positions[:, -1:] + 1)
    _commit(state, logits, temperature, top_k, top_p)
    drawn = state["ids"].clone() if forced is not None else None
    for _ in range(max_len - prefix_len - 1):
        if forced is not None:  # keep the draw, then put the forced token where the next step reads its input
            _swap_in(state, drawn, forced)
        decoder.step()
    if forced is not None:
        _swap_in(state, drawn, forced)
    sync(device)
    seconds = time.perf_counter() - start
    ids = drawn if forced is not None else state["ids"].clone()
    return ids, state["confidence"].clone(), seconds / (max_len - prefix_len)


def _swap_in(state, drawn, forced):
    """Teacher forcing: copy the token just drawn (at ``slot``) to ``drawn`` and write ``forced``'s in its place."""
    slot = state["slot"]
    drawn.index_copy_(1, slot, state["ids"].index_select(1, slot))
    state["ids"].index_copy_(1, slot, forced.index_select(1, slot))


def _decoder(model, batch, max_len, knobs, graph):
    """One decoder (cache, state buffers and, with ``graph``, the captured step) per model, shape and sampling
    knobs, kept on the model for the next call."""
    first = next(model.parameters())
    key = ("ar", batch, max_len, first.dtype, first.data_ptr(), knobs, graph)
    if graph and max_len < 3:  # capture warms up on two decode steps, at slots 1 and 2
        raise ValueError(f"max_len={max_len}: a graph-captured decoder needs at least 3 positions: set graph=False")
    cache = graphs.model_cache(model)
    if key not in cache:
        decoder = StaticCacheGPT2(model, batch, max_len)
        device = first.device
        decoder.state = {
            "ids": torch.zeros((batch, max_len), dtype=torch.long, device=device),
            "confidence": torch.zeros((batch, max_len), device=device),
            "key_ok": torch.ones((batch, max_len), dtype=torch.bool, device=device),
            "uniforms": torch.zeros((max_len, batch), dtype=torch.float64, device=device),
            "slot": torch.zeros(1, dtype=torch.long, device=device),  # the slot of the token last drawn
            "position": torch.zeros((batch, 1), dtype=torch.long, device=device),
            "prefix_len": torch.zeros(1, dtype=torch.long, device=device),
        }
        decoder.step = lambda: _decode_step(decoder, decoder.state, *knobs)
        if graph:
            # warm-up and capture run on the zeroed buffers (slots 0..2, within max_len >= 3); every call
            # rewrites the state it reads before replaying
            decoder.step = graphs.capture(decoder.step).replay
        cache[key] = decoder
    return cache[key]


def _commit(state, logits, temperature, top_k, top_p):
    """Draw the token for ``state["slot"]`` from ``logits [B, V]`` and write it (fixed shapes, on device)."""
    slot = state["slot"]
    uniforms = state["uniforms"].index_select(0, slot - state["prefix_len"])[0]
    tokens, scaled, _ = sample_tokens(logits, temperature, top_k, top_p, uniforms=uniforms)
    state["ids"].index_copy_(1, slot, tokens.unsqueeze(1))
    state["confidence"].index_copy_(1, slot, chosen_probability(scaled, tokens).unsqueeze(1))


def _decode_step(decoder, state, temperature, top_k, top_p):
    """Feed the token at ``slot``, draw the one at ``slot + 1``."""
    slot = state["slot"]
    last = state["ids"].index_select(1, slot)  # [B, 1]
    logits = decoder.forward(last, state["position"], slot, state["key_ok"])
    state["position"].add_(1)
    slot.add_(1)
    _commit(state, logits, temperature, top_k, top_p)
