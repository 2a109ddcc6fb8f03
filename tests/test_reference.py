"""Decisions relative to a person's reference: the cut fitted on held-out people (never the one
scored), the decision and its probabilities, score() and the score flow with a reference."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from flows.cli import app
from flows.score import score_folder
from model.data.formats import write_session
from model.data.synth import make_session
from model.evaluate.reference import (
    Person,
    best_cut,
    best_threshold_accuracy,
    fit_cut,
    held_out_people,
    reference_accuracy,
    reference_figures,
)
from model.learn.saved import TrainedModel
from model.serve.reference import (
    REFERENCE_CUT_KEY,
    REFERENCE_CV_KEY,
    Reference,
    References,
    ReferenceUnusable,
    decide,
    log_odds,
    reference_caution,
)
from model.serve.scoring import cut_session, normalize_valid, score
from model.serve.sessions import upload_reference, upload_references
from tests.score_fixtures import INFO, save_tiny_model

SQUAT = [("squat", "correct"), ("squat", "knees_inward"), ("squat", "shallow"),
         ("lunge", "correct")]


def shifted_person(offset: float, gap: float = 6.0, seed: int = 0) -> Person:
    """Ten correct repetitions around offset + gap / 2, ten incorrect around offset - gap / 2."""
    rng = np.random.default_rng(seed)
    correct = np.repeat([True, False], 10)
    return Person(offset + np.where(correct, gap / 2, -gap / 2) + rng.normal(0, 0.3, 20),
                  correct)


def test_a_threshold_relative_to_the_persons_reference_undoes_their_shift():
    people = [shifted_person(offset, seed=k) for k, offset in enumerate((-4, -2, 0, 2, 4))]
    assert min(np.mean((p.log_odds > 0) == p.correct) for p in people) == 0.5
    assert all(best_threshold_accuracy(p) == 1.0 for p in people)
    assert reference_accuracy(people, size=2, draws=5) == [1.0] * 5
    # the network alone calls a squat correct above 0: the two most shifted people half right
    figures = reference_figures([replace(p, said_correct=p.log_odds > 0) for p in people])
    assert figures["network"]["2"] == pytest.approx(0.8, abs=0.02)
    assert figures["reference"]["2"] == 1.0
    assert reference_figures(people)["network"] is None


def test_the_reference_threshold_is_fitted_on_the_other_people_only():
    # four people whose mistakes sit 8 below their correct squats, one whose sit 3 below: the
    # cut fitted on the four lies halfway, about 4 below, and misses that one's mistakes
    people = [shifted_person(0.0, 8.0, seed=k) for k in range(4)] + [shifted_person(0.0, 3.0, 9)]
    accuracy = reference_accuracy(people, size=3, draws=5)
    assert accuracy[:4] == [1.0] * 4
    assert accuracy[4] < 0.5 and best_threshold_accuracy(people[4]) == 1.0


def test_the_best_cut_is_the_lowest_of_the_most_accurate_ones_ties_included():
    rng = np.random.default_rng(1)
    for _ in range(200):
        values = np.round(rng.normal(size=int(rng.integers(1, 30))), 1)  # ties
        correct = rng.random(len(values)) < 0.5
        ordered = np.sort(values)
        cuts = np.concatenate([[ordered[0] - 1.0], (ordered[1:] + ordered[:-1]) / 2])
        accuracy = [np.mean((values > c) == correct) for c in cuts]
        assert best_cut(values, correct) == cuts[int(np.argmax(accuracy))]


def test_the_kept_cut_lies_between_the_correct_and_the_mistakes_relative_to_the_reference():
    people = [shifted_person(offset, 8.0, seed=k) for k, offset in enumerate((-3, 0, 3))]
    # relative to correct repetitions (about +4 + offset), the mistakes sit about 8 below
    assert -7.0 < fit_cut(people) < -1.0
    assert fit_cut([Person(np.zeros(3), np.array([True, False, False]))]) is None  # too few
    small = Person(np.array([2.0, 2.2, -4.0]), np.array([True, True, False]))
    assert -6.2 < fit_cut([small]) < 0.0


def test_held_out_people_are_one_per_fold_and_exercise():
    classes = ["lunge/correct", "lunge/knees_inward", "squat/correct", "squat/shallow"]
    log_probs = np.log(np.full((5, 4), 0.25))
    fold = {"held": {"classes": classes, "log_probs": log_probs.ravel().tolist(),
                     "true": [0, 1, 2, 2, 3]}}
    fold["held"]["log_probs"][2 * 4 + 2] = 0.0  # the network calls the first squat correct
    fold["held"]["log_probs"][4 * 4 + 3] = 0.0  # and the shallow one shallow
    people = held_out_people([{"held": None}, fold])
    assert [p.correct.tolist() for p in people] == [[True, False], [True, True, False]]
    assert [p.said_correct.tolist() for p in people] == [[True, True], [True, False, False]]
    assert np.allclose(people[0].log_odds, np.log(0.25 / 0.75))


def test_a_model_whose_cv_the_rule_did_not_help_warns_when_scored_against_a_reference():
    worse = {"network": {"1": 0.98, "2": 0.98}, "reference": {"1": 0.95, "2": 0.97}}
    caution = reference_caution({REFERENCE_CV_KEY: worse})
    assert "less well than the network alone (95.0% / 97.0% against 98.0% / 98.0%" in caution
    mixed = {"network": {"1": 0.98, "2": 0.98}, "reference": {"1": 0.95, "2": 0.99}}
    assert reference_caution({REFERENCE_CV_KEY: mixed}) is None
    assert reference_caution({}) is None
    assert reference_caution({REFERENCE_CV_KEY: {"network": None, "reference": None}}) is None


def log_probs_of(*rows: list[float]) -> np.ndarray:
    p = np.array(rows, np.float64)
    return np.log(p / p.sum(axis=1, keepdims=True))


def test_a_repetition_is_judged_against_the_persons_offset_and_the_cut():
    lp = log_probs_of([0.6, 0.3, 0.05, 0.05], [0.2, 0.1, 0.6, 0.1], [0.3, 0.3, 0.1, 0.3])
    exercises = ["squat", "squat", "lunge"]
    above = log_odds(lp, 0)[0] - 0.1  # the first row clears offset + cut by 0.1
    decided, adjusted = decide(lp, SQUAT, exercises, Reference({"squat": above}, {"squat": 3}), 0.0)
    # row 0 stays correct; row 1 (log-odds far below) gets its most likely mistake, "shallow";
    # the lunge row, an exercise the reference lacks, keeps the network's decision
    assert decided.tolist() == [0, 2, 0]
    assert np.allclose(np.exp(adjusted).sum(axis=1), 1.0)
    assert np.allclose(adjusted[2], lp[2]) and np.isclose(adjusted[0, 3], lp[0, 3])
    # within the exercise, the correct share is the sigmoid of the relative log-odds (0.1)
    squat_mass = np.exp(lp[0, :3]).sum()
    assert np.isclose(np.exp(adjusted[0, 0]) / squat_mass, 1 / (1 + np.exp(-0.1)))
    # the mistakes keep their proportions
    assert np.isclose(np.exp(adjusted[1, 1] - adjusted[1, 2]), 0.1 / 0.6)
    lower, _ = decide(lp, SQUAT, exercises, Reference({"squat": above + 0.2}, {"squat": 3}), 0.0)
    assert lower.tolist() == [1, 2, 0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = save_tiny_model(tmp_path_factory.mktemp("model"))
    model = TrainedModel.load(folder)
    model.meta[REFERENCE_CUT_KEY] = 0.0
    return model.save(folder)


@pytest.fixture(scope="module")
def model(model_dir) -> TrainedModel:
    return TrainedModel.load(model_dir)


def squats(labels: list[str], seed: int):
    session, _ = make_session("u1", "squat", labels, seed=seed)
    return session


def test_score_decides_relative_to_the_reference_and_corrects_for_the_decided_class(model):
    reps = cut_session(model, squats(["correct", "knees_inward", "correct", "not_low_enough"], 3))
    plain = score(model, reps)
    assert all(r.reference is None for r in plain)
    for offset, label in ((-1e6, "correct"), (1e6, None)):
        everyone = References(everyone=Reference({"squat": offset}, {"squat": 2}, "abc"))
        judged = score(model, reps, references=everyone)
        assert all(r.reference == "abc" for r in judged)
        if label:
            assert {r.label for r in judged} == {label}
        else:
            assert "correct" not in {r.label for r in judged}
        poses, _ = normalize_valid(model, reps)
        fed = [model.classes.index(tuple(r.predicted.split("/"))) for r in judged]
        again = model.infer(poses, fed_classes=fed)
        for r, corrected in zip(judged, again.corrected, strict=True):
            assert np.allclose(r.corrected, corrected, atol=1e-5)


def test_a_model_without_a_cut_cannot_score_against_a_reference(model_dir, tmp_path):
    model = TrainedModel.load(model_dir)
    del model.meta[REFERENCE_CUT_KEY]
    reps = cut_session(model, squats(["correct", "correct"], 4))
    with pytest.raises(ReferenceUnusable, match="no reference cut"):
        score(model, reps, references=References(everyone=Reference({"squat": 0.0}, {"squat": 2})))


def test_the_reference_of_an_upload_is_its_median_log_odds(model, tmp_path):
    path = write_session(squats(["correct", "correct", "correct"], 6), tmp_path / "ref.json")
    ref = upload_reference(model, str(path))
    reps = cut_session(model, squats(["correct", "correct", "correct"], 6))
    poses, _ = normalize_valid(model, reps)
    column = model.classes.index(("squat", "correct"))
    expected = np.median(log_odds(model.infer(poses).log_probs, column))
    assert ref.repetitions == {"squat": len(reps)} and np.isclose(ref.offsets["squat"], expected)
    assert len(ref.digest) == 64 and ref.subject == "u1"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ReferenceUnusable, match="broken.json"):
        upload_reference(model, str(broken))


def encrypted(path: Path) -> Path:
    """An NPZ session whose members say they are encrypted (the zip flag bit set)."""
    raw = bytearray(write_session(squats(["correct"] * 3, 6), path.with_suffix(".src.npz"))
                    .read_bytes())
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        while at >= 0:
            raw[at + flags] |= 1
            at = raw.find(signature, at + 4)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("hostile", ["encrypted.npz", "fifo.json"])
def test_a_reference_that_cannot_be_read_is_unusable_naming_it(model, tmp_path, hostile):
    path = tmp_path / "ref" / hostile
    path.parent.mkdir()
    if hostile == "fifo.json":
        os.mkfifo(path)
    else:
        encrypted(path)
    with pytest.raises(ReferenceUnusable, match=f"^reference {re.escape(str(path))}: .+"):
        upload_references(model, str(path))


def test_the_flow_keeps_runs_against_different_references_apart(model_dir, tmp_path):
    uploads = tmp_path / "uploads"
    sessions = (["correct", "not_low_enough", "correct"], ["knees_inward", "correct"])
    for k, labels in enumerate(sessions):
        write_session(squats(labels, 10 + k), uploads / f"s{k}.json")
    refs = [write_session(squats(["correct"] * 3, seed), tmp_path / f"ref{seed}.json")
            for seed in (20, 21)]
    model = TrainedModel.load(model_dir)
    out = str(tmp_path / "out")
    plain = score_folder(str(uploads), out, model_dir, INFO, html=False)
    runs = []
    for ref in refs + refs[:1]:
        person = upload_references(model, str(ref))
        runs.append(score_folder(str(uploads), out, model_dir, INFO, html=False,
                                 references=person))
    assert (plain.reports, runs[0].reports, runs[1].reports) == (2, 2, 2)
    assert (runs[2].reports, runs[2].skipped) == (0, 2)  # the same reference again: done
    report = json.loads(Path(runs[1].report_files[0]).read_text())  # the last one written
    assert report["model"]["reference"] == upload_reference(model, str(refs[1])).digest
    assert {r["reference"] for r in report["repetitions"]} == {report["model"]["reference"]}
    table = DeltaTable(out + "/repetitions").to_pyarrow_table()
    assert set(table.column("reference").to_pylist()) == {None, *(r.model["reference"]
                                                               for r in runs)}


def test_the_cli_refuses_an_unusable_reference_naming_it(tmp_path, prefect_api):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    done = CliRunner().invoke(app, ["score", str(uploads), "--reference",
                                    str(tmp_path / "missing.json"), "--out", str(tmp_path / "o")])
    assert done.exit_code != 0 and "Traceback" not in done.output
    assert "missing.json: no such file" in " ".join(done.output.split())


def test_each_person_is_judged_against_their_own_reference(model, tmp_path):
    def person(subject: str, labels: list[str], seed: int):
        session, _ = make_session(subject, "squat", labels, seed=seed)
        return session

    folder = tmp_path / "references"
    for subject, seed in (("anna", 30), ("ben", 31)):
        write_session(person(subject, ["correct"] * 3, seed), folder / f"{subject}.json")
    book = upload_references(model, str(folder))
    assert set(book.by_subject) == {"anna", "ben"} and book.everyone is None
    assert book.digest not in {r.digest for r in book.by_subject.values()}
    reps = [rep for subject, seed in (("anna", 32), ("ben", 33), ("carl", 34))
            for rep in cut_session(model, person(subject, ["correct", "knees_inward"], seed))]
    # anna's offset pushed far down (all her squats correct), ben's far up (none), carl has none
    book = References(by_subject={"anna": replace(book.by_subject["anna"], offsets={"squat": -1e6}),
                                  "ben": replace(book.by_subject["ben"], offsets={"squat": 1e6})})
    judged = {s: [r for r in score(model, reps, references=book) if r.subject == s]
              for s in ("anna", "ben", "carl")}
    plain = [r for r in score(model, reps) if r.subject == "carl"]
    assert {r.label for r in judged["anna"]} == {"correct"}
    assert "correct" not in {r.label for r in judged["ben"]}
    assert [r.predicted for r in judged["carl"]] == [r.predicted for r in plain]
    assert {r.reference for r in judged["anna"]} == {book.by_subject["anna"].digest}
    assert {r.reference for r in judged["carl"]} == {None}
    lunges, _ = make_session("anna", "lunge", ["correct"] * 3, seed=36)
    write_session(lunges, folder / "anna-lunges.json")  # her lunges join her squats
    anna = upload_references(model, str(folder)).by_subject["anna"]
    assert set(anna.offsets) == {"squat", "lunge"} and anna.repetitions["squat"] == 3
    write_session(person("anna", ["correct"] * 3, 35), folder / "anna-again.json")
    with pytest.raises(ReferenceUnusable, match="second squat reference of 'anna'"):
        upload_references(model, str(folder))
