"""Scheduling: the retrain and score deployments, served against a Prefect server.

- `retrain/nightly`: the retrain flow on a cron schedule (02:00 UTC by default) in a time zone,
  at most one run at a time (a run due while one is going is cancelled, not queued).
- `score/uploads`: the score flow on demand (`prefect deployment run score/uploads -p
  path=...`), and on a schedule over an upload folder or prefix when one is given; runs queue
  one behind the other.

Prefect cannot schedule on its ephemeral API, so serving needs a running server: the one
`posecoach server start` keeps (found without PREFECT_API_URL), or the one PREFECT_API_URL
names; while serving, the server going away is said once (naming it) and its return
too, and runs due meanwhile start once it is back. A failed run is a Failed flow run in the
Prefect UI and API; with POSECOACH_NOTIFY_URL set, the flows' on_failure hook also POSTs a JSON
message there.
`deploy/prefect.yaml` declares the same deployments for `prefect deploy --all` with a work pool.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.retrain import retrain_flow
from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE
from flows.score import score_flow
from model.settings import get_settings

log = logging.getLogger(__name__)

RETRAIN_DEPLOYMENT = "nightly"
SCORE_DEPLOYMENT = "uploads"
WATCH_EVERY_S = 10.0


class ServeError(RuntimeError):
    """Serving cannot start: no Prefect server, or a bad schedule."""


def require_server(api_url: str | None, timeout: float = 10.0) -> str:
    """The Prefect API URL, checked to answer; ServeError when unset or unreachable."""
    if not api_url:
        raise ServeError(
            "no Prefect server to serve against, and Prefect cannot schedule on its ephemeral "
            "API: start one with `posecoach server start` (found from then on), or set "
            "PREFECT_API_URL to your Prefect server's API (http://HOST:4200/api)")
    try:
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        raise ServeError(f"no Prefect server answers at PREFECT_API_URL={api_url} ({exc}): "
                         "start that server, or unset PREFECT_API_URL and start one with "
                         "`posecoach server start`") from exc
    return api_url


def failure_message(flow_name: str, flow_run: Any, state: Any) -> dict:
    """The JSON document a failure notification carries."""
    return {
        "event": "posecoach.flow_run.failed",
        "flow": flow_name,
        "flow_run": flow_run.name,
        "flow_run_id": str(flow_run.id),
        "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
        "parameters": flow_run.parameters,
        "state": state.type.value if hasattr(state.type, "value") else str(state.type),
        "message": state.message,
    }


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure hook: POST the failure to POSECOACH_NOTIFY_URL when it is set.

    A notification that cannot be delivered is logged; it never hides the run's own failure.
    """
    url = get_settings().notify_url
    if not url:
        return
    body = json.dumps(failure_message(flow.name, flow_run, state), default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except OSError as exc:
        log.warning("could not notify %s of the failed run %s: %s", url, flow_run.name, exc)


nightly_retrain = retrain_flow.with_options(on_failure=[notify_failure])
batch_score = score_flow.with_options(on_failure=[notify_failure])


def cron_schedule(cron: str, timezone: str, parameters: dict | None = None) -> Any:
    """A Prefect cron schedule; ServeError naming the bad cron expression or time zone."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ServeError(f"--timezone {timezone!r} is not an IANA time zone, e.g. "
                         "Europe/Zurich or UTC") from exc
    try:
        return Cron(cron, timezone=timezone, parameters=parameters or {})
    except ValueError as exc:
        raise ServeError(f"--cron {cron!r} is not a cron expression, e.g. '0 2 * * *'") from exc


def _deployment(flow: Any, attribute: str, name: str, **options: Any) -> RunnerDeployment:
    """A deployment whose runs load `flows.serve.<attribute>` (the flow with its hooks)."""
    deployment = flow.to_deployment(name, entrypoint_type=EntrypointType.MODULE_PATH, **options)
    deployment.entrypoint = f"{__name__}.{attribute}"
    return deployment


def retrain_deployment(cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
                       dataset: str = "ec3d", profile: str | None = None) -> RunnerDeployment:
    """`retrain/nightly`: on the cron schedule, at most one run at a time."""
    return _deployment(
        nightly_retrain, "nightly_retrain", RETRAIN_DEPLOYMENT,
        schedules=[cron_schedule(cron, timezone)],
        parameters={"dataset": dataset, "profile": profile},
        concurrency_limit=ConcurrencyLimitConfig(
            limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        description="Nightly retraining: cross-validate, train, register, gate.",
        tags=["posecoach", "retrain"],
    )


def score_deployment(dataset: str = "ec3d", uploads: str | None = None,
                     cron: str | None = None, timezone: str = DEFAULT_TIMEZONE,
                     limit: int = 1) -> RunnerDeployment:
    """`score/uploads`: on demand, and on `cron` over the `uploads` folder or prefix."""
    if cron and not uploads:
        raise ServeError("--score-cron needs --uploads: the folder or prefix to score")
    parameters: dict[str, Any] = {"dataset": dataset}
    if uploads:
        parameters["path"] = uploads
    return _deployment(
        batch_score, "batch_score", SCORE_DEPLOYMENT,
        schedules=[cron_schedule(cron, timezone, {"path": uploads})] if cron else [],
        parameters=parameters,
        concurrency_limit=ConcurrencyLimitConfig(
            limit=limit, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        description="Batch scoring of uploaded sessions with the champion model.",
        tags=["posecoach", "score"],
    )


def describe(deployment: RunnerDeployment) -> dict:
    """What a deployment does, as plain values (for the CLI summary and --json)."""
    limit = deployment.concurrency_limit
    return {
        "name": f"{deployment.flow_name}/{deployment.name}",
        "entrypoint": deployment.entrypoint,
        "schedules": [{"cron": s.schedule.cron, "timezone": s.schedule.timezone,
                       "parameters": s.parameters} for s in deployment.schedules or []],
        "parameters": deployment.parameters,
        "concurrency_limit": getattr(limit, "limit", limit),
    }


def watch_server(api_url: str, stopped: threading.Event, every: float = WATCH_EVERY_S) -> None:
    """Say when the Prefect server stops answering and when it is back. Serving goes on
    meanwhile: Prefect's runner keeps polling, and picks up the runs due once it answers."""
    down = False
    while not stopped.wait(every):
        try:
            httpx.get(f"{api_url.rstrip('/')}/health", timeout=every).raise_for_status()
        except httpx.HTTPError as exc:
            if not down:
                log.error("no Prefect server answers at PREFECT_API_URL=%s (%s): no run starts "
                          "until it is back; asking again every %.0f s", api_url, exc, every)
            down = True
            continue
        if down:
            log.warning("the Prefect server at %s answers again; serving goes on", api_url)
        down = False


def serve_deployments(deployments: list[RunnerDeployment], limit: int | None = None) -> None:
    """Serve until interrupted, watching the server (watch_server); schedules are paused when
    serving stops."""
    stopped = threading.Event()
    watcher = threading.Thread(target=watch_server, name="prefect-server-watch", daemon=True,
                               args=(get_settings().prefect_api_url, stopped))
    watcher.start()
    try:
        serve(*deployments, limit=limit, print_starting_message=False)
    finally:
        stopped.set()
