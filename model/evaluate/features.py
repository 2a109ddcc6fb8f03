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
from model.data.stats import run_medians
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult


def movement_features(poses: np.ndarray, joints: tuple[str, ...], fps: float) -> dict[str, float]:
    """Features of one normalised repetition (frames, joints, 3); features whose joints the
    skeleton lacks are left out, and every statistic skips the gaps (NaN) as numpy's nan-
    functions do."""
    return movement_features_many([poses], joints, fps)[0]


def movement_features_many(poses: list[np.ndarray], joints: tuple[str, ...], fps: float
                           ) -> list[dict[str, float]]:
    """movement_features of each repetition, computed together per dtype (each in its own
    precision); a repetition without frames has only its duration."""
    out: list[dict[str, float]] = [{"duration_s": 0.0} for _ in poses]
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, p in enumerate(poses):
        if len(p):
            by_dtype.setdefault(p.dtype, []).append(i)
    for members in by_dtype.values():
        for i, found in zip(members, _features_together([poses[i] for i in members], joints,
                                                        fps), strict=True):
            out[i] = found
    return out


def _features_together(poses: list[np.ndarray], joints: tuple[str, ...], fps: float
                       ) -> list[dict[str, float]]:
    """movement_features of repetitions of one dtype, each with frames: every statistic one
    pass over all their frames, the medians one sort."""
    index = {name: i for i, name in enumerate(joints)}
    lengths = np.array([len(p) for p in poses])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    stacked = np.concatenate(poses)
    found: dict[str, list[float]] = {"duration_s": (lengths / fps).tolist()}
    if {"l_ankle", "r_ankle"} <= index.keys():
        ankles = stacked[:, [index["l_ankle"], index["r_ankle"]]]
        height = -_mean_of_two(ankles[:, 0, 2], ankles[:, 1, 2])
        found["depth_m"] = (np.fmax.reduceat(height, starts)
                            - np.fmin.reduceat(height, starts)).tolist()
        found["stance_m"] = run_medians(np.abs(ankles[:, 0, 1] - ankles[:, 1, 1]), starts,
                                     lengths).tolist()
    if {"neck", "mid_hip"} <= index.keys():
        trunk = stacked[:, index["neck"]] - stacked[:, index["mid_hip"]]
        cos = trunk[:, 2] / np.clip(np.linalg.norm(trunk, axis=1), 1e-9, None)
        lean = run_medians(np.arccos(np.clip(cos, -1, 1)), starts, lengths)
        found["trunk_lean_deg"] = np.degrees(lean).tolist()
    ranges = np.linalg.norm(np.fmax.reduceat(stacked, starts, axis=0)
                            - np.fmin.reduceat(stacked, starts, axis=0), axis=2).tolist()
    return [{name: values[k] for name, values in found.items()}
            | {f"rom_{name}_m": ranges[k][j] for name, j in index.items()}
            for k in range(len(poses))]


def _mean_of_two(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a + b) / 2 where both are known, the known one where only one is, NaN where neither."""
    return np.where(np.isnan(a), b, np.where(np.isnan(b), a, (a + b) / a.dtype.type(2)))


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
