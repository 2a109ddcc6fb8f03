"""Drift: a batch with stances 30 % wider raises drift on stance width; a batch of the same
size from the same subjects does not; a changed class mix is seen."""

import warnings

import numpy as np
import pytest

from model.data.normalize import Normalization, normalize_many
from model.data.skeletons import get_skeleton
from model.data.synth import make_dataset
from model.evaluate.drift import Observation, compare, mix_psi, psi
from model.evaluate.features import movement_features, movement_features_many

NORM = Normalization()
JOINTS = get_skeleton("ec3d19").joints
LEGS = [i for i, j in enumerate(JOINTS) if any(k in j for k in ("ankle", "knee", "toe", "heel"))]


def observations(seqs, widen: float = 1.0, label=None) -> list[Observation]:
    out = []
    for s, (poses, _) in zip(seqs, normalize_many(seqs, NORM), strict=True):
        poses = poses.copy()
        poses[:, LEGS, 1] *= widen  # y runs across the body once it faces +x
        out.append(Observation(s.exercise, label or s.label,
                               movement_features(poses, JOINTS, NORM.fps)))
    return out


@pytest.fixture(scope="module")
def halves():
    seqs = make_dataset(4, 8, seed=0)
    return ([s for s in seqs if s.rep % 2 == 0], [s for s in seqs if s.rep % 2 == 1])


def test_wider_stance_drifts_and_the_same_population_does_not(halves):
    train_seqs, later = halves
    train = observations(train_seqs)
    same = compare(train, observations(later))
    wide = compare(train, observations(later, widen=1.3))
    assert [d.drifted for d in same] == [[], [], []]
    assert all("stance_m" in d.drifted for d in wide)
    squat = next(d for d in wide if d.exercise == "squat")
    stance = next(f for f in squat.features if f.feature == "stance_m")
    assert stance.scored_median == pytest.approx(1.3 * stance.train_median, rel=0.15)


def test_a_changed_class_mix_is_drift(halves):
    train_seqs, later = halves
    train = observations(train_seqs)
    squats = [s for s in later if s.exercise == "squat"]
    all_inward = compare(train, observations(squats, label="knees_inward"))
    squat = next(d for d in all_inward if d.exercise == "squat")
    assert "class mix" in squat.drifted and squat.scored_mix == {"knees_inward": len(squats)}
    scored = {d.exercise: d.n_scored for d in all_inward}
    assert scored == {"lunge": 0, "plank": 0, "squat": len(squats)}


def test_psi_is_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    assert psi(x, x) == pytest.approx(0.0, abs=1e-9)
    assert psi(x, x + 1.0) > 0.25 > psi(x, rng.normal(size=5000))
    assert mix_psi({"a": 10, "b": 10}, {"a": 10, "b": 10}) == pytest.approx(0.0)


def test_features_of_a_known_motion():
    frames = 60
    poses = np.zeros((frames, len(JOINTS), 3))
    idx = {j: i for i, j in enumerate(JOINTS)}
    poses[:, idx["l_ankle"]] = [0.0, 0.2, -0.9]
    poses[:, idx["r_ankle"]] = [0.0, -0.2, -0.9]
    poses[:, idx["neck"]] = [0.5, 0.0, 0.5]  # 45 degrees from the vertical
    poses[:, idx["l_ankle"], 2] += np.linspace(0.0, 0.4, frames)  # hips 0.4 m lower at the end
    f = movement_features(poses, JOINTS, 30.0)
    assert f["duration_s"] == pytest.approx(2.0)
    assert f["stance_m"] == pytest.approx(0.4)
    assert f["depth_m"] == pytest.approx(0.2)  # the mean of the two ankles moved by 0.2
    assert f["trunk_lean_deg"] == pytest.approx(45.0)


def test_features_of_many_repetitions_together_are_each_ones_features():
    seqs = make_dataset(2, 2, seed=3)
    poses = [p for p, _ in normalize_many(seqs, NORM)]
    gappy = poses[0].copy()
    gappy[3, 2, 1] = np.nan  # a gap: its statistics skip NaN
    wide = poses[1].astype(np.float64)  # another dtype: computed in its own precision
    both = [*poses, gappy, wide, poses[2][:11], poses[3][:12]]
    assert movement_features_many(both, JOINTS, NORM.fps) == [
        movement_features(p, JOINTS, NORM.fps) for p in both]


def nan_reference(poses: np.ndarray, fps: float) -> dict[str, float]:
    """The features written out with numpy's nan-statistics, one repetition at a time."""
    idx = {j: i for i, j in enumerate(JOINTS)}
    with warnings.catch_warnings():  # "Mean of empty slice" for the frames without ankles
        warnings.simplefilter("ignore", RuntimeWarning)
        height = -np.nanmean(poses[:, [idx["l_ankle"], idx["r_ankle"]], 2], axis=1)
        trunk = poses[:, idx["neck"]] - poses[:, idx["mid_hip"]]
        lean = np.arccos(np.clip(trunk[:, 2] / np.linalg.norm(trunk, axis=1), -1, 1))
        ranges = np.linalg.norm(np.nanmax(poses, 0) - np.nanmin(poses, 0), axis=1)
    return {"duration_s": len(poses) / fps,
            "depth_m": np.nanmax(height) - np.nanmin(height),
            "stance_m": np.nanmedian(np.abs(poses[:, idx["l_ankle"], 1]
                                            - poses[:, idx["r_ankle"], 1])),
            "trunk_lean_deg": np.degrees(np.nanmedian(lean)),
            **{f"rom_{j}_m": ranges[i] for j, i in idx.items()}}


def test_features_skip_gaps_as_numpys_nan_statistics_do():
    seqs = make_dataset(1, 2, seed=5)
    poses = [p.astype(np.float64) for p, _ in normalize_many(seqs, NORM)][:3]
    gappy = poses[0].copy()
    gappy[::3, JOINTS.index("l_ankle")] = np.nan  # one ankle missing in a third of the frames
    gappy[5:9] = np.nan  # whole frames missing
    gappy[:, JOINTS.index("r_wrist")] = np.nan  # a joint never seen
    found = movement_features_many([gappy, poses[1], gappy[:14]], JOINTS, NORM.fps)
    for got, p in zip(found, [gappy, poses[1], gappy[:14]], strict=True):
        want = nan_reference(p, NORM.fps)
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-9, nan_ok=True), name
    assert np.isnan(found[0]["rom_r_wrist_m"]) and np.isfinite(found[0]["depth_m"])
    assert movement_features(gappy[:0], JOINTS, NORM.fps) == {"duration_s": 0.0}
