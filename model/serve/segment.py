"""Cutting a continuous session into repetitions.

Squats and lunges are cut by their up-down cycle: the height of the mid-hip above the feet
drops during a repetition and returns at its end. Depth is measured against the standing
height (a high percentile of the smoothed signal); a repetition is a stretch whose depth passes
a detection threshold (a fifth of the deepest repetition, at least 5 cm, so shallow "not low
enough" repetitions are found too), widened on both sides while the depth stays above the
floor and then for as long as it keeps falling. The floor is three times the jitter of the
smoothed signal (estimated from its frame-to-frame differences), and at least a twentieth of
the stretch's own depth: people do not stand up to the same height after every repetition,
and a precise capture (Vicon's jitter is a fraction of a millimetre) would otherwise run
repetitions together through the standing between them. Two repetitions whose widened
stretches overlap (squats done back to back, with no pause) are split at the highest point
between them when the depth came back under the floor there, and are one repetition when it did
not. Planks, a hold, are
cut into consecutive windows as long as the model's training repetitions.

How an exercise is cut ("cycle" or "hold") is posecoach's word for squat, lunge and plank, or
the dataset card's (model.data.card, `segmentation`), which a model carries in its meta. An
exercise neither names (arm raises, gait) cannot be cut: SegmentError says so, and its
sessions must come as segmented repetitions.
"""

from __future__ import annotations

import numpy as np

from model.data.card import SEGMENTERS
from model.data.skeletons import get_skeleton

#: How posecoach cuts the sessions of the exercises it knows; a card may name more.
KNOWN_SEGMENTATION: dict[str, str] = {"squat": "cycle", "lunge": "cycle", "plank": "hold"}
HOLD_EXERCISES = tuple(e for e, how in KNOWN_SEGMENTATION.items() if how == "hold")
MIN_REP_SECONDS = 0.5
SMOOTH_SECONDS = 0.2
DETECT_FRACTION = 0.2
MIN_DEPTH_M = 0.05
STAND_FRACTION = 0.05  # of a repetition's depth: still standing, between repetitions


def hip_height(poses: np.ndarray, skeleton: str = "ec3d19") -> np.ndarray:
    """Height of the mid-hip above the mean of the ankles, per frame (z up)."""
    sk = get_skeleton(skeleton)
    feet = poses[:, [sk.index("l_ankle"), sk.index("r_ankle")], 2].mean(axis=1)
    return poses[:, sk.index("mid_hip"), 2] - feet


def _smooth(signal: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return signal
    kernel = np.ones(width) / width
    padded = np.pad(signal, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True, end exclusive."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _widen(depth: np.ndarray, start: int, end: int, floor: float) -> tuple[int, int]:
    """Walk a detected stretch outward while the depth stays above the noise floor, then on
    while it keeps falling."""
    while start > 0 and (depth[start - 1] > floor or depth[start - 1] < depth[start]):
        start -= 1
    while end < len(depth) and (depth[end] > floor or depth[end] < depth[end - 1]):
        end += 1
    return start, end


def _noise(signal: np.ndarray, width: int) -> float:
    """Jitter of the signal after smoothing over `width` frames (robust, from differences)."""
    mad = np.median(np.abs(np.diff(signal) - np.median(np.diff(signal))))
    return float(1.4826 * mad / np.sqrt(2) / np.sqrt(width))


def cycle_repetitions(
    poses: np.ndarray, fps: float, skeleton: str = "ec3d19"
) -> list[tuple[int, int]]:
    """Repetitions of an up-down exercise as (start, end) frames, end exclusive."""
    width = max(1, int(round(SMOOTH_SECONDS * fps)))
    raw = hip_height(poses, skeleton)
    height = _smooth(raw, width)
    depth = np.percentile(height, 90) - height
    threshold = max(MIN_DEPTH_M, DETECT_FRACTION * depth.max())
    noise = 3 * _noise(raw, width)
    reps: list[tuple[int, int]] = []
    last_run_end = 0
    for run in _runs(depth > threshold):
        floor = max(noise, STAND_FRACTION * depth[run[0] : run[1]].max())
        start, end = _widen(depth, *run, floor)
        if reps and start < reps[-1][1]:
            between = depth[last_run_end : run[0]]
            if between.min() > floor:  # never back up between them: one repetition
                start = reps.pop()[0]
            else:  # up again between them, with no pause: they meet at the highest point
                start = last_run_end + int(np.argmin(between))
                reps[-1] = (reps[-1][0], start)
        reps.append((start, end))
        last_run_end = run[1]
    return [(int(s), int(e)) for s, e in reps if e - s >= MIN_REP_SECONDS * fps]


def hold_windows(n_frames: int, window: int) -> list[tuple[int, int]]:
    """Consecutive windows of `window` frames; a remainder of at least half a window is kept,
    aligned to the end of the hold."""
    window = max(1, min(window, n_frames))
    cuts = [(s, s + window) for s in range(0, n_frames - window + 1, window)]
    rest = n_frames - (cuts[-1][1] if cuts else 0)
    if rest >= window / 2:
        cuts.append((n_frames - window, n_frames))
    return cuts


class SegmentError(ValueError):
    """A session whose exercise posecoach cannot cut into repetitions."""


def segmenter(exercise: str, declared: dict[str, str] | None = None) -> str:
    """How sessions of `exercise` are cut: as `declared` (a card's map), else as posecoach
    knows; SegmentError when neither says."""
    how = (declared or {}).get(exercise, KNOWN_SEGMENTATION.get(exercise))
    if how not in SEGMENTERS:
        known = sorted({*KNOWN_SEGMENTATION, *(declared or {})})
        raise SegmentError(
            f"cannot cut a continuous {exercise!r} session into repetitions: posecoach cuts "
            f"{', '.join(known)} (the up-down cycle of the hips, or windows of a hold); upload "
            f"segmented repetitions, or declare it: posecoach data configure DATASET "
            f"--segmentation {exercise}=cycle|hold")
    return how


def segment(
    poses: np.ndarray, exercise: str, fps: float, hold_window: int, skeleton: str = "ec3d19",
    declared: dict[str, str] | None = None,
) -> list[tuple[int, int]]:
    """Repetitions of a normalised session (z up) as (start, end) frames at its own rate;
    SegmentError for an exercise that cannot be cut (`segmenter`)."""
    if segmenter(exercise, declared) == "hold":
        return hold_windows(poses.shape[0], hold_window)
    return cycle_repetitions(poses, fps, skeleton)
