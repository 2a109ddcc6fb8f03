"""Drift through the service: sessions scored by the score flow (which stores each
repetition's movement features) are compared with the model's training data (its dataset
version). A batch whose stances are 30 % wider raises drift on stance width; an unshifted
batch of the same size from the same people does not."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.drift import TrainingDataGone, drift_report
from flows.reports import ModelInfo
from flows.score import score_folder
from model.data.dataset import Dataset
from model.data.formats import write_session
from model.data.skeletons import get_skeleton
from model.data.synth import make_dataset, make_session
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.serve.scoring import cut_session
from model.settings import PROFILES, run_config

DATASET = "drifttest"
INFO = ModelInfo(name="posecoach-drifttest", version="1", dataset=DATASET, dataset_version=1,
                 code_version="test")
PEOPLE = [f"p{i}" for i in range(1, 9)]
JOINTS = get_skeleton("ec3d19").joints
LEGS = [i for i, j in enumerate(JOINTS) if any(k in j for k in ("knee", "ankle", "toe", "heel"))]
WIDER = 1.3


def session(person: str, reps: int, widen: float = 1.0):
    """A squat session; with `widen`, every leg joint's sideways distance from the mid-hip
    (across the body, from the hips' line) scaled by it: the stance that much wider."""
    seq, _ = make_session(person, "squat", ["correct"] * reps, seed=0)
    if widen == 1.0:
        return seq
    p = seq.poses.astype(np.float64)
    across = p[:, JOINTS.index("l_hip")] - p[:, JOINTS.index("r_hip")]
    across[:, 2] = 0.0
    across = np.nanmean(across, axis=0)
    across /= np.linalg.norm(across)
    offset = p[:, LEGS] - p[:, [JOINTS.index("mid_hip")]]
    side = offset @ across
    p[:, LEGS] += (widen - 1.0) * side[..., None] * across
    return replace(seq, poses=p.astype(np.float32))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[TrainedModel, Path]:
    """A one-class model whose dataset version holds repetitions cut from sessions of the same
    people as the scored batches (6 repetitions each; the batches have 5)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("drift")
    data = [s for s in make_dataset(2, 2, seed=3, exercises=["squat"]) if s.label == "correct"]
    model = train(data, run_config(PROFILES["test"], seed=0, threads=1, epochs=1),
                  progress=False)
    reps = [replace(r, label="correct", meta={}) for person in PEOPLE
            for r in cut_session(model, session(person, 6))]
    ds = Dataset(DATASET)
    ds.write(reps)
    model.meta["dataset_version"] = ds.version()
    return model, model.save(root / "model")


def scored_batch(folder: Path, widen: float, model_dir: Path) -> str:
    for person in PEOPLE:
        write_session(session(person, 5, widen), folder / "up" / f"{person}.json")
    out = str(folder / "out")
    summary = score_folder(str(folder / "up"), out, model_dir, INFO, html=False)
    assert summary.repetitions >= 30
    return out


def test_a_wider_stance_drifts_and_the_same_people_do_not(trained, tmp_path):
    model, model_dir = trained
    plain = drift_report(model, INFO.name, "1", DATASET,
                         reports=scored_batch(tmp_path / "plain", 1.0, model_dir))
    wide = drift_report(model, INFO.name, "1", DATASET,
                        reports=scored_batch(tmp_path / "wide", WIDER, model_dir))
    assert plain.n_scored == wide.n_scored and plain.n_train == wide.n_train >= 40
    assert plain.seen == {} and plain.warning is None
    assert "stance_m" in wide.seen["squat"]
    assert wide.warning.startswith("warning: drift") and "stance_m" in wide.warning
    squat = next(e for e in wide.exercises if e["exercise"] == "squat")
    stance = next(f for f in squat["features"] if f["feature"] == "stance_m")
    assert stance["scored_median"] == pytest.approx(WIDER * stance["train_median"], rel=0.1)
    page = Path(wide.page).read_text()
    assert "data:image/png;base64," in page and "stance_m" in page
    assert wide.to_dict()["drift_seen"] and not plain.to_dict()["drift_seen"]


def test_nothing_scored_since_is_no_drift(trained, tmp_path):
    model, _ = trained
    result = drift_report(model, INFO.name, "1", DATASET, reports=str(tmp_path / "empty"))
    assert result.n_scored == 0 and result.seen == {} and result.n_train == 0


def test_a_purged_training_version_is_a_clear_error_naming_it(trained, tmp_path):
    model, model_dir = trained
    ds = Dataset("driftpurged")
    version = ds.write(Dataset(DATASET).read()).version
    assert version == model.meta["dataset_version"]  # the model's training version, here too
    ds.delete_subject(PEOPLE[0], purge=True)
    reports = scored_batch(tmp_path, 1.0, model_dir)
    with pytest.raises(TrainingDataGone) as gone:
        drift_report(model, INFO.name, "1", ds.name, reports=reports)
    text = str(gone.value)
    assert f"{INFO.name} v1 was trained on version {version} of dataset 'driftpurged'" in text
    assert "purged" in text and f"current version ({ds.version()})" in text
