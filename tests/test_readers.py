"""iter_sequences and read_session: dispatch, declarations, bad files, real UI-PRMD."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.data import readers
from model.data.formats import (
    load_json,
    write_sequence_csv,
    write_sequence_npz,
    write_sequences_json,
    write_session,
)
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError, validate
from model.data.synth import make_dataset, make_session, write_broken_sessions

UIPRMD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ui-prmd"


@pytest.fixture(scope="module")
def seqs():
    return make_dataset(n_subjects=1, reps=1, seed=21, exercises=("squat",))


def _headerless_csv(seq, path: Path) -> Path:
    flat = seq.poses.reshape(seq.n_frames, -1) * 1000.0
    path.write_text("\n".join(",".join(f"{v:.3f}" for v in row) for row in flat) + "\n")
    return path


def test_folder_yields_every_good_sequence_and_one_error_per_bad_file(tmp_path, seqs):
    write_sequences_json(seqs[:2], tmp_path / "two.json")
    write_sequence_npz(seqs[2], tmp_path / "sub" / "one.npz")
    write_sequence_csv(seqs[3], tmp_path / "sub" / "one.csv.gz")
    bad = {
        "broken.json": b'{"poses": [[[1, 2',
        "notes.xlsx": b"PK\x03\x04",
        "fake.npz": b"not a zip",
        "words.csv": b"# skeleton: ec3d19\n1,2,three\n",
        "ten.csv": b"1,2,3,4,5,6,7,8,9,10\n",
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "README.md").write_text("documentation is skipped")
    out = list(iter_sequences(tmp_path))
    good = [o for o in out if not isinstance(o, SequenceError)]
    errors = [o for o in out if isinstance(o, SequenceError)]
    assert len(good) == 4 and all(validate(s) for s in good)
    assert sorted(Path(e.source).name for e in errors) == sorted(bad)
    kinds = {Path(e.source).name: e.kind for e in errors}
    assert kinds["broken.json"] == "bad_json" and kinds["notes.xlsx"] == "unknown_format"
    assert kinds["fake.npz"] == "unreadable" and kinds["ten.csv"] == "bad_shape"
    assert all(str(tmp_path) in str(e) for e in errors)


@pytest.mark.parametrize("content,kind", [
    (b"\xff\xfe\x00garbage", "bad_json"),
    (b"[1, 2, 3]", "bad_layout"),
    (b'{"sequences": 5}', "bad_layout"),
])
def test_a_bad_file_read_alone_raises_naming_it(tmp_path, content, kind):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(path))
    assert err.value.kind == kind and str(path) in str(err.value)


def test_missing_path_and_unknown_declaration(tmp_path):
    with pytest.raises(SequenceError, match="no such file"):
        list(iter_sequences(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="colour"):
        list(iter_sequences(tmp_path, colour="red"))
    with pytest.raises(SequenceError, match="unknown layout"):
        list(iter_sequences(_headerless_csv(make_dataset(1, 1)[0], tmp_path / "x.csv"),
                            layout="kinect-lab"))


def test_missing_fields_are_named_per_sequence(tmp_path, seqs):
    path = _headerless_csv(seqs[0], tmp_path / "bare.csv")
    (err,) = list(iter_sequences(path))
    assert isinstance(err, SequenceError) and err.kind == "missing_field"
    for field in ("skeleton", "fps", "subject", "exercise", "label"):
        assert field in err.reason


def test_manifest_pattern_and_declared_options(tmp_path, seqs):
    folder = tmp_path / "lab"
    for seq in seqs[:4]:
        name = f"{seq.label}/p{seq.subject[1:]}-take{seq.rep + 4}.csv"
        (folder / seq.label).mkdir(parents=True, exist_ok=True)
        _headerless_csv(seq, folder / name)
    manifest = {"skeleton": "ec3d19", "units": "mm", "fps": 30, "exercise": "squat",
                "pattern": r"/(?P<label>[a-z_]+)/(?P<subject>p\d+)-take(?P<rep>\d+)\.csv$"}
    (folder / "posecoach.json").write_text(json.dumps(manifest))
    out = list(iter_sequences(folder))
    assert all(not isinstance(o, SequenceError) for o in out) and len(out) == 4
    by_label = {s.label: s for s in out}
    for seq in seqs[:4]:
        got = by_label[seq.label]
        assert (got.subject, got.rep, got.units, got.exercise) == ("p1", seq.rep + 4, "mm",
                                                                    "squat")
        assert np.allclose(validate(got).poses / 1000.0, seq.poses, atol=1e-5, equal_nan=True)
    declared = list(iter_sequences(folder, fps=60.0, exercise="lunge"))
    assert {s.fps for s in declared} == {60.0} and {s.exercise for s in declared} == {"lunge"}


def test_fields_in_the_file_win_over_declared_ones_but_not_over_a_forced_rate(tmp_path, seqs):
    path = write_sequence_npz(seqs[0], tmp_path / "x.npz")
    (got,) = list(iter_sequences(path, subject="someone", exercise="lunge"))
    assert (got.subject, got.exercise) == (seqs[0].subject, seqs[0].exercise)
    (forced,) = list(iter_sequences(path, fps=100.0))  # --fps overrides, as --up and --units do
    assert forced.fps == 100.0
    assert forced.meta["conventions"]["fps"] == {"value": 100.0, "source": "option"}


def test_pattern_that_does_not_match_is_an_error(tmp_path, seqs):
    path = _headerless_csv(seqs[0], tmp_path / "odd-name.csv")
    declared = dict(pattern=r"take(?P<rep>\d+)", skeleton="ec3d19", units="mm", fps=30,
                    subject="a", exercise="squat", label="x")
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(path, **declared))
    assert err.value.kind == "pattern_mismatch" and str(path) in str(err.value)
    (in_folder,) = list(iter_sequences(tmp_path, **declared))
    assert isinstance(in_folder, SequenceError) and in_folder.kind == "pattern_mismatch"


def test_a_pattern_is_searched_in_the_absolute_path_from_any_folder(tmp_path, seqs,
                                                                    monkeypatch):
    folder = tmp_path / "lab"
    for seq in seqs[:3]:
        (folder / seq.label).mkdir(parents=True, exist_ok=True)
        _headerless_csv(seq, folder / seq.label / f"p1_take{seq.rep + 4}.csv")
    declared = dict(skeleton="ec3d19", units="mm", fps=30, exercise="squat",
                    pattern=r"/(?P<label>[a-z_]+)/(?P<subject>p\d+)_take(?P<rep>\d+)\.csv$")
    monkeypatch.chdir(folder)
    for seq in seqs[:3]:  # each label folder given as typed from inside the export
        [got] = list(iter_sequences(Path(seq.label), **declared))
        assert not isinstance(got, SequenceError), got
        assert (got.label, got.subject, got.rep) == (seq.label, "p1", seq.rep + 4)
    file = Path(seqs[0].label) / f"p1_take{seqs[0].rep + 4}.csv"
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(file, **{**declared, "pattern": r"/(?P<subject>q\d+)_"}))
    assert err.value.kind == "pattern_mismatch"
    assert f"path {(folder / file).as_posix()!r} does not match" in err.value.reason


def test_every_broken_upload_is_a_clear_session_error(tmp_path):
    written = write_broken_sessions(tmp_path, 12, seed=2)
    assert len({w["problem"] for w in written}) == 12
    for w in written:
        with pytest.raises(SequenceError) as err:
            validate(read_session(Path(w["path"])))
        assert w["path"] in str(err.value)


def test_read_session_refuses_folders_and_unknown_types(tmp_path):
    with pytest.raises(SequenceError, match="one file"):
        read_session(tmp_path)
    (tmp_path / "s.mp4").write_bytes(b"\x00")
    with pytest.raises(SequenceError, match="unknown session file type"):
        read_session(tmp_path / "s.mp4")


@pytest.mark.skipif(not UIPRMD.is_dir(), reason=f"UI-PRMD copy not found at {UIPRMD}")
@pytest.mark.parametrize("declared", [{}, {"layout": "uiprmd"}])
def test_real_uiprmd_deep_squats(declared):
    out = list(iter_sequences(UIPRMD, **declared))
    assert not [o for o in out if isinstance(o, SequenceError)]
    seqs = [validate(s) for s in out]
    assert len(seqs) == 200
    assert sorted({s.subject for s in seqs}) == [f"s{k:02d}" for k in range(1, 11)]
    assert Counter(s.label for s in seqs) == {"correct": 100, "incorrect": 100}
    assert {(s.skeleton, s.units, s.fps, s.exercise) for s in seqs} == {
        ("vicon39", "mm", 100.0, "squat")}
    assert {s.rep for s in seqs} == set(range(1, 11))
    assert len({s.sequence_id for s in seqs}) == 200
    head = seqs[0].poses[:, 0, 2]  # LFHD, millimetres above the floor
    assert 1300 < head[0] < 1900  # standing at the start


def _session_folder(tmp_path: Path, n: int) -> list[Path]:
    return [write_session(make_session(f"u{k}", "squat", ["correct"], seed=k)[0],
                          tmp_path / "uploads" / f"u{k}.json") for k in range(n)]


def test_a_folder_manifest_is_parsed_once_per_version(tmp_path, monkeypatch):
    paths = _session_folder(tmp_path, 3)
    manifest = tmp_path / "uploads" / "posecoach.json"
    manifest.write_text(json.dumps({"units": "m"}))
    parsed = []
    monkeypatch.setattr(readers, "load_json", lambda p: parsed.append(p) or load_json(p))
    assert {read_session(p).units for p in paths} == {"m"}
    assert parsed == [manifest]
    manifest.write_text(json.dumps({"units": "m", "segmented": True}))  # a new version
    assert read_session(paths[0]).meta["segmented"] and parsed == [manifest, manifest]


def test_a_folder_manifest_is_bounded_as_any_json_input(tmp_path, monkeypatch):
    [path] = _session_folder(tmp_path, 1)
    manifest = tmp_path / "uploads" / "posecoach.json"
    manifest.write_bytes(b'{"units": "m"' + b" " * (3 << 19) + b"}")  # 1.5 MiB of text
    monkeypatch.setenv("POSECOACH_LIMIT_MAX_TEXT_MB", "1")
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "too_large" and str(manifest) in str(err.value)
    (refused,) = iter_sequences(path.parent)  # ingest reads manifests the same way
    assert refused.kind == "too_large" and str(manifest) in refused.reason
