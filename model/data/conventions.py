"""Axes, units and handedness told by the data, and checked against what a source declares.

A source (one file, or one uploaded session) is estimated once, pooled over all its sequences
(up to ESTIMATE_FRAMES evenly spaced frames of each, of those that show any joint), on the
canonical joints (the source's joint map):
- the vertical axis and its sign: the signed coordinate axis nearest to the pooled direction
  from the feet to the head over the frames of upright exercises, and from the elbows
  up to the shoulders over lying ones (a plank rests on its arms), so that a file
  of squats, lunges and planks agrees on one axis;
- the unit scale: the body's size (neck to mid-hip plus hip-knee-ankle, the measure of
  model.data.normalize.body_size) is a plausible human one in exactly one of m, cm and mm;
  only bodies whose bone lengths hold steady over frames count;
- mirroring: left-handed coordinates, which some estimators write, from the body's own left
  (left hip and shoulder minus the right ones), its facing (heels to toes, neck to nose) and
  the vertical; in right-handed coordinates facing x left = up;
- the frame rate, where a sequence carries its frames' timestamps (meta `timestamps`, seconds).

`settle` then fixes each sequence's fields. What an option forces (`--up`, `--units`,
`mirrored`, `--fps`) is taken as it is, unless forced units make a steady body an impossible
size (POSSIBLE_BODY_M), which is an error naming what the data suggests. What the source
declares (the file, its manifest, its layout) is kept when the data agrees or cannot tell,
and is an error naming the source, the declaration and the estimate when the data says
otherwise. What nobody declared is taken from the data, and is an error when the data cannot
tell; a reader's own default (meta `defaulted`: EC3D's 30 fps) stands where the data cannot
tell, recorded as `default`. What was decided, and from where, is recorded in the sequence's
meta under `conventions`; the up axis and mirroring under `up` and `mirrored`, where
model.data.normalize reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from model.data.sequence import MAX_BODY_EXTENT_M, UNITS, Sequence, SequenceError
from model.data.skeletons import CANONICAL, SkeletonError, get_skeleton, joint_map
from model.data.stats import evenly_spaced, run_medians

UP_AXES = ("+x", "-x", "+y", "-y", "+z", "-z")
UP, MIRRORED, CONVENTIONS, TIMESTAMPS = "up", "mirrored", "conventions", "timestamps"
DEFAULTED = "defaulted"  # meta: the fields a reader filled with its own default (EC3D's fps)
FORCEABLE = (UP, "units", MIRRORED)  # told by the data, so never forced from a quarantine record
OVERRIDES = (*FORCEABLE, "fps")  # what an option forces over the source and its data
LYING_EXERCISES = frozenset({"plank"})

MIN_FRAMES = 10  # frames of signal below which the data cannot tell
MIN_AGREEMENT = 0.6  # share of frames whose own nearest axis is the pooled one
MAX_TILT_DEG = 30.0  # the pooled direction this far from its nearest axis is no axis
BODY_RANGE_M = (0.4, 2.5)  # plausible body sizes (a child to a very tall adult)
MAX_BONE_SPREAD = 0.25  # relative spread of a bone's length over frames for a body
MIN_HANDEDNESS = 0.3  # mean handedness (-1 left-handed .. +1 right-handed) to tell
MAX_FPS_ERROR = 0.05  # relative difference of a declared rate from the timestamps'
FPS_RANGE = (1.0, 1000.0)  # frame rates validation accepts (model.data.sequence)
# body sizes forced units may give (half the smallest plausible one, up to the widest body
# validation accepts: model.data.sequence.MAX_BODY_EXTENT_M); a factor of 10 off leaves them
POSSIBLE_BODY_M = (BODY_RANGE_M[0] / 2, MAX_BODY_EXTENT_M)
ESTIMATE_FRAMES = 128  # frames of each sequence the estimate looks at (of those showing a body)

_HEAD = ("nose", "neck")
_FEET = ("l_ankle", "r_ankle", "l_heel", "r_heel", "l_big_toe", "r_big_toe")
_SHOULDERS = ("l_shoulder", "r_shoulder")
_ELBOWS = ("l_elbow", "r_elbow")
_BONES = (("l_hip", "l_knee"), ("r_hip", "r_knee"), ("l_knee", "l_ankle"),
          ("r_knee", "r_ankle"), ("neck", "mid_hip"))


def axis_vector(up: str) -> np.ndarray:
    """The unit vector of a signed axis name ("+x" ... "-z")."""
    if up not in UP_AXES:
        raise ValueError(f"up axis {up!r} is not one of {', '.join(UP_AXES)}")
    v = np.zeros(3)
    v["xyz".index(up[1])] = 1.0 if up[0] == "+" else -1.0
    return v


def _nearest_axis(v: np.ndarray) -> np.ndarray:
    """Index into UP_AXES of the signed axis nearest to each row of v (rows, 3)."""
    i = np.argmax(np.abs(v), axis=-1)
    return 2 * i + (np.take_along_axis(v, i[..., None], axis=-1)[..., 0] < 0)


@dataclass(frozen=True)
class Estimate:
    """What a source's data says; a field is None where the data cannot tell."""

    up: str | None
    up_agreement: float
    up_tilt_deg: float | None
    up_frames: int
    units: str | None
    body_size: float | None  # in the source's own units
    mirrored: bool | None
    handedness: float | None
    fps: float | None

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _canonical(seq: Sequence, frames: int | None = None) -> np.ndarray | None:
    """The sequence's poses on the canonical joints, float64 (with `frames`: at most that many
    of the frames that show any joint, evenly spaced); None where it cannot be mapped."""
    try:
        jm = joint_map(seq.skeleton, CANONICAL)
        n_joints = get_skeleton(seq.skeleton).n_joints
    except SkeletonError:
        return None
    poses = np.asarray(seq.poses)
    if poses.dtype.kind not in "fiu" or poses.ndim != 3 or poses.shape[1:] != (n_joints, 3):
        return None
    if frames is not None and len(poses) > frames:
        seen = np.flatnonzero(np.isfinite(poses).any(axis=(1, 2)))
        poses = poses[seen[evenly_spaced(len(seen), frames)]]
    poses = poses.astype(np.float64)
    poses[~np.isfinite(poses)] = np.nan
    return jm.apply(poses)


