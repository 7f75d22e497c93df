"""The training step compiled whole (``compile_scope="step"``: body, bounded head and cross-entropy in one graph)
gives the eager step's loss and gradients. On the CPU the graph is captured and replayed by ``aot_eager`` (the
tracing, the functionalised backward and the graph's own ops, without generated kernels), so what is checked here is
that the whole loss compiles and means the same (``graphed`` adds CUDA graphs, which need inductor on a GPU); the GPU's
fused kernels are checked in ``benchmarks.profile_train`` (its ``equality``)."""

from __future__ import annotations

import copy

import pytest
import torch
from roberta_diffusion.collator import DiffusionCollator
from roberta_diffusion.compiling import COMPILE_SCOPES, compile_step
from roberta_diffusion.losses import LossModule, bounded_head_loss, noisy_batch

BATCH, LENGTH = 4, 24


def loss_and_grads(module, batch):
    module.zero_grad(set_to_none=True)
    loss = module(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("scope", COMPILE_SCOPES)
def test_a_compiled_step_gives_the_eager_loss_and_gradients(mlm, tokenizer, scope):
    collator = DiffusionCollator(tokenizer, 4, "stratified")
    ids = torch.randint(5, len(tokenizer), (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    batch = noisy_batch(collator, ids, seed=3, device="cpu")
    model = copy.deepcopy(mlm).train()
    torch.manual_seed(0)  # dropout: the same masks in both runs
    eager = LossModule(model, bounded_head_loss(collator, BATCH, LENGTH))
    want_loss, want_grads = loss_and_grads(eager, batch)
    compiled = LossModule(copy.deepcopy(model), bounded_head_loss(collator, BATCH, LENGTH))
    compile_step(compiled, scope, backend="aot_eager")
    torch.manual_seed(0)
    got_loss, got_grads = loss_and_grads(compiled, batch)
    assert set(got_grads) == set(want_grads) and len(want_grads) > 10
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_an_unknown_compile_scope_is_one_line_naming_the_choices(mlm, tokenizer):
    module = LossModule(mlm, bounded_head_loss(DiffusionCollator(tokenizer, 4, "stratified"), BATCH, LENGTH))
    with pytest.raises(ValueError, match="compile_scope='everything': choose one of body, step, graphed"):
        compile_step(module, "everything")


@pytest.mark.parametrize("scope,compiled,mode", [("body", "body", None), ("step", "loss", None),
                                                 ("graphed", "loss", "reduce-overhead")])
def test_each_scope_compiles_its_part_with_its_mode(mlm, tokenizer, monkeypatch, scope, compiled, mode):
    """What each scope hands to ``torch.compile``: the body's forward, or the whole loss (graphed: as CUDA graphs)."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append((fn, kw)) or fn)
    model = copy.deepcopy(mlm)
    loss_fn = bounded_head_loss(DiffusionCollator(tokenizer, 4, "stratified"), BATCH, LENGTH)
    compile_step(LossModule(model, loss_fn), scope)
    [(fn, kw)] = calls
    body = getattr(model, model.base_model_prefix)
    assert fn == (body.forward if compiled == "body" else loss_fn) and kw.get("mode") == mode


@pytest.mark.parametrize("scope", COMPILE_SCOPES)
def test_each_compile_starts_from_fresh_dynamo_caches(mlm, tokenizer, monkeypatch, scope):
    """A second fit in one process (a notebook run twice, profile_train's runs) must not inherit the first one's
    compiled steps and CUDA-graph pool: on an H200 a graphed fit after another model's graphed calls ran 89 ms a step
    against 31. The caches are cleared before anything is compiled (CUDA graphs cannot be recorded on a CPU, so the
    order of the calls is what is checked here)."""
    calls = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("reset"))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append("compile") or fn)
    loss_fn = bounded_head_loss(DiffusionCollator(tokenizer, 4, "stratified"), BATCH, LENGTH)
    compile_step(LossModule(copy.deepcopy(mlm), loss_fn), scope)
    assert calls == ["reset", "compile"]


@pytest.mark.parametrize("scope", ["step", "graphed"])
@pytest.mark.parametrize("changing", [{"ratio_mode": "levels"}, {"ratio_mode": "continuous"},
                                      {"ratio_mode": "stratified", "teacher": "weights/x", "distill_steps": 8}])
def test_a_whole_step_compile_over_changing_shapes_is_refused(scope, changing):
    """The whole loss compiles into one graph only over one shape; under "graphed" another shape makes the CUDA-graph
    capture fail mid-run, so the config is refused before anything runs, naming the fix."""
    from roberta_diffusion.compiling import check_compile
    from roberta_diffusion.train import TrainConfig

    cfg = TrainConfig(compile=True, compile_scope=scope, **changing)
    with pytest.raises(ValueError, match="compile_scope='body'"):
        check_compile(cfg)
    check_compile(TrainConfig(compile=True, compile_scope="body", **changing))  # the body keeps [B, L]
    check_compile(TrainConfig(compile=False, compile_scope=scope, **changing))  # nothing compiled: nothing refused
    check_compile(TrainConfig(compile=True, compile_scope=scope, ratio_mode="stratified"))
    check_compile(TrainConfig(compile=True, compile_scope=scope, objective="ar", **changing))  # GPT-2's loss: one shape


@pytest.mark.parametrize("compiled", [False, True])
def test_deterministic_embeddings_give_the_lookup_gradients(mlm, tokenizer, compiled):
    """The small tables (positions, token types) get a one-hot matmul gradient under ``deterministic``: the same
    loss and gradients as the plain lookup, the padding row still unlearned, the word table untouched, eager and
    compiled (``aot_eager``: the graph without generated kernels)."""
    from roberta_diffusion.compiling import MatmulGradEmbedding, deterministic_embeddings

    collator = DiffusionCollator(tokenizer, 4, "stratified")
    ids = torch.randint(5, len(tokenizer), (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    batch = noisy_batch(collator, ids, seed=3, device="cpu")
    model = copy.deepcopy(mlm).eval()  # no dropout: the two runs see one computation
    want_loss, want_grads = loss_and_grads(LossModule(model, bounded_head_loss(collator, BATCH, LENGTH)), batch)
    swapped = copy.deepcopy(model)
    names = deterministic_embeddings(swapped)
    assert set(names) == {"roberta.embeddings.position_embeddings", "roberta.embeddings.token_type_embeddings"}
    assert type(swapped.roberta.embeddings.word_embeddings) is torch.nn.Embedding
    assert swapped.state_dict().keys() == model.state_dict().keys(), "checkpoints keep their names"
    module = LossModule(swapped, bounded_head_loss(collator, BATCH, LENGTH))
    if compiled:
        compile_step(module, "step", backend="aot_eager")
    got_loss, got_grads = loss_and_grads(module, batch)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert isinstance(swapped.roberta.embeddings.position_embeddings, MatmulGradEmbedding)


def test_the_matmul_gradient_of_a_lookup_is_the_lookups_and_skips_the_padding_row():
    from roberta_diffusion.compiling import MatmulGradEmbedding

    plain = torch.nn.Embedding(10, 6, padding_idx=1)
    swapped = copy.deepcopy(plain)
    swapped.__class__ = MatmulGradEmbedding
    ids = torch.tensor([[1, 3, 3, 3], [0, 1, 9, 3]])  # repeats, and the padding row twice
    upstream = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    for table in (plain, swapped):
        (table(ids) * upstream).sum().backward()
    torch.testing.assert_close(swapped.weight.grad, plain.weight.grad)
    assert not swapped.weight.grad[1].any() and swapped.weight.grad[3].any()
