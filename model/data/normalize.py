"""The one normalisation, used identically in training and scoring.

In order: units to metres; missing joints (NaN) filled by linear interpolation in time; the
source skeleton mapped onto the model's (joint maps in model.data.skeletons); the up axis (the
sequence's meta `up`, settled by model.data.conventions, else the layout's, else +z) turned to
+z, and mirrored (left-handed) coordinates made right-handed; frames resampled to the
model's rate (linear interpolation); every frame centred
on its mid-hip; the whole sequence turned about the vertical so that the mean hip line (right to
left hip) points along +y, which makes the body face +x; optionally divided by body size (the
median of neck-to-mid-hip plus hip-knee-ankle lengths, relative to a 0.9 m reference) so that
people of different heights look alike. The scale is returned so that corrections can be given
back in real centimetres.

Mode "paper" (a model imported from the paper's released weights, model.learn.paper) stops
after the rate: coordinates stay where the capture put them (no centring, no turning, no
scaling), in the model's `units` (the scale returned is metres per unit), as the paper's
network was fed EC3D's raw coordinates; only data already in EC3D's conventions (placement,
heading, units) is what such a model knows.

`normalize_many` normalises many sequences in one call, the per-frame
steps over all their frames at once (what training and scoring use); `normalize` is the same
code for one sequence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.data.conventions import is_mirrored, up_of
from model.data.sequence import UNITS, Sequence
from model.data.skeletons import get_skeleton, joint_map

REFERENCE_BODY_M = 0.9

UP_ROTATIONS = {  # each turns its up axis to +z (proper rotations)
    "+z": np.eye(3),
    "-z": np.diag([1.0, -1.0, -1.0]),
    "+y": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
    "-y": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
    "+x": np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]]),
    "-x": np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]),
}


MODES = ("posecoach", "paper")


@dataclass(frozen=True)
class Normalization:
    """What a model expects: its skeleton, frame rate, whether bodies are scaled, the mode
    (MODES; "paper": raw coordinates, see above) and the units its coordinates are in."""

    skeleton: str = "ec3d19"
    fps: float = 30.0
    scale_by_body: bool = False
    mode: str = "posecoach"
    units: str = "m"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalisation mode {self.mode!r}; known: {', '.join(MODES)}")
        if self.units not in UNITS:
            raise ValueError(f"normalisation units {self.units!r}; known: {', '.join(UNITS)}")
        if self.mode == "paper" and self.scale_by_body:
            raise ValueError("normalisation mode 'paper' keeps raw coordinates: no scale_by_body")
        if self.mode == "posecoach" and self.units != "m":
            raise ValueError("normalisation mode 'posecoach' works in metres")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(**d)


def fill_missing(poses: np.ndarray) -> np.ndarray:
    """Linear interpolation over time of NaN joint positions (nearest value at the ends); a
    copy, or `poses` itself when nothing is missing."""
    lost = np.flatnonzero(np.isnan(poses.reshape(poses.shape[0], -1)).any(axis=0))
    if not lost.size:
        return poses
    out = poses.copy()
    t = np.arange(poses.shape[0])
    flat = out.reshape(poses.shape[0], -1)
    for c in lost:
        ok = ~np.isnan(flat[:, c])
        flat[:, c] = np.interp(t, t[ok], flat[ok, c])
    return out


def resample(poses: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Linear resampling in time from fps_in to fps_out (every joint and axis at once)."""
    if abs(fps_in - fps_out) < 1e-9:
        return poses
    n_in = poses.shape[0]
    n_out = max(2, int(round((n_in - 1) * fps_out / fps_in)) + 1)
    t_in = np.arange(n_in) / fps_in
    t_out = np.linspace(0.0, t_in[-1], n_out)
    left = np.clip(np.searchsorted(t_in, t_out, side="right") - 1, 0, max(n_in - 2, 0))
    right = np.minimum(left + 1, n_in - 1)
    span = np.where(right > left, t_in[right] - t_in[left], 1.0)
    weight = ((t_out - t_in[left]) / span).reshape(-1, *([1] * (poses.ndim - 1)))
    out = poses[left] + weight * (poses[right] - poses[left])
    return out.astype(poses.dtype, copy=False)


def body_size(poses: np.ndarray, skeleton: str) -> float:
    """Median over frames of neck-to-mid-hip plus the mean hip-knee-ankle length, in metres."""
    sk = get_skeleton(skeleton)
    j = sk.index

    def dist(a: str, b: str) -> np.ndarray:
        return np.linalg.norm(poses[:, j(a)] - poses[:, j(b)], axis=-1)

    legs = (dist("l_hip", "l_knee") + dist("l_knee", "l_ankle")
            + dist("r_hip", "r_knee") + dist("r_knee", "r_ankle")) / 2
    return float(np.median(dist("neck", "mid_hip") + legs))


