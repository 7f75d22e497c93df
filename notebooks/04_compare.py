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
# # 04 · Diffusion vs autoregressive: speed and quality
#
# The masked LM generates a whole canvas in `steps` forward passes; the GPT-2 baseline needs one forward pass
# per new token (with a KV cache, so each pass is cheap). Which is faster depends on the canvas length, the
# number of steps and the hardware; which is *better* needs care, because the two models' likelihoods are not
# the same kind of number. This notebook puts them side by side on the same prompts and the same held-out text:
#
# - **speed**: latency, tokens per second and forward passes of one batch of prompts, and a synchronised GIF
#   that plays both generations on one wall clock;
# - **held-out likelihood**: the AR perplexity is exact; for the masked LM we report the Monte-Carlo
#   masked-diffusion ELBO (MDLM), an *upper bound* on its perplexity, on the same tokens;
# - **sample quality**: generative perplexity of the samples under a judge LM, plus unigram entropy and
#   distinct-2 (both fall when text repeats itself), next to the same numbers for the real continuations;
# - **the steps knob**: quality and latency of diffusion as the number of steps grows, against the AR line.

# %% tags=["parameters"]
run_name: str = "scratch"  # outputs go to runs/<run_name>/
mlm_path: "Optional[str]" = None  # masked LM; None means runs/<run_name>/mlm/model, else shipped weights, else tiny random
ar_path: "Optional[str]" = None  # causal LM baseline; same resolution order with runs/<run_name>/ar/model
judge_path: "Optional[str]" = None  # causal LM scoring samples; None: weights/judge where it reads the MLM's vocabulary, else the AR baseline
prompts: list = ["The history of the city", "In 1923, the company", "The river flows through"]  # shown side by side
corpus: str = "wikipedia-valid"  # held-out text for perplexities and prompts
n_prompts: int = 8  # held-out prompt blocks for sample quality (64 on a GPU)
n_heldout: int = 8  # held-out blocks for the perplexities
max_len: int = 96  # canvas length in tokens, prompt included (256 for the real recipe)
prefix_len: int = 16  # held-out prompts: the first tokens of each block (<s> included); text prompts are pinned whole
steps: int = 32  # diffusion forward passes
policy: str = "random"  # diffusion policy (roberta_diffusion.policies.POLICIES); "redraw" is the original project's decoder
steps_sweep: list = [2, 5, 10, 20]  # step counts for the sweep
corrections: int = 4  # rounds in which the AR twin points at the tokens that fit worst and the masked LM redraws them
elbo_samples: int = 4  # Monte-Carlo noise levels per block for the ELBO bound
top_k: int = 50
top_p: float = 0.95
temperature: float = 1.0
seed: int = 0
cpu_threads: "Optional[int]" = 1  # torch threads; 1 means steady timings on a small shared CPU, None means torch's default

# %%
import json
from dataclasses import asdict

import matplotlib.pyplot as plt
from roberta_diffusion import metrics, paths, viz
from roberta_diffusion.evaluate import ar_knobs
from roberta_diffusion.sampler import generate_ar, generate_diffusion
from roberta_diffusion.sampling import Sampling
from workbench import cells, panel

try:
    from IPython.display import Image, display
except ImportError:
    display = print
    Image = lambda x, **k: x  # noqa: E731

run_dir = paths.run_dir(run_name)
threads = cells.set_cpu_threads(cpu_threads)
mlm, mlm_tok, mlm_desc = cells.resolve_model("mlm", run_name, mlm_path)
ar, ar_tok, ar_desc = cells.resolve_model("ar", run_name, ar_path)
judge, judge_tok, judge_desc = cells.resolve_judge(judge_path, run_name, mlm_tok, ar, ar_tok, ar_desc)
shared = cells.same_vocab(mlm_tok, ar_tok)
sampling = Sampling(steps=steps, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed).with_policy(policy)
print(f"run folder: {paths.portable(run_dir)} · torch threads: {threads}\n{mlm_desc}\n{ar_desc}\njudge: {judge_desc}\n"
      f"sampling: {sampling}\n"
      f"tokenizers: {'shared' if shared else 'DIFFERENT — per-token numbers are not comparable; see bits per byte'}")

# %% [markdown]
# ## Same prompts, both models
# Each model continues every prompt (as one batch) to `max_len` tokens with the same sampling knobs (top-k,
# top-p, temperature). Each uses its own tokenizer. A short untimed warm-up run first keeps one-time costs
# (allocations, kernel selection) out of the timings.

# %%
generate_diffusion(mlm, mlm_tok, prompts[:1], steps=1, max_len=max_len)  # warm-up
generate_ar(ar, ar_tok, prompts[:1], max_len=max_len)
diff_trace = generate_diffusion(mlm, mlm_tok, prompts, sampling, max_len=max_len)
ar_trace = generate_ar(ar, ar_tok, prompts, max_len=max_len, seed=seed, **ar_knobs(sampling))
display(cells.table([{"prompt": p, "diffusion": d[:120], "autoregressive": a[:120]}
                        for p, d, a in zip(prompts, diff_trace.completions, ar_trace.completions, strict=True)]))

