"""The Sequence: one repetition (or one uploaded session) of one exercise, validated.

Missing joints (a pose estimator that lost a joint for a few frames) are NaN; a sequence may have
a few of them (they are filled by interpolation when normalised) but not many. Infinite values,
wrong shapes, absurd sizes, unknown units, skeletons or exercises are refused with a
SequenceError that names the input and the problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from model.settings import EXERCISES
from model.skeletons import SKELETONS

UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
MIN_FRAMES = 10
MAX_SECONDS = 30 * 60
MAX_MISSING_FRACTION = 0.2
MAX_BODY_EXTENT_M = 3.5
MAX_ABS_COORD_M = 100.0


class SequenceError(ValueError):
    """A sequence that cannot be used; the message names the input and the problem."""

    def __init__(self, source: str, reason: str, kind: str = "invalid"):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind

    def __reduce__(self):
        """Picklable with its three fields, so it crosses process boundaries (Ray, spawn)."""
        return (type(self), (self.source, self.reason, self.kind))


@dataclass
class Sequence:
    poses: np.ndarray
    subject: str
    exercise: str
    skeleton: str = "ec3d19"
    fps: float = 30.0
    label: str | None = None
    rep: int = 0
    source: str = ""
    units: str = "m"
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def sequence_id(self) -> str:
        """Hash of the poses as received, skeleton, fps, subject, exercise and rep (not label)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.poses, dtype=np.float32).tobytes())
        h.update(str(self.poses.shape).encode())
        h.update(f"|{self.skeleton}|{float(self.fps):g}|{self.subject}|{self.exercise}|{self.rep}".encode())
        return h.hexdigest()[:32]

    def with_label(self, label: str | None) -> Sequence:
        return replace(self, label=label)


def _frame_ranges(poses: np.ndarray, src: str) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest coordinate of each frame (frames, 3), missing joints left out;
    SequenceError when values are infinite or too many are missing."""
    if np.isfinite(poses).all():
        return poses.min(axis=1), poses.max(axis=1)
    if np.isinf(poses).any():
        raise SequenceError(src, "poses contain infinite values", "non_finite")
    missing = np.isnan(poses).any(axis=2)
    if missing.mean() > MAX_MISSING_FRACTION:
        raise SequenceError(
            src, f"{missing.mean():.0%} of joint positions are missing (NaN); "
            f"at most {MAX_MISSING_FRACTION:.0%} allowed", "non_finite",
        )
    if missing.all(axis=0).any():
        raise SequenceError(src, "a joint is missing (NaN) in every frame", "non_finite")
    return np.nanmin(poses, axis=1), np.nanmax(poses, axis=1)


def validate(seq: Sequence) -> Sequence:
    """Check a sequence; return it with float32 poses, or raise SequenceError."""
    src = seq.source or f"{seq.subject}/{seq.exercise}/{seq.rep}"
    if seq.skeleton not in SKELETONS:
        raise SequenceError(src, f"unknown skeleton {seq.skeleton!r}", "unknown_skeleton")
    if seq.exercise not in EXERCISES:
        raise SequenceError(
            src, f"unknown exercise {seq.exercise!r} (known: {', '.join(EXERCISES)})",
            "unknown_exercise",
        )
    if seq.units not in UNITS:
        raise SequenceError(
            src, f"unknown units {seq.units!r} (known: {', '.join(UNITS)})", "unknown_units"
        )
    if not (isinstance(seq.fps, int | float) and np.isfinite(seq.fps) and 1 <= seq.fps <= 1000):
        raise SequenceError(src, f"frame rate {seq.fps!r} is not between 1 and 1000", "bad_fps")
    if not str(seq.subject):
        raise SequenceError(src, "no subject", "no_subject")
    poses = np.asarray(seq.poses)
    if poses.dtype.kind not in "fiu":
        raise SequenceError(src, f"poses are {poses.dtype}, not numbers", "bad_dtype")
    poses = poses.astype(np.float32, copy=False)
    n_joints = SKELETONS[seq.skeleton].n_joints
    if poses.ndim != 3 or poses.shape[2] != 3:
        raise SequenceError(src, f"poses have shape {poses.shape}, expected (frames, joints, 3)",
                            "bad_shape")
    if poses.shape[1] != n_joints:
        raise SequenceError(
            src, f"{poses.shape[1]} joints, skeleton {seq.skeleton!r} has {n_joints}",
            "wrong_joint_count",
        )
    if poses.shape[0] < MIN_FRAMES:
        raise SequenceError(src, f"{poses.shape[0]} frames, at least {MIN_FRAMES} needed",
                            "too_few_frames")
    if poses.shape[0] > MAX_SECONDS * seq.fps:
        raise SequenceError(src, f"{poses.shape[0]} frames is longer than {MAX_SECONDS} s",
                            "too_long")
    low, high = _frame_ranges(poses, src)
    low, high = low * UNITS[seq.units], high * UNITS[seq.units]
    if max(np.nanmax(high), -np.nanmin(low)) > MAX_ABS_COORD_M:
        raise SequenceError(src, f"coordinates beyond {MAX_ABS_COORD_M:g} m (wrong units?)",
                            "absurd_coordinates")
    extent = np.nanmax(high - low)
    if extent > MAX_BODY_EXTENT_M:
        raise SequenceError(
            src, f"body spans {extent:.1f} m in one frame (wrong units or joints?)",
            "absurd_coordinates",
        )
    return replace(seq, poses=poses, fps=float(seq.fps), subject=str(seq.subject))
