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
# # 02 · Training a masked language model to be a diffusion model
#
# A masked LM already knows how to fill blanks, but pre-training hides only ~15 % of the tokens. To generate
# from an all-`<mask>` canvas it must also be good when *most* of the text is hidden. So we train it on every
# noise level: the `DiffusionCollator` draws a mask ratio (the seed's ten levels 0.1 … 1.0 per batch, or MDLM's
# continuous `t ~ U(0, 1)` per sample), hides that share of the tokens that are not pinned, and the loss is
# cross-entropy on the hidden tokens only. Pinned are the prompt — `prefix_len` tokens, or with `max_prefix_len` a
# length drawn per row, so prompts of any length are in distribution — and, in a `span_prob` share of rows, one span
# further on, so that infilling (text on both sides of a gap) is too.
#
# The same notebook trains the **autoregressive baseline** (GPT-2 architecture, same tokenizer, data, depth,
# width and number of tokens), so the comparison in notebook 04 is fair.
#
# Training is resumable: kill it at any point and run the notebook again with the same parameters — it
# continues from the last finished checkpoint in `runs/<run_name>/<objective>/checkpoints/`.
#
# **From scratch, RoBERTa needs a careful start.** With learned absolute positions (RoBERTa, and BERT too) a small
# masked LM sits at the unigram loss for thousands of updates before it learns to read its context: in this
# project's GPU runs a plain RoBERTa was still there after 7,028 steps, while the same loop with rotary positions
# (`arch="modernbert"`) left it within 1,000. What goes wrong is a collapse: within 250 steps every position of a
# row carries the same hidden vector. `plateau_escape` starts RoBERTa so that this does not happen (local attention
# spread over the heads, output bias at the log unigram frequencies, residual branches 10 x smaller), but it leaves
# the plateau only at a low rate; at a high one from the start, or switched to one before step 1,000, it stays there.
# Hence the two-phase rate of profile `full`: `escape_lr=2e-4` until `escape_steps=1000`, then `lr=1.5e-3`: held-out
# loss 5.70 after 4,000 steps, where the rotary model reaches 5.52 and RoBERTa held at 2e-4 throughout 6.52
# (`docs/experiments.md`). The shipped model continued that one in two runs of profile `converge` (64 and 66 more
# epochs, on two GPUs with `roberta-diffusion finetune --num-processes 2`); the last cell shows why so many.
# Starting from a pretrained `roberta-base` (`init`, online) avoids the plateau altogether.

