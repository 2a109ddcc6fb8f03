"""Cutting continuous sessions into repetitions."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.data.normalize import Normalization, normalize
from model.data.readers import iter_sequences
from model.data.sequence import Sequence
from model.data.skeletons import EC3D_JOINTS
from model.serve.segment import (
    cycle_repetitions,
    excursion_repetitions,
    hold_windows,
    segment,
    segmenter,
)
from tests.test_foundation import standing_pose

UIPRMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ui-prmd"
LOWER = [EC3D_JOINTS.index(j) for j in ("l_ankle", "r_ankle", "l_heel", "r_heel", "l_big_toe",
                                        "r_big_toe")]  # fmt: skip


def session(depths, rep_frames, pause_frames, fps=30.0, seed=0, noise=0.01, stands=None):
    """Standing pauses and squats of given depths; returns poses (feet fixed) and true bounds.
    `stands`: how much lower than upright (m) the person stands in each pause before a squat."""
    rng = np.random.default_rng(seed)
    base = standing_pose()
    frames, bounds, t = [], [], 0
    upper = [i for i in range(len(EC3D_JOINTS)) if i not in LOWER]
    for k, (depth, n) in enumerate(zip(depths, rep_frames, strict=True)):
        pause = int(pause_frames)
        stand = np.repeat(base[None], pause, axis=0)
        stand[:, upper, 2] -= 0.0 if stands is None else stands[k]
        frames.append(stand)
        t += pause
        drop = depth * np.sin(np.linspace(0, np.pi, n)) ** 2
        rep = np.repeat(base[None], n, axis=0)
        rep[:, upper, 2] -= drop[:, None]
        frames.append(rep)
        bounds.append((t, t + n))
        t += n
    frames.append(np.repeat(base[None], int(pause_frames), axis=0))
    poses = np.concatenate(frames)
    poses += rng.normal(0, noise, poses.shape).astype(np.float32)
    return poses, bounds


def arm_raised(base: np.ndarray, angle: float) -> np.ndarray:
    """`base` with both arms swung up sideways about the shoulders by `angle` (radians)."""
    pose = base.copy()
    for side, sign in (("l", 1.0), ("r", -1.0)):
        shoulder = base[EC3D_JOINTS.index(f"{side}_shoulder")]
        for joint in (f"{side}_elbow", f"{side}_wrist"):
            y, z = base[EC3D_JOINTS.index(joint)][1:] - shoulder[1:]
            c, s = np.cos(sign * angle), np.sin(sign * angle)
            pose[EC3D_JOINTS.index(joint), 1:] = shoulder[1:] + (c * y - s * z, s * y + c * z)
    return pose


def seated(base: np.ndarray) -> np.ndarray:
    """`base` sat down on a chair: the body 45 cm lower and 25 cm back, the knees forward."""
    pose = base.copy()
    upper = [i for i, j in enumerate(EC3D_JOINTS) if i not in LOWER and "knee" not in j]
    pose[upper] += (-0.25, 0.0, -0.45)
    pose[[EC3D_JOINTS.index("l_knee"), EC3D_JOINTS.index("r_knee")]] += (0.2, 0.0, -0.05)
    return pose


def excursions(rest: np.ndarray, away: np.ndarray, rep_frames: list[int], pause_frames: int,
               seed: int = 0, noise: float = 0.004) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Rests in pose `rest` and repetitions that go to pose `away` and back; poses with jitter,
    and the true (start, end) of each repetition."""
    phases, bounds, t = [np.zeros(pause_frames)], [], pause_frames
    for n in rep_frames:
        phases += [np.sin(np.linspace(0, np.pi, n)) ** 2, np.zeros(pause_frames)]
        bounds.append((t, t + n))
        t += n + pause_frames
    phase = np.concatenate(phases)[:, None, None]
    poses = rest + phase * (away - rest)
    return poses + np.random.default_rng(seed).normal(0, noise, poses.shape), bounds


def assert_found(found: list[tuple[int, int]], truth: list[tuple[int, int]], tolerance: int):
    assert len(found) == len(truth)
    for (s, e), (ts, te) in zip(found, truth, strict=True):
        assert abs(s - ts) <= tolerance and abs(e - te) <= tolerance


def test_arm_raises_are_cut_as_excursions_from_rest_where_the_hips_never_move():
    base = standing_pose()
    poses, truth = excursions(base, arm_raised(base, np.deg2rad(160)), [90, 75, 100, 85], 30)
    assert cycle_repetitions(poses, 30.0) == []
    assert_found(excursion_repetitions(poses, 30.0), truth, tolerance=9)


@pytest.mark.parametrize("rests", ["sitting", "standing"])
def test_sit_to_stands_are_cut_as_excursions_whichever_pose_the_person_rests_in(rests):
    standing, sitting = standing_pose(), seated(standing_pose())
    rest, away = (sitting, standing) if rests == "sitting" else (standing, sitting)
    poses, truth = excursions(rest, away, [95, 80, 60, 100], 30, seed=3)
    assert_found(excursion_repetitions(poses, 30.0), truth, tolerance=9)


