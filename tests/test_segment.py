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
from model.serve.segment import cycle_repetitions, hold_windows, segment
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
    assert cycle_repetitions(poses, 30.0) == []


def test_plank_holds_are_cut_into_training_length_windows():
    assert hold_windows(320, 90) == [(0, 90), (90, 180), (180, 270), (230, 320)]
    assert hold_windows(290, 90) == [(0, 90), (90, 180), (180, 270)]
    assert hold_windows(50, 90) == [(0, 50)]
    poses = np.zeros((200, 19, 3), np.float32)
    assert segment(poses, "plank", 30.0, hold_window=100) == [(0, 100), (100, 200)]
