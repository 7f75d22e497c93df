"""Starting a RoBERTa from scratch off the unigram plateau: initialisations that give a learned-position masked LM
a sense of distance from its first step (docs/experiments.md, section 1, has the runs that found them)."""

from __future__ import annotations

import torch


@torch.no_grad()
def locality_init(model, amplitude: float = 0.1, spread_heads: bool = False) -> None:
    """Start a learned-absolute-position masked LM (RoBERTa, BERT) with attention that already prefers nearby
    positions: sinusoidal position embeddings of ``amplitude`` and query = key = identity.

    Why: from a random init these models sit on the unigram plateau for thousands of updates, because a query-key
    product of two small random matrices carries no sense of distance and its gradient is tiny; a rotary model
    gets distance for free and leaves the plateau at once. Here ``q_i . k_j`` starts as ``h_i . h_j``, whose
    positional part ``p_i . p_j`` peaks at ``i = j`` and falls with distance, at a different width per head
    (each head sees its own band of frequencies; ``spread_heads`` gives every head the whole spectrum instead).
    On its own it helps a small model off the plateau, not the shipped shape (``plateau_escape_init`` does).
    """
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    table = base.embeddings.position_embeddings.weight  # [P, H]
    n_pos, width = table.shape
    position = torch.arange(n_pos, dtype=torch.float32).unsqueeze(1)
    frequency = 10000 ** (-torch.arange(0, width, 2, dtype=torch.float32) / width)
    table[:, 0::2] = amplitude * torch.sin(position * frequency)
    table[:, 1::2] = amplitude * torch.cos(position * frequency)
    if spread_heads:
        table.copy_(_spread_over_heads(table, model.config.num_attention_heads))
    padding = base.embeddings.position_embeddings.padding_idx
    if padding is not None:
        table[padding] = 0  # the row padding tokens read stays zero, as nn.Embedding keeps it
    for layer in base.encoder.layer:
        attention = layer.attention.self
        for projection in (attention.query, attention.key):
            projection.weight.copy_(torch.eye(width))
            projection.bias.zero_()


def _spread_over_heads(table: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[P, H]`` sinusoid whose (sin, cos) pairs run from fast to slow -> the same pairs reordered so that head h
    holds pairs h, h + n_heads, h + 2 n_heads, ...: every head sees fast and slow frequencies, where in the plain
    order the first heads get only fast (aliasing) ones and the last only slow (near-flat) ones."""
    if table.shape[1] % (2 * n_heads):
        raise ValueError(f"cannot spread a {table.shape[1]}-wide sinusoid over {n_heads} heads: each head needs an "
                         "even width (hidden size a multiple of 2 x heads)")
    pairs = table.view(table.shape[0], -1, 2)  # [P, H/2, 2]
    per_head = pairs.shape[1] // n_heads
    order = torch.arange(per_head * n_heads).view(per_head, n_heads).t().flatten()
    return pairs[:, order].reshape(table.shape)


@torch.no_grad()
def plateau_escape_init(model, unigram_counts: torch.Tensor, amplitude: float = 0.1, branch_scale: float = 0.1) -> None:
    """Start a fresh ``RobertaForMaskedLM`` so that it learns to read its context instead of collapsing.

    From a random init, RoBERTa's last hidden states at every position of a row turn into one vector (mean cosine
    near 1 within a few hundred steps) and the loss stays at the unigram entropy. Four changes at init, found
    together (not ablated one by one):

    - local attention: ``locality_init(amplitude, spread_heads=True)``;
    - the single token-type row, which adds the same vector to every position, starts at zero;
    - the output bias starts at log unigram frequencies (``unigram_counts``: ``[V]`` token counts of the training
      data), so the loss starts at the unigram entropy without the hidden states having to produce it;
    - the attention and MLP output projections start ``branch_scale`` times smaller, so each post-LN layer starts
      close to the identity and the position signal reaches the top (as Admin / DeepNet do for post-LN).

    It needs a small learning rate until the model has left the plateau (a larger one keeps it there); the rate can
    rise afterwards (``TrainConfig.escape_lr`` / ``escape_steps``). docs/experiments.md has the runs.
    """
    if not hasattr(model, "roberta"):
        raise ValueError(f"plateau_escape_init is for RobertaForMaskedLM, not {type(model).__name__}: use arch='roberta'")
    locality_init(model, amplitude=amplitude, spread_heads=True)
    model.roberta.embeddings.token_type_embeddings.weight.zero_()
    counts = unigram_counts.double().to(model.lm_head.bias.device) + 1  # +1: no token at -inf
    model.lm_head.bias.copy_(torch.log(counts / counts.sum()).float())
    for layer in model.roberta.encoder.layer:
        layer.attention.output.dense.weight.mul_(branch_scale)
        layer.output.dense.weight.mul_(branch_scale)
