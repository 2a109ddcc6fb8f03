"""What the scoring benchmarks share: a model of the nightly size, and repetitions to score.

Throughput and memory do not depend on how well the weights are trained, so the model has the
`nightly` profile's architecture (hidden 256, 25 DCT coefficients, 11 classes) trained for two
epochs on a small synthetic set. Repetitions are the synthetic EC3D-like ones, cycled with fresh
repetition numbers (so every one has its own sequence_id) to reach any count.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import replace

from model.data.sequence import Sequence
from model.data.synth import make_dataset
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.settings import get_settings, run_config

POOL_SUBJECTS, POOL_REPS = 4, 8


def bench_model(threads: int, profile: str = "nightly") -> TrainedModel:
    """The profile's architecture, two epochs on make_dataset(4, 2)."""
    config = run_config(get_settings().get_profile(profile), epochs=2, threads=threads)
    return train(make_dataset(4, 2, seed=0), config, progress=False)


def repetitions(n: int, pool: list[Sequence] | None = None) -> Iterator[Sequence]:
    """n repetitions, lazily: the synthetic pool cycled, each with its own rep number."""
    pool = pool or make_dataset(POOL_SUBJECTS, POOL_REPS, seed=0)
    for k, seq in enumerate(itertools.islice(itertools.cycle(pool), n)):
        yield replace(seq, rep=k, source=f"bench#{k}")
