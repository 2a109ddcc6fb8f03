"""Mistake reports: one JSON document and one HTML page per scored session.

The JSON layout is versioned (`SCHEMA`) and documented in docs/scoring.md ("The report"). The HTML
page (flows.report_html) animates, per repetition, the original motion in red with the corrected
one in green (side and front views) beside the cues and the per-joint deviations; it is one
self-contained file.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson

from flows.report_html import Motion, session_page
from model.data import storage
from model.data.conventions import file_conventions
from model.data.names import upload_name
from model.data.sequence import Sequence
from model.data.skeletons import get_skeleton
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult
from model.settings import CORRECT

SCHEMA = "posecoach.report/1"


@dataclass(frozen=True)
class ModelInfo:
    """Which model scored a session: registry name and version, its data and code versions, and
    the person's reference it decided against (the reference file's SHA-256), if any."""

    name: str
    version: str
    dataset: str
    dataset_version: int | None
    code_version: str
    reference: str | None = None

    def to_dict(self) -> dict:
        return dict(vars(self))  # plain values: what asdict gives, without its deep copies


def session_report(session: Sequence, results: list[RepResult], model: ModelInfo,
                   motion_file: str) -> dict:
    """The JSON report of one session (schema `SCHEMA`)."""
    declared_exercise = session.exercise
    reps = []
    for n, res in enumerate(results):
        start, end = res.frames or (None, None)
        reps.append({
            "index": n,
            "start_frame": start,
            "end_frame": end,
            "exercise": res.predicted.split("/")[0] if res.predicted else declared_exercise,
            "mistake": "unsure" if res.unsure else res.label,
            "predicted_label": res.label,
            "confidence": res.confidence,
            "reference": res.reference,
            "unsure": res.unsure,
            "note": res.note,
            "cues": res.cues,
            "deviations": [d.to_dict() for d in res.deviations],
            "corrected_motion": {"file": motion_file, "key": f"rep_{n}"},
            "error": res.error,
        })
    labels = [r["mistake"] for r in reps if r["error"] is None]
    disagree = sum(1 for r in reps if r["error"] is None and r["exercise"] != declared_exercise)
    return {
        "schema": SCHEMA,
        "session_id": session.meta.get("session_id") or session.source,
        "subject": session.subject,
        "declared_exercise": declared_exercise,
        "source": session.source,
        "conventions": file_conventions(session),
        "scored_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.to_dict(),
        "summary": {
            "repetitions": len(reps),
            "correct": labels.count(CORRECT),
            "unsure": labels.count("unsure"),
            "failed": len(reps) - len(labels),
            "mistakes": dict(Counter(x for x in labels if x not in (CORRECT, "unsure"))),
            "exercise_disagreement": disagrees(disagree, len(labels)),
            "repetitions_other_exercise": disagree,
        },
        "repetitions": reps,
    }


def disagrees(other_exercise: int, scored: int) -> bool:
    """The one rule for a session that disagrees with its declared exercise (its report, page,
    the run's summary and terminal): more than half its scored repetitions are predicted as
    another exercise."""
    return other_exercise > scored / 2


def motions(results: list[RepResult]) -> list[Motion | None]:
    """Each repetition's original and corrected motion in the model's normalised frame."""
    return [Motion(r.original, r.corrected) if r.ok and r.original is not None
            and r.corrected is not None else None for r in results]


def write_session(out: str, session: Sequence, results: list[RepResult], model: TrainedModel,
                  info: ModelInfo, content: str, html: bool = True
                  ) -> tuple[dict[str, str], dict]:
    """Write <out>/<name>.json, .npz (the corrected motions, the model's normalised frame, one
    array per repetition) and, unless `html` is False, .html; `out` is a folder path or an
    object-store URI. Returns the URIs written by kind and the JSON report.

    <name> is the session id made safe and the upload's `content` key (its file's SHA-256;
    model.data.names.upload_name): one plain file name, distinct per upload, the same on every
    rerun; the JSON keeps the session id as uploaded."""
    name = upload_name(session.meta.get("session_id") or session.source, content)
    uris = {kind: storage.join(out, f"{name}.{kind}") for kind in ("json", "html", "npz")}
    report = session_report(session, results, info, uris["npz"])
    buf = io.BytesIO()
    np.savez(buf, **{f"rep_{i}": r.corrected for i, r in enumerate(results)
                     if r.corrected is not None})
    storage.write_bytes(uris["npz"], buf.getvalue())
    if html:
        page = session_page(report, motions(results), get_skeleton(model.normalization.skeleton),
                            model.normalization.fps)
        storage.write_text(uris["html"], page)
    else:
        del uris["html"]
    storage.write_bytes(uris["json"], report_json(report))
    return uris, report


def report_json(report: dict) -> bytes:
    """The report as indented JSON text (UTF-8): by orjson, or by the standard library where
    orjson refuses (text that is not Unicode, such as an undecodable file name kept as a
    surrogate escape)."""
    try:
        return orjson.dumps(report, option=orjson.OPT_INDENT_2)
    except orjson.JSONEncodeError:
        return json.dumps(report, indent=2).encode("utf-8")