# %% tags=["parameters"]
# train.TrainConfig's fields in its order, with its defaults: the quick CPU run (a test holds this cell equal to it)
run_name: str = "scratch"  # outputs go to runs/<run_name>/<objective>/
objectives: list = ["mlm", "ar"]  # "mlm" means the diffusion model, "ar" means the GPT-2 baseline on the same data
ar: dict = {}  # the GPT-2 baseline's own values of the parameters below, e.g. {"lr": 1e-3, "warmup_steps": 200}
init: "Optional[str]" = None  # hub name (e.g. "roberta-base") or folder to fine-tune; None means a fresh model of `size`
size: str = "tiny"  # fresh model size: tiny | small | base (see roberta_diffusion.models.SIZES)
arch: str = "roberta"  # fresh masked LM: "roberta" (as roberta-base) | "roberta-prelayernorm" | "modernbert" (rotary)
locality_init: float = 0.0  # above 0 (e.g. 0.1), RoBERTa starts with local attention (models.locality_init)
plateau_escape: bool = False  # fresh RoBERTa starts with plateau.plateau_escape_init (with escape_lr 2e-4 until escape_steps 1000)
tokenizer_path: str = "weights/tokenizer"  # used with fresh models; fine-tuning uses the init model's
new_tokenizer_vocab: int = 0  # above 0: train a fresh byte-level BPE of this size on train_data instead (runs/<run_name>/tokenizer)
train_data: str = "wikipedia-train"  # corpus alias, local .txt/.raw/.gz file or folder, or hub name
valid_data: str = "wikipedia-valid"
max_train_lines: "Optional[int]" = 2000  # None means the whole corpus
block_size: int = 128  # tokens per training block (256 for the shipped models)
prefix_len: int = 16  # the shortest prompt, never masked
max_prefix_len: "Optional[int]" = None  # prompt length drawn per row in [prefix_len, max_prefix_len]; None: always prefix_len
span_prob: float = 0.0  # share of rows that also pin a random span, so infilling is in distribution
ratio_mode: str = "levels"  # "levels" (seed: one ratio per batch) | "continuous" (MDLM: one t per sample) | "stratified" (t spread evenly; fixed-shape loss)
n_levels: int = 10  # the number of mask ratios of "levels" (1/n_levels ... 1)
weighting: str = "none"  # "none" | "elbo" (1/t weights: the MDLM bound as the objective)
batch_size: int = 8  # the global batch, split over the processes
max_steps: int = 40
lr: float = 1e-3
weight_decay: float = 0.01
adam_eps: float = 1e-8  # small on purpose: a larger one freezes the tiny query/key gradients of a fresh model
warmup_steps: int = 10
escape_lr: "Optional[float]" = None  # masked LM only: warm up to this rate and hold it until step `escape_steps`,
escape_steps: int = 0  # then ramp to `lr` over `warmup_steps` (RoBERTa from scratch escapes the plateau at 2e-4)
dropout: float = 0.1
ema_decay: float = 0.0  # above 0 (e.g. 0.999): score and export an average of the weights instead of the last
eval_every: int = 20
eval_batches: int = 8  # held-out batches scored at each evaluation
save_every: int = 20
log_every: int = 10  # steps between the lines of the training log
seed: int = 0
compile: bool = False  # torch.compile the step (GPU only)
compile_scope: str = "body"  # "body": the transformer body | "step": the whole loss | "graphed": that, CUDA graphs
deterministic: bool = False  # deterministic kernels: on a GPU, a resumed run bit-identical to one never stopped
max_minutes: "Optional[float]" = None  # stop early (and save) after this long
teacher: "Optional[str]" = None  # a masked LM to distil (SDTT): the student learns its two steps in one
distill_steps: int = 0  # with a teacher: the student's number of steps (the teacher's is twice that)

# %% [markdown]
# ## Training
# Every parameter above is a field of `TrainConfig`, so the notebook's whole recipe is one call, the call
# `roberta-diffusion finetune` makes (on several GPUs with `--num-processes`). It tokenises the corpora into blocks
# of `block_size` tokens, each starting with `<s>` (cached under `runs/cache/`, keyed by the corpus, the tokenizer
# and the block size), then trains each objective with one loop (`train.fit`): bf16 autocast and fused AdamW on GPU,
# warm-up then cosine learning rate, held-out loss at fixed noise every `eval_every` steps, and the held-out bound
# on the NLL that picks the exported weights. Each saved model folder gets a README (model card) with the data,
# licence, hyperparameters and final losses.

# %%
from roberta_diffusion import curves, paths, train

histories = train.train(train.TrainConfig(**{k: v for k, v in globals().items() if k in train.TrainConfig.__dataclass_fields__}))

# %% [markdown]
# ## Loss curves
# The diffusion loss averages over noise levels, so it sits above the AR loss even for an equally good model;
# the fair comparison is the perplexity bound in notebook 04.

# %%
curves.plot_losses(histories, paths.run_dir(run_name) / "loss_curves.png")

# %% [markdown]
# ## The data-constrained regime
# Held-out perplexity against epochs and against training compute (`6 N D`), for this run's models and for the
# shipped pair (the shipped masked LM's history carries the runs behind it, so its curve is the whole path from
# the first 65.5M tokens). With 12.9M unique training tokens, GPT-2 stops gaining after about 20 epochs while the
# masked diffusion model kept improving for 135 (Prabhudesai et al. 2025; Ni et al. 2025), until its last run
# diverged: the bound it reaches is a question of compute and stability. The star marks each curve's best held-out
# point, the weights that were exported.

# %%
curves.shipped_and_run(paths.run_dir(run_name), objectives, paths.run_dir(run_name) / "data_constrained.png")
