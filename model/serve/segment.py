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

Any other exercise (arm raises, sit-to-stands) is cut as excursions: the same detection,
floor, widening and splitting on a signal that is each frame's distance from the session's
resting posture (every joint about the mid-hip and the hips' height above the feet, scaled to
the body; the rest is the median posture of the session's stillest fifth of frames), so the
person may rest standing, sitting or anywhere, and move any part of the body.

How an exercise is cut ("cycle", "excursion" or "hold") is the dataset card's word
(model.data.card, `segmentation`, which a model carries in its meta), else posecoach's for
squat, lunge and plank, else "excursion".
"""

from __future__ import annotations

import numpy as np

from model.data.normalize import REFERENCE_BODY_M, body_size
from model.data.skeletons import get_skeleton

#: How posecoach cuts the sessions of the exercises it knows; a card may name more.
KNOWN_SEGMENTATION: dict[str, str] = {"squat": "cycle", "lunge": "cycle", "plank": "hold"}
HOLD_EXERCISES = tuple(e for e, how in KNOWN_SEGMENTATION.items() if how == "hold")
MIN_REP_SECONDS = 0.5
SMOOTH_SECONDS = 0.2
DETECT_FRACTION = 0.2
MIN_DEPTH_M = 0.05
STAND_FRACTION = 0.05  # of a repetition's depth: still standing, between repetitions
STILL_SHARE = 0.2  # of a session's frames: the stillest, where the person rests


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


def _excursions(raw: np.ndarray, depth: np.ndarray, width: int, fps: float
                ) -> list[tuple[int, int]]:
    """Repetitions as (start, end) frames, end exclusive, where a person goes `depth` away from
    rest and back; `raw` is the unsmoothed signal, whose jitter sets the floor."""
    threshold = max(MIN_DEPTH_M, DETECT_FRACTION * depth.max())
    noise = 3 * _noise(raw, width)
    reps: list[tuple[int, int]] = []
    last_run_end = 0
    for run in _runs(depth > threshold):
        floor = max(noise, STAND_FRACTION * depth[run[0] : run[1]].max())
        start, end = _widen(depth, *run, floor)
        if reps and start < reps[-1][1]:
            between = depth[last_run_end : run[0]]
            if between.min() > floor:  # never back at rest between them: one repetition
                start = reps.pop()[0]
            else:  # back at rest between them, with no pause: they meet nearest to rest
                start = last_run_end + int(np.argmin(between))
                reps[-1] = (reps[-1][0], start)
        reps.append((start, end))
        last_run_end = run[1]
    return [(int(s), int(e)) for s, e in reps if e - s >= MIN_REP_SECONDS * fps]


def _width(fps: float) -> int:
    return max(1, int(round(SMOOTH_SECONDS * fps)))


def cycle_repetitions(
    poses: np.ndarray, fps: float, skeleton: str = "ec3d19"
) -> list[tuple[int, int]]:
    """Repetitions of an up-down exercise as (start, end) frames, end exclusive."""
    width = _width(fps)
    raw = hip_height(poses, skeleton)
    height = _smooth(raw, width)
    return _excursions(raw, np.percentile(height, 90) - height, width, fps)


def _posture(poses: np.ndarray, skeleton: str) -> np.ndarray:
    """Per frame, every joint about the mid-hip and the hips' height above the feet, (frames,
    joints + 1, 3), divided by the body's size relative to REFERENCE_BODY_M."""
    hip = get_skeleton(skeleton).index("mid_hip")
    height = np.zeros((len(poses), 1, 3), poses.dtype)
    height[:, 0, 2] = hip_height(poses, skeleton)
    centred = np.concatenate([poses - poses[:, hip : hip + 1], height], axis=1)
    return centred * (REFERENCE_BODY_M / max(body_size(poses, skeleton), 1e-6))


def _stillest(posture: np.ndarray, width: int) -> np.ndarray:
    """The frames (a STILL_SHARE of them) where the smoothed posture moves least."""
    smoothed = np.stack([_smooth(c, width) for c in posture.reshape(len(posture), -1).T], 1)
    speed = np.linalg.norm(np.diff(smoothed, axis=0, prepend=smoothed[:1]), axis=1)
    return np.argsort(speed, kind="stable")[: max(1, int(STILL_SHARE * len(posture)))]


def excursion_repetitions(
    poses: np.ndarray, fps: float, skeleton: str = "ec3d19"
) -> list[tuple[int, int]]:
    """Repetitions of any exercise as (start, end) frames, end exclusive: excursions away from
    the session's resting posture (the median posture of its stillest frames) and back."""
    width = _width(fps)
    posture = _posture(poses, skeleton)
    still = _stillest(posture, width)
    rest = np.median(posture[still], axis=0)
    raw = np.sqrt((np.linalg.norm(posture - rest, axis=-1) ** 2).mean(axis=1))
    away = _smooth(raw, width)
    return _excursions(raw, away - np.median(away[still]), width, fps)


def hold_windows(n_frames: int, window: int) -> list[tuple[int, int]]:
    """Consecutive windows of `window` frames; a remainder of at least half a window is kept,
    aligned to the end of the hold."""
    window = max(1, min(window, n_frames))
    cuts = [(s, s + window) for s in range(0, n_frames - window + 1, window)]
    rest = n_frames - (cuts[-1][1] if cuts else 0)
    if rest >= window / 2:
        cuts.append((n_frames - window, n_frames))
    return cuts


def segmenter(exercise: str, declared: dict[str, str] | None = None) -> str:
    """How sessions of `exercise` are cut: as `declared` (a card's map), else as posecoach
    knows, else as excursions from rest."""
    return (declared or {}).get(exercise, KNOWN_SEGMENTATION.get(exercise, "excursion"))


def segment(
    poses: np.ndarray, exercise: str, fps: float, hold_window: int, skeleton: str = "ec3d19",
    declared: dict[str, str] | None = None,
) -> list[tuple[int, int]]:
    """Repetitions of a normalised session (z up) as (start, end) frames at its own rate, cut
    as `segmenter` says."""
    how = segmenter(exercise, declared)
    if how == "hold":
        return hold_windows(poses.shape[0], hold_window)
    if how == "cycle":
        return cycle_repetitions(poses, fps, skeleton)
    return excursion_repetitions(poses, fps, skeleton)
