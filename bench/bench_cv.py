"""Cross-validation on Ray: 4 leave-one-subject-out folds run two at a time (the subject) against
one fold after another, every fold with one torch thread, on the same data and seeds.

Data: the synthetic generator, 4 subjects x 2 repetitions of each of the 11 (exercise, label)
pairs; the `test` profile's model trained for 12 epochs (each fold trains the model and its
independent judge, then evaluates). Local Ray with 2 CPUs is started before timing; every run
gets a fresh checkpoint folder (a reused one would resume finished folds). After one untimed
warm-up, the two variants alternate 3 times and each reports its median. The speed-up on a
2-core machine is bounded by 2; the target is at least 1.6x, which needs the two cores free:
the note gives the load average, as other jobs on a shared machine take their share.
`--threads` does not apply: folds always run with one thread each.
"""

from __future__ import annotations

import os
import statistics
import tempfile

from bench import Row, median_seconds
from model.data.synth import make_dataset
from model.settings import PROFILES, run_config
from workers.cluster import ensure_ray
from workers.cv import CVResult, cross_validate

SUBJECTS, REPS, EPOCHS, REPEATS = 4, 2, 12, 3
NAME = "cv"


def run(threads: int) -> list[Row]:
    ensure_ray(num_cpus=2)
    sequences = make_dataset(n_subjects=SUBJECTS, reps=REPS, seed=0)
    config = run_config(PROFILES["test"], seed=0, threads=1, epochs=EPOCHS)
    results: dict[int, CVResult] = {}

    def folds_at_a_time(n: int) -> None:
        with tempfile.TemporaryDirectory(prefix="bench-cv-") as workdir:
            results[n] = cross_validate(sequences, config, threads_per_fold=1, workdir=workdir,
                                        max_concurrent=n, progress=False)

    folds_at_a_time(2)  # warm-up: both Ray worker processes started, kernels loaded
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(REPEATS):  # interleaved, so that drifting load on a shared box hits both
        for n in (2, 1):
            times[n].append(median_seconds(lambda n=n: folds_at_a_time(n), 1, warmup=0))
    two, one = (statistics.median(times[n]) for n in (2, 1))
    same = all(a.metrics["evaluation"] == b.metrics["evaluation"]
               for a, b in zip(results[1].folds, results[2].folds, strict=True))
    load = os.getloadavg()[0]
    note = (f"{len(results[2].folds)} folds; figures {'identical' if same else 'DIFFER'}; "
            f"load average {load:.1f} on {os.cpu_count()} CPUs")
    return [
        Row(NAME, "2 folds at a time, 1 thread each", two, 1.0, note),
        Row(NAME, "1 fold at a time, 1 thread", one, one / two, note),
    ]