def test_sit_to_stands_back_to_back_without_a_rest_are_each_found():
    sitting = seated(standing_pose())
    poses, truth = excursions(sitting, standing_pose(), [80, 90, 70], 0, noise=0.002)
    assert_found(excursion_repetitions(poses, 30.0), truth, tolerance=9)


def test_an_exercise_neither_posecoach_nor_the_card_names_is_cut_as_excursions():
    base = standing_pose()
    poses, truth = excursions(base, arm_raised(base, np.deg2rad(150)), [90, 90], 30)
    assert segmenter("arm_raise") == "excursion" and segmenter("squat") == "cycle"
    assert segmenter("squat", {"squat": "excursion"}) == "excursion"
    assert_found(segment(poses, "arm_raise", 30.0, hold_window=90), truth, tolerance=9)
    assert segment(poses, "arm_raise", 30.0, hold_window=90, declared={"arm_raise": "cycle"}) == []


def test_squats_are_found_within_tolerance_shallow_ones_too():
    depths = [0.45, 0.20, 0.40, 0.15, 0.5]
    lengths = [60, 75, 50, 90, 110]
    poses, truth = session(depths, lengths, pause_frames=30)
    found = cycle_repetitions(poses, 30.0)
    assert len(found) == len(truth)
    tolerance = 9  # frames: 0.3 s at 30 fps
    for (s, e), (ts, te) in zip(found, truth, strict=True):
        assert abs(s - ts) <= tolerance and abs(e - te) <= tolerance


def test_a_precise_capture_of_someone_not_standing_fully_up_keeps_repetitions_apart():
    # Vicon-like jitter (0.2 mm) and pauses a few millimetres below upright: the jitter alone
    # would put the floor under the pauses and run the squats together
    poses, truth = session([0.45, 0.40, 0.50], [90, 80, 100], pause_frames=45, fps=100.0,
                           noise=0.0002, stands=[0.0, 0.004, 0.008])
    found = cycle_repetitions(poses, 100.0)
    assert len(found) == len(truth) == 3
    tolerance = 30  # frames: 0.3 s at 100 fps
    for (s, e), (ts, te) in zip(found, truth, strict=True):
        assert abs(s - ts) <= tolerance and abs(e - te) <= tolerance


def test_squats_back_to_back_are_split_where_the_person_is_up_between_them():
    poses, truth = session([0.45, 0.40, 0.50], [60, 70, 60], pause_frames=0, noise=0.002)
    found = cycle_repetitions(poses, 30.0)
    assert len(found) == len(truth) == 3
    assert all(a[1] == b[0] for a, b in zip(found[:-1], found[1:], strict=True))  # no gap
    for (s, e), (ts, te) in zip(found, truth, strict=True):
        assert abs(s - ts) <= 9 and abs(e - te) <= 9


def test_a_shallow_squat_among_deep_ones_is_found():
    # "not low enough" at 22 % of the deepest squat of the session
    poses, truth = session([0.50, 0.11, 0.45], [60, 60, 60], pause_frames=20)
    assert len(cycle_repetitions(poses, 30.0)) == len(truth)


def test_uiprmd_squats_as_recorded_back_to_back_are_each_found():
    if not UIPRMD.is_dir():
        pytest.skip(f"no UI-PRMD data at {UIPRMD}")
    reps = sorted((s for s in iter_sequences(UIPRMD / "vicon") if isinstance(s, Sequence)
                   and s.subject == "s05" and s.label == "incorrect"), key=lambda s: s.rep)
    ends = np.cumsum([len(r.poses) for r in reps])
    starts = ends - [len(r.poses) for r in reps]
    joined = replace(reps[0], poses=np.concatenate([r.poses for r in reps]), label=None,
                     meta={"session_id": "s05"})
    poses, _ = normalize(joined, Normalization(fps=joined.fps))
    found = cycle_repetitions(poses, joined.fps)
    assert len(found) == len(reps) == 10
    slack = 0.4 * joined.fps  # where the person is highest between squats, not the file's cut
    assert all(a - slack <= start < end <= b + slack
               for (start, end), a, b in zip(found, starts, ends, strict=True))


def test_standing_still_has_no_repetition():
    poses, _ = session([0.0], [60], pause_frames=40)
    assert cycle_repetitions(poses, 30.0) == excursion_repetitions(poses, 30.0) == []


def test_plank_holds_are_cut_into_training_length_windows():
    assert hold_windows(320, 90) == [(0, 90), (90, 180), (180, 270), (230, 320)]
    assert hold_windows(290, 90) == [(0, 90), (90, 180), (180, 270)]
    assert hold_windows(50, 90) == [(0, 50)]
    poses = np.zeros((200, 19, 3), np.float32)
    assert segment(poses, "plank", 30.0, hold_window=100) == [(0, 100), (100, 200)]
