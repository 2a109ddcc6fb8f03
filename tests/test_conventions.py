"""Axes, units and handedness told by the data (model.data.conventions): a synthetic EC3D file
in any up convention, mirrored or not, in m, cm or mm, at any heading, normalises to the poses
of its z-up metres original; declarations the data contradicts are errors naming the file."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from model.data.conventions import (
    CONVENTIONS,
    ESTIMATE_FRAMES,
    UP_AXES,
    _medians_and_spreads,
    estimate,
    settle,
)
from model.data.ec3d_pickle import write_ec3d_pickle
from model.data.formats import write_sequences_json
from model.data.normalize import UP_ROTATIONS, Normalization, normalize_many
from model.data.readers import iter_sequences
from model.data.sequence import Sequence, SequenceError, validate_many
from model.data.synth import make_dataset

UNITS_SCALE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    return make_dataset(n_subjects=2, reps=1, seed=5)


def _turned(poses: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return poses @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T


def in_convention(seq: Sequence, up: str, mirrored: bool, rng: np.random.Generator
                  ) -> Sequence:
    """A z-up metres sequence at a new random heading, its up along `up`, mirrored or not."""
    poses = _turned(np.asarray(seq.poses, np.float64), rng.uniform(0, 2 * np.pi))
    poses = poses @ UP_ROTATIONS[up]  # normalize turns it back with UP_ROTATIONS[up].T
    if mirrored:
        poses[..., "xyz".index(next(a for a in "xyz" if a != up[1]))] *= -1.0
    return replace(seq, poses=poses.astype(np.float32))


def _read(path: Path, **declared: object) -> list[Sequence]:
    out = list(iter_sequences(path, **declared))
    errors = [o for o in out if isinstance(o, SequenceError)]
    assert not errors, errors[:3]
    checked = validate_many(out)
    assert not [c for c in checked if isinstance(c, SequenceError)]
    return checked


@pytest.fixture(scope="module")
def reference(seqs, tmp_path_factory) -> dict[str, list[np.ndarray]]:
    path = write_ec3d_pickle(seqs, tmp_path_factory.mktemp("ref") / "z_up_m.pickle")
    read = _read(path)
    assert {s.units for s in read} == {"m"} and {s.meta["up"] for s in read} == {"+z"}
    return {"plain": [p for p, _ in normalize_many(read, Normalization())],
            "scaled": [p for p, _ in normalize_many(read, Normalization(scale_by_body=True))]}


@pytest.mark.parametrize("up,mirrored,units", list(product(UP_AXES, (False, True),
                                                          UNITS_SCALE)))
def test_any_convention_normalises_to_the_z_up_metres_poses(seqs, reference, tmp_path, up,
                                                            mirrored, units):
    rng = np.random.default_rng([UP_AXES.index(up), mirrored, len(units)])
    moved = [in_convention(s, up, mirrored, rng) for s in seqs]
    path = write_ec3d_pickle(moved, tmp_path / f"{up}-{mirrored}-{units}.pickle", units=units)
    read = _read(path)
    assert {s.meta["up"] for s in read} == {up}
    assert {s.meta["mirrored"] for s in read} == {mirrored}
    assert {s.units for s in read} == {units}
    record = read[0].meta[CONVENTIONS]
    assert {record[f]["source"] for f in ("up", "units")} == {"data"}
    for key, norm in (("plain", Normalization()), ("scaled", Normalization(scale_by_body=True))):
        got = [p for p, _ in normalize_many(read, norm)]
        for a, b in zip(got, reference[key], strict=True):
            np.testing.assert_allclose(a, b, atol=2e-5, equal_nan=True)


def test_planks_alone_tell_their_up(seqs):
    planks = [in_convention(s, "-y", False, np.random.default_rng(1)) for s in seqs
              if s.exercise == "plank"][:1]
    est = estimate(planks)
    assert (est.up, est.units, est.mirrored) == ("-y", "m", False)


def _as_y_up(seqs: list[Sequence]) -> list[Sequence]:
    rng = np.random.default_rng(3)
    return [in_convention(s, "+y", False, rng) for s in seqs]


def test_a_declaration_the_data_contradicts_names_the_file_and_both(seqs, tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir()
    write_ec3d_pickle(_as_y_up(seqs), folder / "y_up.pickle")
    write_ec3d_pickle(seqs, folder / "z_up.pickle")
    (folder / "posecoach.json").write_text(json.dumps({"up": "+z", "units": "m"}))
    out = list(iter_sequences(folder))
    bad = [o for o in out if isinstance(o, SequenceError)]
    good = [o for o in out if not isinstance(o, SequenceError)]
    assert len(bad) == len(good) == len(seqs)  # the batch goes on past the bad file
    err = bad[0]
    assert err.kind == "contradicts_data" and "y_up.pickle" in str(err)
    assert "'+z'" in err.reason and "'+y'" in err.reason and "--up" in err.reason
    assert all(s.meta["conventions"]["up"]["source"] == "declared" for s in good)
    forced = list(iter_sequences(folder / "y_up.pickle", up="+z"))
    assert all(not isinstance(s, SequenceError) and s.meta["up"] == "+z" for s in forced)
    assert forced[0].meta["conventions"]["up"]["source"] == "option"


def test_units_declared_against_the_data(seqs, tmp_path):
    path = write_ec3d_pickle(seqs[:4], tmp_path / "metres.pickle")
    (tmp_path / "posecoach.json").write_text(json.dumps({"units": "mm"}))
    out = list(iter_sequences(tmp_path))
    assert all(isinstance(o, SequenceError) and o.kind == "contradicts_data" for o in out)
    assert "'mm'" in out[0].reason and "'m'" in out[0].reason and "metres.pickle" in str(out[0])
    forced = list(iter_sequences(path, units="mm"))  # an option: the body 1000 times too small
    assert {o.kind for o in forced} == {"implausible_units"}
    (tmp_path / "posecoach.json").unlink()
    (tmp_path / "posecoach.json").write_text(json.dumps({"units": "m"}))
    big = write_ec3d_pickle(seqs[:4], tmp_path / "millimetres.pickle", units="mm")
    [checked] = validate_many(list(iter_sequences(big))[:1])
    assert checked.kind == "absurd_coordinates"


@pytest.mark.parametrize(("written", "forced", "suggested"),
                         [("m", "cm", "m"), ("m", "mm", "m"), ("cm", "mm", "cm"),
                          ("mm", "m", "mm"), ("cm", "m", "cm")])
def test_forced_units_that_make_the_body_impossible_are_an_error(seqs, tmp_path, written,
                                                                 forced, suggested):
    path = write_ec3d_pickle(seqs[:4], tmp_path / "poses.pickle", units=written)
    out = list(iter_sequences(path, units=forced))
    assert all(isinstance(o, SequenceError) and o.kind == "implausible_units" for o in out)
    assert "poses.pickle" in str(out[0]) and f"--units {forced} makes the body" in out[0].reason
    assert f"the data suggests units {suggested!r}" in out[0].reason


def test_forced_units_that_keep_the_body_plausible_are_taken(seqs):
    noisy = replace(seqs[0], units=None, meta={"up": "+z"},  # bones too unsteady to tell units
                    poses=seqs[0].poses * np.random.default_rng(1).uniform(
                        0.5, 1.5, size=(seqs[0].n_frames, 1, 1)).astype(np.float32))
    [forced] = settle([noisy], {"units": "m"})
    assert forced.units == "m" and forced.meta["conventions"]["units"]["source"] == "option"
    [kept] = settle(seqs[:1], {"units": "m"})
    assert kept.units == "m"


def test_what_the_data_cannot_tell_and_nobody_declared_is_an_error(seqs):
    noise = np.random.default_rng(0).normal(size=(40, 19, 3)).astype(np.float32)
    [err] = settle([replace(seqs[0], poses=noise, units=None, source="noise.json")])
    assert isinstance(err, SequenceError) and err.kind.startswith("unknown_")
    assert "noise.json" in str(err) and "not declared" in err.reason
    [declared] = settle([replace(seqs[0], poses=noise, units="m", meta={"up": "+z"})])
    assert declared.meta["up"] == "+z" and declared.units == "m"


def test_frame_rate_checked_against_timestamps(seqs, tmp_path):
    seq = seqs[0]
    path = write_sequences_json([seq], tmp_path / "timed.json")
    doc = json.loads(path.read_text())
    doc["timestamps"] = (np.arange(seq.n_frames) / 50.0).tolist()
    path.write_text(json.dumps(doc))
    [err] = list(iter_sequences(path))
    assert isinstance(err, SequenceError) and err.kind == "contradicts_data"
    assert "fps" in err.reason and "50" in err.reason
    doc["fps"] = 50.0
    path.write_text(json.dumps(doc))
    [ok] = list(iter_sequences(path))
    assert ok.meta["conventions"]["fps"]["value"] == 50.0 and "timestamps" not in ok.meta


def test_an_ec3d_pickles_rate_is_the_readers_default_unless_declared(seqs, tmp_path):
    path = write_ec3d_pickle(seqs[:2], tmp_path / "data_3D.pickle")
    manifest = tmp_path / "posecoach.json"
    for fps, source in ((None, "default"), (30, "declared"), (25, "declared")):
        if fps is not None:
            manifest.write_text(json.dumps({"fps": fps}))
        read = _read(tmp_path)
        assert {(s.meta[CONVENTIONS]["fps"]["source"], s.fps) for s in read} == {
            (source, float(fps or 30))}
        assert not [s for s in read if "defaulted" in s.meta]
    forced = _read(path, fps=30)
    assert {s.meta[CONVENTIONS]["fps"]["source"] for s in forced} == {"option"}


def test_nothing_new_declared_keeps_normalisation_unchanged(seqs):
    plain = normalize_many(seqs, Normalization())
    [settled] = [s for s in settle(seqs[:1]) if not isinstance(s, SequenceError)]
    assert settled.meta["up"] == "+z"
    np.testing.assert_array_equal(normalize_many([settled], Normalization())[0][0], plain[0][0])


@pytest.mark.parametrize("empty", [None, "", " "])
def test_units_null_or_empty_are_taken_from_the_data(seqs, tmp_path, empty):
    path = write_sequences_json([seqs[0]], tmp_path / "one.json")
    doc = json.loads(path.read_text())
    doc["units"] = empty
    path.write_text(json.dumps(doc))
    [seq] = list(iter_sequences(path))
    assert seq.units == "m" and seq.meta["conventions"]["units"]["source"] == "data"


def test_an_up_axis_that_is_no_axis_is_named(seqs):
    [err] = settle([replace(seqs[0], meta={"up": "sideways"}, source="odd.json")])
    assert isinstance(err, SequenceError) and err.kind == "bad_field"
    assert "sideways" in err.reason and "odd.json" in str(err)


def test_a_quarantined_file_is_checked_again_not_forced(seqs):
    from flows.ingest import plan, quarantine_dir
    folder = quarantine_dir("conventions")
    path = write_ec3d_pickle(_as_y_up(seqs[:2]), folder / "y_up.pickle")
    (folder / "_errors.jsonl").write_text(json.dumps(
        {"file": str(path.resolve()), "fields": {"up": "+z", "units": "m", "fps": 30}}) + "\n")
    [unit] = plan([str(path)], "conventions", {})
    assert unit.options == {"fps": 30}
    read = list(iter_sequences(path, **unit.options))
    assert read and all(not isinstance(o, SequenceError) and o.meta["up"] == "+y" for o in read)


def test_bone_statistics_skip_gaps_as_numpys_nan_statistics_do():
    rng = np.random.default_rng(4)
    for frames in (1, 2, 7, 40):
        rows = rng.normal(0.4, 0.05, size=(5, frames))
        rows[rng.random(rows.shape) < 0.3] = np.nan
        rows[2] = np.nan  # a bone never seen
        middles, spreads = _medians_and_spreads(rows)
        with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
            want_m, want_s = np.nanmedian(rows, axis=1), np.nanstd(rows, axis=1)
        np.testing.assert_allclose(middles, want_m, rtol=1e-12)
        np.testing.assert_allclose(spreads, want_s, rtol=1e-9)
    assert np.isnan(_medians_and_spreads(np.empty((5, 0)))[0]).all()


def test_a_long_session_is_estimated_from_a_bounded_number_of_its_frames(seqs):
    """Every frame of a session many times ESTIMATE_FRAMES long tells the same as the evenly
    spaced ones the estimate looks at, and only those are counted."""
    rng = np.random.default_rng(3)
    long = [in_convention(replace(s, poses=np.concatenate([s.poses] * 12)), "-y", True, rng)
            for s in seqs[:2]]
    assert min(len(s.poses) for s in long) > 4 * ESTIMATE_FRAMES
    est = estimate(long)
    assert (est.up, est.units, est.mirrored) == ("-y", "m", True)
    assert est.up_frames <= len(long) * ESTIMATE_FRAMES


def test_a_body_seen_in_few_frames_of_a_long_session_still_tells_its_conventions(seqs):
    """The frames the estimate looks at are drawn from those that show the body: 60 seen
    frames in 3,000 (the person steps in late) are all looked at."""
    rng = np.random.default_rng(4)
    seen = in_convention(seqs[0], "+x", False, rng)
    poses = np.full((3000, *seen.poses.shape[1:]), np.nan, np.float32)
    poses[-60:] = seen.poses[:60]
    est = estimate([replace(seen, poses=poses)])
    assert (est.up, est.units, est.mirrored, est.up_frames) == ("+x", "m", False, 60)
