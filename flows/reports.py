"""Mistake reports: one JSON document and one HTML page per scored session.

The JSON layout is versioned (`SCHEMA`) and documented in the README ("Score reports"). The HTML
page shows, per repetition, key frames of the original motion in red with the corrected one in
green (side view), the cues, and a summary of the session; pictures are embedded, so the page is
one self-contained file.
"""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

import numpy as np

from model.data import storage
from model.data.names import html_text, safe_name
from model.data.sequence import Sequence
from model.data.skeletons import Skeleton, get_skeleton
from model.evaluate.plots import plot_correction
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult, prepare
from model.settings import CORRECT

SCHEMA = "posecoach.report/1"


@dataclass(frozen=True)
class ModelInfo:
    """Which model scored a session: registry name and version, its data and code versions."""

    name: str
    version: str
    dataset: str
    dataset_version: int | None
    code_version: str

    def to_dict(self) -> dict:
        return asdict(self)


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
            "unsure": res.unsure,
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
        "scored_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": model.to_dict(),
        "summary": {
            "repetitions": len(reps),
            "correct": labels.count(CORRECT),
            "unsure": labels.count("unsure"),
            "mistakes": dict(Counter(x for x in labels if x not in (CORRECT, "unsure"))),
            "exercise_disagreement": disagree > len(reps) / 2 if reps else False,
            "repetitions_other_exercise": disagree,
        },
        "repetitions": reps,
    }


def _png_base64(original: np.ndarray, corrected: np.ndarray, skeleton: Skeleton,
                title: str) -> str:
    buf = io.BytesIO()
    plot_correction(original, corrected, skeleton, buf, title=title)
    return base64.b64encode(buf.getvalue()).decode()


def originals(model: TrainedModel, session: Sequence, results: list[RepResult]) -> list:
    """Each repetition's original motion as the model saw it (normalised), for the pictures."""
    return [prepare(replace(session, poses=session.poses[r.frames[0] : r.frames[1]]),
                    model.normalization)[0] if r.ok else None for r in results]


def render_html(report: dict, originals: list[np.ndarray], corrected: list[np.ndarray],
                skeleton: Skeleton) -> str:
    """A self-contained HTML page for one session report."""
    esc = html_text
    s = report["summary"]
    mistakes = ", ".join(f"{esc(k)} x{v}" for k, v in s["mistakes"].items()) or "none"
    warn = ""
    if s["exercise_disagreement"]:
        warn = (f"<p class='warn'>Most repetitions do not look like a "
                f"{esc(report['declared_exercise'])}.</p>")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>posecoach: {esc(report['session_id'])}</title>",
        "<style>body{font-family:sans-serif;margin:24px;max-width:1100px}"
        ".rep{border-top:1px solid #ccc;padding:12px 0}.ok{color:#2a7d2a}.bad{color:#b22}"
        ".warn{background:#fee;padding:6px}img{max-width:100%}td,th{padding:2px 8px}</style>",
        "</head><body>",
        f"<h1>Session {esc(report['session_id'])}</h1>",
        f"<p>{esc(report['subject'])} &middot; {esc(report['declared_exercise'])} &middot; "
        f"{s['repetitions']} repetitions: {s['correct']} correct, {s['unsure']} unsure; "
        f"mistakes: {mistakes}</p>",
        warn,
        f"<p class='model'>model {esc(report['model']['name'])} v{esc(report['model']['version'])}"
        f" &middot; dataset version {esc(report['model']['dataset_version'])}</p>",
    ]
    for rep, orig, corr in zip(report["repetitions"], originals, corrected, strict=True):
        cls = "ok" if rep["mistake"] == CORRECT else "bad"
        conf = "" if rep["confidence"] is None else f" ({rep['confidence']:.0%})"
        cues = "".join(f"<li>{esc(c)}</li>" for c in rep["cues"])
        picture = ("" if corr is None else
                   _png_base64(orig, corr, skeleton, f"repetition {rep['index'] + 1}"))
        parts += [
            "<div class='rep'>",
            f"<h2>Repetition {rep['index'] + 1}: <span class='{cls}'>"
            f"{esc(rep['mistake'])}</span>{conf}</h2>",
            f"<ul>{cues}</ul>",
            f"<p class='bad'>{esc(rep['error'])}</p>" if rep["error"] else
            f"<img alt='repetition {rep['index'] + 1}: original red, corrected green' "
            f"src='data:image/png;base64,{picture}'>",
            "</div>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_session(out: str, session: Sequence, results: list[RepResult], model: TrainedModel,
                  info: ModelInfo) -> dict[str, str]:
    """Write <out>/<name>.json, .html and .npz (the corrected motions, the model's normalised
    frame, one array per repetition); `out` is a folder path or an object-store URI.

    <name> is the session id made safe (model.data.names.safe_name: one plain file name, distinct
    per session id); the JSON keeps the session id as uploaded."""
    name = safe_name(session.meta.get("session_id") or session.source)
    uris = {kind: storage.join(out, f"{name}.{kind}") for kind in ("json", "html", "npz")}
    corrected = [r.corrected for r in results]
    report = session_report(session, results, info, uris["npz"])
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"rep_{i}": c for i, c in enumerate(corrected) if c is not None})
    storage.write_bytes(uris["npz"], buf.getvalue())
    page = render_html(report, originals(model, session, results), corrected,
                       get_skeleton(model.normalization.skeleton))
    storage.write_text(uris["html"], page)
    storage.write_text(uris["json"], json.dumps(report, indent=2))
    return uris
