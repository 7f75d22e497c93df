"""Benchmarks (issue 5). Registers the ``bench`` subcommand."""

from __future__ import annotations


def add_bench_command(sub) -> None:
    pass
