"""Every default of generation, and the prompt length training and scoring share, in one place: the library's
functions, the CLI, the generation panel and the parameters cells of notebooks 03 and 04 (which must be literals
for papermill; a test checks they equal ``READABLE``) read them from here.

The library keeps the seed's decoder (``SEED_POLICY``) as its default, so a bare ``generate_diffusion`` call
behaves as the seed did; the CLI, the panel and the notebooks start from ``READABLE``. Its policy ``random``
(MDLM's ancestral order) reads best of the policies measured on the shipped small models (README, "Readable by
default"; ``python -m benchmarks.frontier`` measures the frontier again). The seed's policy stays one flag away:
``--policy seed-remask``.
"""

STEPS = 10  # forward passes of the diffusion sampler (the seed's; the readable default below takes more)
SCHEDULE = "linear"  # how many positions each step commits
TEMPERATURE = 1.0
TOP_K = 50  # 0 turns top-k off
TOP_P = 0.95  # 1 turns top-p off
MAX_LEN = 256  # canvas length in tokens, prompt included
PROMPT_LEN = 16  # the prompt that training pins (its shortest) and that held-out scores and samples condition on
PREFIX_LEN = None  # pinned width: None pins the whole prompt (a given width left-pads shorter prompts)
THRESHOLD = 0.9  # the threshold policy's confidence bar
REMASK = 0.05  # remdm's re-masked share where a view offers one: the best measured at matched entropy (docs/results.md)
SEED_POLICY = "seed-remask"  # the seed's original decoder: the library's default, for comparison

READABLE = {
    "policy": "random",
    "steps": 32,  # within 10 % of 64 steps' generative perplexity at half the passes (README, "Readable by default")
    "schedule": SCHEDULE,
    "top_k": TOP_K,
    "top_p": TOP_P,
    "temperature": TEMPERATURE,
}
