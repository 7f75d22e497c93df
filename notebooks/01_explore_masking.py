# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · What the diffusion noise does to real text
#
# A masked diffusion language model is trained on text that has been partly hidden: the forward ("noising")
# process replaces a share `t` of the tokens by `<mask>`, and the model learns to put them back. At `t = 1`
# everything is hidden, which is where generation starts; the sampler then walks `t` back down to 0.
#
# This notebook looks at that noise on real Wikipedia text, as the `DiffusionCollator` of the training loop
# applies it: what a block looks like at a few mask ratios, which positions are never touched (the prompt
# prefix and special tokens), how the two ratio modes spread the noise levels, and — when a trained model is
# at hand — how hard each noise level is for it.

# %% tags=["parameters"]
run_name: str = "scratch"  # outputs go to runs/<run_name>/
corpus: str = "wikipedia-valid"  # corpus alias or local .txt/.raw/.gz file or folder
tokenizer_path: str = "weights/tokenizer"  # the shipped BPE tokenizer (RoBERTa special tokens)
block_size: int = 64  # tokens per block (the canvas length; 256 in the real recipe)
prefix_len: int = 16  # never masked: the prompt the model learns to continue
ratios: list = [0.1, 0.5, 0.9]  # mask ratios to show on one block
n_levels: int = 10  # "levels" mode draws from {1/N, ..., 1}
n_draws: int = 2000  # batches drawn for the ratio histograms
batch_size: int = 8  # examples per drawn batch
model_path: "Optional[str]" = None  # masked LM for the loss-vs-ratio plot; None means runs/<run_name>/mlm/model if trained
loss_blocks: int = 32  # held-out blocks behind each point of the loss-vs-ratio plot
seed: int = 0

# %%
import json
import math

import matplotlib.pyplot as plt
import torch
from roberta_diffusion import data, metrics, paths, viz
from roberta_diffusion.collator import DiffusionCollator
from roberta_diffusion.models import load_tokenizer
from workbench import cells

try:
    from IPython.display import display
except ImportError:
    display = print

run_dir = paths.run_dir(run_name)
tokenizer = load_tokenizer(paths.resolve(tokenizer_path))
blocks = data.cached_blocks(paths.corpus(corpus), tokenizer, block_size, paths.CACHE)
print(f"run folder: {paths.portable(run_dir)}\n{corpus}: {len(blocks)} blocks of {block_size} tokens; "
      f"mask token {tokenizer.mask_token!r} = id {tokenizer.mask_token_id}")

# %% [markdown]
# ## One block at several noise levels
# The collator masks *exactly* `round(t · n)` of the `n` maskable positions of a row (at least one), chosen
# uniformly at random. Below, `░` is a masked position and `┃` marks the end of the prefix: everything before
# it is the prompt the model conditions on, and it is never masked.

# %%
collator = DiffusionCollator(tokenizer, prefix_len=prefix_len, n_levels=n_levels,
                             generator=torch.Generator().manual_seed(seed))