@cache
def _indices(joints: tuple[str, ...]) -> list[int]:
    """Positions of canonical joints, looked up once."""
    sk = get_skeleton(CANONICAL)
    return [sk.index(j) for j in joints]


def _mean(poses: np.ndarray, joints: tuple[str, ...]) -> np.ndarray:
    return poses[:, _indices(joints)].mean(axis=1)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows of v made unit length; rows that are not finite or are zero dropped."""
    norm = np.linalg.norm(v, axis=-1)
    ok = np.isfinite(norm) & (norm > 1e-9)
    return v[ok] / norm[ok, None]


def _up_votes(poses: np.ndarray, exercise: str) -> np.ndarray:
    """Per frame, the unit direction the body says is up (rows with no signal dropped)."""
    if exercise in LYING_EXERCISES:
        return _unit_rows(_mean(poses, _SHOULDERS) - _mean(poses, _ELBOWS))
    return _unit_rows(_mean(poses, _HEAD) - _mean(poses, _FEET))


def _estimate_up(votes: np.ndarray) -> tuple[str | None, float, float | None]:
    if len(votes) < MIN_FRAMES:
        return None, 0.0, None
    pooled = votes.mean(axis=0)
    best = int(_nearest_axis(pooled[None])[0])
    agreement = float(np.mean(_nearest_axis(votes) == best))
    cos = abs(pooled).max() / max(float(np.linalg.norm(pooled)), 1e-12)
    tilt = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    told = agreement >= MIN_AGREEMENT and tilt <= MAX_TILT_DEG
    return (UP_AXES[best] if told else None), agreement, tilt


def _bone_lengths(poses: np.ndarray) -> np.ndarray:
    """Per frame, the length of each of _BONES: (frames, bones)."""
    starts, ends = _indices(tuple(a for a, _ in _BONES)), _indices(tuple(b for _, b in _BONES))
    return np.linalg.norm(poses[:, starts] - poses[:, ends], axis=-1)


def _body_sizes(poses: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-frame body size (source units) and the median relative spread of bone lengths."""
    lengths = _bone_lengths(poses)
    sizes = lengths[:, 4] + lengths[:, :4].sum(axis=1) / 2  # trunk + the two legs' mean
    middles, spreads = _medians_and_spreads(lengths.T)
    seen = middles > 0
    spreads = (spreads[seen] / middles[seen]).tolist()
    return sizes[np.isfinite(sizes)], float(np.median(spreads)) if spreads else np.inf


