"""How the training step runs on the hardware: how much of it is compiled (``compile_scope``), whether its CUDA
graphs can be captured for the config's shapes, and whether its kernels are deterministic. ``loop.setup`` calls these;
``workbench.settings`` runs ``check_compile`` before anything is written."""

from __future__ import annotations

import os

import torch

COMPILE_SCOPES = ("body", "step", "graphed")


def deterministic_kernels() -> None:
    """Deterministic kernels for the rest of the process (``deterministic=True``). A GPU step otherwise sums some
    gradients with atomics in whatever order threads finish: two unbroken graphed runs on an H200 differed from the
    sixth step on, in the fifth digit of the loss, so a resumed run can only be as close as two runs. With these, two
    runs and a kill and resume gave the same losses and weights to the byte. cuBLAS reads its workspace setting
    when a process first uses it, so in a notebook that already ran a GPU matmul, set it before that."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


class _MatmulGradLookup(torch.autograd.Function):
    """An embedding lookup whose weight gradient is ``one_hot(ids)^T @ grad``: deterministic without the sort-based
    index backward that deterministic mode otherwise runs. On an H200 (converge recipe, batch 256 x 256) that backward
    took 43.5 ms a step for the one-row token-type table, looked up at every position, 0.2 ms for the position table
    and 19.4 ms for the word table; with this gradient for the first two a deterministic step took 55 ms, not 98."""

    @staticmethod
    def forward(ctx, ids, weight, padding_idx):
        ctx.save_for_backward(ids)
        ctx.rows, ctx.padding_idx = weight.shape[0], padding_idx
        return torch.nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        hot = (ids.reshape(-1, 1) == torch.arange(ctx.rows, device=ids.device)).to(grad.dtype)  # no host check
        weight_grad = hot.t() @ grad.reshape(-1, grad.shape[-1])
        if ctx.padding_idx is not None:
            weight_grad[ctx.padding_idx] = 0  # as nn.Embedding: the padding row never learns
        return None, weight_grad, None


class MatmulGradEmbedding(torch.nn.Embedding):
    """``nn.Embedding`` with ``_MatmulGradLookup``'s gradient; the same parameters, so checkpoints do not change."""

    def forward(self, ids):
        return _MatmulGradLookup.apply(ids, self.weight, self.padding_idx)


def deterministic_embeddings(model) -> list[str]:
    """Give every embedding table of ``model`` but the word table (positions, token types) the one-hot matmul
    gradient; returns their names. The word table keeps the plain lookup: its one-hot would be batch x vocabulary
    (4 GB at the recipe's batch), and its sort-based backward is what is left of determinism's cost."""
    words, swapped = model.get_input_embeddings(), []
    for name, module in model.named_modules():
        if (type(module) is torch.nn.Embedding and module is not words and module.max_norm is None
                and not module.scale_grad_by_freq and not module.sparse):
            module.__class__ = MatmulGradEmbedding
            swapped.append(name)
    return swapped


def check_compile(cfg) -> None:
    """Refuse a whole-step compile over shapes that change from step to step: the masked LM's loss has one shape only
    with the stratified collator's bounded head (``_loss_fn``). Under ``"graphed"`` a changing shape does not merely
    recompile, the CUDA-graph capture fails (the levels collator's masked count, on an H200)."""
    if cfg.compile_scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_scope={cfg.compile_scope!r}: choose one of {', '.join(COMPILE_SCOPES)}")
    if cfg.compile and cfg.compile_scope != "body" and cfg.objective == "mlm" and (
            cfg.teacher or cfg.ratio_mode != "stratified"):
        why = "a distillation loss" if cfg.teacher else f"ratio_mode={cfg.ratio_mode!r}"
        raise ValueError(f"compile_scope={cfg.compile_scope!r} compiles the whole loss, which needs one shape every "
                         f"step, and {why} changes it: set ratio_mode='stratified' (no teacher) or compile_scope='body'")


def compile_step(step_module, scope: str, backend: str = "inductor") -> None:
    """Compile the training step's forward (and so its backward); the parameters and their names stay.

    ``"body"``: the transformer body (fixed shapes [B, L]). ``"step"``: the whole loss in one graph, the body, the
    bounded head's gather, the head and the cross-entropy, so the head's logits are not written out in fp32 and
    read back for an eager softmax (a fifth of a step of the shipped recipe in its profile).

    Dynamo's caches start fresh, as in a new process: a step compiled before in this process (an earlier fit, or the
    same loss over another model) counts against its recompile limit and keeps its CUDA-graph pool. After three
    graphed calls of another model, a graphed fit ran 89 ms a step against 31 (profile_train, one H200)."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"compile_scope={scope!r}: choose one of {', '.join(COMPILE_SCOPES)}")
    torch._dynamo.reset()
    loss_module = getattr(step_module, "module", step_module)  # under DDP, the LossModule it wraps
    if scope in ("step", "graphed"):  # graphed: the compiled step replayed as CUDA graphs (no launches per kernel)
        mode = "reduce-overhead" if scope == "graphed" and backend == "inductor" else None
        loss_module.loss_fn = torch.compile(loss_module.loss_fn, backend=backend, mode=mode)
    else:
        compile_body(loss_module.model, backend)


def compile_body(model, backend: str = "inductor") -> None:
    """Compile the transformer body's forward (fixed shapes [B, L])."""
    body = getattr(model, model.base_model_prefix, model)
    body.forward = torch.compile(body.forward, backend=backend)
