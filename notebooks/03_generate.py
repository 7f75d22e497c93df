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
# # 03 · Generating text by iterative unmasking
#
# Generation runs the noise of notebook 01 backwards. The canvas starts as the prompt (all of it,
# tokens) followed by `<mask>` up to `max_len`. Each step is **one forward pass** over the whole canvas: the
# model proposes a token for every masked position, and a *policy* decides which proposals to keep; the rest
# stay masked for the next step. After `steps` steps nothing is masked. Unlike an autoregressive model, the
# number of forward passes is a free knob (`steps`), not the length of the text.
#
# Below: one generation watched step by step (text, GIF, an interactive slider), infilling (any pattern of
# blanks, not only a continuation), and the sampler's policies side by side.

# %% tags=["parameters"]
run_name: str = "scratch"  # outputs go to runs/<run_name>/
mlm_path: "Optional[str]" = None  # masked LM; None means runs/<run_name>/mlm/model, else shipped weights, else tiny random
ar_path: "Optional[str]" = None  # AR twin for the panel's candidates / corrections; same order with runs/<run_name>/ar/model
prompt: str = "The history of the city"  # text to continue
steps: int = 32  # forward passes (denoising steps)
policy: str = "random"  # policy (roberta_diffusion.policies.POLICIES); "redraw" is the original project's decoder
schedule: str = "linear"  # how many positions stay masked after each step: linear | cosine
max_len: int = 96  # canvas length in tokens (prompt included); 256 for the real recipe
prefix_len: "Optional[int]" = None  # pinned width (<s> included); None pins the whole prompt, which is never cut
top_k: int = 50  # sample from the k most likely tokens (0 turns top-k off)
top_p: float = 0.95  # ... within the smallest set holding this probability mass
temperature: float = 1.0
seed: int = 0
cpu_threads: "Optional[int]" = 1  # torch threads; 1 means steady timings on a small shared CPU, None means torch's default
infill_text: str = "The river rises in the mountains and <mask*12> before it reaches the sea."  # <mask*N> stands for N blanks
policy_steps: int = 5  # steps per policy in the side-by-side comparison
confidence_gif: bool = True  # also save generation_confidence.gif (tokens coloured by their probability)
panel_max_len: int = 96  # canvas length of the interactive panel's own generations (the Generate button)

# %%
import json
from dataclasses import asdict, replace

from roberta_diffusion import canvas, paths, viz
from roberta_diffusion.sampler import generate_diffusion
from roberta_diffusion.sampling import Sampling
from workbench import cells, panel

try:
    from IPython.display import Image, display
except ImportError:
    display = print
    Image = lambda x, **k: x  # noqa: E731

run_dir = paths.run_dir(run_name)
threads = cells.set_cpu_threads(cpu_threads)
model, tokenizer, description = cells.resolve_model("mlm", run_name, mlm_path)
sampling = Sampling(steps=steps, schedule=schedule, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed).with_policy(policy)  # the policy's own knob (remdm, calibrated, sampled) at its default
print(f"run folder: {paths.portable(run_dir)} · torch threads: {threads}\nmodel: {description}\nsampling: {sampling}")

# %% [markdown]
# ## One generation, step by step
# The default policy is **random** (MDLM's ancestral sampler): each step commits a random share of the masked
# positions, chosen before the loop, and a committed token stays. It reads best of the policies on the shipped
# models (README, *Readable by default*). The original project's decoder, **redraw** (`policy="redraw"`), instead
# *resamples every generated position* at every step, then re-masks a random share that shrinks linearly
# ((N−1)/N, …, 1/N, 0), so tokens can change their mind until the last step. `░` is a position that is masked
# after that step; the share masked is of the generated positions (the prompt is not counted).

# %%
trace = generate_diffusion(model, tokenizer, prompt, sampling, max_len=max_len, prefix_len=prefix_len)
for step in range(trace.steps + 1):
    print(f"--- step {step}/{trace.steps} · {float(trace.masked_share()[step]):.0%} masked")
    print(viz.render_text(trace, step, tokenizer))
trace_path = trace.save(run_dir / "trace.pt")
print(f"\n{trace.new_tokens} tokens in {trace.total_time:.3f} s ({trace.forward_passes} forward passes); saved {paths.portable(trace_path)}")

# %% [markdown]
# ## The same generation as an animation
# One frame per step, sized so that the whole canvas shows. Generated tokens are coloured by the step from
# which they hold their final value (dark = early, yellow = late); the pieces of one word share a box, each
# coloured on its own; the prompt is bold. With redraw most tokens settle only near the end, since every
# step may resample them; commit-once policies such as random fill in a visible order instead.

# %%
gif = viz.animate(trace, tokenizer, run_dir / "generation.gif", color_by="step", fps=2)
display(Image(filename=str(gif)))
if confidence_gif:
    conf_gif = viz.animate(trace, tokenizer, run_dir / "generation_confidence.gif", color_by="confidence", fps=2)
    print(f"saved {paths.portable(gif)} and {paths.portable(conf_gif)} (red = improbable, green = confident when drawn)")

