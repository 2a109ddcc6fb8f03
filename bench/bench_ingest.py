"""Ingest throughput: sequences per second into a dataset against a raw Parquet write.

Subject: validate every sequence (model.sequence.validate) and merge them into a Delta dataset
(model.dataset.Dataset.write: to Arrow, merge on sequence_id, one commit), a fresh table each
call. Variants, same sequences, same run:
  - the same write into a table that already holds another batch of the same size (the daily
    append: the merge reads the existing ids);
  - baseline: pyarrow.parquet.write_table of the same arrays (poses as a flat float32 list column
    with their shape, the identity columns), no validation, no merge, no log.
  - validation alone (where the time goes).
Data: model.synth.make_dataset(4, 8), 352 EC3D-like sequences (a second seed for the append),
and the same ten times over (3,520, distinct repetition numbers): the merge's cost per commit
is spread over more rows.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import Row, median_seconds
from model.dataset import Dataset
from model.sequence import Sequence, validate
from model.synth import make_dataset

REPEATS = 5
BATCHES = (1, 10)
SUBJECT = "validate + Dataset.write (new table)"
BASELINE = "raw pyarrow.parquet.write_table"
NOTES = {SUBJECT: "merge on sequence_id, one Delta commit",
         BASELINE: "no validation, merge or transaction log"}


def raw_table(seqs: list[Sequence]) -> pa.Table:
    """The arrays the dataset stores, as a plain Arrow table."""
    flat = np.concatenate([s.poses.astype(np.float32).reshape(-1) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum([s.poses.size for s in seqs])]).astype(np.int32)
    return pa.table({
        "subject": [s.subject for s in seqs],
        "exercise": [s.exercise for s in seqs],
        "label": [s.label for s in seqs],
        "rep": [s.rep for s in seqs],
        "n_frames": [s.n_frames for s in seqs],
        "n_joints": [s.poses.shape[1] for s in seqs],
        "poses": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
    })


def copies(seqs: list[Sequence], times: int) -> list[Sequence]:
    """`times` copies of seqs with distinct repetition numbers (so distinct sequence_ids)."""
    return [replace(s, rep=s.rep + 1000 * k) for k in range(times) for s in seqs]


def measure(seqs: list[Sequence], older: list[Sequence], root: Path) -> dict[str, float]:
    """Median seconds of each variant on one batch."""
    n = len(seqs)
    names = (f"t{i}" for i in itertools.count())

    def fresh() -> None:
        result = Dataset(next(names), root=str(root)).write([validate(s) for s in seqs])
        assert result.inserted == n, result

    prefilled = []
    for _ in range(REPEATS + 1):
        prefilled.append(Dataset(next(names), root=str(root)))
        prefilled[-1].write(older)
    targets = iter(prefilled)

    def append() -> None:
        result = next(targets).write([validate(s) for s in seqs])
        assert result.inserted == n, result

    def parquet() -> None:
        pq.write_table(raw_table(seqs), root / f"{next(names)}.parquet")

    return {
        SUBJECT: median_seconds(fresh, REPEATS),
        f"validate + Dataset.write (append to {len(older)} rows)": median_seconds(append, REPEATS),
        f"validate alone ({n})": median_seconds(lambda: [validate(s) for s in seqs], REPEATS),
        BASELINE: median_seconds(parquet, REPEATS),
    }


def run(threads: int) -> list[Row]:
    base, base_older = make_dataset(4, 8, seed=0), make_dataset(4, 8, seed=1)
    rows = []
    for times in BATCHES:
        seqs, older = copies(base, times), copies(base_older, times)
        root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
        try:
            timings = measure(seqs, older, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        n = len(seqs)
        rows += [Row(f"ingest {n} sequences", name, t, t / timings[SUBJECT],
                     f"{n / t:,.0f} seq/s; {NOTES.get(name, '')}")
                 for name, t in timings.items()]
    return rows