def _medians_and_spreads(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's median and standard deviation over its finite values (numpy's nanmedian and
    nanstd, for all rows at once; NaN for a row with none)."""
    bones, frames = rows.shape
    if frames == 0:
        return np.full(bones, np.nan), np.full(bones, np.nan)
    known = np.isfinite(rows)
    middles = run_medians(np.where(known, rows, np.nan).ravel(), np.arange(bones) * frames,
                          np.full(bones, frames))
    n = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(known, rows, 0.0).sum(axis=1) / n
        spreads = np.sqrt(np.where(known, (rows - means[:, None]) ** 2, 0.0).sum(axis=1) / n)
    return middles, spreads


def _estimate_units(sizes: np.ndarray, spread: float) -> tuple[str | None, float | None]:
    if len(sizes) < MIN_FRAMES:
        return None, None
    size = float(np.median(sizes))
    if spread > MAX_BONE_SPREAD:
        return None, size
    low, high = BODY_RANGE_M
    fits = [u for u, scale in UNITS.items() if low <= size * scale <= high]
    return (fits[0] if len(fits) == 1 else None), size


def _handedness(poses: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Per frame, +1 for right-handed coordinates and -1 for mirrored ones (rows dropped where
    the body's facing or left is not seen)."""
    left = (_mean(poses, ("l_hip", "l_shoulder")) - _mean(poses, ("r_hip", "r_shoulder")))
    facing = (_mean(poses, ("l_big_toe", "r_big_toe")) - _mean(poses, ("l_heel", "r_heel"))
              + _mean(poses, ("nose",)) - _mean(poses, ("neck",)))
    left = left - np.outer(left @ up, up)
    facing = facing - np.outer(facing @ up, up)
    triple = _cross(facing, left) @ up
    scale = np.linalg.norm(facing, axis=-1) * np.linalg.norm(left, axis=-1)
    ok = np.isfinite(triple) & (scale > 1e-12)
    return triple[ok] / scale[ok]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross of rows of 3-vectors, the same products and differences without its checks."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=-1)


def _estimate_fps(seqs: list[Sequence]) -> float | None:
    steps = []
    for seq in seqs:
        stamps = np.asarray(seq.meta.get(TIMESTAMPS, ()), dtype=float)
        if stamps.ndim == 1 and len(stamps) > 1:
            steps.append(np.diff(stamps))
    if not steps:
        return None
    step = float(np.median(np.concatenate(steps)))
    return round(1.0 / step, 3) if step > 0 else None


