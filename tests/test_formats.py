"""Round trips of every open format and of EC3D's pickle layout."""

from __future__ import annotations

import datetime
import decimal
import gzip
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.data.conventions import checked_forced
from model.data.ec3d_pickle import safe_load, write_ec3d_pickle
from model.data.formats import (
    coordinate_columns,
    write_sequence_csv,
    write_sequence_npz,
    write_sequences_json,
    write_session,
)
from model.data.normalize import Normalization, normalize
from model.data.readers import iter_sequences, read_session
from model.data.sequence import Sequence, SequenceError, validate
from model.data.synth import make_dataset, make_session


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    out = make_dataset(n_subjects=2, reps=1, seed=11)
    out[0].poses[3, 2, :] = np.nan  # a lost joint must survive every format
    return out


def _same(a: Sequence, b: Sequence) -> None:
    assert (a.subject, a.exercise, a.label, a.rep, a.skeleton, a.units, a.fps) == (
        b.subject, b.exercise, b.label, b.rep, b.skeleton, b.units, b.fps)
    assert np.array_equal(a.poses, b.poses, equal_nan=True)
    assert a.sequence_id == b.sequence_id


@pytest.mark.parametrize("name", ["one.json", "one.npz", "one.csv", "one.csv.gz"])
def test_single_sequence_round_trip_is_exact(tmp_path, seqs, name):
    writer = {".json": lambda s, p: write_sequences_json([s], p), ".npz": write_sequence_npz,
              ".csv": write_sequence_csv, ".gz": write_sequence_csv}[Path(name).suffix]
    path = writer(seqs[0], tmp_path / name)
    (back,) = list(iter_sequences(path))
    _same(seqs[0], back)
    assert back.source == str(path)


def test_json_with_several_sequences_names_each_item(tmp_path, seqs):
    path = write_sequences_json(seqs[:5], tmp_path / "many.json")
    back = list(iter_sequences(path))
    for i, (a, b) in enumerate(zip(seqs[:5], back, strict=True)):
        _same(a, b)
        assert b.source == f"{path}#{i}"


def test_csv_layout_is_plain_text(tmp_path, seqs):
    path = write_sequence_csv(seqs[0], tmp_path / "x.csv.gz")
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert "# subject: s1" in lines and "# fps: 30.0" in lines
    header = next(line for line in lines if not line.startswith("#"))
    assert header.startswith("nose_x,nose_y,nose_z,neck_x")
    assert len(lines) == 8 + 1 + seqs[0].n_frames  # format and 7 field lines, header, frames
    lost = lines[9 + 3].split(",")  # frame 3 lost joint 2
    assert len(lost) == 57 and lost[6:9] == ["", "", ""] and "" not in lost[:6]


def test_ec3d_pickle_round_trip(tmp_path, seqs):
    path = write_ec3d_pickle(seqs, tmp_path / "data_3D.pickle")
    raw = safe_load(path)
    assert raw["poses"].shape == (sum(s.n_frames for s in seqs), 3, 25)
    assert raw["labels"].shape == (raw["poses"].shape[0], 5)
    assert np.isnan(raw["poses"][:, :, [15, 16, 17, 18, 20, 23]]).all()  # slots EC3D lacks
    back = list(iter_sequences(path))
    assert len(back) == len(seqs)
    for a, b in zip(seqs, back, strict=True):
        _same(a, b)
        assert str(path) in b.source and b.poses.flags.c_contiguous


def test_pickle_writer_refuses_what_the_layout_cannot_hold(tmp_path, seqs):
    with pytest.raises(ValueError, match="subject"):
        write_ec3d_pickle([Sequence(**{**seqs[0].__dict__, "subject": "alice"})], tmp_path / "x")
    with pytest.raises(ValueError, match="label"):
        write_ec3d_pickle([seqs[0].with_label("wobbly")], tmp_path / "x")


