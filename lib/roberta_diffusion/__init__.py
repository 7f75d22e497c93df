"""Diffusion text generation with masked language models (RoBERTa) and an autoregressive baseline."""

from .collator import DiffusionCollator
from .sampler import POLICIES, SCHEDULES, Trace, generate_ar, generate_diffusion

__all__ = [
    "DiffusionCollator",
    "Trace",
    "generate_diffusion",
    "generate_ar",
    "POLICIES",
    "SCHEDULES",
]
__version__ = "0.1.0"
