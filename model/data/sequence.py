"""The Sequence: one repetition (or one uploaded session) of one exercise, validated.

Missing joints (a pose estimator that lost a joint for a few frames) are NaN; a sequence may have
a few of them (they are filled by interpolation when normalised) but not many. Infinite values,
wrong shapes, absurd sizes, unknown units or skeletons, exercise names that are not plain
(any exercise is welcome; a dataset's card may restrict them) are refused with a
SequenceError that names the input and the problem. So are degenerate sequences, each under its
own kind: no joint left at all (`no_joints`), every joint at one point in every frame
(`collapsed`), nothing moving from the first frame to the last (`no_motion`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from model.data.names import exercise_name, label_name
from model.data.skeletons import SKELETONS, unknown_skeleton

UNITS: dict[str, float] = {"m": 1.0, "cm": 0.01, "mm": 0.001}
MIN_FRAMES = 10
MAX_SECONDS = 30 * 60
MAX_MISSING_FRACTION = 0.2
MAX_BODY_EXTENT_M = 3.5
MAX_ABS_COORD_M = 100.0
STILL_M = 1e-5  # a body this small is one point; a joint moving less than this does not move
CHECK_BATCH_VALUES = 1 << 20  # coordinates validate_many checks at once (4 MiB of float32)


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
    units: str | None = "m"  # None: not declared (model.data.conventions tells it)
    meta: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def sequence_id(self) -> str:
        """Hash of the poses as received, skeleton, fps, subject, exercise and rep (not label)."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.poses, dtype=np.float32))  # its bytes, no copy
        h.update(str(self.poses.shape).encode())
        h.update(f"|{self.skeleton}|{float(self.fps):g}|{self.subject}|{self.exercise}|{self.rep}".encode())
        return h.hexdigest()[:32]

    def with_label(self, label: str | None) -> Sequence:
        return replace(self, label=label)


def _source(seq: Sequence) -> str:
    return seq.source or f"{seq.subject}/{seq.exercise}/{seq.rep}"


def _checked_poses(seq: Sequence) -> np.ndarray:
    """The checks of fields and shape; the poses as float32 (frames, joints, 3)."""
    src = _source(seq)
    if seq.skeleton not in SKELETONS:
        raise SequenceError(src, unknown_skeleton(seq.skeleton), "unknown_skeleton")
    try:
        exercise_name(seq.exercise)
    except ValueError as exc:
        raise SequenceError(src, str(exc), "unknown_exercise") from exc
    if seq.label is not None:
        try:
            label_name(seq.label)
        except ValueError as exc:
            raise SequenceError(src, str(exc), "bad_label") from exc
    if seq.units is not None and seq.units not in UNITS:
        raise SequenceError(
            src, f"unknown units {seq.units!r} (known: {', '.join(UNITS)})", "unknown_units"
        )
    if not (isinstance(seq.fps, int | float) and 1 <= seq.fps <= 1000):  # NaN, inf fail too
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
    return poses


