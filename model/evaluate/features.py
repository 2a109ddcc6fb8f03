"""Movement features of a repetition, from its normalised poses (z up, every frame centred on
its mid-hip): duration, squat depth (the travel of the hips' height above the ankles), stance
width (the ankles' distance across the body), trunk lean (the neck's angle from the vertical over
the mid-hip) and each joint's range of motion. The score flow keeps them with every scored
repetition; drift (model.evaluate.drift) compares them with the training data's.
"""

from __future__ import annotations

import json
import math

import numpy as np

from model.data.skeletons import get_skeleton
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult

# mean, median, max, min: the NaN-skipping ones only for poses with gaps (several times slower)
_STATS = (np.mean, np.median, np.max, np.min)
_NAN_STATS = (np.nanmean, np.nanmedian, np.nanmax, np.nanmin)


def movement_features(poses: np.ndarray, joints: tuple[str, ...], fps: float) -> dict[str, float]:
    """Features of one normalised repetition (frames, joints, 3); features whose joints the
    skeleton lacks are left out."""
    index = {name: i for i, name in enumerate(joints)}
    mean, median, top, bottom = _NAN_STATS if np.isnan(poses).any() else _STATS
    out = {"duration_s": len(poses) / fps}
    if {"l_ankle", "r_ankle"} <= index.keys():
        ankles = poses[:, [index["l_ankle"], index["r_ankle"]]]
        height = -mean(ankles[..., 2], axis=1)
        out["depth_m"] = float(top(height) - bottom(height))
        out["stance_m"] = float(median(np.abs(ankles[:, 0, 1] - ankles[:, 1, 1])))
    if {"neck", "mid_hip"} <= index.keys():
        trunk = poses[:, index["neck"]] - poses[:, index["mid_hip"]]
        cos = trunk[:, 2] / np.clip(np.linalg.norm(trunk, axis=1), 1e-9, None)
        out["trunk_lean_deg"] = float(np.degrees(median(np.arccos(np.clip(cos, -1, 1)))))
    ranges = np.linalg.norm(top(poses, axis=0) - bottom(poses, axis=0), axis=1).tolist()
    out |= {f"rom_{name}_m": ranges[i] for name, i in index.items()}
    return out


def features_json(result: RepResult, model: TrainedModel) -> str | None:
    """A scored repetition's movement features as JSON (None for one that was not scored)."""
    if result.original is None:
        return None
    norm = model.normalization
    found = movement_features(result.original, get_skeleton(norm.skeleton).joints, norm.fps)
    return json.dumps({k: v for k, v in found.items() if math.isfinite(v)})
