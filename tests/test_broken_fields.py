"""Required fields that are null, None or empty are named in the error; exact zero joints are lost
joints where the source says so (EC3D, the openpose layout, zeros_lost) and nowhere else;
degenerate sequences have their own kinds; gzip'd EC3D pickles go through the same unpickler."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.data.ec3d_pickle import write_ec3d_pickle
from model.data.formats import write_sequence_npz, write_sequences_json, write_session
from model.data.readers import iter_sequences, read_session
from model.data.sequence import Sequence, SequenceError, validate, validate_many
from model.data.synth import make_dataset, make_session


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    return make_dataset(n_subjects=2, reps=1, seed=4, exercises=("squat",))


def _ec3d_doc(seqs: list[Sequence], tmp_path: Path) -> dict:
    path = write_ec3d_pickle(seqs, tmp_path / "src.pickle")
    with open(path, "rb") as f:
        return pickle.load(f)  # our own file, written just above


def _errors(path: Path, **declared) -> list[SequenceError]:
    return [x for x in iter_sequences(path, **declared) if isinstance(x, SequenceError)]


@pytest.mark.parametrize("empty", [None, "", "  ", float("nan")])
@pytest.mark.parametrize("column", ["subject", "exercise", "label", "rep"])
def test_ec3d_labels_with_an_empty_field_name_it(seqs, tmp_path, empty, column) -> None:
    doc = _ec3d_doc(seqs, tmp_path)
    labels = doc["labels"].astype(object)
    labels[:, ("exercise", "subject", "label", "rep").index(column)] = empty
    path = tmp_path / "empty.pickle"
    path.write_bytes(pickle.dumps({"poses": doc["poses"], "labels": labels}))
    out = list(iter_sequences(path))
    assert out and all(isinstance(x, SequenceError) for x in out)
    assert {x.kind for x in out} == {"missing_field"}
    assert all(column in x.reason and str(path) in str(x) for x in out)


def test_ec3d_labels_as_a_string_array_read_and_a_bad_cell_is_named(seqs, tmp_path) -> None:
    doc = _ec3d_doc(seqs, tmp_path)
    text = doc["labels"].astype(str)  # "0", "1", ...: whole numbers written as text
    path = tmp_path / "text.pickle"
    path.write_bytes(pickle.dumps({"poses": doc["poses"], "labels": text}))
    got = [x for x in iter_sequences(path) if not isinstance(x, SequenceError)]
    assert len(got) == len(seqs) and {(s.exercise, s.label) for s in got} == {
        (s.exercise, s.label) for s in seqs}
    for column, bad in (("label", "1.5"), ("rep", "two"), ("exercise", "9"), ("frame", "x")):
        labels = text.astype(object)
        col = ("exercise", "subject", "label", "rep", "frame").index(column)
        labels[3:, col] = bad
        path.write_bytes(pickle.dumps({"poses": doc["poses"], "labels": labels}))
        [err, *_] = _errors(path)
        assert err.kind == "bad_labels" and str(path) in err.source
        assert f"labels row 3, column {column}: {bad!r} is not" in err.reason


@pytest.mark.parametrize("field", ["subject", "exercise", "label", "skeleton", "fps"])
@pytest.mark.parametrize("empty", [None, "", " "])
def test_json_fields_null_or_empty_are_named(seqs, tmp_path, field, empty) -> None:
    path = write_sequences_json([seqs[0]], tmp_path / "one.json")
    doc = json.loads(path.read_text())
    doc[field] = empty
    path.write_text(json.dumps(doc))
    [err] = list(iter_sequences(path))
    assert isinstance(err, SequenceError) and err.kind == "missing_field"
    assert err.reason.startswith(f"{field}: missing, null or empty")


def test_a_field_that_is_not_text_or_a_number_is_refused(seqs, tmp_path) -> None:
    path = write_sequences_json([seqs[0]], tmp_path / "one.json")
    doc = json.loads(path.read_text())
    doc["subject"] = {"$ne": None}
    path.write_text(json.dumps(doc))
    [err] = list(iter_sequences(path))
    assert err.kind == "bad_field" and "subject is dict" in err.reason
    path.write_text(path.read_text().replace('{"$ne": null}', '"\\udc80"'))
    [err] = list(iter_sequences(path))
    assert err.kind == "bad_field" and "not Unicode text" in err.reason


def test_npz_subject_nan_and_session_exercise_null_are_named(seqs, tmp_path) -> None:
    path = write_sequence_npz(seqs[0], tmp_path / "nan.npz")
    with np.load(path) as z:
        arrays = dict(z)
    np.savez(path, **{**arrays, "subject": np.array(np.nan)})
    [err] = list(iter_sequences(path))
    assert err.kind == "missing_field" and err.reason.startswith("subject:")
    session, _ = make_session("s1", "squat", ["correct"], seed=1)
    upload = write_session(session, tmp_path / "up.json")
    doc = json.loads(upload.read_text())
    doc["exercise"] = None
    upload.write_text(json.dumps(doc))
    with pytest.raises(SequenceError) as exc:
        read_session(upload)
    assert exc.value.kind == "missing_field" and exc.value.reason.startswith("exercise:")


def test_ec3d_zeros_are_lost_joints_and_all_zero_poses_have_no_joint_left(seqs, tmp_path
                                                                          ) -> None:
    doc = _ec3d_doc(seqs, tmp_path)
    some = doc["poses"].copy()
    some[::7, :, 0] = 0.0  # the nose (BODY_25 joint 0) lost in every 7th frame
    path = tmp_path / "some.pickle"
    path.write_bytes(pickle.dumps({"poses": some, "labels": doc["labels"]}))
    read = [validate(s) for s in iter_sequences(path)]
    before = [validate(s) for s in iter_sequences(tmp_path / "src.pickle")]
    assert len(read) == len(seqs)
    lost, was = (np.concatenate([np.isnan(s.poses).all(axis=-1) for s in r])
                 for r in (read, before))
    assert (lost & ~was).sum() == (~was[:, 0]).sum() - (~lost[:, 0]).sum() > 0
    assert (lost & ~was)[:, 1:].sum() == 0
    kept = np.concatenate([s.poses for s in iter_sequences(path, zeros_lost=False)])
    assert (np.isnan(kept).all(axis=-1) == was).all() and (kept[lost & ~was] == 0).all()

    zeros = tmp_path / "zeros.pickle"
    zeros.write_bytes(pickle.dumps({"poses": np.zeros_like(doc["poses"]),
                                    "labels": doc["labels"]}))
    checked = validate_many(iter_sequences(zeros))
    assert len(checked) == len(seqs)
    assert {c.kind for c in checked} == {"no_joints"}


def test_zeros_are_data_unless_the_source_says_otherwise(seqs, tmp_path) -> None:
    poses = seqs[0].poses.copy()
    poses[3, 5] = 0.0
    folder = tmp_path / "plain"
    folder.mkdir()
    write_sequences_json([replace(seqs[0], poses=poses)], folder / "one.json")
    [plain] = list(iter_sequences(folder))
    assert (plain.poses[3, 5] == 0).all()
    [declared] = list(iter_sequences(folder, zeros_lost=True))
    assert np.isnan(declared.poses[3, 5]).all() and not np.isnan(declared.poses[4]).any()
    (folder / "posecoach.json").write_text(json.dumps({"zeros_lost": "yes"}))
    [by_manifest] = list(iter_sequences(folder))
    assert np.isnan(by_manifest.poses[3, 5]).all()
    [by_layout] = list(iter_sequences(folder / "one.json", layout="openpose",
                                      skeleton="ec3d19"))
    assert np.isnan(by_layout.poses[3, 5]).all()
    (folder / "posecoach.json").write_text(json.dumps({"zeros_lost": "sometimes"}))
    [err] = list(iter_sequences(folder))
    assert err.kind == "bad_field" and "zeros_lost" in err.reason


@pytest.mark.parametrize("make, kind", [
    (lambda p: np.full_like(p, np.nan), "no_joints"),
    (lambda p: np.zeros_like(p), "collapsed"),
    (lambda p: np.broadcast_to(p[:, :1], p.shape).copy(), "collapsed"),
    (lambda p: np.repeat(p[:1], len(p), axis=0), "no_motion"),
])
def test_degenerate_sequences_have_their_own_kind(seqs, make, kind) -> None:
    bad = replace(seqs[0], poses=make(seqs[0].poses))
    checked = validate_many([seqs[1], bad, seqs[0]])
    assert not isinstance(checked[0], SequenceError) and not isinstance(checked[2], SequenceError)
    assert checked[1].kind == kind


@pytest.mark.parametrize("suffix", [".pickle.gz", ".pkl.gz"])
def test_gzipped_pickles_read_like_pickles_and_payloads_stay_refused(seqs, tmp_path, suffix
                                                                     ) -> None:
    plain = write_ec3d_pickle(seqs, tmp_path / "data_3D.pickle")
    packed = tmp_path / f"data_3D{suffix}"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, b = list(iter_sequences(plain)), list(iter_sequences(packed))
    assert [s.sequence_id for s in a] == [s.sequence_id for s in b] and len(b) == len(seqs)

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / f"evil{suffix}"
    evil.write_bytes(gzip.compress(pickle.dumps({"poses": Payload(), "labels": []})))
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(evil))
    assert err.value.kind == "unsafe_pickle" and not marker.exists()
    (tmp_path / f"broken{suffix}").write_bytes(b"\x1f\x8b\x08not gzip")
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(tmp_path / f"broken{suffix}"))
    assert err.value.kind == "unreadable"
