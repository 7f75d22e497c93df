"""The settings a newcomer gets without asking: ``roberta-diffusion generate`` / ``compare``, the generation
panel, and the parameters cells of notebooks 03 and 04 (which must be literals for papermill; a test checks
they equal these).

Policy ``random`` (MDLM's ancestral order): on the shipped small models it reads best of the policies measured
(README, "Readable by default"; ``benchmarks/frontier.py`` measures the frontier again). The seed's policy
stays one flag away: ``--strategy seed-remask``.
"""

READABLE = {
    "strategy": "random",
    "steps": 32,
    "schedule": "linear",
    "top_k": 50,
    "top_p": 0.95,
    "temperature": 1.0,
}
SEED_POLICY = "seed-remask"  # the seed's original decoder, for comparison
