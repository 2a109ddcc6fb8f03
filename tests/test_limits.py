"""Resource bombs: files that decompress to gigabytes, declare ten million frames, nest JSON
100,000 deep or hold millions of empty JSON lists are refused before they are read whole, each
with its kind; a child process reading any one of them peaks under 2 GiB; a batch holding them
goes on, and ingest quarantines them. JSON with more lists than poses hold is refused before it is
parsed, and NPZ headers claiming more than the limits before any array is allocated."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flows.ingest import ingest_flow, quarantine_dir, read_errors
from model.data import formats, limits
from model.data.formats import (
    write_sequence_csv,
    write_sequence_npz,
    write_sequences_json,
    write_session,
)
from model.data.hostile import Bomb, read_in_child, write_bombs
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError
from model.data.synth import make_dataset, make_session

GIB = 1 << 30


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Bomb]:
    return {b.problem: b for b in write_bombs(tmp_path_factory.mktemp("bombs"))}


@pytest.mark.parametrize("index", range(9))
def test_a_bomb_is_refused_with_its_kind_and_memory_stays_bounded(bombs, index) -> None:
    bomb = list(bombs.values())[index]
    kinds, peak = read_in_child(bomb.mode, bomb.path)
    assert kinds == [bomb.kind]
    assert peak < 2 * GIB, f"{bomb.problem}: peak RSS {peak / GIB:.2f} GiB"


def test_limits_are_settings(tmp_path) -> None:
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    path = write_sequences_json([seq], tmp_path / "one.json")
    assert read_in_child("labelled", path)[0] == ["accepted"]
    frames = {"POSECOACH_LIMIT_MAX_FRAMES": str(seq.n_frames - 1)}
    assert read_in_child("labelled", path, frames)[0] == ["too_large"]
    assert read_in_child("labelled", path, {"POSECOACH_LIMIT_MAX_TEXT_MB": "0"})[0] == ["too_large"]


def test_the_batch_goes_on_past_every_bomb(bombs, tmp_path) -> None:
    folder = next(b.path.parent for b in bombs.values() if b.mode == "labelled")
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    write_sequences_json([seq], folder / "good.json")
    try:
        items = list(iter_sequences(folder))
    finally:
        (folder / "good.json").unlink()
    errors = {Path(e.source).name: e.kind for e in items if isinstance(e, SequenceError)}
    assert errors == {b.path.name: b.kind for b in bombs.values() if b.mode == "labelled"}
    assert [s.subject for s in items if not isinstance(s, SequenceError)] == [seq.subject]
    for bomb in bombs.values():
        if bomb.mode == "session":
            with pytest.raises(SequenceError) as err:
                read_session(bomb.path)
            assert err.value.kind == bomb.kind and str(bomb.path) in str(err.value)


def test_ingest_quarantines_every_bomb_with_its_kind(prefect_api, bombs) -> None:
    folder = next(b.path.parent for b in bombs.values() if b.mode == "labelled")
    expected = {b.path.name: b.kind for b in bombs.values() if b.mode == "labelled"}
    report = ingest_flow([str(folder)], "bombs")
    assert report.accounted and report.inserted == 0
    assert report.rejected_by_kind == {"too_large": len(expected) - 1, "too_deep": 1}
    records = read_errors(quarantine_dir("bombs"))
    assert {Path(r["file"]).name: r["kind"] for r in records} == expected
    assert all(Path(r["file"]).is_file() and r["reason"] for r in records)


FIELDS = {"skeleton": "ec3d19", "units": "m", "fps": 30.0, "subject": "s1", "exercise": "squat",
          "label": "correct"}


def _json_with_poses(poses_text: bytes) -> bytes:
    return json.dumps({"format": "posecoach-sequence", **FIELDS})[:-1].encode() + (
        b', "poses": ' + poses_text + b"}")


@pytest.mark.parametrize("poses", [b"[]," * 3 + b"[]", b"[[]]," * 3 + b"[[]]",
                                   b"[[0],[0]]," * 3 + b"[[0],[0]]", b'[" 0, 0, 0, 0"],[]'])
def test_json_with_more_lists_than_poses_hold_is_refused_before_parsing(
        tmp_path, monkeypatch, poses) -> None:
    monkeypatch.setattr(limits, "FREE_JSON_VALUES", 0)
    monkeypatch.setattr(formats, "_parsed", lambda *_: pytest.fail("the JSON was parsed"))
    session = tmp_path / "lists.json"
    session.write_bytes(_json_with_poses(b"[" + poses + b"]"))
    with pytest.raises(SequenceError) as err:
        read_session(session)
    assert err.value.kind == "too_large" and str(session) in str(err.value)
    assert "lists" in err.value.reason
    (refused,) = iter_sequences(tmp_path)  # ingest reads labelled JSON the same way
    assert isinstance(refused, SequenceError) and refused.kind == "too_large"


POSES_OF_NUMBERS = b"[[0,0,0],[0,0,0],[0,0,0]]," * 20  # 81 lists for 180 numbers


@pytest.mark.parametrize("filler", [b"{}", b'"a"', b'{"a":0}'])
def test_json_with_more_objects_or_strings_than_poses_hold_is_refused_before_parsing(
        tmp_path, monkeypatch, filler) -> None:
    """Objects and strings cost a parser as much as lists do: counted with them."""
    monkeypatch.setattr(limits, "FREE_JSON_VALUES", 0)
    monkeypatch.setattr(formats, "_parsed", lambda *_: pytest.fail("the JSON was parsed"))
    session = tmp_path / "filled.json"
    session.write_bytes(_json_with_poses(b"[" + POSES_OF_NUMBERS + b",".join([filler] * 40)
                                         + b"]"))
    with pytest.raises(SequenceError) as err:
        read_session(session)
    assert err.value.kind == "too_large" and "objects and strings" in err.value.reason


def test_json_with_more_numbers_than_the_limits_hold_is_refused_before_parsing(
        tmp_path, monkeypatch) -> None:
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    path = write_sequences_json([seq], tmp_path / "one.json")
    monkeypatch.setattr(limits, "FREE_JSON_VALUES", 0)
    monkeypatch.setattr(formats, "_parsed", lambda *_: pytest.fail("the JSON was parsed"))
    monkeypatch.setenv("POSECOACH_LIMIT_MAX_VALUES", str(seq.poses.size // 2))
    monkeypatch.setenv("POSECOACH_LIMIT_MAX_FRAMES", str(seq.n_frames))
    (refused,) = iter_sequences(tmp_path)
    assert refused.kind == "too_large" and "JSON numbers" in refused.reason
    assert str(path) in str(refused)


@pytest.mark.parametrize("dump", [
    lambda doc: json.dumps(doc).encode(),
    lambda doc: json.dumps(doc, indent=2).encode(),
    lambda doc: json.dumps(doc, separators=(",", ":")).encode(),
])
def test_json_poses_pass_the_list_count_however_written(tmp_path, monkeypatch, dump) -> None:
    monkeypatch.setattr(limits, "FREE_JSON_VALUES", 0)
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    poses = np.asarray(seq.poses, dtype=np.float64)
    poses[::7, 3] = np.nan  # lost joints: null, and NaN as the standard library writes it
    nested = [[[None if np.isnan(v) else -v * 1e-3 for v in joint] for joint in frame]
              for frame in poses.tolist()]
    nested[1][2] = [float("nan")] * 3
    path = tmp_path / "one.json"
    path.write_bytes(dump({"format": "posecoach-sequence", **FIELDS, "poses": nested,
                           "timestamps": (np.arange(len(poses)) / 30).tolist()}))
    (back,) = iter_sequences(path)
    assert not isinstance(back, SequenceError), back
    assert back.poses.shape == seq.poses.shape


def _npz_claiming(path: Path, member: str, shape: tuple, descr: str) -> Path:
    """An NPZ of good poses and fields, plus `member` whose header claims `shape` of `descr`
    with a few bytes behind it."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    poses = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0].poses
    arrays = {"poses": poses, **{k: np.array(v) for k, v in FIELDS.items()}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            if member.removesuffix(".npy") != key:
                buf = io.BytesIO()
                np.save(buf, value)
                zf.writestr(f"{key}.npy", buf.getvalue())
        zf.writestr(member, header.getvalue() + bytes(1024))
    return path


@pytest.mark.parametrize("member, shape, descr", [
    ("fps.npy", (10**13,), "<f8"),  # a field's header
    ("poses", (10**12, 19, 3), "<f4"),  # poses named without .npy
    ("poses.npy", (100, 19, 3), "|V10000000"),  # few values, each of 10 MB
    ("subject", (10**9,), "<U100"),
])
def test_npz_header_claims_over_the_limits_are_refused_before_reading(
        tmp_path, member, shape, descr) -> None:
    path = _npz_claiming(tmp_path / "claim.npz", member, shape, descr)
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "too_large" and str(path) in str(err.value)
    (refused,) = iter_sequences(tmp_path)  # ingest reads labelled NPZ the same way
    assert isinstance(refused, SequenceError) and refused.kind == "too_large"
    assert member in refused.reason or "frames" in refused.reason


def test_npz_arrays_over_the_limit_together_are_refused_before_reading(tmp_path,
                                                                      monkeypatch) -> None:
    """Each array under the limit, all of them over it: the limit is on their sum."""
    session, _ = make_session("u1", "squat", ["correct"], seed=1)
    path = write_session(session, tmp_path / "s.npz")
    with np.load(path) as z:
        arrays = dict(z)
    np.savez(path, **arrays, timestamps=np.zeros(session.poses.size))  # 8 bytes a value
    monkeypatch.setenv("POSECOACH_LIMIT_MAX_VALUES", str(session.poses.size))
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "too_large" and "'timestamps.npy'" in err.value.reason


LONG = "x" * 21


def _long_field(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An input of `kind` with one text field of 21 characters, and that field."""
    session, _ = make_session("u1", "squat", ["correct"], seed=1)
    labelled = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    if kind == "manifest":
        path = write_session(session, tmp_path / "s.json")
        (tmp_path / "posecoach.json").write_text(json.dumps({"up": LONG}))
        return path, "up"
    if kind.startswith("session"):
        long = replace(session, meta={**session.meta, "session_id": LONG})
        return write_session(long, tmp_path / f"s.{kind.split('.')[1]}"), "session_id"
    write = {"json": lambda s, p: write_sequences_json([s], p), "csv": write_sequence_csv,
             "npz": write_sequence_npz}[kind]
    return write(replace(labelled, subject=LONG), tmp_path / f"l.{kind}"), "subject"


@pytest.mark.parametrize("kind", ["session.json", "session.npz", "session.parquet", "json",
                                  "csv", "npz", "manifest"])
def test_a_text_field_longer_than_the_limit_is_refused_in_every_format(tmp_path, monkeypatch,
                                                                        kind) -> None:
    path, field = _long_field(tmp_path, kind)
    monkeypatch.setenv("POSECOACH_LIMIT_MAX_FIELD_CHARS", str(len(LONG) - 1))
    read = read_session if kind.startswith("session") or kind == "manifest" else (
        lambda p: list(iter_sequences(p.parent)))  # a folder: each file's error yielded
    try:
        [refused] = read(path)
    except SequenceError as e:
        refused = e
    assert isinstance(refused, SequenceError) and refused.kind == "bad_field"
    assert f"{field} is 21 characters long" in refused.reason and LONG not in str(refused)
    assert str(tmp_path / "posecoach.json" if kind == "manifest" else path) in str(refused)
