"""The one normalisation, used identically in training and scoring.

In order: units to metres; missing joints (NaN) filled by linear interpolation in time; the
source skeleton mapped onto the model's (joint maps in model.skeletons); the declared up axis
turned to +z; frames resampled to the model's rate (linear interpolation); every frame centred
on its mid-hip; the whole sequence turned about the vertical so that the mean hip line (right to
left hip) points along +y, which makes the body face +x; optionally divided by body size (the
median of neck-to-mid-hip plus hip-knee-ankle lengths, relative to a 0.9 m reference) so that
people of different heights look alike. The scale is returned so that corrections can be given
back in real centimetres.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.sequence import UNITS, Sequence
from model.skeletons import get_skeleton, joint_map

REFERENCE_BODY_M = 0.9

_UP_ROTATIONS = {
    "+z": np.eye(3),
    "-z": np.diag([1.0, -1.0, -1.0]),
    "+y": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
    "-y": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
    "+x": np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]]),
    "-x": np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]),
}


@dataclass(frozen=True)
class Normalization:
    """What a model expects: its skeleton, frame rate and whether bodies are scaled."""

    skeleton: str = "ec3d19"
    fps: float = 30.0
    scale_by_body: bool = False

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


def face_forward(poses: np.ndarray, l_hip: int, r_hip: int) -> np.ndarray:
    """Turn about +z so that the mean right-to-left hip line points along +y."""
    line = (poses[:, l_hip] - poses[:, r_hip]).mean(axis=0)
    angle = np.arctan2(line[1], line[0])
    rot = np.pi / 2 - angle
    c, s = np.cos(rot), np.sin(rot)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=poses.dtype)
    return (poses.reshape(-1, 3) @ rz.T).reshape(poses.shape)


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
    poses = np.asarray(seq.poses, dtype=np.float64) * UNITS[seq.units]
    poses = fill_missing(poses)
    poses = joint_map(seq.skeleton, norm.skeleton).apply(poses)
    up = get_skeleton(seq.skeleton).up
    if up != "+z":
        poses = poses @ _UP_ROTATIONS[up].T
    poses = resample(poses, seq.fps, norm.fps)
    sk = get_skeleton(norm.skeleton)
    poses = poses - poses[:, sk.index("mid_hip") : sk.index("mid_hip") + 1]
    poses = face_forward(poses, sk.index("l_hip"), sk.index("r_hip"))
    scale = 1.0
    if norm.scale_by_body:
        scale = body_size(poses, norm.skeleton) / REFERENCE_BODY_M
        poses = poses / scale
    return poses.astype(np.float32), scale
