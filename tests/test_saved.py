"""The saved model: safetensors + JSON, identical after reloading (also in a fresh process),
and nothing unpickled on the way."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TINY, toy_sequences

from model.data.normalize import normalize
from model.learn.saved import CARD, WEIGHTS, TrainedModel
from model.learn.train import train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    seqs = toy_sequences(reps=3)
    model = train(seqs, replace(TINY, epochs=2), progress=False,
                  meta={"dataset": "toy", "dataset_version": 4, "score": np.float32(0.5)})
    model.temperature = 1.7
    return model


@pytest.fixture(scope="module")
def poses(trained) -> list[np.ndarray]:
    seqs = toy_sequences(reps=2, seed=3, subjects=("s9",))
    out = [normalize(s, trained.normalization)[0] for s in seqs]
    return [*out, out[0][:12]]  # one shorter than n_dct


def test_saved_folder_holds_weights_and_a_readable_card(trained, tmp_path: Path):
    folder = trained.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == sorted([CARD, WEIGHTS])
    card = json.loads((folder / CARD).read_text())
    assert card["skeleton"] == "ec3d19" and len(card["joints"]) * 3 == card["gcn"]["n_nodes"]
    assert card["classes"] == [["squat", "correct"], ["squat", "not_low_enough"]]
    assert card["normalization"] == trained.normalization.to_dict()
    assert card["train"]["hidden"] == 16 and card["gcn"]["variant"] == "full"
    assert card["temperature"] == 1.7
    assert card["versions"]["dataset"] == "toy" and card["versions"]["dataset_version"] == 4
    assert card["versions"]["torch"] == torch.__version__
    assert card["versions"]["code"]["package"] == "0.1.0"
    assert card["meta"]["score"] == 0.5 and len(card["meta"]["history"]) == 2


def test_infer_gives_classes_and_corrections_at_each_input_length(trained, poses):
    out = trained.infer(poses, batch_size=2)
    assert out.log_probs.shape == (len(poses), 2)
    np.testing.assert_allclose(np.exp(out.log_probs).sum(1), 1.0, rtol=1e-5)
    assert [c.shape for c in out.corrected] == [p.shape for p in poses]
    assert out.deltas.shape == (len(poses), poses[0].shape[1] * 3, TINY.n_dct)
    whole = trained.infer(poses)
    np.testing.assert_allclose(whole.log_probs, out.log_probs, rtol=1e-5, atol=1e-6)
    empty = trained.infer([])
    assert empty.log_probs.shape == (0, 2) and empty.corrected == []


def test_infer_follows_weights_changed_after_the_first_call(trained, poses):
    model = copy.deepcopy(trained)
    net = model.folded()
    assert model.folded() is net  # kept while nothing changes
    before = model.infer(poses).log_probs
    with torch.no_grad():
        model.module.classifier.out.bias.add_(torch.tensor([0.0, 50.0]))
    assert (model.infer(poses).log_probs.argmax(1) == 1).all()
    model.module.classifier.out.bias = torch.nn.Parameter(torch.tensor([50.0, 0.0]))
    assert (model.infer(poses).log_probs.argmax(1) == 0).all()
    model.module.load_state_dict(trained.module.state_dict())
    np.testing.assert_array_equal(model.infer(poses).log_probs, before)


def test_reloaded_model_gives_identical_results(trained, poses, tmp_path: Path):
    loaded = TrainedModel.load(trained.save(tmp_path / "m"))
    a, b = trained.infer(poses), loaded.infer(poses)
    np.testing.assert_array_equal(a.log_probs, b.log_probs)
    for x, y in zip(a.corrected, b.corrected, strict=True):
        np.testing.assert_array_equal(x, y)
    assert loaded.classes == trained.classes and loaded.config == trained.config
    assert loaded.temperature == 1.7 and loaded.normalization == trained.normalization


# The "train" and "gcn" entries of model.json as written before the settings became one tree
# (TrainConfig in model.learn.train, GCNConfig with its own copies of n_dct, hidden, dropout).
OLD_TRAIN_CARD = {
    "variant": "full", "epochs": 2, "batch_size": 8, "lr": 0.01, "lr_decay": 0.9, "lr_step": 5,
    "dropout": 0.1, "hidden": 16, "n_dct": 10, "beta": 1.0, "smooth_weight": 1e-3,
    "grad_clip": 1.0, "seed": 0, "device": "cpu", "threads": 1, "gamma": 0.01,
    "motion_only": False,
}
NEW_TRAIN_FIELDS = ("average_tail", "label_smoothing")  # written since; older cards: defaults
OLD_GCN_CARD = {"n_nodes": 57, "n_classes": 2, "n_dct": 10, "hidden": 16, "dropout": 0.1,
                "variant": "full"}


def test_a_card_written_by_the_earlier_code_still_loads(trained, poses, tmp_path: Path):
    folder = trained.save(tmp_path / "m")
    card = json.loads((folder / CARD).read_text())
    assert set(card["train"]) == {*OLD_TRAIN_CARD, *NEW_TRAIN_FIELDS}
    assert set(card["gcn"]) == set(OLD_GCN_CARD)
    assert trained.config.average_tail == trained.config.label_smoothing == 0.0  # their defaults
    card["train"], card["gcn"] = OLD_TRAIN_CARD, OLD_GCN_CARD
    (folder / CARD).write_text(json.dumps(card))
    loaded = TrainedModel.load(folder)
    assert loaded.config == trained.config and loaded.gcn_config == trained.gcn_config
    np.testing.assert_array_equal(loaded.infer(poses).log_probs, trained.infer(poses).log_probs)


def test_loading_unpickles_nothing(trained, poses, tmp_path: Path, monkeypatch):
    folder = trained.save(tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a saved model")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded = TrainedModel.load(folder)
    assert loaded.infer(poses[:1]).log_probs.shape == (1, 2)


def test_a_fresh_process_reloads_the_same_model(trained, poses, tmp_path: Path):
    folder = trained.save(tmp_path / "m")
    np.savez(tmp_path / "in.npz", *poses)
    script = (
        "import sys, numpy as np, torch\n"
        "from model.learn.saved import TrainedModel\n"
        "torch.set_num_threads(1)  # identical results need identical thread counts\n"
        "m = TrainedModel.load(sys.argv[1])\n"
        "data = np.load(sys.argv[2])\n"
        "out = m.infer([data[k] for k in data.files])\n"
        "np.savez(sys.argv[3], log_probs=out.log_probs, *out.corrected)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / "in.npz"),
                    str(tmp_path / "out.npz")], cwd=ROOT, check=True, timeout=300)
    there = np.load(tmp_path / "out.npz")
    here = trained.infer(poses)
    np.testing.assert_array_equal(there["log_probs"], here.log_probs)
    for i, corrected in enumerate(here.corrected):
        np.testing.assert_array_equal(there[f"arr_{i}"], corrected)


def test_classify_and_correct_normalises_first(trained):
    seqs = toy_sequences(reps=1, seed=5, subjects=("s7",))
    direct = trained.classify_and_correct(seqs)
    by_hand = trained.infer([normalize(s, trained.normalization)[0] for s in seqs])
    np.testing.assert_array_equal(direct.log_probs, by_hand.log_probs)


def test_bad_inputs_and_folders_get_clear_errors(trained, poses, tmp_path: Path):
    with pytest.raises(ValueError, match=r"poses\[1\] has shape \(30, 18, 3\)"):
        trained.infer([poses[0], np.zeros((30, 18, 3), np.float32)])
    with pytest.raises(FileNotFoundError, match="no model.json"):
        TrainedModel.load(tmp_path / "nothing")
    folder = trained.save(tmp_path / "m")
    card = json.loads((folder / CARD).read_text())
    (folder / CARD).write_text(json.dumps({**card, "format": "other/9"}))
    with pytest.raises(ValueError, match="format 'other/9'"):
        TrainedModel.load(folder)
    with pytest.raises(TypeError, match="JSON cannot store"):
        replace(trained, meta={"thing": object()}).save(tmp_path / "bad")
