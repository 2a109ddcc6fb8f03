"""`posecoach serve` against real servers: PostgreSQL, an MLflow server and a Prefect server on
it, both asking for the credentials the processes find in the environment
(tests/integration/conftest.py). The retrain deployment's cron schedule is registered; one
run of each deployment completes (a model version registered on the MLflow server, reports
written); a failing run is Failed in Prefect and its notification arrives. Everything started
here is stopped here, also on failure."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from mlflow import MlflowClient
from servers import PERMISSIVE_GATE, read_deployment, run, spawn, stop, tool

from model.data.dataset import Dataset
from model.data.formats import write_session
from model.data.synth import make_dataset, make_session

pytestmark = pytest.mark.integration

CRON, TIMEZONE = "15 3 * * *", "Europe/Zurich"


class Inbox(BaseHTTPRequestHandler):
    """Collects the JSON documents POSTed to it (the failure notifications)."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's required name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Inbox.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def inbox() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Inbox)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def served(servers, inbox: str) -> Iterator[dict]:
    """Synthetic data in a fresh lake, uploads, then `posecoach serve` in a subprocess."""
    folder = servers.folder / "serve"
    env = servers.env(POSECOACH_HOME=str(folder / "home"), POSECOACH_NOTIFY_URL=inbox,
                      PREFECT_LOGGING_LEVEL="WARNING", **PERMISSIVE_GATE)
    seqs = make_dataset(n_subjects=4, reps=1, seed=3, exercises=("squat", "lunge"))
    Dataset("ec3d", root=str(folder / "home" / "lake")).write(seqs)
    uploads = folder / "uploads"
    uploads.mkdir(parents=True)
    for n, (exercise, labels) in enumerate([("squat", ["correct", "knees_inward"]),
                                            ("lunge", ["correct"])]):
        session, _ = make_session(f"u{n}", exercise, labels, seed=n)
        write_session(session, uploads / f"session-{n}.json")
    log = folder / "serve.log"
    proc = spawn([tool("posecoach"), "serve", "--cron", CRON, "--timezone", TIMEZONE,
                  "--profile", "test", "--uploads", str(uploads)], log, env)
    try:
        yield {"proc": proc, "log": log, "uploads": uploads, "home": folder / "home",
               "prefect": servers.prefect.url, "mlflow": servers.mlflow.url}
    finally:
        stop(proc, signal.SIGINT)


def test_serve_registers_the_nightly_cron_and_both_deployments_run(served) -> None:
    api = served["prefect"]
    nightly = read_deployment(api, "retrain/nightly", served["proc"], served["log"])
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules] == [
        (CRON, TIMEZONE, True)]
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    uploads = read_deployment(api, "score/uploads", served["proc"], served["log"])
    assert uploads.parameters["path"] == str(served["uploads"])

    failed = run(api, "retrain/nightly", dataset="nothing", profile="test")
    assert failed.state.is_failed(), failed.state
    notes = [n for n in Inbox.received if n["flow_run_id"] == str(failed.id)]
    assert notes and notes[0]["flow"] == "retrain" and notes[0]["state"] == "FAILED"
    assert "nothing" in notes[0]["message"] or "nothing" in json.dumps(notes[0]["parameters"])

    retrained = run(api, "retrain/nightly", profile="test")
    assert retrained.state.is_completed(), (retrained.state, served["log"].read_text()[-3000:])
    client = MlflowClient(tracking_uri=served["mlflow"])
    versions = client.search_model_versions("name='posecoach-ec3d'")
    assert len(versions) == 1 and versions[0].tags["profile"] == "test"
    assert client.get_model_version_by_alias("posecoach-ec3d", "champion").version == "1"

    scored = run(api, "score/uploads", out=str(served["home"] / "reports"))
    assert scored.state.is_completed(), (scored.state, served["log"].read_text()[-3000:])
    files = sorted((served["home"] / "reports").glob("*.json"))
    reports = {json.loads(p.read_text())["session_id"]: p for p in files}
    assert sorted(reports) == ["synth-u0-squat-0", "synth-u1-lunge-1"]
    for path in reports.values():
        assert json.loads(path.read_text())["model"]["version"] == "1"
        assert path.with_suffix(".html").exists()
