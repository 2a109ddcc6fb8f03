"""The recipe choices a training makes on its own training data (a card's "auto").

`motion_only` "auto": should the network see each repetition's mean pose (DCT coefficient 0)?
It carries the body's build and standing posture, which shift the scores of a person never
seen, but for a hold (a plank) or a stance mistake the mean pose is the exercise. The choice is
an inner leave-one-subject-out over the training subjects alone, of a standardised logistic
regression on the network's own inputs (the DCT coefficients, with and without coefficient 0):
cheap, and blind to whatever is held out of this training. The mean pose is kept only when it
wins by more than the standard error of the per-subject differences (a one-standard-error
rule towards the input that does not carry the person); otherwise the network sees the motion
only. Fewer than two training subjects cannot choose and keep the mean pose (the paper's input).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.data.sequence import Sequence
from model.learn.config import AUTO, TrainConfig
from model.learn.gcn import encode_poses

PROBE_C = 0.1
PROBE_ITERATIONS = 500


def _probe() -> object:
    return make_pipeline(StandardScaler(),
                         LogisticRegression(C=PROBE_C, max_iter=PROBE_ITERATIONS))


def inner_loso_accuracy(x: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """The probe's accuracy on each training subject (sorted; NaN where the others hold one
    class only), trained on the rest."""
    scores = []
    for held in sorted(set(subjects.tolist())):
        test = subjects == held
        if len(set(y[~test].tolist())) < 2:
            scores.append(float("nan"))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = _probe().fit(x[~test], y[~test])
        scores.append(float((clf.predict(x[test]) == y[test]).mean()))
    return np.array(scores)


def choose_motion_only(poses: list[np.ndarray], seqs: list[Sequence], n_dct: int
                       ) -> tuple[bool, dict]:
    """Whether to hide the mean pose, and the inner figures that chose it."""
    subjects = np.array([str(s.subject) for s in seqs])
    if len(set(subjects.tolist())) < 2:
        return False, {"motion_only": False, "reason": "fewer than two training subjects"}
    coefs = encode_poses(poses, n_dct).numpy()
    y = np.array([f"{s.exercise}/{s.label}" for s in seqs])
    whole = inner_loso_accuracy(coefs.reshape(len(coefs), -1), y, subjects)
    motion = inner_loso_accuracy(coefs[:, :, 1:].reshape(len(coefs), -1), y, subjects)
    gain = (whole - motion)[~np.isnan(whole - motion)]
    if gain.size < 2:
        return False, {"motion_only": False, "reason": "no two subjects to compare on"}
    standard_error = float(gain.std(ddof=1) / np.sqrt(gain.size))
    chosen = not bool(gain.mean() > standard_error)
    return chosen, {"motion_only": chosen,
                    "inner_loso_with_mean_pose": float(np.nanmean(whole)),
                    "inner_loso_motion_only": float(np.nanmean(motion)),
                    "mean_pose_gain": float(gain.mean()), "standard_error": standard_error,
                    "subjects": sorted(set(subjects.tolist()))}


def resolve(config: TrainConfig, poses: list[np.ndarray], seqs: list[Sequence]
            ) -> tuple[TrainConfig, dict]:
    """The configuration with every "auto" chosen on this training data, and how."""
    if config.motion_only != AUTO:
        return config, {}
    chosen, figures = choose_motion_only(poses, seqs, config.n_dct)
    return replace(config, motion_only=chosen), {"motion_only": figures}
