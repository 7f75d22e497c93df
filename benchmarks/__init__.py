"""Measurement tooling beside the library: the speed harness (``bench``), its agreement checks (``agreement``),
the quality frontier behind the default policy (``frontier``), data-parallel scaling (``scaling``) and the GPU
scripts that drive them. The library never imports this package.

Run from the repository root: ``python -m benchmarks.bench ...``, ``python -m benchmarks.frontier ...``.
"""
