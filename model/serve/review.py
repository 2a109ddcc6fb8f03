"""The review queue: the scored repetitions a person should look at, as a JSON-lines file and a
CSV to fill in, and the labelled rows read back.

A score run picks the repetitions the model was unsure of, those whose predicted exercise
disagrees with the declared one, and a small random sample of the confident rest (an audit of
what the model is sure about). Each row names the upload and the repetition's frames, so that a
labelled row can be cut from its session again; the CSV has an empty `label` column, and a
text cell that a spreadsheet would run as a formula starts with `'` (model.data.names.csv_cell),
which reading the file back removes.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model.data.names import csv_row, csv_value

COLUMNS = ("session_id", "source", "rep", "start_frame", "end_frame", "exercise", "predicted",
           "confidence", "reason", "report", "label")
UNSURE, MISMATCH, AUDIT = "unsure", "exercise_mismatch", "audit"


@dataclass(frozen=True)
class ReviewRow:
    session_id: str
    source: str
    rep: int
    start_frame: int
    end_frame: int
    exercise: str
    predicted: str
    confidence: float
    reason: str
    report: str
    label: str = ""


def select(rows: Iterable[Mapping], audit: int, limit: int, seed: int = 0) -> list[ReviewRow]:
    """The repetitions to review among scored rows (dicts as the score flow keeps them: session_id,
    input, rep, frames, exercise, predicted, confidence, unsure, exercise_mismatch, report):
    every unsure one and every exercise disagreement, then `audit` confident ones drawn at random
    (seeded), at most `limit` in all."""
    scored = [r for r in rows if r.get("predicted") and r.get("frames")]
    flagged = [(r, UNSURE if r.get("unsure") else MISMATCH) for r in scored
               if r.get("unsure") or r.get("exercise_mismatch")]
    confident = [r for r in scored if not (r.get("unsure") or r.get("exercise_mismatch"))]
    sample = random.Random(seed).sample(confident, min(audit, len(confident)))
    picked = flagged + [(r, AUDIT) for r in sample]
    return [_row(r, reason) for r, reason in picked[:limit]]


def _row(r: Mapping, reason: str) -> ReviewRow:
    """A review row; its link points at the repetition on the session's page (numbered from 1)."""
    start, end = r["frames"]
    report = str(r.get("report") or "")
    return ReviewRow(session_id=str(r.get("session_id", "")), source=str(r.get("input", "")),
                     rep=int(r.get("rep", 0)), start_frame=int(start), end_frame=int(end),
                     exercise=str(r.get("exercise", "")), predicted=str(r["predicted"]),
                     confidence=float(r.get("confidence") or 0.0), reason=reason,
                     report=f"{report}#rep-{int(r.get('rep', 0)) + 1}" if report else "")


def _fields(row: ReviewRow) -> dict:
    """The row's fields by name: what dataclasses.asdict gives for its plain values, without
    its deep copies (a score run writes hundreds of rows, after its last session)."""
    return dict(vars(row))


def to_jsonl(rows: Iterable[ReviewRow]) -> str:
    return "".join(json.dumps(_fields(r), sort_keys=True) + "\n" for r in rows)


def to_csv(rows: Iterable[ReviewRow]) -> str:
    return csv_text(_fields(r) for r in rows)


def csv_text(records: Iterable[Mapping]) -> str:
    """The review CSV of records keyed by COLUMNS; text cells through names.csv_cell, so that
    no value from an upload opens as a spreadsheet formula (csv_records reads them back)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_row(r) for r in records)
    return buf.getvalue()


def csv_records(text: str) -> tuple[list[str], list[dict]]:
    """The header and rows of a review CSV, each text cell as it was before csv_text wrote it
    (names.csv_value)."""
    reader = csv.DictReader(io.StringIO(text))
    rows = [{k: csv_value(v) if isinstance(v, str) else v for k, v in r.items()} for r in reader]
    return list(reader.fieldnames or []), rows


@dataclass(frozen=True)
class RowError:
    """A review row that cannot be used: its line in the file and why."""

    line: int
    reason: str


def read_labelled(text: str, name: str
                  ) -> tuple[list[tuple[int, ReviewRow]], list[RowError], int]:
    """The rows of a filled-in review file (CSV, or JSON lines when `name` ends in .jsonl) that
    carry a label, each with its line; the rows that cannot be read, each with its line; and how
    many rows are still unlabelled."""
    if name.endswith(".jsonl"):
        records = []
        for line, raw in enumerate(text.splitlines(), 1):
            if raw.strip():
                try:
                    records.append((line, json.loads(raw)))
                except json.JSONDecodeError as exc:
                    records.append((line, f"not JSON: {exc.msg}"))
    else:
        header, rows = csv_records(text)
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            return [], [RowError(1, f"{name}: the header lacks {', '.join(missing)}")], 0
        records = [(i + 2, r) for i, r in enumerate(rows)]
    labelled, errors, unlabelled = [], [], 0
    for line, rec in records:
        if isinstance(rec, str) or not isinstance(rec, dict):
            errors.append(RowError(line, rec if isinstance(rec, str) else "not a JSON object"))
            continue
        if not str(rec.get("label") or "").strip():
            unlabelled += 1
            continue
        try:
            labelled.append((line, _parsed(rec)))
        except (KeyError, TypeError, ValueError) as exc:
            errors.append(RowError(line, str(exc)))
    return labelled, errors, unlabelled


def _parsed(rec: Mapping) -> ReviewRow:
    fields = {}
    for column in COLUMNS:
        if column not in rec or rec[column] is None:
            raise KeyError(f"field {column!r} is missing")
        fields[column] = rec[column]
    for column in ("rep", "start_frame", "end_frame"):
        try:
            fields[column] = int(str(fields[column]).strip())
        except ValueError:
            raise ValueError(f"{column} {fields[column]!r} is not a whole number") from None
    fields["confidence"] = float(fields["confidence"] or 0.0)
    if not 0 <= fields["start_frame"] < fields["end_frame"]:
        raise ValueError(f"frames {fields['start_frame']}-{fields['end_frame']} are not a range")
    fields = {k: (v.strip() if isinstance(v, str) else v) for k, v in fields.items()}
    return ReviewRow(**fields)
