"""The autoregressive baseline: any HF causal LM continues the same prompt prefix, one token a step,
with a KV cache and the same sampling knobs; it returns the same Trace as the diffusion sampler."""

from __future__ import annotations

import inspect
import time

import torch

from . import defaults
from .canvas import Canvas, check_room, prefix_canvas
from .draws import chosen_probability, make_generator, sample_tokens, sync
from .fast_ar import decode_static
from .graphs import check_graph_device, repeatable_attention
from .models import is_masked_lm, max_canvas_len
from .sampling import Sampling
from .trace import Trace

NOT_YET = -1  # placeholder id in the trace for positions not generated yet (a causal LM has no <mask>)


def cache_argument(model) -> str:
    """The forward() keyword that takes the KV cache: ``past_key_values``, renamed ``cache`` in newer transformers."""
    params = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in params else "cache"


def returned_cache(output):
    # read the new name first: the old one warns on newer transformers
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@torch.no_grad()
def generate_ar(model, tokenizer, prompts, *, max_len: int = defaults.MAX_LEN, prefix_len: int | None = defaults.PREFIX_LEN,
                temperature: float = Sampling.temperature, top_k: int = Sampling.top_k, top_p: float = Sampling.top_p,
                seed: int | None = Sampling.seed, static_cache: bool = False,
                graph: bool = False, on_step=None, teacher_forced: torch.Tensor | None = None):
    """Continue ``[bos] + prompt`` (all of it, left-padded to ``prefix_len`` when given) to ``max_len`` tokens, one
    per step.

    ``static_cache=True`` decodes GPT-2 with this project's fixed-shape decoder (``fast_ar``); ``graph=True``
    (CUDA) also replays its step as a CUDA graph. Both give the plain loop's tokens for the same seed, because every
    decoder holds SDPA to repeatable kernels (``graphs.repeatable_attention``).
    ``teacher_forced [B, max_len]`` (ids, e.g. another run's ``final``): read these as the context after each step
    instead of the token just drawn; the Trace still holds the drawn tokens. Two decoders forced along one trajectory
    draw from the same contexts, so their draws can be compared step by step (``benchmarks/agreement.py``).
    """
    if is_masked_lm(model):
        raise ValueError(f"{type(model).__name__} is a masked LM: give `ar` a causal LM such as gpt2")
    Sampling(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)  # the draw's settings, checked as the sampler's
    if isinstance(prompts, torch.Tensor):  # ready prefix ids [B, prefix_len] (evaluation on held-out blocks)
        prefix_len = prompts.shape[1]
    if prefix_len is not None and prefix_len >= max_len:
        raise ValueError(f"prefix_len={prefix_len} must be smaller than max_len={max_len}: nothing would be generated")
    if max_len > max_canvas_len(model):
        raise ValueError(f"max_len={max_len} is longer than the model's {max_canvas_len(model)} positions: lower max_len")
    device = next(model.parameters()).device
    if isinstance(prompts, torch.Tensor):
        start_canvas = Canvas(prompts.long(), torch.ones_like(prompts, dtype=torch.bool), torch.ones_like(prompts))
    else:
        start_canvas = prefix_canvas(tokenizer, prompts, prefix_len)
        prefix_len = start_canvas.ids.shape[1]
        check_room(prefix_len, max_len)
    batch = start_canvas.ids.shape[0]
    ids = torch.full((batch, max_len), NOT_YET, dtype=torch.long)
    ids[:, :prefix_len] = start_canvas.ids
    attention = torch.ones((batch, max_len), dtype=torch.long)
    attention[:, :prefix_len] = start_canvas.attention
    pinned = torch.zeros((batch, max_len), dtype=torch.bool)
    pinned[:, :prefix_len] = True
    canvas = Canvas(ids, pinned, attention)

    if graph:
        check_graph_device(device)
    if teacher_forced is not None:
        if teacher_forced.shape != (batch, max_len):
            raise ValueError(f"teacher_forced is {tuple(teacher_forced.shape)}, the run is {(batch, max_len)}: "
                             "pass a run's final ids of the same prompts and max_len")
        teacher_forced = teacher_forced.to(device)
    generator = make_generator(seed, device)
    # every uniform up front, as the diffusion sampler does: the static decoder reads the same ones
    uniforms = torch.rand((max_len - prefix_len, batch), dtype=torch.float64, device=device, generator=generator)
    settings = dict(steps=max_len - prefix_len, temperature=temperature, top_k=top_k, top_p=top_p,
                    prefix_len=prefix_len, max_len=max_len, seed=seed, model=type(model).__name__,
                    static_cache=static_cache or graph, graph=graph)
    if static_cache or graph:
        out, conf, per_token = decode_static(model, start_canvas.ids.to(device), start_canvas.attention.to(device),
                                             max_len, uniforms, temperature, top_k, top_p, graph=graph,
                                             forced=teacher_forced)
        out, conf = out.cpu(), conf.float().cpu()
        history = [ids.clone()]
        for pos in range(prefix_len, max_len):
            history.append(torch.cat([out[:, : pos + 1], ids[:, pos + 1:]], dim=1))
            if on_step is not None:
                on_step(len(history) - 1, history[-1])
        return Trace.from_history(history, canvas, conf, [per_token] * (max_len - prefix_len), NOT_YET, tokenizer, "ar", settings)
    cache_kw = cache_argument(model)
    attn = start_canvas.attention.to(device)
    step_input = start_canvas.ids.to(device)
    positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
    cache = None
    x = ids.clone()
    confidence = torch.full((batch, max_len), float("nan"))
    history, step_times = [x.clone()], []
    with repeatable_attention(device):  # as the static decoder: the same text for the same seed
        for pos in range(prefix_len, max_len):
            start = time.perf_counter()
            out = model(input_ids=step_input, attention_mask=attn, position_ids=positions, use_cache=True,
                        **{cache_kw: cache})
            cache = returned_cache(out)
            tokens, scaled, _ = sample_tokens(out.logits[:, -1], temperature, top_k, top_p, uniforms=uniforms[pos - prefix_len])
            chosen = chosen_probability(scaled, tokens)
            step_input = tokens.unsqueeze(1) if teacher_forced is None else teacher_forced[:, pos : pos + 1]
            positions = positions[:, -1:] + 1
            attn = torch.cat([attn, attn.new_ones((batch, 1))], dim=1)
            sync(device)
            step_times.append(time.perf_counter() - start)
            x[:, pos] = tokens.cpu()
            confidence[:, pos] = chosen.float().cpu()
            history.append(x.clone())
            if on_step is not None:
                on_step(len(history) - 1, history[-1])
    return Trace.from_history(history, canvas, confidence, step_times, NOT_YET, tokenizer, "ar", settings)
