"""Frame times (`timestamps`, seconds) in labelled files and uploads: checked against the
declared rate by one path (model.data.conventions), telling the rate where none is declared;
`--fps` overrides them knowingly; timestamps in milliseconds are named as such; a CSV's
`timestamp` column is read as JSON's `timestamps` are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.data.formats import (
    coordinate_columns,
    write_sequence_npz,
    write_sequences_json,
    write_session,
)
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError
from model.data.synth import make_dataset, make_session


@pytest.fixture(scope="module")
def seq():
    return make_dataset(n_subjects=1, reps=1, seed=3)[0]


def _timed_json(seq, path: Path, stamps, fps: float | None) -> Path:
    doc = json.loads(write_sequences_json([seq], path).read_text())
    doc["timestamps"] = list(stamps)
    if fps is None:
        doc.pop("fps")
    else:
        doc["fps"] = fps
    path.write_text(json.dumps(doc))
    return path


def test_a_declared_rate_the_timestamps_contradict_is_kept_with_fps(seq, tmp_path):
    path = _timed_json(seq, tmp_path / "a.json", np.arange(seq.n_frames) / 30.0, 15.0)
    [err] = list(iter_sequences(path))
    assert isinstance(err, SequenceError) and err.kind == "contradicts_data"
    assert "declared 15, but the data says 30 " in err.reason and "--fps 15" in err.reason
    for option in (15.0, 30.0):
        [got] = list(iter_sequences(path, fps=option))
        assert got.fps == option
        assert got.meta["conventions"]["fps"] == {"value": option, "source": "option"}


def test_no_declared_rate_is_taken_from_the_timestamps(seq, tmp_path):
    path = _timed_json(seq, tmp_path / "a.json", np.arange(seq.n_frames) / 25.0, None)
    [got] = list(iter_sequences(path))
    assert got.fps == 25.0 and got.meta["conventions"]["fps"]["source"] == "data"


@pytest.mark.parametrize("fps", [None, 30.0])
def test_timestamps_in_milliseconds_are_named(seq, tmp_path, fps):
    path = _timed_json(seq, tmp_path / "a.json", np.arange(seq.n_frames) * 1000 / 30.0, fps)
    [err] = list(iter_sequences(path))
    assert isinstance(err, SequenceError)
    assert err.kind == ("bad_timestamps" if fps is None else "contradicts_data")
    assert "look like milliseconds (30 frames per second" in err.reason


def test_session_timestamps_are_read_and_checked(tmp_path):
    session, _ = make_session("u1", "squat", ["correct"], seed=2)
    n = session.n_frames
    path = write_session(session, tmp_path / "s.json")
    doc = json.loads(path.read_text())
    for stamps, fps, problem in [(np.arange(n) / 30.0, 15.0, "declared 15, but the data says 30"),
                                 (np.arange(n)[::-1] / 30.0, 30.0, "do not increase"),
                                 (np.r_[0.0, np.arange(n - 1) / 30.0], 30.0, "do not increase"),
                                 (np.arange(n - 1) / 30.0, 30.0, f"{n - 1} for {n} frames")]:
        path.write_text(json.dumps({**doc, "fps": fps, "timestamps": stamps.tolist()}))
        with pytest.raises(SequenceError, match=problem):
            read_session(path)
    path.write_text(json.dumps({**doc, "fps": 15.0, "timestamps": (np.arange(n) / 30).tolist()}))
    assert read_session(path, fps=15.0).fps == 15.0


def test_npz_timestamps_are_read_and_checked(seq, tmp_path):
    session, _ = make_session("u2", "squat", ["correct"], seed=2)
    for item, name, write, read in [
            (seq, "labelled.npz", write_sequence_npz, lambda p: list(iter_sequences(p))[0]),
            (session, "upload.npz", write_session, read_session)]:
        path = write(item, tmp_path / name)
        with np.load(path) as z:
            arrays = dict(z)
        stamps = np.arange(item.n_frames) / 30.0
        np.savez(path, **{**arrays, "fps": np.array(15.0), "timestamps": stamps})
        try:
            got = read(path)
        except SequenceError as e:
            got = e
        assert isinstance(got, SequenceError) and got.kind == "contradicts_data", name
        assert "declared 15, but the data says 30" in got.reason
        np.savez(path, **{k: v for k, v in arrays.items() if k != "fps"}, timestamps=stamps)
        got = read(path)
        assert got.fps == 30.0 and got.meta["conventions"]["fps"]["source"] == "data", name


def _csv(seq, path: Path, header: list[str], rows: np.ndarray, fields: str) -> Path:
    lines = [fields, ",".join(header)] + [",".join(f"{v:.6f}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_timestamp_column_is_checked_as_json_timestamps_are(seq, tmp_path):
    flat = np.asarray(seq.poses, np.float64).reshape(seq.n_frames, -1)
    header = ["timestamp", *coordinate_columns("ec3d19")]
    fields = "# skeleton: ec3d19\n# units: m\n# subject: s1\n# exercise: squat\n# label: correct"
    times = np.arange(seq.n_frames) / 50.0
    told = _csv(seq, tmp_path / "told.csv", header, np.c_[times, flat], fields)
    [got] = list(iter_sequences(told))
    assert got.fps == 50.0 and got.meta["conventions"]["fps"]["source"] == "data"
    np.testing.assert_allclose(got.poses, seq.poses, atol=1e-5)
    wrong = _csv(seq, tmp_path / "wrong.csv", header, np.c_[times, flat], fields + "\n# fps: 30")
    [err] = list(iter_sequences(wrong))
    assert isinstance(err, SequenceError) and err.kind == "contradicts_data"
    back = _csv(seq, tmp_path / "back.csv", header, np.c_[times[::-1], flat], fields)
    [err] = list(iter_sequences(back))
    assert isinstance(err, SequenceError) and "do not increase" in err.reason


def test_a_gap_no_frame_rate_accounts_for_is_bad_timestamps(tmp_path):
    """The median step would hide one wild gap (a last frame 30,000 years on); a few dropped
    frames pass, and tell the rate."""
    session, _ = make_session("u1", "squat", ["correct"], seed=2)
    n = session.n_frames
    path = write_session(session, tmp_path / "s.json")
    doc = json.loads(path.read_text())
    for fps in (None, 30.0):
        stamps = np.r_[np.arange(n - 1) / 30.0, 1e12]
        path.write_text(json.dumps({**doc, "fps": fps, "timestamps": stamps.tolist()}))
        with pytest.raises(SequenceError) as err:
            read_session(path)
        assert err.value.kind == "bad_timestamps" and str(path) in str(err.value)
        assert f"at frame {n - 1}" in err.value.reason and "median step" in err.value.reason
    dropped = np.r_[np.arange(100), np.arange(108, n + 8)] / 30.0  # 8 frames lost at once
    path.write_text(json.dumps({**doc, "fps": None, "timestamps": dropped.tolist()}))
    assert read_session(path).fps == 30.0