# %% [markdown]
# ## Try it: the generation panel
# In a live Jupyter session: type a prompt, pick the policy, steps, temperature, top-k and top-p, press
# **Generate**, then drag the step slider (or press play) to watch the canvas fill; colour the tokens by the
# step that committed them or by their probability when drawn. It opens on the run above. The panel needs a
# running kernel: papermill (the headless pipeline) keeps no widget state, so `generation.gif` is the static
# record, and `trace.pt` (`Trace.load`) holds the run to scrub again later without regenerating. Where the
# distilled model is shipped, the **model** box switches to it (and to its 16 steps; see *Fewer steps* below).
# With the AR twin loaded beside it, two more boxes let the twin help: **candidates** draws N texts in one batch and
# keeps the one the twin finds most likely; **corrections** gives R rounds in which the twin points at the tokens
# that fit their neighbours worst and the masked LM redraws them (the slider shows each round's two frames; notebook
# 04 measures what they buy).

# %%
distilled = cells.distilled_model()  # None where weights/roberta-diffusion-small-fast is absent
others = {"distilled (SDTT)": (*distilled, Sampling.distilled().steps)} if distilled else {}
twin, _, twin_description = cells.resolve_model("ar", run_name, ar_path)
guide = twin if twin.config.vocab_size == model.config.vocab_size else None  # it must read the masked LM's tokens
print(f"twin: {twin_description}" + ("" if guide is not None else " (another vocabulary: the twin boxes stay hidden)"))
live = panel.generation_panel(model, tokenizer, trace=trace, prompt=prompt, sampling=sampling, max_len=panel_max_len,
                              prefix_len=prefix_len, others=others, guide=guide)
display(live)

# %% [markdown]
# ## Infilling
# The sampler does not care where the blanks are: pin any tokens, mask the rest. `<mask*N>` in the text stands
# for N masked positions; `prefix_suffix_canvas` asks for a gap of a given length between two pinned texts.
# An autoregressive model cannot do this without retraining, because it never sees the text to the right.

# %%
infills = {"masks in the text": canvas.infill_canvas(tokenizer, infill_text),
           "prefix + gap + suffix": canvas.prefix_suffix_canvas(tokenizer, "In 1905 the railway", " was closed.", 16)}
infill_results = {}
for name, start in infills.items():
    filled = generate_diffusion(model, tokenizer, sampling=sampling, canvas=start)
    infill_results[name] = {"template": viz.render_text(filled, 0, tokenizer), "text": filled.texts[0]}
    print(f"{name}:\n  before: {infill_results[name]['template']}\n  after:  {filled.texts[0]}\n")

# %% [markdown]
# ## The policies side by side
# Same prompt, same model, `policy_steps` steps each. **random** (MDLM's ancestral sampler) commits a random
# set each step — chosen before the loop, so each step runs the output layer only at the positions it commits,
# which makes it the fastest policy; **confidence** / **margin** / **entropy** commit the proposals the model is surest about first
# (MaskGIT, LLaDA); **threshold** commits every proposal above a probability and may stop early. **remdm** (ReMDM)
# is random's order plus revision: each step sends the least confident earlier tokens back to `<mask>` (here 5 %
# of them) for a later step to redraw with more context, the best quality at matched entropy measured so far;
# **calibrated** (PC-Sampler) is confidence divided by how common the token is in the corpus, so filler is not
# committed first. Once committed, a token stays, except under redraw and remdm.

# %%
policy_rows = cells.compare_policies(model, tokenizer, prompt, replace(sampling, steps=policy_steps), max_len=max_len,
                                     prefix_len=prefix_len)
display(cells.table(policy_rows))

# %% [markdown]
# ## Fewer steps: the distilled student
# Few steps are where diffusion is fast and where a plain sampler's text falls apart: each step commits many tokens
# drawn independently of each other. `weights/roberta-diffusion-small-fast` is the shipped model distilled through
# time (SDTT, `distill.py`): four rounds, each student trained to take in one step what its teacher takes in two,
# from 64 steps down to 4. Judged by the independent judge at matched entropy its samples at 8 and 16 steps beat the
# shipped model's at the same steps (16 steps: 78.8 against 108.2; docs/results.md); its held-out bound is worse, so
# it ships beside the shipped model, not instead. Both at the distilled model's 16 steps, same prompt and seed:

# %%
few_steps = replace(sampling, steps=Sampling.distilled().steps)
pair = {"this model": (model, tokenizer), **({"distilled (SDTT)": distilled} if distilled else {})}
few_rows = cells.compare_models(pair, prompt, few_steps, max_len=max_len, prefix_len=prefix_len)
display(cells.table(few_rows))

# %% [markdown]
# ## Saved
# `generation.json` holds the settings and timing (`Trace.summary()`), the `Sampling` whole (`Sampling(**saved["sampling"])`
# gives it back), the final text, the infills and the policy table; `trace.pt` the full trace.

# %%
record = {**trace.summary(), "sampling": asdict(sampling), "model": description, "prompt": prompt, "text": trace.texts[0],
          "completion": trace.completions[0], "torch_threads": threads, "infill": infill_results, "policies": policy_rows,
          "few_steps": few_rows}
(run_dir / "generation.json").write_text(json.dumps(cells.finite(record), indent=2, ensure_ascii=False))
print(json.dumps(trace.summary(), indent=2))
