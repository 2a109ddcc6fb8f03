"""The review queue in the service: each score run writes `<out>/review/<run>.jsonl` and a CSV
of the same rows to fill in (model.serve.review picks them), and `posecoach ingest <review
file> --dataset NAME` turns the labelled rows into dataset rows.

A labelled row becomes one sequence: the repetition's frames cut from its session (read again
from the row's `source`, as the score run read it), the session's subject, the row's exercise
(or the one a label `exercise/label` names) and label, and where it came from in `meta["review"]`.
The dataset merges on sequence_id, so a row ingested twice is a duplicate the second time.
Unlabelled rows stay in the file for later; a row that cannot be used (unknown session, frames
outside the session, a label that is not one of the dataset's classes, a malformed line) gets an
error naming its line, and the other rows still go in.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from model.data import storage
from model.data.dataset import Dataset
from model.data.names import safe_file_name
from model.data.sequence import Sequence, SequenceError, validate
from model.serve.review import (
    COLUMNS,
    ReviewRow,
    csv_records,
    csv_text,
    read_labelled,
    select,
    to_csv,
    to_jsonl,
)
from model.serve.sessions import read_upload
from model.settings import get_settings

REVIEW_DIR = "review"
REVIEW_KEY = "review"  # provenance of a reviewed row, in its meta


def run_name() -> str:
    """A score run's name: its start time (UTC) and a short random part."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def write_review(out: str, run: str, scored: list[dict]) -> dict[str, str | int] | None:
    """Write the run's review queue (rows as the score flow keeps them, each with the `page`
    of its session's HTML) as `<out>/review/<run>.jsonl` and `.csv`; their URIs and size. Each
    row's source is absolute (a local path, or a URI), so the file is read the same from any
    folder. Nothing is written for a queue without rows (None)."""
    settings = get_settings().review
    linked = [{**r, "input": storage.absolute(r["input"]),
               "report": f"../{r['page'].rsplit('/', 1)[-1]}" if r.get("page") else ""}
              for r in scored]
    rows = select(linked, audit=settings.audit, limit=settings.limit)
    if not rows:
        return None
    folder = storage.join(out, REVIEW_DIR)
    name = safe_file_name(run)
    return {"jsonl": storage.write_text(storage.join(folder, f"{name}.jsonl"), to_jsonl(rows)),
            "csv": storage.write_text(storage.join(folder, f"{name}.csv"), to_csv(rows)),
            "rows": len(rows)}


def is_review_file(path: str | Path) -> bool:
    """Whether `path` is a review file: .jsonl, or a CSV whose header is the review's columns."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() not in (".jsonl", ".csv"):
        return False
    if path.suffix.lower() == ".jsonl":
        return True
    with open(path, encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip().split(",")
    return set(COLUMNS) <= set(header)


@dataclass
class ReviewIngest:
    """What ingesting one review file did: labelled rows in, each inserted, a duplicate of a
    row the dataset holds, a relabelling (updated) or an error naming its line."""

    file: str
    dataset: str
    labelled: int = 0
    unlabelled: int = 0
    inserted: int = 0
    duplicates: int = 0
    updated: int = 0
    version: int | None = None
    errors: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def row_class(row: ReviewRow) -> tuple[str, str]:
    """The class a label gives: `exercise/label`, or a label of the row's own exercise."""
    exercise, _, label = row.label.rpartition("/")
    return (exercise or row.exercise, label)


def located(source: str, file: Path) -> str:
    """Where a row's session is: its source as written (absolute, or a URI), or a relative one
    (written by an older score run, relative to the folder it ran in) found under the current
    folder or a folder above the review file; SequenceError naming the folders tried when none
    holds it."""
    if storage.is_remote(source) or Path(source).is_absolute():
        return source
    folders = [Path.cwd(), *file.resolve().parents]
    found = next((str(f / source) for f in folders if (f / source).is_file()), None)
    if found is None:
        raise SequenceError(source, "a relative source (from an older score run) found neither "
                                    f"under the current folder nor above {file}: write its "
                                    "absolute path in the row", "no_such_file")
    return found


