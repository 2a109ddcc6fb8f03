"""workers.scoring: Ray Data batch scoring of uploaded session files and of dataset sequences,
through model.serve.scoring's one path, every bad input accounted for."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from model.data.formats import write_session
from model.data.readers import read_session
from model.data.synth import make_dataset, make_session
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.serve.reference import REFERENCE_CUT_KEY, Reference, References
from model.serve.scoring import calibrate, score, score_session
from model.settings import PROFILES, run_config
from workers.scoring import REJECTED, SCORED, row_sequence, score_batch, sequence_row

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(n_subjects=2, reps=1, seed=8, exercises=("squat", "plank"))


@pytest.fixture(scope="module")
def model_dir(sequences, tmp_path_factory):
    config = run_config(PROFILES["test"], seed=0, threads=1, epochs=1)
    trained = train(sequences, config, progress=False)
    calibrate(trained, sequences)
    return trained.save(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def uploads(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    squat, _ = make_session("u1", "squat", ["correct", "knees_inward", "correct"], seed=1)
    plank, _ = make_session("u2", "plank", ["correct"], seed=2)
    good = [write_session(squat, folder / "a-squat.json"),
            write_session(squat, folder / "b-squat.npz"),
            write_session(plank, folder / "c-plank.parquet")]
    wrong_joints = replace(squat, poses=squat.poses[:, :5])
    write_session(wrong_joints, folder / "d-five-joints.npz")
    (folder / "e-garbage.npz").write_bytes(b"not a zip file")
    (folder / "f-notes.txt").write_text("hello")
    return folder, good


def test_every_upload_is_scored_or_rejected_with_its_reason(ray_local, model_dir, uploads,
                                                            tmp_path):
    folder, good = uploads
    out = tmp_path / "records.jsonl"
    records = score_batch([folder], model_dir, batch_size=2, concurrency=2, output=out,
                          progress=False)
    files = sorted(str(p) for p in folder.iterdir())
    assert sorted({r["input"] for r in records}) == files
    by_input = {f: [r for r in records if r["input"] == f] for f in files}
    model = TrainedModel.load(model_dir)
    for path in good:
        expected = [r.to_dict() for r in score_session(model, read_session(path))]
        got = by_input[str(path)]
        assert expected, f"{path.name}: the generator's session should hold repetitions"
        assert [r["status"] for r in got] == [SCORED] * len(expected)
        assert [r["predicted"] for r in got] == [e["predicted"] for e in expected]
        for g, e in zip(got, expected, strict=True):
            assert g["probabilities"] == pytest.approx(e["probabilities"], abs=1e-6)
    for name, kind in (("d-five-joints.npz", "wrong_joint_count"), ("f-notes.txt", None)):
        (rec,) = by_input[str(folder / name)]
        assert rec["status"] == REJECTED
        assert name in rec["error"]
        if kind:
            assert rec["error_kind"] == kind
    (garbage,) = by_input[str(folder / "e-garbage.npz")]
    assert garbage["status"] != SCORED and "e-garbage.npz" in garbage["error"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records


def test_dataset_sequences_score_as_in_process(ray_local, model_dir, sequences):
    broken = replace(sequences[1], poses=np.full_like(sequences[1].poses, np.inf))
    batch = [sequences[0], broken, *sequences[2:6]]
    records = score_batch(batch, f"file://{model_dir}", batch_size=4, progress=False)
    expected = score(TrainedModel.load(model_dir), batch)
    assert len(records) == len(batch)
    assert [r["sequence_id"] for r in records] == [e.sequence_id for e in expected]
    assert [r["predicted"] for r in records] == [e.predicted for e in expected]
    assert records[1]["status"] == REJECTED and records[1]["error_kind"] == "non_finite"
    assert all(r["status"] == SCORED for i, r in enumerate(records) if i != 1)


def test_a_reference_reaches_the_actors(ray_local, model_dir, sequences, tmp_path):
    model = TrainedModel.load(model_dir)
    model.meta[REFERENCE_CUT_KEY] = 0.0
    folder = model.save(tmp_path / "model")
    everyone = References(everyone=Reference({"squat": -1e6}, {"squat": 3}, "d1"))  # all correct
    records = score_batch(sequences, folder, batch_size=4, progress=False, references=everyone)
    expected = score(model, sequences, references=everyone)
    assert [r["predicted"] for r in records] == [e.predicted for e in expected]
    squats = [r for r in records if r["exercise"] == "squat"]
    assert {r["predicted"] for r in squats} == {"squat/correct"}
    assert {r["reference"] for r in squats} == {"d1"}
    assert {r["reference"] for r in records if r["exercise"] == "plank"} == {None}


def test_sequence_rows_round_trip(sequences):
    seq = replace(sequences[0], meta={"session_id": "x"})
    row = sequence_row(3, seq)
    back = row_sequence(row["poses"], row["fields"])
    assert row["index"] == 3
    assert np.array_equal(back.poses, seq.poses)
    assert back.sequence_id == seq.sequence_id
    assert (back.label, back.meta) == (seq.label, seq.meta)


def test_mixed_inputs_are_refused(sequences, tmp_path):
    with pytest.raises(TypeError, match="either session paths or sequences"):
        score_batch([sequences[0], tmp_path], "unused")