@pytest.mark.parametrize("suffix", ["json", "npz", "parquet"])
def test_session_round_trip(tmp_path, suffix):
    seq, _ = make_session("u3", "lunge", ["correct", "knee_passes_toe"], seed=1)
    path = write_session(seq, tmp_path / f"s.{suffix}")
    back = read_session(path)
    assert back.label is None and back.meta["session_id"] == seq.meta["session_id"]
    assert (back.meta["up"], back.meta["mirrored"]) == ("+z", False)  # told by the data
    assert (back.subject, back.exercise, back.skeleton, back.units, back.fps) == (
        "u3", "lunge", "ec3d19", "m", 30.0)
    assert np.array_equal(back.poses, seq.poses, equal_nan=True)
    assert back.source == str(path)


def test_session_without_id_takes_the_file_name(tmp_path):
    seq, _ = make_session("u4", "squat", ["correct"], seed=1)
    path = write_session(seq, tmp_path / "upload-17.json")
    doc = json.loads(path.read_text())
    del doc["session_id"]
    path.write_text(json.dumps(doc))
    assert read_session(path).meta["session_id"] == "upload-17"


def test_session_writer_refuses_unknown_suffix(tmp_path):
    seq, _ = make_session("u4", "squat", ["correct"], seed=1)
    with pytest.raises(ValueError, match=r"\.json, \.npz or \.parquet"):
        write_session(seq, tmp_path / "s.csv")


def test_a_labelled_file_without_label_is_an_error_for_that_sequence(tmp_path, seqs):
    path = write_sequences_json([seqs[0].with_label(None)], tmp_path / "nolabel.json")
    (err,) = list(iter_sequences(path))
    assert isinstance(err, SequenceError) and "label" in err.reason and str(path) in str(err)


@pytest.mark.parametrize("member, kind", [("poses.npy", "unreadable"), ("other.npy", "bad_layout")])
def test_an_npz_upload_whose_poses_are_not_an_array_is_an_error(tmp_path, member, kind):
    path = tmp_path / "s.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, b"not an array")
        zf.writestr("subject.npy", b"neither")
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == kind and str(path) in str(err.value)


def test_a_fortran_ordered_npz_is_read_in_c_order(tmp_path, seqs):
    session, _ = make_session("u5", "squat", ["correct"], seed=1)
    for item, path, read in [(session, write_session(session, tmp_path / "s.npz"), read_session),
                             (seqs[0], write_sequence_npz(seqs[0], tmp_path / "l" / "one.npz"),
                              lambda p: next(iter_sequences(p)))]:
        with np.load(path) as z:
            arrays = dict(z)
        np.savez(path, **{**arrays, "poses": np.asfortranarray(arrays["poses"])})
        back = read(path)
        assert back.poses.flags.c_contiguous
        np.testing.assert_array_equal(back.poses, item.poses)
        normalize(validate(back), Normalization())


def _zip_headers_patched(path: Path, local: int, central: int, patch: Callable) -> Path:
    """The zip archive with `patch(raw, offset)` applied at `local` bytes into every local file
    header and `central` bytes into every central directory one."""
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = raw.find(signature)
        while at >= 0:
            patch(raw, at + offset)
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


def _set_encrypted(raw: bytearray, at: int) -> None:
    raw[at] |= 1


def _set_method_99(raw: bytearray, at: int) -> None:
    raw[at:at + 2] = (99).to_bytes(2, "little")


@pytest.mark.parametrize("local, central, patch, reason", [
    (6, 8, _set_encrypted, "'poses.npy' is encrypted"),
    (8, 10, _set_method_99, "compression method is not supported"),
])
def test_an_encrypted_or_oddly_compressed_npz_is_unreadable(tmp_path, local, central, patch,
                                                            reason):
    session, _ = make_session("u5", "squat", ["correct"], seed=1)
    path = _zip_headers_patched(write_session(session, tmp_path / "s.npz"), local, central, patch)
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "unreadable" and reason in err.value.reason
    assert str(path) in str(err.value)


def test_a_parquet_upload_of_no_rows_is_a_session_of_no_frames(tmp_path):
    seq, _ = make_session("u5", "squat", ["correct"], seed=1)
    path = write_session(seq, tmp_path / "s.parquet")
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)
    back = read_session(path)
    assert back.poses.shape == (0, 19, 3)
    with pytest.raises(SequenceError) as err:
        validate(back)
    assert err.value.kind == "too_few_frames" and str(path) in str(err.value)