def _over_joints(poses: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op (fmin or fmax) over the joints of each frame: (frames, joints, 3) -> (frames, 3).

    Halves the joint axis at each step, so every call works on long runs of memory; a plain
    reduction over the middle axis runs an inner loop of 3 values per joint and frame."""
    while poses.shape[1] > 1:
        n = poses.shape[1]
        half = (n + 1) // 2
        poses = op(poses[:, :half], poses[:, n - half:])
    return poses[:, 0]


def _over_axes(values: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op (fmin or fmax) over the 3 coordinates of each frame: (frames, 3) -> (frames,)."""
    return op(op(values[:, 0], values[:, 1]), values[:, 2])


def _value_errors(poses: list[np.ndarray], scales: list[float]) -> list[tuple[str, str] | None]:
    """The checks of values over sequences with the same number of joints, all at once:
    (reason, kind) of each sequence's first failure, or None when it passes.

    `scales` turns each sequence's units into metres. Missing joints (NaN) are left out of the
    ranges; an infinite value makes its frame's range, and so the sequence's, infinite."""
    frames = np.array([len(p) for p in poses])
    starts = np.concatenate([[0], np.cumsum(frames)[:-1]])
    stacked = np.concatenate(poses) if len(poses) > 1 else poses[0]
    scale = np.repeat(np.asarray(scales, np.float32), frames)[:, None]
    with np.errstate(invalid="ignore"):  # inf - inf where a frame holds infinite values
        low = _over_joints(stacked, np.fmin) * scale
        high = _over_joints(stacked, np.fmax) * scale
        farthest = np.fmax.reduceat(
            np.fmax(_over_axes(high, np.fmax), -_over_axes(low, np.fmin)), starts)
        extent = np.fmax.reduceat(_over_axes(high - low, np.fmax), starts)
    nan = np.isnan(stacked)
    missing = nan[..., 0] | nan[..., 1] | nan[..., 2]
    fraction = np.add.reduceat(missing.sum(axis=1), starts) / (frames * stacked.shape[1])
    always_lost = np.logical_and.reduceat(missing, starts, axis=0)
    lost_joint = always_lost.any(axis=1)
    with np.errstate(invalid="ignore"):
        travel = np.fmax.reduceat(stacked, starts, axis=0) - np.fmin.reduceat(stacked, starts,
                                                                                axis=0)
        moved = np.fmax.reduce(travel.reshape(len(poses), -1), axis=1) * np.asarray(scales)
    errors: list[tuple[str, str] | None] = [None] * len(poses)
    failing = ((farthest > MAX_ABS_COORD_M) | (extent > MAX_BODY_EXTENT_M)
               | (fraction > MAX_MISSING_FRACTION) | lost_joint | ~(extent > STILL_M)
               | ~(moved > STILL_M))
    for i in np.flatnonzero(failing):
        if np.isinf(farthest[i]):
            errors[i] = ("poses contain infinite values", "non_finite")
        elif always_lost[i].all():
            errors[i] = ("no joint left: every position is missing (NaN; or (0, 0, 0) where zeros "
                         "mean lost)", "no_joints")
        elif fraction[i] > MAX_MISSING_FRACTION:
            errors[i] = (f"{fraction[i]:.0%} of joint positions are missing (NaN); "
                         f"at most {MAX_MISSING_FRACTION:.0%} allowed", "non_finite")
        elif lost_joint[i]:
            errors[i] = ("a joint is missing (NaN) in every frame", "non_finite")
        elif farthest[i] > MAX_ABS_COORD_M:
            errors[i] = (f"coordinates beyond {MAX_ABS_COORD_M:g} m (wrong units?)",
                         "absurd_coordinates")
        elif extent[i] > MAX_BODY_EXTENT_M:
            errors[i] = (f"body spans {extent[i]:.1f} m in one frame (wrong units or joints?)",
                         "absurd_coordinates")
        elif not extent[i] > STILL_M:
            errors[i] = ("every joint is at one point in every frame", "collapsed")
        else:
            errors[i] = ("nothing moves: every joint stays where it is from the first frame to "
                         "the last", "no_motion")
    return errors


def validate_many(seqs: Iterable[Sequence]) -> list[Sequence | SequenceError]:
    """validate() over a batch: for each input, in order, the checked sequence or its error.

    The checks of values run over the poses of many sequences at once (about
    CHECK_BATCH_VALUES coordinates a time), not sequence by sequence."""
    seqs = list(seqs)
    out: list[Sequence | SequenceError | None] = [None] * len(seqs)
    by_joints: dict[int, list[tuple[int, np.ndarray]]] = {}
    for i, seq in enumerate(seqs):
        try:
            poses = _checked_poses(seq)
        except SequenceError as exc:
            out[i] = exc
            continue
        by_joints.setdefault(poses.shape[1], []).append((i, poses))
    for group in by_joints.values():
        for batch in _batches(group):
            found = _value_errors([p for _, p in batch],
                                  [UNITS.get(seqs[i].units, 1.0) for i, _ in batch])
            for (i, poses), error in zip(batch, found, strict=True):
                seq = seqs[i]
                if error is None and seq.units is None:
                    error = ("units are not declared and were not told from the data",
                             "unknown_units")
                out[i] = (SequenceError(_source(seq), *error) if error else
                          replace(seq, poses=poses, fps=float(seq.fps), subject=str(seq.subject)))
    return out


def _batches(group: list[tuple[int, np.ndarray]]) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Consecutive runs of the group with about CHECK_BATCH_VALUES coordinates each."""
    batch: list[tuple[int, np.ndarray]] = []
    size = 0
    for item in group:
        batch.append(item)
        size += item[1].size
        if size >= CHECK_BATCH_VALUES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def validate(seq: Sequence) -> Sequence:
    """Check a sequence; return it with float32 poses, or raise SequenceError."""
    [checked] = validate_many([seq])
    if isinstance(checked, SequenceError):
        raise checked
    return checked
