"""Scoring uploads in other conventions: the up axis and units read from the data or given as
options (`posecoach score --up/--units`) give the same findings as the canonical upload; the
report records each convention and where it came from; a manifest the data contradicts ends as
an error record, and a bad option is refused before any file is read."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.score import score_folder
from model.data.formats import write_session
from model.data.normalize import UP_ROTATIONS
from model.data.synth import make_session
from tests.score_fixtures import INFO, save_tiny_model

LABELS = ["correct", "knees_inward", "correct"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def session():
    seq, _ = make_session("u1", "squat", LABELS, seed=5)
    return seq


def turned_cm(seq):
    """The upload recorded y-up in centimetres (units not stated in the file)."""
    poses = (np.asarray(seq.poses, np.float64) @ UP_ROTATIONS["+y"]) * 100.0
    return replace(seq, poses=poses.astype(np.float32), units=None)


def score(seq, folder: Path, model_dir: Path, **declared):
    uploads = folder / "uploads"
    write_session(seq, uploads / "u1.json")
    summary = score_folder(str(uploads), str(folder / "out"), model_dir, INFO, html=False,
                           declared=declared or None)
    reports = [json.loads(Path(p).read_text()) for p in summary.report_files]
    return summary, reports


def findings(report: dict) -> list[tuple]:
    return [(r["start_frame"], r["end_frame"], r["exercise"], r["predicted_label"],
             round(r["confidence"], 3)) for r in report["repetitions"]]


def test_turned_and_rescaled_uploads_score_as_the_canonical_one(session, model_dir, tmp_path):
    _, [plain] = score(session, tmp_path / "plain", model_dir)
    _, [read] = score(turned_cm(session), tmp_path / "read", model_dir)
    _, [told] = score(turned_cm(session), tmp_path / "told", model_dir, up="+y", units="cm")
    assert findings(read) == findings(plain) == findings(told)
    assert len(plain["repetitions"]) == len(LABELS)
    assert read["conventions"]["up"] == {"value": "+y", "source": "data"}
    assert read["conventions"]["units"]["value"] == "cm"
    assert read["conventions"]["units"]["source"] == "data"
    assert told["conventions"]["up"] == {"value": "+y", "source": "option"}
    assert told["conventions"]["units"] == {"value": "cm", "source": "option"}
    assert plain["conventions"]["up"]["value"] == "+z"


def test_an_option_overrides_the_data(session, model_dir, tmp_path):
    _, [forced] = score(turned_cm(session), tmp_path / "forced", model_dir, up="+z", units="cm")
    assert forced["conventions"]["up"] == {"value": "+z", "source": "option"}


def test_a_manifest_the_data_contradicts_is_an_error_record(session, model_dir, tmp_path):
    uploads = tmp_path / "uploads"
    write_session(turned_cm(session), uploads / "u1.json")
    write_session(session, uploads / "u2.json")
    (uploads / "posecoach.json").write_text(json.dumps({"up": "+z"}))
    summary = score_folder(str(uploads), str(tmp_path / "out"), model_dir, INFO, html=False)
    assert (summary.sessions, summary.reports, summary.errors) == (2, 1, 1)
    [error] = summary.error_records
    assert error["kind"] == "contradicts_data" and error["input"].endswith("u1.json")
    assert "up" in error["reason"]


@pytest.mark.parametrize(("option", "problem"), [("--up=+q", "up"), ("--units=furlong", "units"),
                                                   ("--fps=0", "fps")])
def test_a_bad_declaration_is_refused_naming_it(tmp_path, option, problem):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    done = CliRunner().invoke(app, ["score", str(uploads), option, "--out", str(tmp_path / "o")])
    assert done.exit_code != 0
    assert problem in done.output and "Traceback" not in done.output
    assert not (tmp_path / "o").exists()


def _timed(path: Path, stamps: list[float], fps: float | None) -> None:
    """The session file given frame times, and its fps (None: left out)."""
    doc = json.loads(path.read_text())
    doc["timestamps"] = stamps
    if fps is None:
        doc.pop("fps")
    else:
        doc["fps"] = fps
    path.write_text(json.dumps(doc))


def test_session_timestamps_are_checked_as_ingest_checks_them(session, model_dir, tmp_path):
    uploads = tmp_path / "uploads"
    n = session.n_frames
    cases = {"slow.json": ((np.arange(n) / 30.0).tolist(), 15.0),  # declared 15, 30 Hz data
             "fast.json": ((np.arange(n) / 100.0).tolist(), 30.0),
             "back.json": ((np.arange(n) / 30.0)[::-1].tolist(), 30.0),
             "twice.json": ([0.0, *(np.arange(n - 1) / 30.0)], 30.0),
             "short.json": ((np.arange(n - 1) / 30.0).tolist(), 30.0),
             "told.json": ((np.arange(n) / 30.0).tolist(), None)}
    for name, (stamps, fps) in cases.items():
        _timed(write_session(session, uploads / name), stamps, fps)
    summary = score_folder(str(uploads), str(tmp_path / "out"), model_dir, INFO, html=False)
    kinds = {Path(e["input"]).name: e["kind"] for e in summary.error_records}
    assert kinds == {"slow.json": "contradicts_data", "fast.json": "contradicts_data",
                     "back.json": "bad_field", "twice.json": "bad_field",
                     "short.json": "bad_field"}
    [report] = [json.loads(Path(p).read_text()) for p in summary.report_files]
    assert report["conventions"]["fps"] == {"value": 30.0, "source": "data"}


def test_forced_units_that_make_the_body_tiny_are_an_error_record(session, model_dir, tmp_path):
    summary, reports = score(session, tmp_path / "cm", model_dir, units="cm")  # metres data
    assert reports == []
    [error] = summary.error_records
    assert error["kind"] == "implausible_units" and error["input"].endswith("u1.json")
    assert "--units cm" in error["reason"] and "'m'" in error["reason"]


def test_score_fps_option_overrides_the_timestamps(session, model_dir, tmp_path):
    uploads = tmp_path / "uploads"
    _timed(write_session(session, uploads / "u1.json"), (np.arange(session.n_frames) / 30.0
                                                         ).tolist(), 15.0)
    summary = score_folder(str(uploads), str(tmp_path / "out"), model_dir, INFO, html=False,
                           declared={"fps": 30.0})
    [report] = [json.loads(Path(p).read_text()) for p in summary.report_files]
    assert report["conventions"]["fps"] == {"value": 30.0, "source": "option"}


def test_the_segmented_option_scores_each_file_whole(session, model_dir, tmp_path):
    _, [cut] = score(session, tmp_path / "cut", model_dir)
    _, [whole] = score(session, tmp_path / "whole", model_dir, segmented=True)
    assert len(cut["repetitions"]) == len(LABELS)
    [rep] = whole["repetitions"]
    assert (rep["start_frame"], rep["end_frame"]) == (0, session.n_frames)