def _parquet_with_first_column(path: Path, make: Callable[[pa.Array], pa.Array]) -> Path:
    """A Parquet session whose first coordinate column is `make` of what it was."""
    seq, _ = make_session("u5", "squat", ["correct"], seed=1)
    table = pq.read_table(write_session(seq, path))
    first = table.column(0).combine_chunks()
    pq.write_table(table.set_column(0, table.field(0).name, make(first)), path)
    return path


@pytest.mark.parametrize("make, shown", [
    (lambda a: a.cast(pa.string()), "string"),
    (lambda a: pa.array(["1" * 1000] * len(a)).dictionary_encode(), "dictionary<values=string"),
    (lambda a: pa.array([True] * len(a)), "bool"),
    (lambda a: pa.array([decimal.Decimal("1.5")] * len(a)), "decimal128(2, 1)"),
    (lambda a: pa.array([[1.0, 2.0]] * len(a)), "list<element: double>"),
    (lambda a: pa.array([datetime.datetime(2020, 1, 1)] * len(a)), "timestamp[us]"),
])
def test_a_parquet_column_of_no_numbers_is_refused_before_any_data_is_read(
        tmp_path, monkeypatch, make, shown):
    """A string column on every row (a dictionary of one long string, say) decodes to far more
    than its footer says: the schema is checked first, naming the column and its type."""
    path = _parquet_with_first_column(tmp_path / "s.parquet", make)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *_, **__: pytest.fail("data was read"))
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "bad_dtype" and str(path) in str(err.value)
    assert f"column nose_x is {shown}" in err.value.reason
    assert ("'timestamps'" in err.value.reason) == shown.startswith("timestamp")


@pytest.mark.parametrize("number, kind", [(b"1" + b"0" * 400, "bad_field"),
                                          (b"1" + b"0" * 5000, "bad_json")])
def test_a_number_too_large_for_a_float_is_bad_input(tmp_path, seqs, number, kind):
    session, _ = make_session("u6", "squat", ["correct"], seed=1)
    upload = write_session(session, tmp_path / "sessions" / "s.json")
    labelled = write_sequences_json([seqs[0]], tmp_path / "labelled" / "one.json")
    for path in (upload, labelled):
        doc = json.loads(path.read_text())
        doc["fps"] = 30
        path.write_bytes(json.dumps(doc).encode().replace(b'"fps": 30', b'"fps": ' + number))
    with pytest.raises(SequenceError) as err:
        read_session(upload)
    (refused,) = iter_sequences(labelled.parent)
    for e, path in ((err.value, upload), (refused, labelled)):
        assert isinstance(e, SequenceError) and e.kind == kind and str(path) in str(e)
        assert ("fps" if kind == "bad_field" else "digits") in e.reason



@pytest.mark.parametrize("suffix", ["json", "npz", "parquet"])
def test_a_boolean_is_not_a_frame_rate(tmp_path, suffix):
    session, _ = make_session("u6", "squat", ["correct"], seed=1)
    path = write_session(session, tmp_path / f"s.{suffix}")
    if suffix == "json":
        path.write_text(json.dumps({**json.loads(path.read_text()), "fps": True}))
    elif suffix == "npz":
        with np.load(path) as z:
            np.savez(path, **{**dict(z), "fps": np.array(True)})
    else:
        table = pq.read_table(path)
        fields = json.loads(table.schema.metadata[b"posecoach"])
        pq.write_table(table.replace_schema_metadata(
            {"posecoach": json.dumps({**fields, "fps": True})}), path)
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "bad_field" and err.value.reason.startswith("fps True is not")
    assert str(path) in str(err.value)


def test_a_frame_rate_too_large_for_a_float_is_refused_for_a_pickle_and_an_option(tmp_path,
                                                                                 seqs):
    folder = tmp_path / "pk"
    write_ec3d_pickle(seqs[:2], folder / "data_3D.pickle")
    (folder / "posecoach.json").write_text('{"fps": 1' + "0" * 400 + "}")
    [err] = list(iter_sequences(folder))
    assert err.kind == "bad_field" and err.source == str(folder / "data_3D.pickle")
    assert err.reason.startswith("fps 1000")
    with pytest.raises(SequenceError) as raised:
        checked_forced({"fps": 10**400}, "the options")
    assert raised.value.kind == "bad_fps" and "the options" in str(raised.value)

