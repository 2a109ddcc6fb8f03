"""The one scoring path on a tiny model: results per repetition, errors kept, batching-neutral."""

from __future__ import annotations

import gc
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.data.labels import class_name
from model.data.normalize import Normalization, normalize
from model.data.readers import read_session
from model.data.sequence import Sequence, SequenceError
from model.data.skeletons import get_skeleton
from model.data.synth import make_dataset, make_session, to_skeleton
from model.evaluate.plots import plot_correction
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.serve.scoring import (
    HOLD_KEY,
    calibrate,
    cut_session,
    score,
    score_session,
    threshold_of,
)
from model.serve.sessions import score_uploads
from model.settings import PROFILES, run_config


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return make_dataset(n_subjects=3, reps=1, seed=3)


@pytest.fixture(scope="module")
def model(data):
    train_seqs = [s for s in data if s.subject != "s3"]
    m = train(train_seqs, run_config(PROFILES["test"], threads=1), progress=False)
    calibrate(m, train_seqs)
    return m


@pytest.fixture(scope="module")
def test_seqs(data):
    return [s for s in data if s.subject == "s3"]


def test_one_result_per_repetition_with_consistent_figures(model, test_seqs):
    results = score(model, test_seqs)
    assert [r.sequence_id for r in results] == [s.sequence_id for s in test_seqs]
    names = [class_name(c) for c in model.classes]
    for r, s in zip(results, test_seqs, strict=True):
        assert r.ok and r.subject == s.subject and r.exercise == s.exercise and r.rep == s.rep
        probs = np.array([r.probabilities[n] for n in names])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert r.predicted == names[int(probs.argmax())]
        assert r.confidence == pytest.approx(probs.max(), abs=1e-5)
        assert r.unsure == (r.confidence < threshold_of())
        assert r.exercise_mismatch == (not r.predicted.startswith(f"{s.exercise}/"))
        assert r.corrected.shape == s.poses.shape
        assert len(r.cues) == 1 and r.deviations
        assert r.deviations[0].cm >= r.deviations[1].cm >= 0


def test_json_safe_with_and_without_motion(model, test_seqs):
    r = score(model, test_seqs[:1])[0]
    d = json.loads(json.dumps(r.to_dict()))
    assert "corrected" not in d and d["cues"] == r.cues
    assert d["deviations"][0]["joint"] == r.deviations[0].joint
    m = json.loads(json.dumps(r.to_dict(include_motion=True)))
    assert np.allclose(np.array(m["corrected"]), r.corrected)


def test_batching_does_not_change_results(model, test_seqs):
    together = score(model, test_seqs, batch_size=64)
    alone = [score(model, [s], batch_size=1)[0] for s in test_seqs[:4]]
    for a, b in zip(together, alone, strict=False):
        assert a.predicted == b.predicted
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)
        assert np.allclose(a.corrected, b.corrected, atol=1e-4)


def test_scoring_leaves_the_cycle_collector_as_it_found_it(model, test_seqs, monkeypatch):
    assert gc.isenabled()
    assert score(model, test_seqs[:2])[0].ok and gc.isenabled()
    gc.disable()
    try:
        score(model, test_seqs[:2])
        assert not gc.isenabled()
    finally:
        gc.enable()

    def broken(*args, **kwargs):
        raise RuntimeError("forward pass failed")

    monkeypatch.setattr(type(model), "infer", broken)
    with pytest.raises(RuntimeError, match="forward pass failed"):
        score(model, test_seqs[:2])
    assert gc.isenabled()


def test_bad_inputs_get_errors_and_nothing_is_lost(model, test_seqs):
    good = test_seqs[0]
    short = replace(good, poses=good.poses[:3], source="upload-short.json")
    blank = replace(good, poses=np.full_like(good.poses, np.nan), source="upload-blank.json")
    results = score(model, [short, good, blank])
    assert len(results) == 3
    assert results[1].ok
    assert results[0].error_kind == "too_few_frames" and "upload-short.json" in results[0].error
    assert results[2].error_kind == "no_joints" and "upload-blank.json" in results[2].error
    assert results[0].to_dict()["predicted"] is None


def test_a_skeleton_that_does_not_map_is_refused_by_name(model, test_seqs):
    body25_model = replace(model, normalization=Normalization(skeleton="body25"))
    r = score(body25_model, [replace(test_seqs[0], source="phone.json")])[0]
    assert r.error_kind == "skeleton_mismatch"
    assert "phone.json" in r.error and "ec3d19" in r.error and "body25" in r.error


def test_a_mapped_skeleton_scores_like_the_canonical_one(model, test_seqs):
    seq = test_seqs[0]
    as_body25 = replace(seq, poses=to_skeleton(seq.poses, "body25"), skeleton="body25")
    a, b = score(model, [seq, as_body25])
    assert b.ok and a.predicted == b.predicted
    assert np.allclose(a.corrected, b.corrected, atol=1e-4)