# %% [markdown]
# ## Both generations on one clock
# Each frame is a moment in wall-clock time; each panel shows how far its run had got by then (first prompt).
# The diffusion canvas fills everywhere at once over a few large steps; the AR text grows left to right, one
# cheap step per token.

# %%
labels = [f"diffusion ({policy}, {steps} steps)", "autoregressive"]
compare_gif = viz.animate_comparison([diff_trace, ar_trace], [mlm_tok, ar_tok], run_dir / "compare.gif", labels=labels)
display(Image(filename=str(compare_gif)))

# %% [markdown]
# In a live session, one **wall-clock slider** scrubs both runs together (or press play): each side shows the
# step its run had reached at that moment of its own measured time.

# %%
display(panel.clock_panel([diff_trace, ar_trace], [mlm_tok, ar_tok], labels))

# %% [markdown]
# ## Speed
# Latency is the summed time of the sampling steps for the whole batch (`len(prompts)` prompts). Diffusion does
# `steps` full-canvas passes; AR does one pass per new token, each over a single position thanks to the cache.
# On a GPU the full-canvas passes are nearly free, so few-step diffusion wins; on a CPU every position costs.

# %%
timings = {"diffusion": metrics.timing(diff_trace), "ar": metrics.timing(ar_trace)}
display(cells.table([{"model": k, **v} for k, v in timings.items()]))

# %% [markdown]
# ## Held-out likelihood
# On `n_heldout` blocks of held-out Wikipedia, scoring the tokens after the prefix: the AR's exact perplexity,
# and the masked LM's ELBO bound (`elbo_samples` noise levels per block). The bound is an upper bound, so a
# diffusion perplexity close to the AR's means the masked LM is at least that good a model of the text. Bits per
# byte divide the total NLL by the UTF-8 bytes of the scored text, which stays comparable if the tokenizers differ.

# %%
heldout = cells.heldout_quality(mlm, mlm_tok, ar, ar_tok, corpus, n_heldout, max_len, prefix_len, elbo_samples)
display(cells.table([{"model": "ar (exact)", **heldout["ar"]}, {"model": "mlm (ELBO bound)", **heldout["mlm_elbo"]}]))

# %% [markdown]
# ## Sample quality
# Prompts are the first `prefix_len` tokens of `n_prompts` held-out blocks; the rest of each block is the
# real continuation, scored the same way as a reference. **Generative perplexity** is the judge's perplexity of
# the generated tokens given the prompt: lower reads more fluent to the judge, but a model that repeats itself
# also scores low, so read it with the **unigram entropy** (of each sample's own tokens) and **distinct-2**
# (share of unique bigrams), where the real text sets the target. All three are measured in the judge's
# vocabulary (text from a model with another tokenizer is re-tokenised).
#
# The judge is printed below. By default it is `weights/judge`, a third GPT-2 (8 x 512) trained apart from both
# models on the same corpus, so neither model scores its own samples. With models of another vocabulary it falls
# back to the AR baseline itself, which flatters AR samples (said in the printout).

# %%
sweep_steps = sorted({int(s) for s in steps_sweep} | {steps})
prompt_blocks = cells.heldout_blocks(judge_tok, corpus, max_len, n_prompts)
samples = cells.sample_quality(mlm, mlm_tok, ar, ar_tok, judge, judge_tok, prompt_blocks, prefix_len,
                                  sweep_steps, sampling)
samples["judge"] = judge_desc
print(f"judge: {judge_desc}")
keys = ("gen_ppl", "unigram_entropy", "distinct_2", "seconds")
rows = [{"text": "real continuation", **{k: samples["real"].get(k) for k in keys}},
        {"text": "autoregressive", **{k: samples["ar"][k] for k in keys}},
        {"text": f"diffusion ({policy}, {steps} steps)", **{k: samples["diffusion"][steps][k] for k in keys}}]
display(cells.table(rows))
print(f"\nexample prompt block (real):\n{samples['real']['text']}\n\nAR:\n{samples['ar']['text']}\n\n"
      f"diffusion:\n{samples['diffusion'][steps]['text']}")

# %% [markdown]
# ## Letting the twin point at what to redraw
# Tokens revealed in the same step were drawn side by side and never saw each other, which is where few steps lose
# most: a doubled word, a name broken in two. A correction round lets the AR twin read the finished text in one
# parallel pass and point at the tokens that fit their neighbours worst for how likely they were drawn
# (`log p_twin - log q`: a rare word the sampler meant to draw is left alone); a tenth of the tokens go back to
# `<mask>` and the masked LM redraws them with everything else as context. Each round costs two forward passes.
# Below: the same prompts and sampling as the table above, with `corrections` rounds (the twin must read the
# masked LM's vocabulary). Measured at matched entropy on 64 + 64 prompts, see `docs/results.md`.