def normalize(seq: Sequence, norm: Normalization) -> tuple[np.ndarray, float]:
    """Return the sequence as the model sees it, (frames, joints, 3) float32, and the body scale."""
    return normalize_many([seq], norm)[0]


def normalize_many(seqs: list[Sequence], norm: Normalization) -> list[tuple[np.ndarray, float]]:
    """normalize() of each sequence, in order. The per-frame steps run over the frames of all
    sequences with the same skeleton, units and rate at once; a sequence's result does not
    depend on the others. SkeletonError when a skeleton does not map onto the model's."""
    out: list[tuple[np.ndarray, float]] = [None] * len(seqs)  # type: ignore[list-item]
    groups: dict[tuple, list[int]] = {}
    for k, seq in enumerate(seqs):
        groups.setdefault((seq.skeleton, seq.units, float(seq.fps), up_of(seq),
                           is_mirrored(seq)), []).append(k)
    for (skeleton, units, fps, up, mirrored), members in groups.items():
        results = _normalize_group([seqs[k].poses for k in members], skeleton, units, fps, norm,
                                   up, mirrored)
        for k, result in zip(members, results, strict=True):
            out[k] = result
    return out


def _normalize_group(chunks: list[np.ndarray], skeleton: str, units: str, fps: float,
                     norm: Normalization, up: str = "+z", mirrored: bool = False
                     ) -> list[tuple[np.ndarray, float]]:
    """The normalisation of sequences sharing a skeleton, units, rate, up axis and handedness,
    frames concatenated."""
    jm = joint_map(skeleton, norm.skeleton)
    lengths = [len(c) for c in chunks]
    poses = np.concatenate(chunks, dtype=np.float64)  # one copy, converted on the way
    poses *= UNITS[units]
    _fill_lost(poses, lengths)
    poses = jm.apply(poses)
    if up != "+z":
        poses = poses @ UP_ROTATIONS[up].T
    if mirrored:
        poses[..., 0] *= -1.0  # a horizontal axis: right-handed again, up kept
    if abs(fps - norm.fps) >= 1e-9:
        parts = [resample(c, fps, norm.fps) for c in _split(poses, lengths)]
        lengths = [len(c) for c in parts]
        poses = np.concatenate(parts)
    if norm.mode == "paper":
        poses /= UNITS[norm.units]
        return [(p, UNITS[norm.units]) for p in _split(poses.astype(np.float32), lengths)]
    sk = get_skeleton(norm.skeleton)
    mid = sk.index("mid_hip")
    poses -= poses[:, mid : mid + 1].copy()
    _face_forward(poses, lengths, sk.index("l_hip"), sk.index("r_hip"))
    scales = [1.0] * len(lengths)
    if norm.scale_by_body:
        parts = _split(poses, lengths)
        scales = [body_size(c, norm.skeleton) / REFERENCE_BODY_M for c in parts]
        poses = np.concatenate([c / scale for c, scale in zip(parts, scales, strict=True)])
    return list(zip(_split(poses.astype(np.float32), lengths), scales, strict=True))


def _fill_lost(poses: np.ndarray, lengths: list[int]) -> None:
    """fill_missing, in place, on the sequences (runs of `lengths` frames) that lost joints."""
    lost = np.isnan(poses).any(axis=(1, 2))
    if not lost.any():
        return
    ends = np.cumsum(lengths)
    for k in np.flatnonzero(np.logical_or.reduceat(lost, ends - lengths)):
        poses[ends[k] - lengths[k] : ends[k]] = fill_missing(poses[ends[k] - lengths[k] : ends[k]])


def _split(poses: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(poses, np.cumsum(lengths)[:-1])


def _face_forward(poses: np.ndarray, lengths: list[int], l_hip: int, r_hip: int) -> None:
    """Turn each sequence (consecutive runs of `lengths` frames) about +z, in place, so that its
    mean right-to-left hip line points along +y."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
    line = np.add.reduceat(poses[:, l_hip] - poses[:, r_hip], starts, axis=0)
    turn = np.repeat(np.exp(1j * (np.pi / 2 - np.arctan2(line[:, 1], line[:, 0]))), lengths)
    horizontal = poses[..., :2].view(np.complex128)  # x + iy of each joint: turned by a product
    horizontal *= turn[:, None, None]