def test_calibration_is_saved_with_the_model(model, tmp_path):
    assert model.meta[HOLD_KEY] > 0
    model.temperature = 2.5
    loaded = TrainedModel.load(model.save(tmp_path / "m"))
    assert loaded.temperature == 2.5
    assert loaded.meta[HOLD_KEY] == model.meta[HOLD_KEY]
    model.temperature = 1.0


def test_confidence_is_calibrated_and_unsure_follows_the_setting(model, test_seqs, monkeypatch):
    raw = score(model, test_seqs[:4])
    model.temperature = 4.0
    try:
        soft = score(model, test_seqs[:4])
        monkeypatch.setenv("POSECOACH_UNSURE_THRESHOLD", "1.01")
        everything_unsure = score(model, test_seqs[:1])
    finally:
        model.temperature = 1.0
    for a, b in zip(raw, soft, strict=True):
        assert a.predicted == b.predicted and b.confidence < a.confidence
    assert everything_unsure[0].unsure


def test_sessions_are_cut_then_scored(model):
    session, bounds = make_session("s9", "squat", ["correct", "knees_inward", "correct"], seed=1)
    results = score_session(model, session)
    assert len(results) == len(bounds)
    for r, (start, end) in zip(results, bounds, strict=True):
        assert r.ok and r.frames is not None
        assert abs(r.frames[0] - start) < 0.5 * (end - start)
        assert r.corrected.shape[0] == r.frames[1] - r.frames[0]


def still_session(seq: Sequence, exercise: str, source: str) -> Sequence:
    """Three seconds of `seq`'s first pose held, with a millimetre of jitter."""
    jitter = np.random.default_rng(0).normal(0, 1e-3, (90, *seq.poses.shape[1:]))
    still = np.repeat(seq.poses[:1], 90, axis=0) + jitter.astype(np.float32)
    return replace(seq, poses=still, exercise=exercise, source=source)


@pytest.mark.parametrize(("exercise", "source", "problem", "kind", "call"), [
    ("squat", "still.json", "still.json: no squat repetition", "no_repetitions", score_session),
    # an exercise the model never learned is said before any cutting
    ("jumping_jack", "jj.json", "jj.json: exercise 'jumping_jack' is not one", "unknown_exercise",
     cut_session),
])
def test_a_session_that_cannot_be_cut_is_an_error_naming_it(model, test_seqs, exercise, source,
                                                            problem, kind, call):
    session = still_session(test_seqs[0], exercise, source)
    with pytest.raises(SequenceError, match=problem) as err:
        call(model, session)
    assert err.value.kind == kind


def test_correction_picture(model, test_seqs, tmp_path):
    seq = test_seqs[0]
    r = score(model, [seq])[0]
    original = normalize(seq, model.normalization)[0]
    path = plot_correction(original, r.corrected, get_skeleton("ec3d19"), tmp_path / "c.png",
                           title=r.cues[0], synthetic=True)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    buf = plot_correction(original, r.corrected, get_skeleton("ec3d19"), io.BytesIO())
    assert buf.getvalue()[:8] == data[:8]


def test_a_session_marked_segmented_is_one_repetition_scored_whole(model, test_seqs, tmp_path):
    rep = test_seqs[0]
    doc = {"format": "posecoach-session", "skeleton": rep.skeleton, "units": "m",
           "fps": rep.fps, "subject": "u1", "exercise": rep.exercise, "segmented": True,
           "poses": rep.poses.tolist()}
    (tmp_path / "one.json").write_text(json.dumps(doc))
    (tmp_path / "plain.json").write_text(json.dumps({**doc, "segmented": False}))
    session = read_session(tmp_path / "one.json")
    [cut] = cut_session(model, session)
    assert cut.meta["frames"] == (0, len(rep.poses))
    assert read_session(tmp_path / "plain.json", segmented=True).meta["segmented"]
    assert "segmented" not in read_session(tmp_path / "plain.json").meta
    [scored] = score_uploads(model, [str(tmp_path / "one.json")])
    assert scored.ok and len(scored.results) == 1 and scored.results[0].ok


def test_no_correction_where_the_model_saw_no_correct_repetitions(data):
    """An exercise whose data has no `correct` class (labelled `fine`): nothing to correct
    towards, so its repetitions get no correction, no distances, and a note saying why."""
    squats = [replace(s, label="fine") if s.label == "correct" else s
              for s in data if s.exercise == "squat" and s.subject != "s3"]
    model = train(squats, run_config(PROFILES["test"], threads=1, epochs=1), progress=False)
    [res] = score(model, [next(s for s in data if s.exercise == "squat" and s.subject == "s3")])
    assert res.ok and res.deviations == [] and res.corrected is None
    assert res.note == "no correct repetitions of squat in the training data, so no correction " \
                       "is shown"
    assert not any(ch.isdigit() for cue in res.cues for ch in cue)