# %%
if shared:
    corrected = cells.sample_quality(mlm, mlm_tok, None, None, judge, judge_tok, prompt_blocks, prefix_len, [steps],
                                 sampling, score_real=False, guide=ar, corrections=corrections)["diffusion"][steps]
    samples["corrected"] = corrected
    display(cells.table([{"text": f"diffusion ({policy}, {steps} steps)", **{k: samples["diffusion"][steps][k] for k in keys}},
                         {"text": f"+ {corrections} twin-pointed corrections", **{k: corrected[k] for k in keys}}]))
    print(f"\ncorrected:\n{corrected['text']}")
else:
    print("the AR model reads another vocabulary: it cannot point at the masked LM's tokens")

# %% [markdown]
# ## The steps knob
# More steps means fewer tokens committed per forward pass, so each decision sees more of the final text; the
# price is latency, linear in the number of steps. The AR baseline (dashed) and the real text (dotted) are
# horizontal lines: they do not depend on the diffusion steps. Axes whose values span more than 10x are
# logarithmic.

# %%
sweep = [{"steps": s, **{k: samples["diffusion"][s][k] for k in ("gen_ppl", "unigram_entropy", "distinct_2", "seconds")}}
         for s in sweep_steps]
fig = cells.steps_sweep_figure(sweep, samples, policy, n_prompts, run_dir / "steps_sweep.png")
plt.show()
plt.close(fig)
display(cells.table(sweep))

# %% [markdown]
# ## The quality frontier at matched entropy
# Perplexity alone rewards repetition (`confidence` reaches single digits by looping), so settings are compared at
# **matched entropy**: for each sampler and step count, the temperature and top-k / top-p whose samples keep the
# real text's unigram entropy within 3 % are chosen on 64 held-out Wikipedia prompts, and scored by the judge on 64
# others. This grid is too large for a CPU; its measured result (one H200, `python -m benchmarks.quality`, see
# `docs/results.md`) is read here. Left: every setting; right: quality at matched entropy against latency at batch 1.
# Families named `fast…:` ran on the distilled student (`weights/roberta-diffusion-small-fast` and its rounds);
# `sampled-T` is the drawn confidence order (MaskGIT's choice temperature T), the one confidence-family policy that
# reaches the real text's entropy without looping.

# %%
quality = json.loads((paths.ROOT / "benchmarks/results/quality-sampled-H200-2026-12-04.json").read_text())
display(Image(filename=str(paths.ROOT / "benchmarks/results/quality-sampled-H200-2026-12-04.png"), width=900))
display(cells.table(cells.quality_rows(quality)))

# %% [markdown]
# ### With twin-pointed corrections
# After the draw, the AR twin reads the text in one pass and points at the tenth of the tokens that fit worst for how
# likely they were drawn; the masked LM redraws them in context (`--corrections R`, `guided.correct`), each round one
# CUDA graph on a GPU. Every diffusion setting still lies on one band of perplexity against entropy (left), the twin
# well below it; corrections buy quality at few steps for latency (right: 16 steps + 8 rounds, 44 ms for one text,
# against the twin's graphed decoder at 135 ms), but no setting reaches the twin at the same entropy.

# %%
corrected = json.loads((paths.ROOT / "benchmarks/results/quality-corrections-graphed-H200-2026-12-05.json").read_text())
display(Image(filename=str(paths.ROOT / "benchmarks/results/quality-corrections-graphed-H200-2026-12-05.png"), width=900))
display(cells.table(cells.quality_rows(corrected)))

# %% [markdown]
# ## Saved
# `metrics.json` collects everything above: timings and the first prompt's text of both models, the held-out
# scores, the sample scores (with the judge named) and the steps sweep.

# %%
result = {
    "models": {"mlm": mlm_desc, "ar": ar_desc, "judge": judge_desc, "shared_tokenizer": shared},
    "settings": {"max_len": max_len, "prefix_len": prefix_len, "sampling": asdict(sampling), "prompts": prompts,
                 "n_prompts": n_prompts, "torch_threads": threads, "device": str(next(mlm.parameters()).device)},
    "diffusion": {**timings["diffusion"], "text": diff_trace.texts[0]},
    "ar": {**timings["ar"], "text": ar_trace.texts[0]},
    "heldout": heldout,
    "samples": {**samples, "diffusion": {str(k): v for k, v in samples["diffusion"].items()}},
    "sweep": sweep,
}
(run_dir / "metrics.json").write_text(json.dumps(cells.finite(result), indent=2, ensure_ascii=False))
print(f"wrote {paths.portable(run_dir / 'metrics.json')}")
