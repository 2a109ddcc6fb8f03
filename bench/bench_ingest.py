"""Ingest throughput: sequences per second into a dataset against a raw Parquet write.

Subject: validate every sequence (model.sequence.validate) and merge them into a Delta dataset
(model.dataset.Dataset.write: to Arrow, merge on sequence_id, one commit), a fresh table each
call. Variants, same sequences, same run:
  - the same write into a table that already holds another batch of the same size (the daily
    append: the merge reads the existing ids);
  - baseline: pyarrow.parquet.write_table of the same arrays (poses as a flat float32 list column
    with their shape, the identity columns), no validation, no merge, no log.
Data: model.synth.make_dataset(4, 8), 352 EC3D-like sequences (a second seed for the append).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import Row, median_seconds
from model.dataset import Dataset
from model.sequence import Sequence, validate
from model.synth import make_dataset

REPEATS = 5


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


def run(threads: int) -> list[Row]:
    seqs = make_dataset(4, 8, seed=0)
    older = make_dataset(4, 8, seed=1)
    n = len(seqs)
    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    names = (f"t{i}" for i in itertools.count())
    try:
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

        timings = {
            "validate + Dataset.write (new table)": median_seconds(fresh, REPEATS),
            "validate + Dataset.write (append to 352 rows)": median_seconds(append, REPEATS),
            "raw pyarrow.parquet.write_table": median_seconds(parquet, REPEATS),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    subject = timings["validate + Dataset.write (new table)"]
    notes = {
        "validate + Dataset.write (new table)": "merge on sequence_id, one Delta commit",
        "validate + Dataset.write (append to 352 rows)": "the merge reads the existing ids",
        "raw pyarrow.parquet.write_table": "no validation, merge or transaction log",
    }
    return [
        Row(f"ingest {n} sequences", name, t, t / subject,
            f"{n / t:,.0f} seq/s; {notes[name]}")
        for name, t in timings.items()
    ]
