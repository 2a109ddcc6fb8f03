"""Calibrated confidence: temperature scaling fitted on held-out predictions, and how well a
model's probabilities match its accuracy (ECE, Brier score, NLL).

A temperature T divides the log-probabilities before the softmax: T > 1 softens an overconfident
model, T < 1 sharpens an underconfident one, and the predicted class never changes. It is fitted
by minimising the Brier score of predictions the model made on subjects it was not trained on
(the cross-validation folds' held-out subjects), never on the gate subjects. Figures after
calibration are cross-fitted: each fold's predictions are scaled by a temperature fitted on the
other folds' predictions, so no figure is measured on the predictions it was fitted to.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from model.learn.saved import scaled

ECE_BINS = 15
FLOOR_DRAWS = 1000
FLOOR_CHUNK = 50  # draws at a time: memory (chunk, n, classes)
LOG_T_RANGE = (0.0, 4.0)  # temperatures from 1 to e^4: calibration softens, never sharpens


@dataclass(frozen=True)
class Held:
    """Predictions on held-out subjects: log-probabilities (n, classes) and the true class index
    of each row (n,)."""

    log_probs: np.ndarray
    true: np.ndarray

    def __post_init__(self) -> None:
        if self.log_probs.ndim != 2 or self.true.shape != (len(self.log_probs),):
            raise ValueError(f"held-out predictions of shape {self.log_probs.shape} do not match "
                             f"{self.true.shape} true labels")

    @classmethod
    def pooled(cls, parts: Seq[Held]) -> Held:
        return cls(np.concatenate([p.log_probs for p in parts]).astype(np.float64),
                   np.concatenate([p.true for p in parts]).astype(np.int64))


def fit_temperature(held: Held) -> float:
    """The temperature that minimises the held-out Brier score (1.0 for no data), at least 1.

    The Brier score, a proper scoring rule like the NLL, is bounded: a held-out person whose
    repetitions the model gets confidently wrong costs at most 2 a repetition, where the NLL
    grows without bound and pulls the temperature up until every other person's predictions are
    underconfident. The temperature never goes below 1: held-out people the model happens to
    get all right (a label-smoothed model is underconfident on them) would drive it towards 0,
    and the next person it gets wrong would then be wrong with near certainty."""
    if len(held.true) == 0:
        return 1.0
    log_probs = held.log_probs.astype(np.float64)
    onehot = np.eye(log_probs.shape[1])[held.true]

    def brier(log_t: float) -> float:
        probs = np.exp(log_softmax(log_probs / np.exp(log_t), axis=-1))
        return float(((probs - onehot) ** 2).sum(axis=1).mean())

    best = minimize_scalar(brier, bounds=LOG_T_RANGE, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    """The equal-width confidence bin of each prediction."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def figures(probs: np.ndarray, true: np.ndarray, bins: int = ECE_BINS) -> dict[str, float]:
    """ECE (equal-width confidence bins), multi-class Brier score and NLL of probabilities
    (n, classes) against true class indices (n,)."""
    probs = np.asarray(probs, np.float64)
    n = len(true)
    if n == 0:
        return {"ece": float("nan"), "brier": float("nan"), "nll": float("nan"), "n": 0}
    confidence = probs.max(axis=1)
    right = probs.argmax(axis=1) == true
    which = _bin_of(confidence, bins)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.sum() / n * abs(right[inside].mean() - confidence[inside].mean())
    onehot = np.zeros_like(probs)
    onehot[np.arange(n), true] = 1.0
    brier = float(((probs - onehot) ** 2).sum(axis=1).mean())
    nll = float(-np.log(np.clip(probs[np.arange(n), true], 1e-12, None)).mean())
    return {"ece": float(ece), "brier": brier, "nll": nll, "n": int(n)}


def ece_floor(probs: np.ndarray, bins: int = ECE_BINS, draws: int = FLOOR_DRAWS, seed: int = 0
              ) -> dict[str, float]:
    """The ECE that sampling alone gives at these probabilities: labels drawn from the
    probabilities themselves (a perfectly calibrated model), `draws` times; the median and the
    10th and 90th percentiles. A measured ECE inside that range is as good as this many
    predictions can show."""
    probs = np.asarray(probs, np.float64)
    n = len(probs)
    if n == 0:
        return {"ece_floor": float("nan"), "ece_floor_p10": float("nan"),
                "ece_floor_p90": float("nan")}
    rng = np.random.default_rng(seed)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    onehot = np.eye(bins)[_bin_of(confidence, bins)]  # (n, bins)
    expected = confidence @ onehot  # the confidences summed per bin
    ece = []
    for start in range(0, draws, FLOOR_CHUNK):
        u = rng.random((min(FLOOR_CHUNK, draws - start), n, 1))
        drawn = np.minimum((u > cumulative[None]).sum(axis=2), probs.shape[1] - 1)
        right = (drawn == predicted[None]).astype(np.float64)
        ece.append(np.abs(right @ onehot - expected).sum(axis=1) / n)
    ece = np.concatenate(ece)
    return {"ece_floor": float(np.median(ece)), "ece_floor_p10": float(np.quantile(ece, 0.1)),
            "ece_floor_p90": float(np.quantile(ece, 0.9))}


def reliability(probs: np.ndarray, true: np.ndarray, bins: int = ECE_BINS
                ) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per non-empty confidence bin: a reliability diagram."""
    confidence = np.asarray(probs, np.float64).max(axis=1)
    right = np.asarray(probs).argmax(axis=1) == true
    which = _bin_of(confidence, bins)
    return [(float(confidence[which == b].mean()), float(right[which == b].mean()),
             int((which == b).sum())) for b in range(bins) if (which == b).any()]


@dataclass(frozen=True)
class Calibration:
    """A fitted temperature and the held-out figures before and after it (cross-fitted)."""

    temperature: float
    before: dict[str, float]
    after: dict[str, float]

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "before": self.before, "after": self.after}


def calibrate_folds(folds: Seq[Held]) -> Calibration:
    """Fit one temperature on every fold's held-out predictions (the one a model keeps), and
    measure before and after cross-fitted: each fold scaled by the temperature of the others."""
    pooled = Held.pooled(folds)
    cross = []
    for k, fold in enumerate(folds):
        others = [f for i, f in enumerate(folds) if i != k]
        t = fit_temperature(Held.pooled(others)) if others else 1.0
        cross.append(scaled(fold.log_probs, t))
    after = np.concatenate(cross) if cross else np.zeros_like(pooled.log_probs)
    return Calibration(temperature=fit_temperature(pooled),
                       before=figures(np.exp(pooled.log_probs), pooled.true),
                       after={**figures(after, pooled.true), **ece_floor(after)})
