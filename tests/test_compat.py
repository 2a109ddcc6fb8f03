"""What the previous release wrote still loads and scores: a saved model's card, a dataset's
Delta table (no dataset card beside it) and a reports folder (its repetitions table and
JSON-lines ledger). Each old artifact is made here from the old release's key sets and
schemas, written out as literals."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from deltalake import DeltaTable, write_deltalake
from test_train import TINY, toy_sequences

from flows.reports import ModelInfo
from flows.score import OLD_LEDGER, TABLE, _table, ledger_key, merge_new, plan, upload_key
from model.data import storage
from model.data.card import load_card
from model.data.dataset import Dataset, to_table
from model.learn.saved import CARD, TrainedModel
from model.learn.train import train
from model.serve.scoring import score

torch.set_num_threads(1)

#: model.json of the previous release: `unsure_threshold`, no `temperature`.
OLD_CARD_KEYS = ("format", "skeleton", "joints", "classes", "normalization", "gcn", "train",
                 "unsure_threshold", "versions", "meta")
OLD_TRAIN_KEYS = ("variant", "epochs", "batch_size", "lr", "lr_decay", "lr_step", "dropout",
                  "hidden", "n_dct", "beta", "smooth_weight", "grad_clip", "seed", "device",
                  "threads", "gamma", "motion_only")
OLD_GCN_KEYS = ("n_nodes", "n_classes", "n_dct", "hidden", "dropout", "variant")
OLD_NORMALIZATION = {"skeleton": "ec3d19", "fps": 30.0, "scale_by_body": False}

#: The dataset table of the previous release, every column nullable, partitioned by exercise.
OLD_DATASET_SCHEMA = pa.schema([
    ("sequence_id", pa.string()), ("subject", pa.string()), ("exercise", pa.string()),
    ("label", pa.string()), ("rep", pa.int32()), ("fps", pa.float64()),
    ("skeleton", pa.string()), ("units", pa.string()), ("source", pa.string()),
    ("n_frames", pa.int32()), ("n_joints", pa.int32()), ("poses", pa.list_(pa.float32())),
    ("meta", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC")),
])

#: `<reports>/repetitions` of the previous release: no `key`, no `features`.
OLD_REPETITIONS_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("input", pa.string()), ("rep", pa.int64()),
    ("predicted", pa.string()), ("label", pa.string()), ("confidence", pa.float64()),
    ("unsure", pa.bool_()), ("exercise_mismatch", pa.bool_()), ("exercise", pa.string()),
    ("subject", pa.string()), ("start_frame", pa.int64()), ("end_frame", pa.int64()),
    ("cues", pa.string()), ("model", pa.string()), ("model_version", pa.string()),
    ("scored_at", pa.string()),
])

INFO = ModelInfo(name="posecoach-old", version="1", dataset="old", dataset_version=1,
                 code_version="0.1.0")


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train(toy_sequences(reps=3), replace(TINY, epochs=1), progress=False,
                 meta={"dataset": "toy", "dataset_version": 1})


def old_model_folder(trained: TrainedModel, folder: Path) -> Path:
    """`trained` saved as the previous release saved it."""
    trained.save(folder)
    card = json.loads((folder / CARD).read_text())
    old = {key: card.get(key) for key in OLD_CARD_KEYS}
    old["train"] = {key: card["train"][key] for key in OLD_TRAIN_KEYS}
    old["gcn"] = {key: card["gcn"][key] for key in OLD_GCN_KEYS}
    old["normalization"] = OLD_NORMALIZATION
    old["unsure_threshold"] = None
    (folder / CARD).write_text(json.dumps(old))
    return folder


def test_an_old_saved_model_loads_uncalibrated_and_scores_as_before(trained, tmp_path: Path):
    loaded = TrainedModel.load(old_model_folder(trained, tmp_path / "old"))
    assert loaded.temperature == 1.0
    assert loaded.config == trained.config and loaded.gcn_config == trained.gcn_config
    seqs = toy_sequences(reps=1, seed=5, subjects=("s7",))
    before, after = score(trained, seqs), score(loaded, seqs)
    assert [r.error for r in after] == [None] * len(seqs)
    assert [r.predicted for r in after] == [r.predicted for r in before]
    np.testing.assert_allclose([r.confidence for r in after], [r.confidence for r in before],
                               rtol=1e-6)


def test_an_old_dataset_table_reads_takes_new_rows_and_gets_the_default_card(tmp_path: Path):
    seqs = toy_sequences(reps=2, subjects=("s1", "s2", "s3"))
    old = to_table(seqs, datetime(2026, 1, 1, tzinfo=UTC)).cast(OLD_DATASET_SCHEMA)
    root = str(tmp_path / "lake")
    write_deltalake(storage.join(root, "old"), old, partition_by=["exercise"])
    ds = Dataset("old", root=root)
    back = ds.read()
    assert sorted(s.sequence_id for s in back) == sorted(s.sequence_id for s in seqs)
    np.testing.assert_array_equal(
        next(s for s in back if s.sequence_id == seqs[0].sequence_id).poses, seqs[0].poses)
    card = load_card(ds)
    assert not card.stored and card.gate_subjects == ("s3",)
    written = ds.write(toy_sequences(reps=1, seed=9, subjects=("s4",)))
    assert written.inserted > 0 and {s.subject for s in ds.read()} == {"s1", "s2", "s3", "s4"}


def test_an_old_reports_folder_takes_new_rows_and_its_ledger_counts(tmp_path: Path):
    out = str(tmp_path / "reports")
    old_row = {name: None for name in OLD_REPETITIONS_SCHEMA.names}
    old_row.update(session_id="old-session", input="a.json", rep=1, model=INFO.name)
    write_deltalake(storage.join(out, TABLE), pa.Table.from_pylist([old_row],
                                                                   OLD_REPETITIONS_SCHEMA))
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "a.json").write_text('{"scored": "before"}')
    (uploads / "b.json").write_text('{"scored": "never"}')
    old_key = ledger_key(storage.sha256(str(uploads / "a.json")), INFO)
    (Path(out) / OLD_LEDGER).write_text(json.dumps({"key": old_key, "input": "a.json"}) + "\n")

    found = plan(str(uploads), out, INFO)
    assert found.done == {old_key}
    assert [Path(uri).name for uri in found.uploads] == ["a.json", "b.json"]
    new_key = upload_key(str(uploads / "b.json"), INFO)
    assert new_key not in found.done

    row = {"session_id": "new-session", "input": "b.json", "rep": 1, "key": new_key,
           "frames": [0, 30], "cues": ["lower"], "features": "{}"}
    table = _table([row], INFO, "2026-12-03T00:00:00+00:00")
    merge_new(storage.join(out, TABLE), table, ("key", "rep"))
    merge_new(storage.join(out, TABLE), table, ("key", "rep"))
    rows = DeltaTable(storage.join(out, TABLE)).to_pyarrow_table().to_pylist()
    assert sorted(r["session_id"] for r in rows) == ["new-session", "old-session"]
    assert {r["session_id"]: r["key"] for r in rows} == {"new-session": new_key,
                                                         "old-session": None}
