"""`posecoach serve` without servers: it refuses the ephemeral API with the way out, builds the
deployments it would serve (cron, time zone, concurrency, hooks), names a bad schedule, and its
failure hook POSTs the failure where POSECOACH_NOTIFY_URL says."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest
from prefect.client.schemas.objects import StateType
from prefect.flows import load_flow_from_entrypoint
from typer.testing import CliRunner

from flows.cli import app
from flows.serve import (
    ServeError,
    cron_schedule,
    describe,
    notify_failure,
    require_server,
    retrain_deployment,
    score_deployment,
)


def test_serve_refuses_the_ephemeral_api_and_says_what_to_start(monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["serve", "--check"])
    assert result.exit_code == 1
    assert "`posecoach server start`" in result.output and "PREFECT_API_URL" in result.output


def test_serve_refuses_a_server_that_does_not_answer() -> None:
    with pytest.raises(ServeError, match="no Prefect server answers at PREFECT_API_URL=") as no:
        require_server("http://127.0.0.1:9/api", timeout=2)
    assert "`posecoach server start`" in str(no.value)


def test_the_nightly_deployment_has_its_cron_zone_and_one_run_at_a_time() -> None:
    deployment = retrain_deployment("30 1 * * *", "Europe/Zurich", "uiprmd", "test")
    plan = describe(deployment)
    assert plan["name"] == "retrain/nightly"
    assert plan["schedules"] == [{"cron": "30 1 * * *", "timezone": "Europe/Zurich",
                                  "parameters": {}}]
    assert plan["parameters"] == {"dataset": "uiprmd", "profile": "test"}
    assert plan["concurrency_limit"] == 1
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    assert flow.name == "retrain" and notify_failure in flow.on_failure_hooks


def test_the_score_deployment_is_on_demand_or_scheduled_over_uploads() -> None:
    on_demand = describe(score_deployment())
    assert on_demand["name"] == "score/uploads" and on_demand["schedules"] == []
    scheduled = describe(score_deployment(uploads="s3://up/in", cron="*/10 * * * *"))
    assert scheduled["schedules"][0]["parameters"] == {"path": "s3://up/in"}
    assert scheduled["parameters"]["path"] == "s3://up/in"
    flow = load_flow_from_entrypoint(score_deployment().entrypoint)
    assert flow.name == "score" and notify_failure in flow.on_failure_hooks
    with pytest.raises(ServeError, match="--score-cron needs --uploads"):
        score_deployment(cron="*/10 * * * *")


@pytest.mark.parametrize(("cron", "zone", "message"), [
    ("every night", "UTC", "--cron 'every night' is not a cron expression"),
    ("0 2 * * *", "Mars/Olympus", "--timezone 'Mars/Olympus' is not an IANA time zone"),
])
def test_a_bad_schedule_is_named(cron: str, zone: str, message: str) -> None:
    with pytest.raises(ServeError, match=message):
        cron_schedule(cron, zone)


def test_the_failure_hook_posts_the_failed_run(monkeypatch) -> None:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the handler's required name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    monkeypatch.setenv("POSECOACH_NOTIFY_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    run_id = uuid.uuid4()
    flow_run = SimpleNamespace(name="brave-fox", id=run_id, deployment_id=None,
                               parameters={"dataset": "ec3d"})
    state = SimpleNamespace(type=StateType.FAILED, message="dataset 'ec3d' is empty")
    notify_failure(SimpleNamespace(name="retrain"), flow_run, state)
    server.server_close()
    assert received == [{"event": "posecoach.flow_run.failed", "flow": "retrain",
                         "flow_run": "brave-fox", "flow_run_id": str(run_id),
                         "deployment_id": None, "parameters": {"dataset": "ec3d"},
                         "state": "FAILED", "message": "dataset 'ec3d' is empty"}]


def test_an_undeliverable_notification_does_not_raise(monkeypatch, caplog) -> None:
    monkeypatch.setenv("POSECOACH_NOTIFY_URL", "http://127.0.0.1:9/")
    flow_run = SimpleNamespace(name="calm-owl", id=uuid.uuid4(), deployment_id=None,
                               parameters={})
    notify_failure(SimpleNamespace(name="score"), flow_run,
                   SimpleNamespace(type=StateType.FAILED, message="boom"))
    assert "could not notify" in caplog.text and "calm-owl" in caplog.text
