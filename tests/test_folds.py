"""Leave-one-subject-out folds and run_fold: saved models, the judge, determinism, resuming."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from model.data.synth import make_dataset
from model.evaluate.folds import JUDGE_VARIANT, judge_config_for, loso_folds, run_fold
from model.evaluate.metrics import Evaluation, evaluate
from model.learn.saved import TrainedModel
from model.settings import PROFILES, run_config

CONFIG = run_config(PROFILES["test"], threads=1, epochs=2)


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)
    data = make_dataset(n_subjects=3, reps=1, seed=5)
    return ([s for s in data if s.subject != "s2"], [s for s in data if s.subject == "s2"])


@pytest.fixture(scope="module")
def fold(split, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fold")
    return workdir, run_fold(*split, CONFIG, workdir=workdir, progress=False)


def test_loso_folds():
    assert loso_folds(["s2", "s1", "s3", "s1"]) == [
        ("s1", ["s2", "s3"]), ("s2", ["s1", "s3"]), ("s3", ["s1", "s2"]),
    ]
    with pytest.raises(ValueError, match="at least 2 subjects"):
        loso_folds(["s1", "s1"])


def test_judge_is_a_separated_classifier_with_another_seed():
    judge = judge_config_for(CONFIG)
    assert judge.variant == JUDGE_VARIANT and judge.seed != CONFIG.seed
    assert replace(judge, variant=CONFIG.variant, seed=CONFIG.seed) == CONFIG


def test_fold_saves_both_models_and_evaluates_the_held_out_subject(fold, split):
    _, result = fold
    train, test = split
    assert result.held_out == "s2"
    assert (result.n_train, result.n_test) == (len(train), len(test))
    model = TrainedModel.load(result.model_dir)
    judge = TrainedModel.load(result.judge_dir)
    assert model.config.variant == "full" and judge.config.variant == JUDGE_VARIANT
    assert len(result.held["log_probs"]) == len(test) == len(result.held["true"])
    assert result.held["classes"] == [f"{e}/{lbl}" for e, lbl in model.classes]
    ev = result.figures
    assert isinstance(ev, Evaluation) and ev.n == len(test)
    for judge_name in ("self", "independent"):
        assert 0.0 <= ev.correction[judge_name]["all"] <= 1.0
    assert ev.sdtw["incorrect"]["before"] > 0 and ev.sdtw["all"]["after"] > 0
    d = json.loads(json.dumps(result.to_dict()))
    assert d["evaluation"]["n"] == len(test) and d["held_out"] == "s2"


def test_fold_is_deterministic_and_resumes_from_its_checkpoints(fold, split, tmp_path):
    workdir, first = fold
    again = run_fold(*split, CONFIG, workdir=tmp_path, progress=False)
    assert again.evaluation == first.evaluation
    assert (workdir / "checkpoints" / "model" / "last.pt").is_file()
    before = TrainedModel.load(first.model_dir).meta["history"]
    resumed = run_fold(*split, CONFIG, workdir=workdir, progress=False)
    assert resumed.evaluation == first.evaluation
    # restored from the checkpoint, not retrained: even the epochs' timings are the same
    assert TrainedModel.load(resumed.model_dir).meta["history"] == before
    assert [row["epoch"] for row in before] == [1, 2]


def test_a_subject_in_both_sets_is_refused(split):
    train, test = split
    with pytest.raises(ValueError, match="both training and test"):
        run_fold(train, test + train[:1], CONFIG, progress=False)


def test_a_judge_that_normalises_differently_is_refused(fold, split):
    _, result = fold
    model = TrainedModel.load(result.model_dir)
    judge = TrainedModel.load(result.judge_dir)
    judge = replace(judge, normalization=replace(judge.normalization, scale_by_body=True))
    with pytest.raises(ValueError, match="judge normalises"):
        evaluate(model, split[1], judge)


def test_a_test_label_the_model_never_saw_counts_as_missed(fold, split):
    _, result = fold
    model = TrainedModel.load(result.model_dir)
    test = list(split[1])
    test[0] = replace(test[0], label="wobbly")
    ev = evaluate(model, test)
    assert ev.classes[-1] == (test[0].exercise, "wobbly")
    assert ev.confusion.shape == (len(model.classes) + 1,) * 2
    row = next(r for r in ev.per_class if r.cls[1] == "wobbly")
    assert row.n == 1 and row.accuracy == 0.0
    assert ev.to_dict()["correction"]["independent"]["all"] is None
