"""Count the hostile and broken input corpus: each kind of input tried, how its inputs ended
(accepted, or refused with which error kind), inputs lost, names that escaped, and the peak
memory of a child process reading each resource bomb. Prints the table of docs/reliability.md.

Run from the repository root: .venv/bin/python docs/figures/corpus.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.data.ec3d_pickle import write_ec3d_pickle
from model.data.formats import write_sequences_json, write_session
from model.data.hostile import HOSTILE_NAMES, read_in_child, write_bombs
from model.data.names import safe_file_name, upload_name
from model.data.readers import iter_sequences, read_session
from model.data.sequence import Sequence, SequenceError, validate, validate_many
from model.data.synth import make_dataset, make_session

PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
ROWS: list[tuple[str, int, Counter, int]] = []


def tried(kind: str, outcomes: Iterable[str]) -> None:
    """One row: the kind of input, how many, their outcomes; "LOST" counts an input that ended
    as neither a result nor an error with a kind (an exception of another type)."""
    counts = Counter(outcomes)
    ROWS.append((kind, sum(counts.values()), counts, counts.pop("LOST", 0)))


def outcome(read: Callable[[], list]) -> list[str]:
    """The outcome of each item a read gives: "accepted" or the error kind; "LOST" for a crash."""
    try:
        items = read()
    except SequenceError as exc:
        return [exc.kind]
    except Exception:  # noqa: BLE001 - counted as lost, the figure this script exists for
        return ["LOST"]
    read_errors = [i.kind for i in items if isinstance(i, SequenceError)]
    checked = validate_many(i for i in items if not isinstance(i, SequenceError))
    return read_errors + ["accepted" if isinstance(c, Sequence) else c.kind for c in checked]


def names_inside(values: Iterable[str], folder: Path, suffix: str) -> list[str]:
    """For each value (a session id): "accepted" when the report name scoring makes of it
    stays one plain, distinct name directly in `folder`, "ESCAPED" otherwise."""
    seen: set[str] = set()
    out = []
    for value in values:
        key = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
        name = upload_name(value, key) + suffix
        target = (folder / name).resolve()
        ok = PLAIN.fullmatch(name) and target.parent == folder.resolve() and name not in seen
        seen.add(name)
        out.append("accepted" if ok else "ESCAPED")
    return out


def hostile_uploads(tmp: Path, base: Sequence) -> None:
    kept: list[str] = []
    results: list[str] = []
    for i, value in enumerate(HOSTILE_NAMES):
        for suffix in (".json", ".npz", ".parquet"):
            path = write_session(replace(base, subject=value, meta={"session_id": value}),
                                 tmp / f"up_{i}{suffix}")
            got = outcome(lambda p=path: [read_session(p)])
            if got == ["accepted"]:
                session = read_session(path)
                same = session.meta["session_id"] == value and session.subject == value
                got = ["accepted" if same else "CHANGED"]
                kept.append(value)
            results += got
    tried(f"session_id and subject from the names corpus ({len(HOSTILE_NAMES)} values x JSON, "
          "NPZ, Parquet)", results)
    folder = tmp / "reports"
    tried("report file names made from those session ids", names_inside(set(kept), folder,
                                                                        ".json"))
    bad = []
    for field in ("exercise", "skeleton"):
        for i, value in enumerate(HOSTILE_NAMES):
            path = write_session(replace(base, **{field: value}), tmp / f"{field}_{i}.json")
            bad += outcome(lambda p=path: [read_session(p)])
    tried("exercise or skeleton from the names corpus (uploads)", bad)


def hostile_labelled(tmp: Path, seq: Sequence) -> None:
    results = []
    for i, value in enumerate(HOSTILE_NAMES):
        path = write_sequences_json([replace(seq, subject=value)], tmp / f"lab_{i}.json")
        got = outcome(lambda p=path: list(iter_sequences(p)))
        if got == ["accepted"]:
            [row] = list(iter_sequences(path))
            got = ["accepted" if row.subject == value else "CHANGED"]
        results += got
    tried("subject from the names corpus (labelled files)", results)
    labels = []
    for i, value in enumerate(HOSTILE_NAMES):
        path = write_sequences_json([replace(seq, label=value)], tmp / f"label_{i}.json")
        labels += outcome(lambda p=path: list(iter_sequences(p)))
    tried("label from the names corpus (labelled files)", labels)
    named = [n for n in HOSTILE_NAMES if n not in (".", "..") and not {"/", "\x00"} & set(n)
             and len((n + ".json").encode()) < 255]
    files = []
    for i, name in enumerate(named):
        folder = tmp / f"named_{i}"
        folder.mkdir()
        path = folder / f"{name}.json"
        path.write_text('{"poses": [[[')
        copy = safe_file_name(path.name)
        inside = PLAIN.fullmatch(copy) and (tmp / "q" / copy).resolve().parent == tmp / "q"
        files += [k if inside else "ESCAPED" for k in outcome(lambda p=path: list(
            iter_sequences(p)))]
    tried("file names from the names corpus, broken content (quarantine copy names)", files)


def required_fields(tmp: Path, seq: Sequence) -> None:
    results = []
    for field in ("subject", "exercise", "label", "skeleton", "fps"):
        for empty in (None, "", " "):
            path = write_sequences_json([seq], tmp / "field.json")
            doc = json.loads(path.read_text())
            doc[field] = empty
            path.write_text(json.dumps(doc))
            results += outcome(lambda p=path: list(iter_sequences(p)))
    tried("a required field null, empty or blank (JSON: 5 fields x 3)", results)
    seqs = make_dataset(n_subjects=1, reps=1, seed=4, exercises=("squat",))
    src = write_ec3d_pickle(seqs, tmp / "src.pickle")
    doc = pickle.loads(src.read_bytes())  # written just above by write_ec3d_pickle
    cells = []
    for column in range(4):
        for empty in (None, "", " ", float("nan")):
            labels = doc["labels"].astype(object)
            labels[:, column] = empty
            path = tmp / "cells.pickle"
            path.write_bytes(pickle.dumps({"poses": doc["poses"], "labels": labels}))
            cells += outcome(lambda p=path: list(iter_sequences(p)))
    tried("EC3D labels with an empty exercise, subject, label or rep (4 x 4 empties)", cells)
    zeros = tmp / "zeros.pickle"
    zeros.write_bytes(pickle.dumps({"poses": np.zeros_like(doc["poses"]),
                                    "labels": doc["labels"]}))
    tried("EC3D pickle whose poses are all zeros (its sequences)",
          outcome(lambda: list(iter_sequences(zeros))))
    for suffix in (".pickle.gz", ".pkl.gz"):
        (tmp / f"gz{suffix}").write_bytes(gzip.compress(src.read_bytes()))
    tried("gzip'd EC3D pickles (.pickle.gz, .pkl.gz; their sequences)",
          [k for s in (".pickle.gz", ".pkl.gz")
           for k in outcome(lambda p=tmp / f"gz{s}": list(iter_sequences(p)))])


def degenerate(seq: Sequence) -> None:
    p = seq.poses
    cases = [np.full_like(p, np.nan), np.zeros_like(p), np.broadcast_to(p[:, :1], p.shape).copy(),
             np.repeat(p[:1], len(p), axis=0)]
    tried("degenerate poses: no joint left, one point, nothing moving",
          [k for c in cases for k in outcome(lambda c=c: [validate(replace(seq, poses=c))])])


def bombs(tmp: Path) -> list[tuple[str, str, float]]:
    peaks = []
    kinds = []
    for bomb in write_bombs(tmp / "bombs"):
        got, peak = read_in_child(bomb.mode, bomb.path)
        kinds += [k if k == bomb.kind else f"WRONG {k}" for k in got]
        peaks.append((bomb.problem, got[0], peak / 2**30))
    tried("resource bombs (NPZ, Parquet, gzip'd CSV, JSON and pickle, deep JSON)", kinds)
    return peaks


def main() -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        base, _ = make_session("s1", "squat", ["correct"], seed=3)
        seq = make_dataset(n_subjects=1, reps=1, seed=9, exercises=("squat",))[0]
        hostile_uploads(tmp, base)
        hostile_labelled(tmp, seq)
        required_fields(tmp, seq)
        degenerate(seq)
        peaks = bombs(tmp)
    print("| kind of input | inputs | how they ended | lost |")
    print("|---|---:|---|---:|")
    for kind, n, counts, lost in ROWS:
        ended = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        print(f"| {kind} | {n} | {ended} | {lost} |")
    total = sum(n for _, n, _, _ in ROWS)
    bad = sum(lost + c.get("ESCAPED", 0) + c.get("CHANGED", 0)
              + sum(v for k, v in c.items() if k.startswith("WRONG")) for _, _, c, lost in ROWS)
    print(f"\nkinds tried {len(ROWS)}, inputs {total}, lost, escaped, changed or misfiled {bad}")
    print("\n| bomb | refused as | peak RSS of the reading process (GiB) |")
    print("|---|---|---:|")
    for problem, kind, gib in peaks:
        print(f"| {problem} | {kind} | {gib:.2f} |")
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