def estimate(seqs: list[Sequence], up: str | None = None) -> Estimate:
    """What the data of one source says, pooled over its sequences (ESTIMATE_FRAMES of each at
    most: a long session costs no more than a short one). Mirroring is judged in the
    frame of `up` when given (the axis that will be used), else of the estimated one."""
    mapped = [(seq, _canonical(seq, ESTIMATE_FRAMES)) for seq in seqs]
    mapped = [(seq, p) for seq, p in mapped if p is not None and len(p)]
    with np.errstate(invalid="ignore"):
        votes = [_up_votes(p, seq.exercise) for seq, p in mapped]
        found_up, agreement, tilt = _estimate_up(
            np.concatenate(votes) if votes else np.empty((0, 3)))
        bodies = [_body_sizes(p) for _, p in mapped]
        sizes = np.concatenate([s for s, _ in bodies]) if bodies else np.empty(0)
        spread = float(np.median([s for _, s in bodies])) if bodies else np.inf
        units, size = _estimate_units(sizes, spread)
        judged = up or found_up
        hands = (np.concatenate([_handedness(p, axis_vector(judged)) for _, p in mapped])
                 if judged and mapped else np.empty(0))
    handedness = float(hands.mean()) if len(hands) >= MIN_FRAMES else None
    mirrored = None if handedness is None or abs(handedness) < MIN_HANDEDNESS else (
        handedness < 0)
    return Estimate(up=found_up, up_agreement=agreement, up_tilt_deg=tilt,
                    up_frames=int(sum(len(v) for v in votes)), units=units, body_size=size,
                    mirrored=mirrored, handedness=handedness, fps=_estimate_fps(seqs))


class ConventionError(SequenceError):
    """A declaration that the data contradicts, or a field that nobody declared and the data
    cannot tell."""


@dataclass(frozen=True)
class Decision:
    """One field of one sequence: its value and where it came from."""

    value: object
    source: str  # "option", "declared", "data" or "default"


def _evidence(field: str, est: Estimate) -> str:
    """What the data showed for a field, in words."""
    if field == UP:
        if est.up_tilt_deg is None:
            return f"too few frames with a visible body ({est.up_frames})"
        return (f"the body's up is along {est.up or 'no one axis'}: the nearest axis in "
                f"{est.up_agreement:.0%} of {est.up_frames} frames, pooled "
                f"{est.up_tilt_deg:.0f} degrees off it")
    if field == "units":
        if est.body_size is None:
            return "too few frames with a visible body"
        return (f"the body measures {est.body_size:.4g} in the file's units (neck to mid-hip "
                "plus hip-knee-ankle)")
    if field == MIRRORED:
        if est.handedness is None:
            return "the body's facing and left side are not seen"
        return f"handedness {est.handedness:+.2f} (+1 right-handed, -1 mirrored)"
    return f"the timestamps give {est.fps:g} frames per second{_milliseconds_hint(est.fps)}"


def _milliseconds_hint(fps: float) -> str:
    """A hint where timestamps give a rate that their values in milliseconds would make right."""
    low, high = FPS_RANGE
    return (f"; timestamps are seconds, and these look like milliseconds ({fps * 1000:g} frames "
            "per second if they are)" if fps < low <= fps * 1000 <= high else "")


def _found(field: str, est: Estimate) -> object:
    return {UP: est.up, "units": est.units, MIRRORED: est.mirrored, "fps": est.fps}[field]


def _declared(seq: Sequence, field: str) -> object:
    """What the source declared for a field of this sequence; None where nothing."""
    if field == UP:
        return seq.meta.get(UP) or _layout_up(seq.skeleton)
    if field == "units":
        return seq.units or None
    if field == MIRRORED:
        return seq.meta.get(MIRRORED)
    return None if np.isnan(seq.fps) else float(seq.fps)  # NaN: the timestamps tell it


def _layout_up(skeleton: str) -> str | None:
    try:
        return get_skeleton(skeleton).up
    except SkeletonError:
        return None


def _agrees(field: str, declared: object, found: object) -> bool:
    if field == "fps":
        return abs(float(declared) - float(found)) <= MAX_FPS_ERROR * float(found)
    return declared == found


def _absurd_in(seq: Sequence, units: object, est: Estimate) -> bool:
    """Whether the body is impossibly large in the declared units: validation rejects it as
    absurd coordinates, which says more than a contradiction would."""
    return (est.body_size is not None and units in UNITS
            and est.body_size * UNITS[units] > MAX_BODY_EXTENT_M)


def _option(field: str, value: object) -> str:
    """The option that forces a field to a value."""
    if field == MIRRORED:
        return "--mirrored" if value else "--not-mirrored"
    return f"--fps {float(value):g}" if field == "fps" else f"--{field} {value}"


