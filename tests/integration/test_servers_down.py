"""Servers that go down mid-work (tests/integration/conftest.py's servers, stopped and started
again on the same port and stores): every case ends with an error naming the server, and a
rerun once it is back finishes the work with nothing half done.

- MLflow stopped in a retrain before registration (the model being uploaded): nothing is
  registered; stopped after registration (before the gate): the version has its artifacts and
  no alias moved; the rerun lets the gate decide that version, registering nothing new.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from servers import PERMISSIVE_GATE, Server, prefect_settings

from flows import retrain
from model.data.dataset import Dataset
from model.data.synth import make_dataset
from registry.access import RegistryUnavailable
from registry.versions import CHALLENGER, CHAMPION, model_name

pytestmark = pytest.mark.integration

DATASET = "downs"
NAME = model_name(DATASET)


@pytest.fixture(scope="module")
def down_env(servers) -> Iterator[Path]:
    """This module's POSECOACH_HOME and settings: its own dataset and registered model, the
    permissive gate, MLflow's client retrying once (a stopped server fails fast)."""
    home = servers.folder / "down"
    env = {"POSECOACH_HOME": str(home), "MLFLOW_TRACKING_URI": servers.mlflow.url,
           f"POSECOACH_GATE_SUBJECTS_{DATASET.upper()}": "s3",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           **PERMISSIVE_GATE}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield home


@pytest.fixture
def restarts(servers) -> Iterator[None]:
    """Whatever a test stopped runs again after it."""
    yield
    for server in (servers.mlflow, servers.prefect):
        if not server.running:
            server.start()


def stopping(server: Server, call: Callable) -> Callable:
    """`call`, run after `server` has been stopped."""
    def stopped_first(*args, **kwargs):
        server.stop()
        return call(*args, **kwargs)
    return stopped_first


def retrain_on(servers) -> dict:
    with prefect_settings(servers.prefect.url):
        return retrain.retrain_flow(dataset=DATASET, profile="test", actor="nightly flow")


def saved_model_files(client: MlflowClient, version: str, dest: Path) -> list[str]:
    folder = download_artifacts(artifact_uri=f"models:/{NAME}/{version}", dst_path=str(dest))
    return sorted(p.name for p in Path(folder).rglob("model.json"))


def test_mlflow_stopped_before_and_after_registration(servers, down_env, restarts, monkeypatch,
                                                      tmp_path) -> None:
    Dataset(DATASET).write(make_dataset(n_subjects=3, reps=1, seed=4, exercises=("squat",)))
    client = MlflowClient(tracking_uri=servers.mlflow.url, registry_uri=servers.mlflow.url)
    named = re.escape(f"MLflow server at {servers.mlflow.url} did not answer")

    monkeypatch.setattr(retrain, "log_packaged_model",
                        stopping(servers.mlflow, retrain.log_packaged_model))
    with pytest.raises(RegistryUnavailable, match=named):
        retrain_on(servers)
    servers.mlflow.start()
    assert client.search_model_versions(f"name='{NAME}'") == []
    monkeypatch.undo()

    monkeypatch.setattr(retrain, "promote", stopping(servers.mlflow, retrain.promote))
    with pytest.raises(RegistryUnavailable, match=named):
        retrain_on(servers)
    servers.mlflow.start()
    [version] = client.search_model_versions(f"name='{NAME}'")
    assert client.get_registered_model(NAME).aliases == {CHALLENGER: version.version}
    assert "gate.decision" not in version.tags
    assert saved_model_files(client, version.version, tmp_path / "v") == ["model.json"]
    monkeypatch.undo()

    again = retrain_on(servers)
    assert (again["version"], again["status"]) == (version.version, "promoted")
    assert again["decision"]["actor"] == "nightly flow"
    [after] = client.search_model_versions(f"name='{NAME}'")
    assert after.tags["gate.decision"] == "promoted"
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == version.version
    assert retrain_on(servers)["status"] == "skipped"
