"""Training: loss goes down, checkpoints are atomic, and a killed run resumes instead of restarting."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from roberta_diffusion import checkpoints, data, losses, train
from roberta_diffusion.paths import SAMPLE_TEXT


@pytest.fixture(scope="module")
def blocks(tokenizer):
    return data.load_blocks(SAMPLE_TEXT, tokenizer, 32)


def _config(out, **kw):
    base = dict(out_dir=str(out), objective="mlm", size="tiny", block_size=32, prefix_len=4, batch_size=4,
                max_steps=12, eval_every=6, save_every=6, eval_batches=2, log_every=2, warmup_steps=2, lr=3e-3)
    return train.TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("objective, ratio_mode", [("mlm", "levels"), ("ar", "levels"), ("mlm", "stratified")])
def test_training_lowers_the_training_loss_and_exports_a_model(objective, ratio_mode, blocks, tokenizer, tmp_path):
    """("stratified" trains through masked_lm_loss_fixed, the head on a bounded number of rows.)"""
    history = train.fit(_config(tmp_path, objective=objective, max_steps=30, dropout=0.0, ratio_mode=ratio_mode),
                          blocks, blocks, tokenizer, progress=False)
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert (tmp_path / "model" / "config.json").exists() and (tmp_path / "history.json").exists()
    assert history["tokens"] == 30 * 4 * 32


def test_half_written_checkpoints_are_never_resumed(blocks, tokenizer, tmp_path):
    train.fit(_config(tmp_path), blocks, blocks, tokenizer, progress=False)
    broken = tmp_path / "checkpoints" / "step-99.tmp"
    broken.mkdir()
    (broken / "state.json").write_text("{")
    assert checkpoints.latest_checkpoint(tmp_path).name == "step-12"


def test_batches_depend_only_on_seed_and_step():
    a = train.batch_indices(17, 100, 8, seed=1)
    assert torch.equal(a, train.batch_indices(17, 100, 8, seed=1))
    assert not torch.equal(a, train.batch_indices(18, 100, 8, seed=1))


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, tokenizer):
    """kill -9 a run mid-way; the rerun continues from the newest finished checkpoint, not from step 0."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import torch
        torch.set_num_threads(1)
        from roberta_diffusion import bpe, data, models, train
        from roberta_diffusion.paths import SAMPLE_TEXT
        tok = bpe.fallback_tokenizer()
        blocks = data.load_blocks(SAMPLE_TEXT, tok, 32)
        cfg = train.TrainConfig(out_dir={str(tmp_path / 'run')!r}, objective="mlm", size="tiny", block_size=32,
                                prefix_len=4, batch_size=4, max_steps=100000, save_every=5, eval_every=10**9,
                                eval_batches=1, log_every=1, warmup_steps=2, lr=5e-4)
        train.fit(cfg, blocks, blocks, tok, progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    try:
        while checkpoints.latest_checkpoint(tmp_path / "run") is None or int(
                checkpoints.latest_checkpoint(tmp_path / "run").name.split("-")[1]) < 10:
            assert time.time() < deadline, "no checkpoint appeared"
            assert proc.poll() is None, "the training process ended early"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    last = checkpoints.latest_checkpoint(tmp_path / "run")
    done = int(last.name.split("-")[1])
    before = json.loads((last / "state.json").read_text())["history"]

    cfg = _config(tmp_path / "run", max_steps=done + 4, save_every=5, eval_every=10**9, eval_batches=1, log_every=1,
                  batch_size=4, prefix_len=4, lr=5e-4)  # the killed run's rate: another one would be refused
    history = train.fit(cfg, data.load_blocks(SAMPLE_TEXT, tokenizer, 32), data.load_blocks(SAMPLE_TEXT, tokenizer, 32),
                          tokenizer, progress=False)
    assert history["step"][: len(before["step"])] == before["step"]  # the old history is kept, not restarted
    assert history["step"][-1] == done + 4
    assert history["step"][len(before["step"])] == done + 1  # the first new step follows the checkpoint
    assert history["tokens"] == (done + 4) * 4 * 32


@pytest.mark.parametrize("weighting", ["none", "elbo"])
def test_the_fixed_shape_loss_equals_the_masked_rows_loss(mlm, tokenizer, weighting):
    from roberta_diffusion.collator import DiffusionCollator
    from roberta_diffusion.losses import masked_lm_loss, masked_lm_loss_dense

    collator = DiffusionCollator(tokenizer, 4, "continuous", weighting=weighting)
    blocks = torch.randint(5, len(tokenizer), (4, 24), generator=torch.Generator().manual_seed(0))
    batch = {k: v for k, v in collator(blocks).items() if k != "mask_ratio"}
    torch.testing.assert_close(masked_lm_loss_dense(mlm, batch), masked_lm_loss(mlm, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["none", "elbo"])
def test_the_bounded_head_loss_equals_the_masked_rows_loss_with_its_gradients(mlm, tokenizer, weighting):
    """masked_lm_loss_fixed runs the head on max_masked positions (masked ones first, the rest ignored): the same
    loss and the same gradients as the data-dependent masked_lm_loss, and a capacity below the masked count loses
    terms (so the bound matters)."""
    from roberta_diffusion.collator import DiffusionCollator
    from roberta_diffusion.losses import masked_lm_loss, masked_lm_loss_fixed

    collator = DiffusionCollator(tokenizer, 4, "stratified", weighting=weighting,
                                 generator=torch.Generator().manual_seed(3))
    blocks = torch.randint(5, len(tokenizer), (6, 24), generator=torch.Generator().manual_seed(0))
    batch = {k: v for k, v in collator(blocks).items() if k != "mask_ratio"}
    capacity = collator.max_masked(6, 24)
    n_masked = int((batch["labels"] != -100).sum())
    assert n_masked <= capacity < blocks.numel()

    def loss_and_grads(loss):
        mlm.zero_grad()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in mlm.parameters() if p.grad is not None]

    fixed, fixed_grads = loss_and_grads(masked_lm_loss_fixed(mlm, batch, capacity))
    plain, plain_grads = loss_and_grads(masked_lm_loss(mlm, batch))
    mlm.zero_grad()
    torch.testing.assert_close(fixed, plain, atol=1e-5, rtol=1e-5)
    for a, b in zip(fixed_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    short = masked_lm_loss_fixed(mlm, batch, n_masked - 1).detach()
    assert not torch.allclose(short, plain)


def test_plateau_escape_starts_training_at_the_unigram_loss(blocks, tokenizer, tmp_path):
    """The init is built from the training blocks: its output bias is their log unigram, so the untrained model's
    masked-token loss is close to what the unigram distribution scores on those tokens (a random init starts near
    log V, far above it). It is refused where it does not apply."""
    cfg = _config(tmp_path, plateau_escape=True, max_steps=2)
    model = train.build_model(cfg, tokenizer, blocks)
    counts = torch.bincount(blocks.flatten().long(), minlength=model.config.vocab_size).double() + 1
    log_p = torch.log(counts / counts.sum())
    assert torch.allclose(model.lm_head.bias.double(), log_p, atol=1e-5)
    ids = blocks[:16].long()
    masked = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    unigram_loss = float(-log_p[ids[masked]].mean())
    batch = {"input_ids": ids.masked_fill(masked, tokenizer.mask_token_id), "attention_mask": torch.ones_like(ids),
             "labels": torch.where(masked, ids, -100)}
    with torch.no_grad():
        start = float(losses.masked_lm_loss(model.eval(), batch))
        random_start = float(losses.masked_lm_loss(train.build_model(_config(tmp_path), tokenizer).eval(), batch))
    assert abs(start - unigram_loss) < 0.3, (start, unigram_loss)
    assert random_start > unigram_loss + 1.0, (random_start, unigram_loss)
    history = train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    assert len(history["train_loss"]) >= 1
    for bad in (dict(arch="modernbert"), dict(objective="ar"), dict(init="weights/roberta-diffusion-small"),
                dict(locality_init=0.3)):
        with pytest.raises(ValueError, match="plateau_escape"):
            train.build_model(_config(tmp_path, plateau_escape=True, **bad), tokenizer, blocks)


def test_the_two_phase_rate_holds_the_escape_rate_then_ramps_to_the_peak_and_decays(tmp_path):
    cfg = _config(tmp_path, lr=1e-3, escape_lr=2e-4, escape_steps=100, warmup_steps=10, max_steps=1000)
    rate = [cfg.lr * train._lr_lambda(cfg)(step) for step in range(cfg.max_steps)]
    assert rate[0] == pytest.approx(2e-5) and rate[9] == pytest.approx(2e-4)  # warm-up to the escape rate
    assert rate[10] == rate[99] == pytest.approx(2e-4)  # held until escape_steps
    assert rate[100] < rate[105] < rate[109] == pytest.approx(1e-3)  # ramp over warmup_steps to the peak
    assert max(rate) == pytest.approx(1e-3) and rate[-1] == pytest.approx(1e-4, rel=1e-2)  # cosine to 10 %
    plain = _config(tmp_path, lr=1e-3, warmup_steps=10, max_steps=1000)
    assert [train._lr_lambda(plain)(s) for s in (0, 9, 10)] == pytest.approx([0.1, 1.0, 1.0])


@pytest.mark.parametrize("escape_steps", [0, 5])
def test_an_escape_phase_shorter_than_the_warm_up_is_refused_before_anything_is_written(escape_steps, blocks,
                                                                                         tokenizer, tmp_path):
    cfg = _config(tmp_path / "run", escape_lr=2e-4, escape_steps=escape_steps, warmup_steps=10)
    with pytest.raises(ValueError, match="escape_steps >= warmup_steps"):
        train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    assert not (tmp_path / "run").exists()


def test_stratified_training_runs_the_head_on_the_bounded_rows(blocks, tokenizer, tmp_path, monkeypatch):
    capacities = []
    real = losses.masked_lm_loss_fixed

    def spy(model, batch, capacity):
        capacities.append(capacity)
        return real(model, batch, capacity)

    monkeypatch.setattr(losses, "masked_lm_loss_fixed", spy)
    cfg = _config(tmp_path, ratio_mode="stratified", max_steps=4, eval_every=4, save_every=4)
    train.fit(cfg, blocks, blocks, tokenizer, progress=False)
    bound = train.DiffusionCollator(tokenizer, cfg.prefix_len, "stratified").max_masked(cfg.batch_size, cfg.block_size)
    assert len(capacities) >= 4 and set(capacities) == {bound}


def test_notebook_02_parameters_cell_is_train_config():
    """TrainConfig owns the training settings; notebook 02's cell restates them as literals for papermill. Same
    names in the same order, same values, same types (the cell's "Optional[int]" is the field's "int | None")."""
    from roberta_diffusion import paths
    from workbench.settings import SET_BY_TRAIN, notebook_parameters

    cell = notebook_parameters(paths.NOTEBOOKS / "02_finetune.py")
    fields = [f for f in dataclasses.fields(train.TrainConfig) if f.name not in SET_BY_TRAIN]
    assert list(cell) == [f.name for f in fields]
    defaults = dataclasses.asdict(train.TrainConfig())
    for f in fields:
        annotation, value = cell[f.name]
        if annotation.startswith("Optional["):
            annotation = f"{annotation[len('Optional['):-1]} | None"
        assert (f.name, annotation, value) == (f.name, f.type, defaults[f.name])
        assert type(value) is type(defaults[f.name]), f.name  # 1 is not 1.0 to a type check of --set


def test_profiles_override_train_config(tmp_path, monkeypatch):
    """What `finetune --profile P` trains is TrainConfig's defaults under the profile's 02_finetune values, and it
    is what the notebook builds from its cell with the profile injected: one config either way."""
    from roberta_diffusion import paths
    from workbench import pipeline

    monkeypatch.setattr(paths, "RUNS", tmp_path)
    for name in ("smoke", "full", "converge"):
        params = pipeline.notebook_params(pipeline.load_profile(name), "02_finetune")
        cell = {k: v for k, (_, v) in pipeline.settings.notebook_parameters(paths.NOTEBOOKS / "02_finetune.py").items()}
        assert train.TrainConfig(**params) == train.TrainConfig(**{**cell, **params}), name
    full = train.TrainConfig(**pipeline.notebook_params(pipeline.load_profile("full"), "02_finetune"))
    assert (full.size, full.block_size, full.batch_size, full.max_steps, full.lr) == ("small", 256, 64, 4000, 0.0015)


def test_the_baseline_takes_its_own_values_and_the_masked_lm_only_defaults(tmp_path, monkeypatch):
    from roberta_diffusion import paths

    monkeypatch.setattr(paths, "RUNS", tmp_path)
    cfg = train.TrainConfig(init="weights/tokenizer", escape_lr=2e-4, escape_steps=100,
                            ar={"lr": 3e-4, "warmup_steps": 7})
    mlm, ar = cfg.for_objective("mlm"), cfg.for_objective("ar")
    assert (mlm.lr, mlm.warmup_steps, mlm.escape_lr, mlm.out_dir) == (1e-3, 10, 2e-4, str(tmp_path / "scratch" / "mlm"))
    assert (ar.lr, ar.warmup_steps, ar.escape_lr, ar.init, ar.objective) == (3e-4, 7, None, None, "ar")
    with pytest.raises(ValueError, match="not TrainConfig fields"):
        train.TrainConfig(ar={"lrr": 1}).for_objective("ar")


def test_set_checks_against_train_config():
    """`--set` knows TrainConfig's fields and types, not the notebook's text: a field the cell does not parse
    still type-checks, every numeric setting refuses a negative value, and a typo gets the closest name."""
    from workbench import settings

    known = settings.train_settings()
    assert set(known) == {f.name for f in dataclasses.fields(train.TrainConfig)} - set(settings.SET_BY_TRAIN)
    settings.parameters({"max_train_lines": None, "escape_lr": 2e-4, "objectives": ["mlm"], "n_levels": 5}, known, "--set")
    for key, value in (("max_steps", 1.5), ("max_train_lines", "all"), ("compile", 1), ("ar", [1]), ("lr", True)):
        with pytest.raises(ValueError, match=key):
            settings.parameter(key, value, known, "--set")
    numeric = [k for k, (annotation, _) in known.items() if annotation.split(" | ")[0] in ("int", "float")]
    assert {"lr", "adam_eps", "log_every", "dropout", "max_prefix_len"} <= set(numeric)
    for key in numeric:
        with pytest.raises(ValueError, match=key):
            settings.parameter(key, -1, known, "--set")
    with pytest.raises(ValueError, match="dropout"):
        settings.parameter("dropout", 1.5, known, "--set")
    with pytest.raises(ValueError, match="did you mean 'adam_eps'"):
        settings.parameter("adam_epsilon", 1e-8, known, "--set")
