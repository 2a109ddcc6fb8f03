"""The synthetic generator: determinism, EC3D's classes, variety, mistakes, sessions, layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.data.labels import ec3d_classes
from model.data.normalize import Normalization, normalize, resample
from model.data.sequence import validate
from model.data.skeletons import EC3D_JOINTS
from model.data.synth import (
    MAX_REP_S,
    MIN_REP_S,
    MISTAKES,
    SYNTH_FPS,
    Subject,
    exercise_labels,
    make_dataset,
    make_form,
    make_session,
)
from model.settings import PROFILES

J = {name: i for i, name in enumerate(EC3D_JOINTS)}


@pytest.fixture(scope="module")
def small() -> list:
    return make_dataset(n_subjects=3, reps=4, seed=1)


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_dataset(2, 1, seed=5), make_dataset(2, 1, seed=5)
    c = make_dataset(2, 1, seed=6)
    assert [s.sequence_id for s in a] == [s.sequence_id for s in b]
    assert not set(s.sequence_id for s in a) & set(s.sequence_id for s in c)


def test_ec3d_size_and_classes():
    seqs = make_dataset()
    assert len(seqs) == 352
    counts = Counter((s.exercise, s.label) for s in seqs)
    expected = [c for c in ec3d_classes() if c[1] != "unknown"]
    assert sorted(counts) == sorted(expected) and set(counts.values()) == {32}
    assert sorted({s.subject for s in seqs}) == ["s1", "s2", "s3", "s4"]
    assert {s.fps for s in seqs} == {SYNTH_FPS} and {s.skeleton for s in seqs} == {"ec3d19"}
    assert len({s.sequence_id for s in seqs}) == 352


def test_every_repetition_valid_with_realistic_timing_noise_and_gaps(small):
    frames = np.array([validate(s).n_frames for s in small])
    assert frames.min() >= MIN_REP_S * SYNTH_FPS - 1 and frames.max() <= MAX_REP_S * SYNTH_FPS + 1
    assert frames.std() > 5
    lost = [np.isnan(s.poses).any() for s in small]
    assert 0 < sum(lost) < len(small) / 2
    plank = [s for s in small if s.exercise == "plank"][0].poses
    step = np.nanmedian(np.linalg.norm(np.diff(plank, axis=0), axis=-1))
    assert 0.01 < step < 0.05  # a still hold moves only by jitter: about 1-3 cm


def test_subjects_differ_in_height_and_face_anywhere():
    heights = [Subject.make(f"s{k}", 0).body.height for k in range(1, 30)]
    assert min(heights) >= 1.5 and max(heights) <= 2.0 and np.ptp(heights) > 0.3
    seqs = make_dataset(1, 6, seed=2, exercises=("squat",))
    hips = np.array([np.nanmean(s.poses[:, J["l_hip"]] - s.poses[:, J["r_hip"]], axis=0)
                     for s in seqs])
    headings = np.degrees(np.arctan2(hips[:, 1], hips[:, 0]))
    assert np.ptp(headings) > 90
    assert np.ptp([np.nanmean(s.poses[:, J["mid_hip"], 0]) for s in seqs]) > 0.5


def _features(seqs: list) -> dict:
    """Per class, mean normalised quantities at the deepest frame."""
    out: dict = {}
    for s in seqs:
        p, _ = normalize(s, Normalization())
        low = int(np.argmin(p[:, J["neck"], 2]))
        f = p[low]
        values = {
            "stance": abs(f[J["l_ankle"], 1] - f[J["r_ankle"], 1]),
            "knees": abs(f[J["l_knee"], 1] - f[J["r_knee"], 1]),
            "hip_height": f[J["mid_hip"], 2] - min(f[J["l_ankle"], 2], f[J["r_ankle"], 2]),
            "lean": np.degrees(np.arctan2(abs(f[J["neck"], 0]), f[J["neck"], 2])),
            "plank_hips": p[:, J["mid_hip"], 2].mean() - (
                p[:, J["neck"], 2].mean() + p[:, J["l_ankle"], 2].mean()) / 2,
        }
        for k, v in values.items():
            out.setdefault((s.exercise, s.label, k), []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_mistakes_change_the_motion_the_way_their_names_say(small):
    f = _features(small)
    assert f[("squat", "feet_too_wide", "stance")] > f[("squat", "correct", "stance")] * 1.2
    assert (f[("squat", "knees_inward", "knees")] / f[("squat", "knees_inward", "stance")]
            < f[("squat", "correct", "knees")] / f[("squat", "correct", "stance")])
    assert f[("squat", "not_low_enough", "hip_height")] > f[("squat", "correct", "hip_height")]
    assert f[("squat", "front_bent", "lean")] > f[("squat", "correct", "lean")] + 5
    assert f[("lunge", "not_low_enough", "hip_height")] > f[("lunge", "correct", "hip_height")]
    assert f[("plank", "arched_back", "plank_hips")] < f[("plank", "correct", "plank_hips")]
    assert f[("plank", "hunched_back", "plank_hips")] > f[("plank", "correct", "plank_hips")]


@pytest.mark.parametrize(("exercise", "label"), sorted(MISTAKES))
def test_a_correct_repetition_of_any_subject_never_looks_like_a_mistake(exercise, label):
    """Subjects differ within the correct range, and every subject's mistake lies beyond that
    range's edge, the mildest ones close to it."""
    mistake = MISTAKES[(exercise, label)]
    rng = np.random.default_rng(7)
    people = [Subject.make(f"p{k}", seed) for k in range(60) for seed in (0, 1)]

    def beyond_edge(form_label: str) -> np.ndarray:
        values = [getattr(make_form(exercise, form_label, p.style, rng), mistake.field)
                  for p in people]
        return np.sign(mistake.size) * (np.array(values) - mistake.edge)

    correct, wrong = beyond_edge("correct"), beyond_edge(label)
    size = abs(mistake.size)
    assert correct.max() <= 0 and np.ptp(correct) > 0.2 * size
    assert wrong.min() > 0 and wrong.min() < 0.25 * size and wrong.max() > 0.8 * size