def _kinect_csv(path: Path, header: list[str], columns: int) -> Path:
    rows = np.random.default_rng(0).normal(size=(12, columns))
    lines = ["# skeleton: kinect2", "# fps: 30", ",".join(header),
             *(",".join(f"{v:.4f}" for v in r) for r in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_csv_header_of_another_tools_names_shows_expected_and_found(tmp_path):
    names = ["SpineBase", "SpineMid", "Neck", *(f"Joint{i}" for i in range(22))]
    header = [f"{j}_{c}" for j in names for c in "xyz"]
    with pytest.raises(SequenceError) as raised:
        list(iter_sequences(_kinect_csv(tmp_path / "k.csv", header, 75)))
    err = raised.value
    assert err.kind == "bad_header" and "k.csv" in str(err)
    assert "column 1 is 'SpineBase_x', expected 'spine_base_x'" in err.reason
    assert "found SpineBase_x, SpineBase_y" in err.reason and "--layout-file" in err.reason


def test_a_csv_column_that_is_no_coordinate_is_named(tmp_path):
    header = ["frame", *coordinate_columns("kinect2")]
    with pytest.raises(SequenceError) as raised:
        list(iter_sequences(_kinect_csv(tmp_path / "k.csv", header, 76)))
    err = raised.value
    assert err.kind == "bad_shape" and "76 columns" in err.reason
    assert "columns frame are not joint coordinates" in err.reason and "timestamp" in err.reason
    path = tmp_path / "bare.csv"
    path.write_text("\n".join(_kinect_csv(tmp_path / "k.csv", header, 76).read_text()
                              .splitlines()[3:]))
    with pytest.raises(SequenceError, match="needs a header naming it timestamp"):
        list(iter_sequences(path, skeleton="kinect2", fps=30))


def test_per_joint_confidence_columns_are_read_past_and_named(tmp_path):
    joints = [c[:-2] for c in coordinate_columns("mediapipe33")[::3]]
    extra = ("visibility", "presence")
    header = [f"{j}_{c}" for j in joints for c in ("x", "y", "z", *extra)]
    rows = np.random.default_rng(1).normal(size=(12, len(header)))
    path = tmp_path / "mp.csv"
    path.write_text("\n".join(["# skeleton: mediapipe33", "# fps: 30", "# units: m", "# up: -y",
                               ",".join(header),
                               *(",".join(f"{v:.4f}" for v in r) for r in rows)]) + "\n")
    [seq] = list(iter_sequences(path, subject="u", exercise="squat", label="correct"))
    assert not isinstance(seq, SequenceError), seq
    coords = [i for i, c in enumerate(header) if c[-2:] in ("_x", "_y", "_z")]
    np.testing.assert_allclose(seq.poses.reshape(12, -1), rows[:, coords], atol=1e-4)
    assert seq.meta["ignored_columns"] == [c for c in header if c.endswith(extra)]
    odd = [c.replace("nose_visibility", "nose_quality") for c in header]
    path.write_text(path.read_text().replace(",".join(header), ",".join(odd)))
    with pytest.raises(SequenceError) as raised:
        list(iter_sequences(path, subject="u", exercise="squat", label="correct"))
    err = raised.value
    assert err.kind == "bad_shape" and "columns nose_quality are not" in err.reason
    assert "<joint>_visibility|_presence|_confidence|_score" in err.reason and "drop" in err.reason


def test_an_unknown_skeleton_says_where_a_layout_comes_from():
    bad = Sequence(poses=np.zeros((20, 33, 3), np.float32), subject="u", exercise="squat",
                   skeleton="mediapipe_pose", source="u.json")
    with pytest.raises(SequenceError, match="unknown skeleton 'mediapipe_pose'") as err:
        validate(bad)
    assert "--layout-file" in err.value.reason and "layout_file" in err.value.reason