def _check_forced_units(seq: Sequence, units: str, est: Estimate) -> None:
    """ConventionError where forced units make a steady body (one the data can size) an
    impossible one (POSSIBLE_BODY_M)."""
    if est.units is None or est.body_size is None:
        return
    size, (low, high) = est.body_size * UNITS[units], POSSIBLE_BODY_M
    if not low <= size <= high:
        raise ConventionError(
            seq.source or seq.subject,
            f"--units {units} makes the body {size:.3g} m, not a human size ({low:g} to "
            f"{high:g} m); the data suggests units {est.units!r} "
            f"({_evidence('units', est)}): pass --units {est.units}, or leave it out",
            "implausible_units")


def _check_timed_fps(seq: Sequence, est: Estimate) -> None:
    """ConventionError where the timestamps give a rate no sequence can have (milliseconds
    written as seconds, most often)."""
    low, high = FPS_RANGE
    if est.fps is not None and not low <= est.fps <= high:
        raise ConventionError(
            seq.source or seq.subject,
            f"fps is not declared, and the timestamps give {est.fps:g} frames per second, not a "
            f"frame rate ({low:g} to {high:g}){_milliseconds_hint(est.fps)}", "bad_timestamps")


def _decide(seq: Sequence, field: str, forced: dict, est: Estimate) -> Decision | None:
    """The field's value and its origin; None where nobody declared it and the data cannot
    tell. ConventionError where the declaration contradicts the data, or forced units make
    the body an impossible size."""
    if field == "units" and field in forced:
        _check_forced_units(seq, forced[field], est)
    if field in forced:
        return Decision(forced[field], "option")
    declared, found = _declared(seq, field), _found(field, est)
    if field in seq.meta.get(DEFAULTED, ()):
        return Decision(found, "data") if found is not None else Decision(declared, "default")
    if declared is None:
        if field == "fps":
            _check_timed_fps(seq, est)
        return None if found is None else Decision(found, "data")
    if field == UP and declared not in UP_AXES:
        raise ConventionError(seq.source or seq.subject, f"up {declared!r} is not one of "
                                                         f"{', '.join(UP_AXES)}", "bad_field")
    if field == "units" and declared not in UNITS:
        return Decision(declared, "declared")  # validation names the unknown units
    if found is not None and not _agrees(field, declared, found) and not (
            field == "units" and _absurd_in(seq, declared, est)):
        said = (f"{declared:g}, but the data says {found:g}" if field == "fps"
                else f"{declared!r}, but the data says {found!r}")
        raise ConventionError(
            seq.source or seq.subject,
            f"{field} is declared {said} ({_evidence(field, est)}); fix the declaration, or "
            f"pass {_option(field, found)} to take the data's, or {_option(field, declared)} to "
            "keep the declaration",
            "contradicts_data")
    return Decision(declared, "declared")


def _has_body(seq: Sequence) -> bool:
    """Whether the sequence itself shows a body in MIN_FRAMES frames (a sequence that does not
    is left to validation, which names what is wrong with it)."""
    poses = _canonical(seq)
    if poses is None:
        return False
    seen = poses[np.isfinite(poses).all(axis=(1, 2))]
    return len(seen) >= MIN_FRAMES and bool(np.ptp(seen, axis=1).max() > 0)


def checked_forced(forced: dict, source: str) -> dict:
    """The up axis, units, mirroring and frame rate of `forced` that are given, checked;
    ConventionError naming `source` where one is not a valid value."""
    out = {k: v for k, v in forced.items() if k in OVERRIDES and v is not None}
    if "fps" in out:
        out["fps"] = _forced_fps(out["fps"], source)
    if UP in out and out[UP] not in UP_AXES:
        raise ConventionError(source, f"up {out[UP]!r} is not one of {', '.join(UP_AXES)}",
                              "bad_field")
    if "units" in out and out["units"] not in UNITS:
        raise ConventionError(source, f"units {out['units']!r} are not one of "
                                      f"{', '.join(UNITS)}", "unknown_units")
    if MIRRORED in out:
        out[MIRRORED] = bool(out[MIRRORED])
    return out


