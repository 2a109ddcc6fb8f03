"""The registry against a real `mlflow server` (sqlite backend, proxied artifacts, a free
localhost port): log -> register -> gate -> promote -> load over HTTP, and the champion loaded
in a fresh Python process scores exactly like the model in memory, unpickling nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from model.data.synth import make_dataset, make_session
from model.evaluate.metrics import evaluate
from model.evaluate.plots import plot_confusion
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.settings import get_settings, run_config
from registry.gate import GatePolicy, promote, rollback
from registry.pyfunc import log_packaged_model, predict_frame, to_frame
from registry.tracking import code_version, fold_summary, log_training_run
from registry.versions import CHAMPION, alias_version, model_name, model_uri, register_candidate

pytestmark = pytest.mark.integration

DATASET = "ec3d"
PERMISSIVE = GatePolicy(floor_macro=0.0, floor_correction=0.0, class_floor=None, class_drop=1.0,
                        min_correction_gain=None)

FRESH_PROCESS = """
import pickle, sys

def refuse(*args, **kwargs):
    raise AssertionError("the packaged model must load without unpickling")

pickle.load = pickle.loads = refuse
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(pd.read_parquet(sys.argv[2])).to_parquet(sys.argv[3])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """Start a real MLflow tracking server (it takes a while; the model trains meanwhile)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    with (root / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        yield f"http://127.0.0.1:{port}", root / "server.log", proc
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(server_process: tuple[str, Path, subprocess.Popen], trained: tuple) -> Iterator[str]:
    """The server's URL once it answers; MLFLOW_TRACKING_URI points at it meanwhile."""
    url, log, proc = server_process
    deadline = time.monotonic() + 300
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not start: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", url)
        yield url


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainedModel, Path, Path, dict]:
    """A tiny model (test profile) trained on s1, s2; its figures on s3 (it is its own judge)."""
    torch.set_num_threads(1)
    seqs = make_dataset(n_subjects=3, reps=2, seed=0)
    config = run_config(get_settings().get_profile("test"), threads=1)
    model = train([s for s in seqs if s.subject != "s3"], config, progress=False)
    folder = model.save(tmp_path_factory.mktemp("server-model") / "model")
    evaluation = evaluate(model, [s for s in seqs if s.subject == "s3"], judge=model)
    png = plot_confusion(evaluation, folder.parent / "confusion.png", synthetic=True)
    return model, folder, png, evaluation.to_dict()


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    squat, _ = make_session("u1", "squat", ["correct", "knees_inward", "not_low_enough"], seed=4)
    plank, _ = make_session("u2", "plank", ["arched_back"], seed=5)
    frame = to_frame([squat, plank])
    frame.loc[len(frame)] = {**frame.iloc[0].to_dict(), "frames": 7, "session_id": "broken"}
    return frame


def test_log_register_gate_promote_load_over_http(server: str, trained: tuple, tmp_path: Path,
                                                  sessions: pd.DataFrame) -> None:
    model, folder, png, figures = trained
    folds = [figures, {**figures, "macro": (figures["macro"] or 0.0) / 2}]
    run_id = log_training_run(
        dataset=DATASET, dataset_version=7, profile="test", params={"epochs": 3},
        skeleton="ec3d19", classes=model.classes, folds=folds, gate=figures, confusion_png=png,
    )
    example, _ = make_session("u0", "lunge", ["correct"], seed=2)
    info = log_packaged_model(run_id, folder, example)
    client = MlflowClient(server)
    run = client.get_run(run_id)
    assert run.data.tags["dataset_version"] == "7" and run.data.tags["skeleton"] == "ec3d19"
    assert run.data.metrics["cv.macro.mean"] == pytest.approx(0.75 * figures["macro"])
    assert run.data.metrics["gate.macro"] == pytest.approx(figures["macro"])
    assert [m.step for m in client.get_metric_history(run_id, "cv.macro")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"per_class.csv", "per_class.json", "classes.json", "confusion.png"} <= artifacts
    local = Path(download_artifacts(info.model_uri, dst_path=str(tmp_path / "logged")))
    model_files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"model.safetensors", "model.json", "pyfunc_code.py", "MLmodel"} <= model_files
    assert not [f for f in model_files if f.endswith((".pkl", ".pickle"))]

    summary = fold_summary(folds)
    name = model_name(DATASET)
    v1 = register_candidate(info.model_uri, DATASET, dataset_version=7,
                            code_version=code_version(), skeleton="ec3d19",
                            classes=model.classes, cv=summary, gate=figures)
    first = promote(name, v1, candidate=figures, actor="nightly flow", policy=PERMISSIVE)
    assert first.decision == "promoted"
    assert client.get_model_version_by_alias(name, CHAMPION).version == v1
    v2 = register_candidate(info.model_uri, DATASET, dataset_version=8,
                            code_version=code_version(), skeleton="ec3d19",
                            classes=model.classes, cv=summary, gate=figures)
    assert promote(name, v2, candidate=figures, champion=figures, actor="nightly flow",
                   policy=PERMISSIVE).decision == "promoted"
    assert rollback(name, actor="ana").champion_after == v1
    assert alias_version(name, CHAMPION) == v1
    assert client.get_model_version(name, v2).tags["gate.decision"] == "rolled_back"

    inputs = tmp_path / "sessions.parquet"
    outputs = tmp_path / "scored.parquet"
    sessions.to_parquet(inputs)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, model_uri(name), str(inputs), str(outputs)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = pd.read_parquet(outputs)
    expected = predict_frame(model, sessions)
    assert len(fresh) == len(expected) >= 4
    for column in ("input", "session_id", "rep", "sequence_id", "predicted", "feedback",
                   "error_kind"):
        assert fresh[column].tolist() == expected[column].tolist(), column
    np.testing.assert_allclose(fresh["confidence"].astype(float),
                               expected["confidence"].astype(float), rtol=1e-6, equal_nan=True)
    scored = expected["error"].isna()
    assert scored.sum() == len(expected) - 1 and set(fresh["input"]) == {0, 1, 2}
    assert fresh.loc[~scored, "error_kind"].tolist() == ["bad_shape"]
    for got, want in zip(fresh.loc[scored, "corrected"], expected.loc[scored, "corrected"],
                         strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)

