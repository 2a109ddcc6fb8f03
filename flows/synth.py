"""Synthetic EC3D-like data on disk (`posecoach synth`, and the demo's data and uploads).

Labelled repetitions go to OUT/data_3D.pickle (EC3D's layout, format `pickle`) or to
OUT/sequences/ as one JSON, NPZ or CSV file each. Uploaded sessions go to OUT/sessions/
(cycling through JSON, NPZ and Parquet unless one format is asked for) with their true
repetition labels and boundaries in OUT/sessions.truth.json; broken uploads, for demos of error
records, go there too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import track

from flows.output import console
from model.data.ec3d_pickle import write_ec3d_pickle
from model.data.formats import (
    write_sequence_csv,
    write_sequence_npz,
    write_sequences_json,
    write_session,
)
from model.data.labels import EC3D_EXERCISES
from model.data.sequence import Sequence
from model.data.synth import exercise_labels, make_dataset, make_session, write_broken_sessions

LABELLED_WRITERS = {
    "json": lambda seq, path: write_sequences_json([seq], path),
    "npz": write_sequence_npz,
    "csv": write_sequence_csv,
}
SESSION_FORMATS = ("json", "npz", "parquet")


def write_labelled(seqs: list[Sequence], out: Path, fmt: str, progress: bool = True) -> list[Path]:
    """The dataset as one EC3D pickle, or as one file per repetition in OUT/sequences/."""
    if fmt == "pickle":
        return [write_ec3d_pickle(seqs, out / "data_3D.pickle")]
    writer = LABELLED_WRITERS[fmt]
    paths = []
    for seq in track(seqs, description=f"writing {fmt}", console=console, disable=not progress):
        name = f"{seq.subject}_{seq.exercise}_{seq.label}_{seq.rep:02d}.{fmt}"
        paths.append(writer(seq, out / "sequences" / name))
    return paths


def write_sessions(out: Path, n: int, seed: int, fmt: str | None) -> list[dict]:
    """N uploads of 3-5 repetitions each; returns their truth (labels and boundaries)."""
    rng = np.random.default_rng([seed, 7])
    truth = []
    for i in range(n):
        exercise = EC3D_EXERCISES[i % len(EC3D_EXERCISES)]
        labels = [str(x) for x in rng.choice(exercise_labels(exercise), int(rng.integers(3, 6)))]
        seq, bounds = make_session(f"u{i % 3 + 1}", exercise, labels, seed=seed + i)
        suffix = fmt or SESSION_FORMATS[i % len(SESSION_FORMATS)]
        path = write_session(seq, out / "sessions" / f"session_{i + 1:03d}.{suffix}")
        truth.append({"path": str(path), "session_id": seq.meta["session_id"],
                      "exercise": exercise, "labels": labels,
                      "boundaries": [list(b) for b in bounds]})
    return truth


def synthesize(out: Path, subjects: int, reps: int, seed: int = 0, fmt: str = "pickle",
               sessions: int = 0, broken: int = 0, session_format: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Write the synthetic data under `out`; return what was written."""
    seqs = make_dataset(n_subjects=subjects, reps=reps, seed=seed)
    files = write_labelled(seqs, out, fmt, progress)
    truth = write_sessions(out, sessions, seed, session_format)
    if truth:
        (out / "sessions.truth.json").write_text(json.dumps(truth, indent=1))
    bad = write_broken_sessions(out / "sessions", broken, seed) if broken else []
    classes = Counter(f"{s.exercise}/{s.label}" for s in seqs)
    return {
        "out": str(out), "format": fmt, "seed": seed, "subjects": subjects,
        "reps_per_class": reps, "sequences": len(seqs), "files": len(files),
        "pickle": str(files[0]) if fmt == "pickle" else None,
        "classes": dict(classes), "sessions": truth, "broken": bad,
    }