def cut_row(row: ReviewRow, file: Path, sessions: dict[str, Sequence]) -> Sequence:
    """The labelled repetition as a dataset sequence, cut from its session (its source found
    by `located`); SequenceError when the session cannot be read, is not the row's, or lacks
    the frames."""
    row = replace(row, source=located(row.source, file))
    if row.source not in sessions:
        sessions[row.source] = read_upload(row.source)
    session = sessions[row.source]
    known = session.meta.get("session_id")
    if known is not None and str(known) != row.session_id:
        raise SequenceError(row.source, f"the session there is {known!r}, not "
                                        f"{row.session_id!r}", "unknown_session")
    if row.end_frame > len(session.poses):
        raise SequenceError(row.source, f"frames {row.start_frame}-{row.end_frame} are outside "
                                        f"the session's {len(session.poses)} frames",
                            "frames_outside")
    exercise, label = row_class(row)
    meta = {REVIEW_KEY: {"file": str(file), "session_id": row.session_id, "source": row.source,
                         "frames": [row.start_frame, row.end_frame], "reason": row.reason,
                         "predicted": row.predicted, "confidence": row.confidence}}
    return validate(replace(session, poses=session.poses[row.start_frame:row.end_frame],
                            exercise=exercise, label=label, rep=row.rep,
                            source=f"{row.source}#{row.rep}", meta=meta))


def ingest_review(path: str | Path, dataset: str) -> ReviewIngest:
    """Turn the labelled rows of a filled-in review file into rows of `dataset`."""
    path = Path(path)
    ds = Dataset(dataset)
    text = path.read_text(encoding="utf-8", errors="replace")
    rows, bad, unlabelled = read_labelled(text, path.name)
    errors = [{"line": e.line, "reason": e.reason} for e in bad]
    report = ReviewIngest(file=str(path), dataset=dataset, unlabelled=unlabelled,
                          labelled=len(rows) + len([e for e in bad if e.line > 1]))
    classes = ds.classes()
    sessions: dict[str, Sequence] = {}
    ready = []
    for line, row in rows:
        where = f"session {row.session_id}, repetition {row.rep}"
        if row_class(row) not in classes:
            known = ", ".join(sorted(f"{e}/{lbl}" for e, lbl in classes)) or "none yet"
            errors.append({"line": line, "reason": f"{where}: label {row.label!r} is not one of "
                                                   f"the classes of dataset {dataset!r} ({known})"})
            continue
        try:
            ready.append(cut_row(row, path, sessions))
        except SequenceError as exc:
            errors.append({"line": line, "reason": f"{where}: {exc}"})
    report.errors = sorted(errors, key=lambda e: e["line"])
    if ready:
        written = ds.write(ready, note=f"review {path.name}: {len(ready)} labelled repetitions")
        report.inserted, report.duplicates = written.inserted, written.duplicates
        report.updated = written.updated
    report.version = ds.version() if ds.exists() else None
    return report


def fill_from_truth(path: str | Path, truth: list[dict], out: str | Path) -> int:
    """A synthetic labeller (the demo's): label each row of the review CSV at `path` with the
    true label of the session's repetition it overlaps most (sessions.truth.json of `posecoach
    synth --sessions`), written to `out`; returns how many rows it labelled."""
    by_session = {t["session_id"]: t for t in truth}
    _, rows = csv_records(Path(path).read_text(encoding="utf-8"))
    labelled = 0
    for row in rows:
        known = by_session.get(row["session_id"])
        if known is None:
            continue
        start, end = int(row["start_frame"]), int(row["end_frame"])
        overlap = [min(end, b) - max(start, a) for a, b in known["boundaries"]]
        best = max(range(len(overlap)), key=overlap.__getitem__)
        if overlap[best] > 0:
            row["label"] = f"{known['exercise']}/{known['labels'][best]}"
            labelled += 1
    Path(out).write_text(csv_text(rows), encoding="utf-8")
    return labelled
