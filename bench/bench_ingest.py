"""Ingest throughput: sequences per second into a dataset against a raw Parquet write.

Subject: validate the sequences (model.data.sequence.validate_many, as the ingest flow does) and
merge them into a Delta dataset (model.data.dataset.Dataset.write: read the ids already there,
append the new rows, one commit), a fresh table each call. Variants, same sequences, same run:
  - the same write into a table that already holds another batch of the same size (the daily
    append: the write reads the existing ids);
  - the same write again into a table that holds these sequences (re-ingest: nothing new, no
    commit);
  - baseline: pyarrow.parquet.write_table of the same arrays (poses as a flat float32 list column
    with their shape, the identity columns), no validation, no merge, no log.
  - validation alone (where the time goes).
Data: model.data.synth.make_dataset(4, 8), 352 EC3D-like sequences (a second seed for the append),
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
from model.data.dataset import Dataset
from model.data.sequence import Sequence, SequenceError, validate_many
from model.data.synth import make_dataset

REPEATS = 5
BATCHES = (1, 10)
SUBJECT = "validate_many + Dataset.write (new table)"
BASELINE = "raw pyarrow.parquet.write_table"
NOTES = {SUBJECT: "dedupe on sequence_id, one Delta commit",
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


def checked(seqs: list[Sequence]) -> list[Sequence]:
    """The sequences as validate_many returns them; every one must pass."""
    out = validate_many(seqs)
    assert not any(isinstance(s, SequenceError) for s in out)
    return out


def measure(seqs: list[Sequence], older: list[Sequence], root: Path) -> dict[str, float]:
    """Median seconds of each variant on one batch."""
    n = len(seqs)
    names = (f"t{i}" for i in itertools.count())
    written: list[Dataset] = []

    def fresh() -> None:
        written.append(Dataset(next(names), root=str(root)))
        result = written[-1].write(checked(seqs))
        assert result.inserted == n, result

    prefilled = []
    for _ in range(REPEATS + 1):
        prefilled.append(Dataset(next(names), root=str(root)))
        prefilled[-1].write(older)
    targets = iter(prefilled)

    def append() -> None:
        result = next(targets).write(checked(seqs))
        assert result.inserted == n, result

    again = iter(written)

    def reingest() -> None:
        target = next(again)
        version = target.version()
        result = target.write(checked(seqs))
        assert (result.duplicates, result.version) == (n, version), result

    def parquet() -> None:
        pq.write_table(raw_table(seqs), root / f"{next(names)}.parquet")

    return {
        SUBJECT: median_seconds(fresh, REPEATS),
        f"validate_many + Dataset.write (append to {len(older)} rows)":
            median_seconds(append, REPEATS),
        "validate_many + Dataset.write (re-ingest, all duplicates)":
            median_seconds(reingest, REPEATS),
        f"validate_many alone ({n})": median_seconds(lambda: checked(seqs), REPEATS),
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
