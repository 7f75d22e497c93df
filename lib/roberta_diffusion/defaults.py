"""The canvas and prompt sizes that generation, training and scoring share. Every sampling setting (policy, steps,
temperature, ...) is a field of ``sampling.Sampling``, whose defaults are the readable default."""

MAX_LEN = 256  # canvas length in tokens, prompt included
PROMPT_LEN = 16  # the prompt that training pins (its shortest) and that held-out scores and samples condition on
PREFIX_LEN = None  # pinned width: None pins the whole prompt (a given width left-pads shorter prompts)
