"""Calibration as the retrain flow does it: a temperature fitted on the CV folds' held-out
predictions (as folds return them) lowers the ECE on gate subjects it was not fitted on, and
the figures and the reliability diagram come out for MLflow."""

import numpy as np
from scipy.special import log_softmax

from flows.confidence import fit_on_folds, on_gate
from model.evaluate.calibration import Held
from model.evaluate.folds import held_dict, held_out_predictions

CLASSES = [("squat", "correct"), ("squat", "knees_inward"), ("squat", "not_low_enough")]


def overconfident(n: int, seed: int, classes: int = 3) -> Held:
    """Right about 70 % of the time, logits stretched six times."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    logits = rng.normal(0.0, 1.0, (n, classes))
    logits[np.arange(n), true] += 1.2
    return Held(log_softmax(6.0 * logits, axis=1), true)


def cv_of(folds: list[dict]) -> dict:
    return {"folds": [{"metrics": f} for f in folds]}


def test_folds_temperature_lowers_gate_ece(tmp_path):
    folds = [{"held": held_dict(overconfident(300, seed=s), CLASSES)} for s in range(4)]
    calibration = fit_on_folds(cv_of(folds))
    assert calibration["temperature"] > 2.0
    assert calibration["cv"]["after"]["ece"] < calibration["cv"]["before"]["ece"]
    out = on_gate(calibration, overconfident(600, seed=99), tmp_path / "reliability.png")
    gate = out["gate"]
    assert gate["after"]["ece"] < 0.06 < gate["before"]["ece"]
    assert gate["after"]["nll"] < gate["before"]["nll"]
    # the calibrated ECE sits within what sampling alone gives; the raw one far above it
    assert gate["after"]["ece"] < gate["after"]["ece_floor_p90"] < gate["before"]["ece"]
    assert calibration["cv"]["after"]["ece"] < calibration["cv"]["after"]["ece_floor_p90"]
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_folds_with_different_classes_line_up_by_name():
    narrow = Held(np.log(np.array([[0.9, 0.1], [0.2, 0.8]])), np.array([0, 1]))
    wide = Held(np.log(np.full((1, 3), 1 / 3)), np.array([2]))
    parts = held_out_predictions([{"held": held_dict(narrow, CLASSES[:2])},
                                  {"held": held_dict(wide, CLASSES)}, {"held": None}])
    assert [p.log_probs.shape for p in parts] == [(2, 3), (1, 3)]
    assert np.exp(parts[0].log_probs[:, 2]).tolist() == [0.0, 0.0]
    assert parts[1].true.tolist() == [2]


def test_no_classifying_fold_keeps_temperature_one(tmp_path):
    calibration = fit_on_folds(cv_of([{"held": None}]))
    assert calibration["temperature"] == 1.0
    assert on_gate(calibration, None, tmp_path / "r.png")["gate"] == {}
