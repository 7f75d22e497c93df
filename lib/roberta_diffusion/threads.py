"""How many torch threads a command should use: the cores nobody else is using, measured, at least one.

torch starts with one intra-op thread per core. When other work holds a core, OpenMP threads spin-wait for it and
a step slows many times over (issue 25: ``generate`` took 15.7-23.0 s with every core, 2.2 s with one, on a 2-core
machine with other work running). So the count is ``round(cores - busy)``, at least 1, where ``busy`` is the CPU
time other processes took over the last ``SAMPLE_S`` seconds (from ``/proc/stat``). Not the load average: it
trails by a minute (a competitor started ten seconds ago counts 0.15) and still counts our own previous runs.
Where ``/proc/stat`` is missing (macOS), the 1-minute load average stands in.

An explicit choice wins: ``use(n)`` for ``--threads N``, then ``OMP_NUM_THREADS`` from the environment.
"""

from __future__ import annotations

import os
import time

import torch

SAMPLE_S = 0.2  # long enough to see a process that is busy half the time, short beside a model load


def physical_cores() -> int:
    """Cores this process may run on, hyper-threads not counted (a second hardware thread of a busy core adds
    little to a matmul): from ``/proc/cpuinfo``'s core ids where it has them."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/cpuinfo") as f:
            cores = cores_in_cpuinfo(f.read())
    except OSError:
        cores = 0
    return max(1, min(allowed, cores or allowed))


def cores_in_cpuinfo(text: str) -> int:
    """Distinct (physical id, core id) pairs in ``/proc/cpuinfo``'s text; 0 where it lists no core ids."""
    cores = set()
    for block in text.split("\n\n"):
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores)


def _cpu_times() -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of all CPUs since boot, or None without ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_cpus(seconds: float = SAMPLE_S) -> float:
    """How many CPUs other processes keep busy now: sampled over ``seconds`` while this one sleeps."""
    before = _cpu_times()
    if before is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(seconds)
    after = _cpu_times()
    busy, total = after[0] - before[0], after[1] - before[1]
    cpus = os.cpu_count() or 1
    return cpus * busy / total if total > 0 else 0.0


def choose(cores: int, busy: float) -> int:
    """The rule: the free cores, rounded, at least 1 and at most ``cores``."""
    return max(1, min(cores, int(cores - busy + 0.5)))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set (a valid whole number), else ``choose(physical_cores(), busy_cpus())``."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return choose(physical_cores(), busy_cpus())


def use(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n``, or to ``default_threads()`` when None; returns the count set."""
    if n is not None and n < 1:
        raise ValueError(f"threads={n}: use 1 or more")
    n = default_threads() if n is None else n
    torch.set_num_threads(n)
    return n
