"""The plain UI-PRMD baseline of ../shared/data/ui-prmd/SOURCE.md, measured next to the GCN.

Features: every one of the 39 Vicon markers, its trajectory centred on the pelvis (the mean of
LASI, RASI, LPSI, RPSI in each frame), divided by the body height (head markers over the lowest
foot marker in the first, standing frame), resampled to 50 frames and flattened. Classifiers:
standardised logistic regression (C = 0.1), and 1-nearest-neighbour on the same standardised
features. Leave-one-subject-out; the scaler and classifier see the training subjects only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.data.normalize import resample
from model.data.sequence import UNITS, Sequence
from model.data.skeletons import get_skeleton
from model.settings import CORRECT

FRAMES = 50
PELVIS = ("LASI", "RASI", "LPSI", "RPSI")
HEAD = ("LFHD", "RFHD", "LBHD", "RBHD")
FEET = ("LHEE", "LTOE", "RHEE", "RTOE")


def features(seq: Sequence) -> np.ndarray:
    """One vicon39 repetition as a flat vector: pelvis-centred, height-scaled, 50 frames."""
    if seq.skeleton != "vicon39":
        raise ValueError(f"{seq.source}: the UI-PRMD baseline reads vicon39, got {seq.skeleton}")
    sk = get_skeleton("vicon39")
    poses = np.asarray(seq.poses, dtype=np.float64) * UNITS[seq.units]
    pelvis = poses[:, [sk.index(j) for j in PELVIS]].mean(axis=1, keepdims=True)
    first = poses[0]
    height = (first[[sk.index(j) for j in HEAD], 2].max()
              - first[[sk.index(j) for j in FEET], 2].min())
    centred = (poses - pelvis) / height
    return resample(centred, len(poses) - 1, FRAMES - 1).reshape(-1)


CLASSIFIERS: dict[str, Callable[[], object]] = {
    "logistic regression (C=0.1)": lambda: make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
    "1-nearest-neighbour": lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(1)),
}


@dataclass
class BaselineResult:
    """Per held-out subject: accuracy, balanced accuracy and (when scores exist) AUC."""

    name: str
    accuracy: dict[str, float]
    balanced: dict[str, float]
    auc: dict[str, float]


def loso(seqs: list[Sequence], name: str) -> BaselineResult:
    """Leave-one-subject-out figures of one CLASSIFIERS entry on correct vs incorrect."""
    x = np.stack([features(s) for s in seqs])
    y = np.array([s.label != CORRECT for s in seqs], dtype=int)
    subjects = np.array([s.subject for s in seqs])
    out = BaselineResult(name, {}, {}, {})
    for held in sorted(set(subjects)):
        test = subjects == held
        clf = CLASSIFIERS[name]()
        clf.fit(x[~test], y[~test])
        pred = clf.predict(x[test])
        out.accuracy[held] = float((pred == y[test]).mean())
        out.balanced[held] = float(balanced_accuracy_score(y[test], pred))
        scores = clf.predict_proba(x[test])[:, 1]
        out.auc[held] = float(roc_auc_score(y[test], scores))
    return out
