"""Calibrated confidence in the retrain flow: the temperature fitted on the cross-validation
folds' held-out predictions (never the gate subjects), its figures before and after
(cross-fitted in the CV; on the gate subjects with the fitted temperature) and the reliability
diagram of both; and the cut of decisions relative to a person's reference, fitted on the same
held-out predictions (model.evaluate.reference), with what it gives there (cross-fitted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.evaluate.calibration import (
    Held,
    calibrate_folds,
    ece_floor,
    figures,
    reliability,
    scaled,
)
from model.evaluate.folds import held_out_predictions
from model.evaluate.plots import plot_reliability
from model.evaluate.reference import fit_cut, held_out_people, reference_figures


def fit_on_folds(cv: dict) -> dict:
    """The temperature of the CV folds' held-out predictions and its cross-fitted figures:
    {"temperature", "cv": {"before", "after"}} (temperature 1 when no fold classifies)."""
    folds = held_out_predictions([f["metrics"] for f in cv["folds"]])
    if not folds:
        return {"temperature": 1.0, "cv": {}}
    cal = calibrate_folds(folds)
    return {"temperature": cal.temperature, "cv": {"before": cal.before, "after": cal.after}}


def fit_reference(cv: dict) -> dict:
    """The reference cut of the CV folds' held-out people and what the rule gives them,
    cross-fitted: {"cut", "cv"}; cut None (and no figures) when no held-out person has enough
    correct repetitions and a mistake."""
    people = held_out_people([f["metrics"] for f in cv["folds"]])
    cut = fit_cut(people)
    return {"cut": cut, "cv": {} if cut is None else reference_figures(people)}


def on_gate(calibration: dict, held: Held | None, plot_path: Path) -> dict:
    """`calibration` with the gate subjects' figures before and after its temperature, and
    the reliability diagram (gate subjects, before and after) drawn to `plot_path`."""
    if held is None or len(held.true) == 0:
        return {**calibration, "gate": {}}
    t = calibration["temperature"]
    raw, calibrated = np.exp(held.log_probs), scaled(held.log_probs, t)
    plot_reliability({"gate, uncalibrated": reliability(raw, held.true),
                      f"gate, temperature {t:.2f}": reliability(calibrated, held.true)},
                     plot_path)
    return {**calibration, "reliability_png": str(plot_path),
            "gate": {"before": figures(raw, held.true),
                     "after": {**figures(calibrated, held.true), **ece_floor(calibrated)}}}
