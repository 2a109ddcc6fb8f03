"""Servers that go down mid-work (tests/integration/conftest.py's servers, stopped and started
again on the same port and stores): every case ends with an error naming the server, and a
rerun once it is back finishes the work with nothing half done.

- MLflow stopped in a retrain before registration (the model being uploaded): nothing is
  registered; stopped after registration (before the gate): the version has its artifacts and
  no alias moved; the rerun lets the gate decide that version, registering nothing new.
- Prefect stopped while `posecoach serve` runs a score run: serve says so, naming the server,
  keeps going, and says when it is back; the run in flight ends (Prefect's client retries
  bridge a short outage) and the next run completes.
- The object store (moto behind a relay) cut off as `posecoach score` writes its ledger, the
  reports and the repetitions already written: the command fails naming the store after the
  retries; the rerun scores those sessions again, adding no second copy of their rows.
After every rerun, each report has its ledger entry and each ledger entry its report.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from prefect.client.orchestration import get_client
from servers import (
    PERMISSIVE_GATE,
    Relay,
    Server,
    prefect_settings,
    read_deployment,
    run,
    s3_server,
    spawn,
    stop,
    tool,
)

from flows import retrain
from flows.score import LEDGER, TABLE, read_ledger
from flows.serve import WATCH_EVERY_S
from model.data import storage
from model.data.dataset import Dataset
from model.data.formats import write_session
from model.data.synth import make_dataset, make_session
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


@pytest.fixture(scope="module")
def lake(down_env) -> None:
    Dataset(DATASET).write(make_dataset(n_subjects=3, reps=1, seed=4, exercises=("squat",)))


@pytest.fixture(scope="module")
def uploads(down_env) -> Path:
    folder = down_env / "uploads"
    folder.mkdir(parents=True)
    for n, labels in enumerate([["correct", "knees_inward"], ["correct"], ["knees_inward"]]):
        session, _ = make_session(f"u{n}", "squat", labels, seed=n)
        write_session(session, folder / f"session-{n}.json")
    return folder


@pytest.fixture(scope="module")
def champion(servers, lake) -> str:
    """The champion of this module's model: the MLflow test's, or trained here."""
    retrain_on(servers)
    client = MlflowClient(tracking_uri=servers.mlflow.url, registry_uri=servers.mlflow.url)
    return client.get_model_version_by_alias(NAME, CHAMPION).version


def ledger_matches_reports(out: str, sessions: int) -> list[dict]:
    """Every report under `out` has its ledger entry and every entry its report; returns the
    ledger."""
    found = read_ledger(out, ["key", "input", "report"])
    ledger = [] if found is None else found.to_pylist()
    reports = {f for f in storage.list_files(out, (".json",)) if "/" not in f[len(out) + 1:]}
    assert sorted(r["report"] for r in ledger) == sorted(reports)
    assert len(reports) == sessions and len({r["key"] for r in ledger}) == len(ledger)
    return ledger


def test_mlflow_stopped_before_and_after_registration(servers, lake, restarts, monkeypatch,
                                                      tmp_path) -> None:
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


def wait_for_text(log: Path, text: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(1)
    raise TimeoutError(f"{text!r} not in {log} after {seconds:.0f} s: {log.read_text()[-3000:]}")


def served_logs(home: Path) -> str:
    """The tails of the logs the verbs wrote under `home` (their libraries' output)."""
    return "\n".join(f"{p.name}: {p.read_text()[-2000:]}"
                     for p in sorted((home / "logs").glob("*.log")))


def test_prefect_stopped_during_serve(servers, champion, uploads, restarts) -> None:
    api, out = servers.prefect.url, str(uploads.parent / "served")
    log = uploads.parent / "serve.log"
    proc = spawn([tool("posecoach"), "serve", "--dataset", DATASET, "--profile", "test",
                  "--uploads", str(uploads)], log, servers.env(PREFECT_LOGGING_LEVEL="INFO"))
    try:
        deployment = read_deployment(api, "score/uploads", proc, log)
        with prefect_settings(api), get_client(sync_client=True) as client:
            while deployment.parameters.get("path") != str(uploads):  # this serve's, not older
                time.sleep(2)
                deployment = client.read_deployment(deployment.id)
            flight = client.create_flow_run_from_deployment(
                deployment.id, parameters={"path": str(uploads), "out": out})
            deadline, states = time.monotonic() + 240, []
            while not ((state := client.read_flow_run(flight.id).state).is_running()
                       or state.is_final()):  # three uploads may be scored within a poll
                states.append(state.name)
                assert time.monotonic() < deadline, (
                    f"the score run did not start: {sorted(set(states))}; "
                    f"{served_logs(uploads.parent)}")
                time.sleep(0.2)
        servers.prefect.stop()
        wait_for_text(log, f"no Prefect server answers at PREFECT_API_URL={api}",
                      3 * WATCH_EVERY_S)
        assert proc.poll() is None, log.read_text()[-3000:]
        servers.prefect.start()
        wait_for_text(log, f"the Prefect server at {api} answers again", 3 * WATCH_EVERY_S)
        rerun = run(api, "score/uploads", path=str(uploads), out=out)
        assert rerun.state.is_completed(), (rerun.state, log.read_text()[-3000:])
        with prefect_settings(api), get_client(sync_client=True) as client:
            assert client.read_flow_run(flight.id).state.is_final()
    finally:
        stop(proc, signal.SIGINT)
    ledger_matches_reports(out, sessions=3)


def score_cli(servers, uploads: Path, out: str, endpoint: str) -> subprocess.CompletedProcess:
    env = servers.env(AWS_ENDPOINT_URL=endpoint, PREFECT_LOGGING_LEVEL="WARNING")
    return subprocess.run([tool("posecoach"), "score", str(uploads), "--dataset", DATASET,
                           "--out", out, "--json"], env=env, capture_output=True, text=True,
                          timeout=600)


def test_object_store_unreachable_during_score(servers, champion, uploads, monkeypatch,
                                               tmp_path) -> None:
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    with s3_server(tmp_path).serving() as moto:
        for key, value in {**aws, "AWS_ENDPOINT_URL": moto.url}.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="reports")
        relay, out = Relay(int(moto.url.rsplit(":", 1)[1])), "s3://reports/run"
        relay.cut_at(re.escape(f"PUT /reports/run/{LEDGER}/").encode())

        cut = score_cli(servers, uploads, out, relay.url)
        assert cut.returncode == 1, cut.stderr[-3000:]
        assert f"the object store at {relay.url} did not answer" in " ".join(cut.stderr.split())
        ledger = read_ledger(out)  # created empty before the first merge, or not at all
        assert ledger is None or ledger.num_rows == 0
        assert DeltaTable(storage.join(out, TABLE)).to_pyarrow_table().num_rows > 0

        relay.mend()
        again = score_cli(servers, uploads, out, relay.url)
        assert again.returncode == 0, again.stderr[-3000:]
        summary = json.loads(again.stdout)
        assert (summary["sessions"], summary["reports"], summary["errors"]) == (3, 3, 0)
        ledger = ledger_matches_reports(out, sessions=3)
        rows = Counter(DeltaTable(storage.join(out, TABLE)).to_pyarrow_table()
                       .column("key").to_pylist())
        for entry in ledger:
            report = json.loads(storage.read_text(entry["report"]))
            assert rows[entry["key"]] == report["summary"]["repetitions"]