block = blocks[len(blocks) // 2 : len(blocks) // 2 + 1]  # one block from the middle of the corpus
mask_id = tokenizer.mask_token_id


def show(ids: torch.Tensor) -> str:
    pieces = viz.token_pieces(tokenizer, ids, mask_id)
    return ("".join(pieces[:prefix_len]) + " ┃" + "".join(pieces[prefix_len:])).strip()


print(f"original:\n{show(block[0])}\n")
for ratio in ratios:
    masked = collator.mask(block, torch.tensor([float(ratio)]))
    noisy = block.masked_fill(masked, mask_id)
    print(f"t = {ratio}: {int(masked.sum())} of {int(collator.maskable(block).sum())} maskable positions masked\n"
          f"{show(noisy[0])}\n")

# %% [markdown]
# ## What is never masked
# The prefix (the first `prefix_len` positions) and special tokens (`<s>`, `</s>`, `<pad>`) are excluded before
# positions are chosen, so even at `t = 1` the prompt survives and padding never becomes a target. `audit` counts
# every broken rule on a batch whose second row is padded at the end and carries a `</s>` in the middle.

# %%
batch = blocks[:batch_size].clone()
batch[1, -10:] = tokenizer.pad_token_id
batch[1, block_size // 2] = tokenizer.eos_token_id
report = collator.audit(batch)  # counts of every rule broken, at t = 0.1, 0.5, 0.9 and 1 (all should be 0)
print(report)
if any(report.values()):
    raise RuntimeError(f"the collator broke its rules: {report}")

# %% [markdown]
# ## How the noise levels are drawn
# Two modes. **levels** (the seed's recipe) draws one ratio per *batch* from the ten levels 0.1 … 1.0: every
# row in a batch is equally noisy. **continuous** (MDLM) draws `t ~ U(ε, 1)` per *example*, so each batch mixes
# noise levels and the gradient estimate has lower variance. Both cover (0, 1] uniformly in expectation; the
# histograms count one entry per example over `n_draws` batches.

# %%
drawn = {}
for mode in ("levels", "continuous"):
    mode_collator = DiffusionCollator(tokenizer, prefix_len=prefix_len, mode=mode, n_levels=n_levels,
                                      generator=torch.Generator().manual_seed(seed))
    drawn[mode] = torch.cat([mode_collator.sample_ratios(batch_size) for _ in range(n_draws)])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, (mode, values) in zip(axes, drawn.items(), strict=True):
    ax.hist(values.numpy(), bins=50, range=(0, 1), color="tab:blue" if mode == "levels" else "tab:orange")
    ax.set(title=f"{mode}: mean {values.mean():.3f}, std {values.std():.3f}", xlabel="mask ratio t",
           ylabel="examples")
cells.save_figure(fig, run_dir / "ratio_histogram.png")
plt.show()
plt.close(fig)

# %% [markdown]
# ## How hard each noise level is
# With a trained masked LM we can measure its cross-entropy on the masked tokens at fixed ratios. Low ratios
# are easy (the surrounding text pins each blank down); at `t → 1` the model only has the prefix and falls back
# towards the unigram distribution. The area under this curve is the masked-diffusion bound on the NLL per
# token used in notebook 04: the ELBO weights each noise level by `1/t`, but at level `t` about `t·n` of the `n`
# tokens are scored, so the weight cancels and the bound is the plain average of the curve over `t ∈ (0, 1]`
# (estimated here by the mean over the ten levels). The plot is made only when a model is given (`model_path`)
# or notebook 02 has trained one for this run, since a random model's curve says nothing.

# %%
trained = cells.has_model(cells.trained_model_dir("mlm", run_name))
loss_curve = None
if model_path is not None or trained:
    model, model_tokenizer, description = cells.resolve_model("mlm", run_name, model_path)
    print(description)
    model_blocks = cells.heldout_blocks(model_tokenizer, corpus, block_size, loss_blocks)
    model_collator = DiffusionCollator(model_tokenizer, prefix_len=prefix_len)
    levels = [round(k / n_levels, 3) for k in range(1, n_levels + 1)]
    loss_curve = metrics.loss_by_ratio(model, model_collator, model_blocks, ratios=levels, seed=seed)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(list(loss_curve), list(loss_curve.values()), "o-")
    ax.set(title=f"masked-token loss vs mask ratio ({len(model_blocks)} blocks)", xlabel="mask ratio t",
           ylabel="cross-entropy (nats)")
    cells.save_figure(fig, run_dir / "loss_by_ratio.png")
    plt.show()
    plt.close(fig)
    display(cells.table([{"ratio": r, "loss (nats)": v} for r, v in loss_curve.items()]))
    area = sum(loss_curve.values()) / len(loss_curve)
    print(f"area under the curve ≈ {area:.3f} nats/token: perplexity bound ≈ {math.exp(area):.1f}")
else:
    print(f"no model: pass model_path, or run notebook 02 with run_name={run_name!r} first")

# %%
summary = {"corpus": corpus, "block_size": block_size, "prefix_len": prefix_len,
           "ratio_stats": {mode: {"mean": round(float(v.mean()), 4), "std": round(float(v.std()), 4)}
                           for mode, v in drawn.items()},
           "loss_by_ratio": loss_curve,
           "elbo_from_curve_nats": round(sum(loss_curve.values()) / len(loss_curve), 5) if loss_curve else None}
(run_dir / "masking.json").write_text(json.dumps(cells.finite(summary), indent=2))
print(f"wrote {paths.portable(run_dir / 'masking.json')}")
