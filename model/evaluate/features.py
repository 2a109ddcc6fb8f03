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


def movement_features_many(poses: list[np.ndarray], joints: tuple[str, ...], fps: float
                           ) -> list[dict[str, float]]:
    """movement_features of each repetition, the same values: repetitions without gaps
    together, per dtype (every statistic one pass over their frames, the medians one sort),
    those with gaps one at a time."""
    out: list[dict[str, float] | None] = [None] * len(poses)
    together: dict[np.dtype, list[int]] = {}
    for i, p in enumerate(poses):
        if len(p) and not np.isnan(p).any():
            together.setdefault(p.dtype, []).append(i)
        else:
            out[i] = movement_features(p, joints, fps)
    for members in together.values():
        for i, found in zip(members, _features_together([poses[i] for i in members], joints,
                                                        fps), strict=True):
            out[i] = found
    return out  # type: ignore[return-value]


def _features_together(poses: list[np.ndarray], joints: tuple[str, ...], fps: float
                       ) -> list[dict[str, float]]:
    """movement_features of repetitions of one dtype without gaps, over their frames at once."""
    index = {name: i for i, name in enumerate(joints)}
    lengths = np.array([len(p) for p in poses])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stacked = np.concatenate(poses)
    found: dict[str, list[float]] = {"duration_s": (lengths / fps).tolist()}
    if {"l_ankle", "r_ankle"} <= index.keys():
        ankles = stacked[:, [index["l_ankle"], index["r_ankle"]]]
        height = -np.mean(ankles[..., 2], axis=1)
        found["depth_m"] = (np.maximum.reduceat(height, starts)
                            - np.minimum.reduceat(height, starts)).tolist()
        found["stance_m"] = _medians(np.abs(ankles[:, 0, 1] - ankles[:, 1, 1]), starts,
                                     lengths).tolist()
    if {"neck", "mid_hip"} <= index.keys():
        trunk = stacked[:, index["neck"]] - stacked[:, index["mid_hip"]]
        cos = trunk[:, 2] / np.clip(np.linalg.norm(trunk, axis=1), 1e-9, None)
        lean = _medians(np.arccos(np.clip(cos, -1, 1)), starts, lengths)
        found["trunk_lean_deg"] = np.degrees(lean).tolist()
    ranges = np.linalg.norm(np.maximum.reduceat(stacked, starts, axis=0)
                            - np.minimum.reduceat(stacked, starts, axis=0), axis=2).tolist()
    return [{name: values[k] for name, values in found.items()}
            | {f"rom_{name}_m": ranges[k][j] for name, j in index.items()}
            for k in range(len(poses))]


def _medians(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.median of each run of `lengths` values from `starts` (no NaN), in the values' dtype:
    every run sorted by one sort, then its middle one or two values."""
    runs = np.repeat(np.arange(len(lengths)), lengths)
    ordered = values[np.lexsort((values, runs))]
    low, high = ordered[starts + (lengths - 1) // 2], ordered[starts + lengths // 2]
    return (low + high) / values.dtype.type(2)


def features_json(result: RepResult, model: TrainedModel) -> str | None:
    """A scored repetition's movement features as JSON (None for one that was not scored)."""
    return features_json_many([result], model)[0]


def features_json_many(results: list[RepResult], model: TrainedModel) -> list[str | None]:
    """features_json of each result, the repetitions' features computed together
    (movement_features_many)."""
    norm = model.normalization
    scored = [r for r in results if r.original is not None]
    found = iter(movement_features_many([r.original for r in scored],
                                        get_skeleton(norm.skeleton).joints, norm.fps))
    return [None if r.original is None else
            json.dumps({k: v for k, v in next(found).items() if math.isfinite(v)})
            for r in results]
