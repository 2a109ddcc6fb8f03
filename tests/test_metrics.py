"""Metric arithmetic from given predictions, the confusion PNG, and evaluate on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.evaluate.metrics import Evaluation, summarize
from model.evaluate.plots import plot_confusion

CLASSES = [("squat", "correct"), ("squat", "knees_inward"), ("lunge", "correct")]
TRUE = np.array([0, 0, 1, 1, 1, 2])
PRED = np.array([0, 1, 1, 1, 0, 2])
SELF = np.array([True, True, False, True, True, True])


def test_classification_figures():
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": None})
    assert ev.n == 6
    assert ev.micro == pytest.approx(4 / 6)
    assert [r.accuracy for r in ev.per_class] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert ev.macro == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert ev.confusion.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert [r.n for r in ev.per_class] == [2, 3, 1]


def test_correction_success_over_all_macro_and_incorrect_only():
    indep = np.array([True, False, False, False, True, True])
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": indep})
    assert ev.correction["self"]["all"] == pytest.approx(5 / 6)
    assert ev.correction["self"]["incorrect"] == pytest.approx(2 / 3)
    assert ev.correction["self"]["macro"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert ev.correction["independent"]["all"] == pytest.approx(3 / 6)
    assert ev.correction["independent"]["incorrect"] == pytest.approx(1 / 3)
    assert [r.correction_independent for r in ev.per_class] == pytest.approx([0.5, 1 / 3, 1.0])


def test_the_judge_on_uncorrected_inputs_is_the_baseline():
    indep = np.array([True, False, False, False, True, True])
    base = np.array([True, True, False, False, False, True])
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": indep}, uncorrected=base)
    assert ev.correction["uncorrected"] == pytest.approx({"all": 3 / 6, "incorrect": 0.0})
    back = Evaluation.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back.correction["uncorrected"]["all"] == pytest.approx(0.5)


def test_divergence_means_over_all_and_incorrect_sequences_with_a_target():
    before = np.array([0.0, 0.0, 4.0, 6.0, np.nan, 0.0])
    after = np.array([1.0, 0.5, 2.0, 1.0, np.nan, 0.3])
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": None}, (before, after))
    assert ev.sdtw["all"]["before"] == pytest.approx(10 / 5)
    assert ev.sdtw["all"]["after"] == pytest.approx(4.8 / 5)
    assert ev.sdtw["incorrect"] == pytest.approx({"before": 5.0, "after": 1.5})


def test_missing_figures_are_none_in_json_and_round_trip():
    sdtw = (np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.0]), np.full(6, 0.2))
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": None}, sdtw)
    d = json.loads(json.dumps(ev.to_dict()))
    assert d["correction"]["independent"] == {"all": None, "macro": None, "incorrect": None}
    assert d["per_class"][1]["class"] == "squat/knees_inward"
    assert d["sdtw_before"] == 0.5 and d["sdtw_after"] == pytest.approx(0.2)
    assert d["sdtw_before_incorrect"] == 1.0
    back = Evaluation.from_dict(d)
    assert back.to_dict() == d
    assert back.classes == CLASSES


def test_classes_absent_from_the_test_set_do_not_count_in_macro():
    classes = [*CLASSES, ("plank", "correct")]
    ev = summarize(classes, TRUE, PRED, {"self": SELF, "independent": None})
    assert len(ev.per_class) == 3
    assert ev.macro == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert ev.confusion.shape == (4, 4)


def test_no_incorrect_sequence_gives_nan_not_zero():
    ev = summarize(CLASSES, np.array([0, 2]), np.array([0, 2]),
                   {"self": np.array([True, True]), "independent": None})
    assert ev.correction["self"]["all"] == 1.0
    assert ev.to_dict()["correction"]["self"]["incorrect"] is None
    assert ev.to_dict()["sdtw_before"] is None


def test_confusion_png(tmp_path):
    ev = summarize(CLASSES, TRUE, PRED, {"self": SELF, "independent": None})
    path = plot_confusion(ev, tmp_path / "cm" / "confusion.png", synthetic=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 5000
