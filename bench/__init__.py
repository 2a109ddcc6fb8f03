"""posecoach benchmarks (not tests): `python -m bench [names...]` runs bench/bench_<name>.py.

A benchmark module has `run(threads: int) -> list[Row]`: it times its subject and each baseline
on the same inputs, in the same process, and returns one Row per measured variant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One measured variant: median seconds per call and its ratio against the benchmark's subject.

    `speedup` is variant time / subject time: how many times faster the subject is (1.0 for the
    subject itself).
    """

    benchmark: str
    variant: str
    seconds: float
    speedup: float
    note: str = ""


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls of fn after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
