"""Drift: do the repetitions scored lately look like the data the model was trained on?

Per exercise, three comparisons between the training data and what was scored since:
- the predicted class mix against the training class mix (population-stability index);
- the share of repetitions the model was unsure of;
- a few movement features of each repetition (model.evaluate.features), compared by PSI over
  deciles of the training values and by the two-sample Kolmogorov-Smirnov test.

A comparison is a drift when its PSI reaches the threshold (0.25 by convention: a marked shift)
and the shift is unlikely by chance: the KS test (features) or the chi-square test (class mix)
below a significance level that is shared out over the comparisons of the exercise (Bonferroni),
since PSI alone over a few dozen repetitions exceeds 0.25 by sampling noise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp

PSI_THRESHOLD = 0.25
PSI_BINS = 10
PSI_PSEUDOCOUNT = 0.5  # added to every bin's count, so that an empty bin stays finite
ALPHA = 0.01  # significance level of one exercise's comparisons together
MIN_ROWS = 5  # fewer values than this on either side: the feature is not compared
def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population-stability index of `actual` against `expected`, over quantile bins of
    `expected`."""
    expected, actual = np.asarray(expected, float), np.asarray(actual, float)
    edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1)
    a = np.bincount(np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1)
    return mix_psi(dict(enumerate(e)), dict(enumerate(a)))


def mix_psi(expected: Mapping, actual: Mapping) -> float:
    """PSI between two count tables (class -> count) over the union of their keys."""
    keys = sorted(set(expected) | set(actual), key=str)
    e = np.array([expected.get(k, 0) for k in keys], float)
    a = np.array([actual.get(k, 0) for k in keys], float)
    if e.sum() == 0 or a.sum() == 0:
        return float("nan")
    e = (e + PSI_PSEUDOCOUNT) / (e + PSI_PSEUDOCOUNT).sum()
    a = (a + PSI_PSEUDOCOUNT) / (a + PSI_PSEUDOCOUNT).sum()
    return float(((a - e) * np.log(a / e)).sum())


@dataclass
class FeatureDrift:
    feature: str
    psi: float
    ks: float
    p_value: float
    train_median: float
    scored_median: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ExerciseDrift:
    exercise: str
    n_train: int
    n_scored: int
    class_psi: float
    class_p_value: float
    unsure_share: float
    train_mix: dict[str, int]
    scored_mix: dict[str, int]
    features: list[FeatureDrift] = field(default_factory=list)
    threshold: float = PSI_THRESHOLD
    alpha: float = ALPHA

    @property
    def drifted(self) -> list[str]:
        """What shifted: "class mix" and the names of features (see the module's docstring)."""
        level = self.alpha / (1 + len(self.features))
        found = (["class mix"] if self.class_psi >= self.threshold and self.class_p_value < level
                 else [])
        return found + [f.feature for f in self.features
                        if f.psi >= self.threshold and f.p_value < level]

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "n_train": self.n_train, "n_scored": self.n_scored,
                "class_psi": self.class_psi, "class_p_value": self.class_p_value,
                "unsure_share": self.unsure_share,
                "train_mix": self.train_mix, "scored_mix": self.scored_mix,
                "features": [f.to_dict() for f in self.features], "drifted": self.drifted}


@dataclass(frozen=True)
class Observation:
    """One repetition's side of the comparison: its exercise, class label (true for training
    rows, predicted for scored ones), whether the model was unsure, and its features."""

    exercise: str
    label: str | None
    features: Mapping[str, float]
    unsure: bool = False


def compare(train: Iterable[Observation], scored: Iterable[Observation],
            threshold: float = PSI_THRESHOLD, alpha: float = ALPHA) -> list[ExerciseDrift]:
    """Per exercise seen on either side, the drift of the scored observations from training."""
    by_train: dict[str, list[Observation]] = {}
    by_scored: dict[str, list[Observation]] = {}
    for o in train:
        by_train.setdefault(o.exercise, []).append(o)
    for o in scored:
        by_scored.setdefault(o.exercise, []).append(o)
    return [_exercise(ex, by_train.get(ex, []), by_scored.get(ex, []), threshold, alpha)
            for ex in sorted(set(by_train) | set(by_scored))]


def _exercise(exercise: str, train: list[Observation], scored: list[Observation],
              threshold: float, alpha: float) -> ExerciseDrift:
    train_mix = Counter(str(o.label) for o in train)
    scored_mix = Counter(str(o.label) for o in scored)
    result = ExerciseDrift(
        exercise=exercise, n_train=len(train), n_scored=len(scored),
        class_psi=mix_psi(train_mix, scored_mix) if train and scored else float("nan"),
        class_p_value=_mix_p_value(train_mix, scored_mix),
        unsure_share=float(np.mean([o.unsure for o in scored])) if scored else float("nan"),
        train_mix=dict(train_mix), scored_mix=dict(scored_mix), threshold=threshold,
        alpha=alpha,
    )
    names = sorted({k for o in train for k in o.features} & {k for o in scored for k in o.features})
    for name in names:
        e = np.array([o.features[name] for o in train if name in o.features], float)
        a = np.array([o.features[name] for o in scored if name in o.features], float)
        e, a = e[np.isfinite(e)], a[np.isfinite(a)]
        if len(e) < MIN_ROWS or len(a) < MIN_ROWS:
            continue
        ks = ks_2samp(e, a)
        result.features.append(FeatureDrift(
            feature=name, psi=psi(e, a), ks=float(ks.statistic), p_value=float(ks.pvalue),
            train_median=float(np.median(e)), scored_median=float(np.median(a))))
    return result


def _mix_p_value(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """The chi-square test's p-value of two class mixes being one (1.0 when either is empty or
    both hold one class)."""
    keys = sorted(set(expected) | set(actual))
    table = np.array([[expected.get(k, 0) for k in keys], [actual.get(k, 0) for k in keys]])
    if len(keys) < 2 or table.sum(axis=1).min() == 0:
        return 1.0
    return float(chi2_contingency(table).pvalue)
