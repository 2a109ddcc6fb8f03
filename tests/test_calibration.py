"""Temperature scaling: fitted on held-out predictions, it lowers the ECE of an overconfident
model on predictions it was not fitted on, and never changes the predicted class."""

import numpy as np
import pytest
from scipy.special import log_softmax

from model.evaluate.calibration import (
    Held,
    calibrate_folds,
    ece_floor,
    figures,
    fit_temperature,
    reliability,
    scaled,
)


def overconfident(n: int, classes: int = 4, sharpness: float = 6.0, seed: int = 0) -> Held:
    """Predictions right about 70 % of the time whose logits are stretched `sharpness` times."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    logits = rng.normal(0.0, 1.0, (n, classes))
    logits[np.arange(n), true] += 1.2
    return Held(log_softmax(sharpness * logits, axis=1), true)


def test_temperature_lowers_ece_on_a_split_it_was_not_fitted_on():
    fit, held_out = overconfident(2000, seed=1), overconfident(2000, seed=2)
    t = fit_temperature(fit)
    assert t > 2.0  # the model is overconfident: the fitted temperature softens it
    before = figures(np.exp(held_out.log_probs), held_out.true)
    after = figures(scaled(held_out.log_probs, t), held_out.true)
    assert after["ece"] < 0.05 < before["ece"]
    assert after["nll"] < before["nll"] and after["brier"] < before["brier"]
    assert (scaled(held_out.log_probs, t).argmax(1) == held_out.log_probs.argmax(1)).all()


def test_cross_fitted_figures_use_no_fold_on_itself():
    folds = [overconfident(400, seed=s) for s in range(5)]
    cal = calibrate_folds(folds)
    assert cal.after["ece"] < cal.before["ece"]
    assert cal.after["n"] == cal.before["n"] == 2000
    assert cal.after["ece_floor_p10"] <= cal.after["ece_floor"] <= cal.after["ece_floor_p90"]
    # a fold's cross-fitted figure depends on the other folds only: changing the scores of
    # fold 0 leaves the temperature applied to fold 0 as it was.
    changed = [overconfident(400, sharpness=1.0, seed=9), *folds[1:]]
    others_t = fit_temperature(Held.pooled(folds[1:]))
    assert fit_temperature(Held.pooled(changed[1:])) == pytest.approx(others_t)


def test_a_calibrated_model_keeps_its_temperature_near_one():
    rng = np.random.default_rng(3)
    n, classes = 4000, 3
    logits = rng.normal(0.0, 2.0, (n, classes))
    probs = np.exp(log_softmax(logits, axis=1))
    true = np.array([rng.choice(classes, p=p) for p in probs])  # labels drawn from the model
    assert fit_temperature(Held(np.log(probs), true)) == pytest.approx(1.0, abs=0.1)


def test_figures_of_perfect_and_reliability_bins():
    probs = np.eye(3)[[0, 1, 2, 0]]
    f = figures(probs, np.array([0, 1, 2, 0]))
    assert f["ece"] == pytest.approx(0.0) and f["brier"] == pytest.approx(0.0)
    bins = reliability(np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]]), np.array([0, 1, 0]))
    assert [c for _, _, c in bins] == [2, 1]  # 0.55 and 0.6 share a bin, 0.9 has its own
    assert bins[0][1] == pytest.approx(0.5)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        Held(np.zeros((3, 2)), np.zeros(4, int))


def test_reliability_diagram_is_a_png(tmp_path):
    from model.evaluate.plots import plot_reliability

    held = overconfident(300)
    path = plot_reliability({"before": reliability(np.exp(held.log_probs), held.true),
                             "after": reliability(scaled(held.log_probs, 3.0), held.true)},
                            tmp_path / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ece_floor_is_what_sampling_alone_gives():
    rng = np.random.default_rng(4)
    probs = np.exp(log_softmax(rng.normal(0.0, 2.0, (200, 3)), axis=1))
    small, large = ece_floor(probs), ece_floor(np.tile(probs, (25, 1)))
    assert small == ece_floor(probs)  # seeded: the same figures every time
    assert large["ece_floor_p90"] < small["ece_floor_p10"]  # more predictions, a lower floor
    truthful = [figures(probs, np.array([rng.choice(3, p=p) for p in probs]))["ece"]
                for _ in range(40)]
    inside = np.mean([small["ece_floor_p10"] <= e <= small["ece_floor_p90"] for e in truthful])
    assert 0.6 <= inside <= 0.95  # about 80 % of truthful models' ECEs fall within p10-p90


def test_an_overconfident_model_lies_above_its_floor_and_scaling_brings_it_down():
    fit, held_out = overconfident(300, seed=5), overconfident(300, seed=6)
    raw = np.exp(held_out.log_probs)
    assert figures(raw, held_out.true)["ece"] > ece_floor(raw)["ece_floor_p90"]
    calibrated = scaled(held_out.log_probs, fit_temperature(fit))
    assert figures(calibrated, held_out.true)["ece"] < ece_floor(calibrated)["ece_floor_p90"]


def test_predictions_that_are_all_right_do_not_sharpen_the_model():
    """An underconfident model on people it gets all right: the Brier score alone would fall
    towards a temperature of 0 (every probability pushed to 0 or 1); the fit keeps 1, so the
    next person the model gets wrong is not scored as wrong with near certainty."""
    rng = np.random.default_rng(5)
    true = rng.integers(0, 2, 300)
    logits = np.zeros((300, 2))
    logits[np.arange(300), true] = 1.5  # always right, at about 82 % confidence
    held = Held(log_softmax(logits, axis=1), true)
    assert fit_temperature(held) == pytest.approx(1.0, abs=1e-3)


def test_one_confidently_wrong_person_does_not_make_everyone_else_underconfident():
    """The fit's loss is bounded (Brier): 100 repetitions predicted wrong with near certainty,
    among 1,800 of nine other people, barely move the temperature (under the NLL, whose loss
    grows without bound, it rose more than fourfold here)."""
    others = [overconfident(200, seed=s) for s in range(9)]
    rng = np.random.default_rng(42)
    true = rng.integers(0, 4, 100)
    logits = rng.normal(0.0, 1.0, (100, 4))
    logits[np.arange(100), (true + 1) % 4] += 2.5  # a wrong class, by far
    wrong = Held(log_softmax(30.0 * logits, axis=1), true)
    without, with_wrong = fit_temperature(Held.pooled(others)), fit_temperature(
        Held.pooled([*others, wrong]))
    assert with_wrong / without < 1.5
    good = Held.pooled(others)
    assert figures(scaled(good.log_probs, with_wrong), good.true)["ece"] < 0.05