def _forced_fps(value: object, source: str) -> float:
    low, high = FPS_RANGE
    try:
        fps = float(value)
    except (TypeError, ValueError, OverflowError):
        fps = float("nan")
    if not low <= fps <= high:
        raise ConventionError(source, f"fps {value!r:.80} is not a frame rate ({low:g} to "
                                      f"{high:g})", "bad_fps")
    return fps


def _settled(seq: Sequence, forced: dict, est: Estimate) -> Sequence:
    decisions = {f: _decide(seq, f, forced, est) for f in (UP, "units", MIRRORED, "fps")}
    missing = [f for f in (UP, "units") if decisions[f] is None]
    if missing and _has_body(seq):
        raise ConventionError(
            seq.source or seq.subject,
            "; ".join(f"{f} is not declared and the data cannot tell it ({_evidence(f, est)})"
                      for f in missing) + ": declare it in the file, posecoach.json or an "
                                          "option", f"unknown_{missing[0]}")
    decisions[MIRRORED] = decisions[MIRRORED] or Decision(False, "default")
    meta = {k: v for k, v in seq.meta.items() if k not in (TIMESTAMPS, DEFAULTED)}
    record = {f: {"value": d.value, "source": d.source} for f, d in decisions.items()
              if d is not None}
    meta[CONVENTIONS] = {**record, "estimate": est.to_dict()}
    if decisions[UP] is not None:
        meta[UP] = decisions[UP].value
    meta[MIRRORED] = bool(decisions[MIRRORED].value)
    units = decisions["units"].value if decisions["units"] is not None else seq.units
    fps = decisions["fps"].value if decisions["fps"] is not None else seq.fps
    return replace(seq, units=units, fps=fps, meta=meta)


def settle(seqs: list[Sequence], forced: dict | None = None, source: str = ""
           ) -> list[Sequence | SequenceError]:
    """The sequences of one source with their up axis, units and mirroring decided (see the
    module's docstring), in order; a ConventionError in place of each one that cannot be.

    `forced`: up, units, mirrored and fps given as options, taken as they are. Raises
    ConventionError (naming `source`) when a forced value is not a valid one."""
    forced = checked_forced(forced or {}, source)
    declared_ups = {_declared(s, UP) for s in seqs} & set(UP_AXES)
    judged = forced.get(UP) or (declared_ups.pop() if len(declared_ups) == 1 else None)
    est = estimate(seqs, up=judged)
    out: list[Sequence | SequenceError] = []
    for seq in seqs:
        try:
            out.append(_settled(seq, forced, est))
        except ConventionError as exc:
            out.append(exc)
    return out


def with_declared(seq: Sequence, fields: dict) -> Sequence:
    """The sequence with the up axis, mirroring and units that `fields` (a file's manifest,
    layout or options) declare, where the sequence itself declares none."""
    meta = dict(seq.meta)
    for key in (UP, MIRRORED):
        if meta.get(key) is None and fields.get(key) is not None:
            meta[key] = fields[key]
    units = seq.units or fields.get("units")
    return replace(seq, meta=meta, units=units) if (meta, units) != (seq.meta, seq.units) else seq


def up_of(seq: Sequence) -> str:
    """The up axis a sequence's coordinates use: settled or declared (meta `up`), else its
    layout's, else +z."""
    return seq.meta.get(UP) or _layout_up(seq.skeleton) or "+z"


def is_mirrored(seq: Sequence) -> bool:
    """Whether a sequence's coordinates are mirrored (left-handed): meta `mirrored`."""
    return bool(seq.meta.get(MIRRORED))


def file_conventions(seq: Sequence) -> dict[str, dict]:
    """A settled sequence's up axis, units, mirroring and rate, each with where it came from."""
    record = seq.meta.get(CONVENTIONS) or {}
    return {k: v for k, v in record.items() if k != "estimate"}