def test_learnable_across_subjects_but_not_trivially(small):
    """Nearest class centroid on normalised, resampled poses, leaving one subject out."""
    x = np.array([resample(normalize(s, Normalization())[0], s.n_frames - 1, 19).ravel()
                  for s in small])
    y = np.array([f"{s.exercise}/{s.label}" for s in small])
    g = np.array([s.subject for s in small])
    classes = sorted(set(y))
    hits = []
    for subject in sorted(set(g)):
        train, test = g != subject, g == subject
        centroids = np.stack([x[train & (y == c)].mean(axis=0) for c in classes])
        dist = ((x[test][:, None] - centroids[None]) ** 2).sum(axis=-1)
        hits.extend(np.array(classes)[dist.argmin(axis=1)] == y[test])
    accuracy = float(np.mean(hits))
    assert 3 / len(classes) < accuracy < 0.97, accuracy


@pytest.mark.parametrize("exercise", ["squat", "lunge"])
def test_session_boundaries_separate_repetitions_from_pauses(exercise):
    labels = list(exercise_labels(exercise))
    seq, bounds = make_session("u7", exercise, labels, seed=3)
    assert seq.label is None and seq.meta["labels"] == labels and len(bounds) == len(labels)
    assert seq.meta["session_id"] and validate(seq).n_frames == seq.n_frames
    assert bounds[0][0] > 0 and bounds[-1][1] < seq.n_frames
    assert all(a[1] < b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    hip = np.nan_to_num(seq.poses[:, J["mid_hip"], 2], nan=np.nanmedian(seq.poses[:, :, 2]))
    inside = np.zeros(seq.n_frames, bool)
    for start, end in bounds:
        inside[start:end] = True
    paused = np.median(hip[~inside])
    assert all(hip[(start + end) // 2] < paused - 0.1 for start, end in bounds)
    assert np.ptp(hip[~inside]) < 0.1


def test_plank_session_is_one_hold_cut_into_its_labels():
    seq, bounds = make_session("u8", "plank", ["correct", "arched_back", "hunched_back"], seed=4)
    assert bounds[0][0] == 0 and bounds[-1][1] == seq.n_frames
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    p, _ = normalize(seq, Normalization())
    hips = [p[s:e, J["mid_hip"], 2].mean() - (p[s:e, J["neck"], 2].mean()
            + p[s:e, J["l_ankle"], 2].mean()) / 2 for s, e in bounds]
    assert hips[1] < hips[0] < hips[2]


@pytest.mark.parametrize("skeleton", ["mediapipe33", "coco17", "body25"])
def test_other_layouts_map_back_onto_the_same_motion(skeleton):
    canon, _ = make_session("u9", "squat", ["correct", "knees_inward"], seed=2)
    other, bounds = make_session("u9", "squat", ["correct", "knees_inward"], seed=2,
                                 skeleton=skeleton)
    assert other.skeleton == skeleton and validate(other).poses.shape[1] != 19
    a, _ = normalize(canon, Normalization())
    b, _ = normalize(other, Normalization())
    same = [J[j] for j in EC3D_JOINTS if not (
        skeleton == "coco17" and j.endswith(("toe", "heel")))]
    # neck and mid-hip are rebuilt from jittered shoulders and hips: equal up to the jitter
    gap = np.linalg.norm(a[:, same] - b[:, same], axis=-1)
    assert np.median(gap) < 0.03 and gap.max() < 0.12


def test_synth_command_writes_what_its_summary_says(tmp_path):
    import json

    from typer.testing import CliRunner

    from flows.cli import app
    from model.data.readers import iter_sequences, read_session

    result = CliRunner().invoke(app, ["synth", str(tmp_path), "--profile", "test", "--seed", "3",
                                      "--sessions", "3", "--broken", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    seqs = list(iter_sequences(Path(summary["pickle"])))
    test = PROFILES["test"]
    assert len(seqs) == summary["sequences"] == test.synth_subjects * 11 * test.synth_reps
    assert sorted(Path(s["path"]).suffix for s in summary["sessions"]) == [
        ".json", ".npz", ".parquet"]
    truth = json.loads((tmp_path / "sessions.truth.json").read_text())
    for item in truth:
        session = validate(read_session(Path(item["path"])))
        assert item["boundaries"][-1][1] <= session.n_frames
    assert len(summary["broken"]) == 2
    bad = CliRunner().invoke(app, ["synth", str(tmp_path), "--format", "xml"])
    assert bad.exit_code == 2
