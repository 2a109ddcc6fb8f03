"""The paper's preprocessing, for models imported from its released weights (model.learn.paper).

As the seed repository (Jacoo-Zhao/3D-Pose-Based-Feedback-For-Physical-Exercises: dataset.py,
utils.py) feeds its network, verified in its code:

- the raw coordinates of a repetition (normalisation mode "paper"), each frame's 19 joints x 3
  flattened coordinate-major into 57 rows (x of every joint, then y, then z), T frames;
- a two-dimensional DCT-II of that 57 x T matrix, unnormalised (torch-dct's `norm=None`, the
  seed's own copy of it): along time and also across the 57 rows, so a graph node of this
  network is a coefficient of the rows' transform, not one coordinate of one joint;
- the first 25 time coefficients kept; a repetition shorter than 25 frames is padded with zero
  frames to 25 first.

The corrected motion is the original plus the inverse transform of the deltas (zero-padded to
T time coefficients, or their first T when T < 25), each of the 57 coordinate rows multiplied
by its attention: original + attention x idct_2d(deltas).
"""

from __future__ import annotations

import numpy as np
import torch
import torch_dct

from model.learn.gcn import by_length, nodes_to_poses, poses_to_nodes


def _rows(poses: np.ndarray) -> torch.Tensor:
    """(B, T, joints, 3) -> (B, 3 * joints, T) float64, coordinate-major rows."""
    return poses_to_nodes(torch.from_numpy(poses.astype(np.float64))).transpose(1, 2)


def encode(poses: list[np.ndarray], n_dct: int) -> torch.Tensor:
    """Raw poses, each (frames, joints, 3) -> the network's inputs (N, 3 * joints, n_dct)."""
    if not poses:
        return torch.zeros(0, 0, n_dct)
    out = torch.empty(len(poses), 3 * poses[0].shape[1], n_dct)
    for length, idx in by_length(len(p) for p in poses).items():
        rows = _rows(np.stack([poses[i] for i in idx]))
        if length < n_dct:
            rows = torch.nn.functional.pad(rows, (0, n_dct - length))
        out[idx] = torch_dct.dct_2d(rows, norm=None)[..., :n_dct].float()
    return out


def corrected(poses: list[np.ndarray], deltas: torch.Tensor,
              attention: torch.Tensor | None) -> list[np.ndarray]:
    """original + attention x idct_2d(deltas) for every pose (frames, joints, 3), at its length;
    deltas (N, nodes, n_dct), attention (N, nodes, 1) or None (no attention: 1)."""
    if len(poses) != len(deltas):
        raise ValueError(f"{len(deltas)} delta sets for {len(poses)} poses")
    out: list[np.ndarray] = [np.empty(0)] * len(poses)
    deltas = deltas.detach().cpu().double()
    for length, idx in by_length(len(p) for p in poses).items():
        coefs = deltas[idx]
        n_dct = coefs.shape[-1]
        coefs = (coefs[..., :length] if length < n_dct
                 else torch.nn.functional.pad(coefs, (0, length - n_dct)))
        motion = torch_dct.idct_2d(coefs, norm=None)
        if attention is not None:
            motion = motion * attention[idx].detach().cpu().double()
        moved = nodes_to_poses(motion.transpose(1, 2)).numpy()
        for k, i in enumerate(idx):
            out[i] = (poses[i].astype(np.float64) + moved[k]).astype(np.float32)
    return out
