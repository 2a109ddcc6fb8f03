"""Cutting continuous sessions into repetitions."""

from __future__ import annotations

import numpy as np

from model.data.skeletons import EC3D_JOINTS
from model.serve.segment import cycle_repetitions, hold_windows, segment
from tests.test_foundation import standing_pose

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


def test_standing_still_has_no_repetition():
    poses, _ = session([0.0], [60], pause_frames=40)
    assert cycle_repetitions(poses, 30.0) == []


def test_plank_holds_are_cut_into_training_length_windows():
    assert hold_windows(320, 90) == [(0, 90), (90, 180), (180, 270), (230, 320)]
    assert hold_windows(290, 90) == [(0, 90), (90, 180), (180, 270)]
    assert hold_windows(50, 90) == [(0, 50)]
    poses = np.zeros((200, 19, 3), np.float32)
    assert segment(poses, "plank", 30.0, hold_window=100) == [(0, 100), (100, 200)]
