"""`posecoach serve`: the nightly retrain and the upload scoring deployments, served against a
Prefect server (`posecoach server start`'s, or PREFECT_API_URL's) until interrupted."""

from __future__ import annotations

import typer
from rich.table import Table

from flows.options import DatasetOpt, JsonOpt, ProfileOpt
from flows.output import console, emit, fail
from flows.schedule import DEFAULT_CRON, DEFAULT_TIMEZONE
from model.settings import get_settings


def show(result: dict) -> None:
    table = Table(title=f"Serving against {result['prefect_api_url']}")
    for column in ("deployment", "schedule", "parameters", "at once"):
        table.add_column(column)
    for dep in result["deployments"]:
        when = ", ".join(f"{s['cron']} ({s['timezone']})" for s in dep["schedules"]) or "on demand"
        params = ", ".join(f"{k}={v}" for k, v in dep["parameters"].items() if v is not None)
        table.add_row(dep["name"], when, params, str(dep["concurrency_limit"]))
    console.print(table)
    console.print("Run one now: prefect deployment run retrain/nightly | "
                  "prefect deployment run score/uploads -p path=UPLOADS")


def serve(
    cron: str = typer.Option(DEFAULT_CRON, "--cron", help="When the retrain runs (cron)."),
    timezone: str = typer.Option(DEFAULT_TIMEZONE, "--timezone",
                                 help="IANA time zone of the cron schedules."),
    dataset: str = DatasetOpt,
    profile: str = ProfileOpt,
    uploads: str = typer.Option(None, "--uploads",
                                help="Upload folder or s3:// prefix the score deployment reads."),
    score_cron: str = typer.Option(None, "--score-cron",
                                   help="Also score --uploads on this cron schedule."),
    score_limit: int = typer.Option(1, "--score-limit", help="Score runs at once."),
    check: bool = typer.Option(False, "--check",
                               help="Register nothing: check the server, print the plan, exit."),
    as_json: bool = JsonOpt,
) -> None:
    """Serve the retrain (cron) and score (on demand, optional cron) deployments."""
    from flows.serve import (
        ServeError,
        describe,
        require_server,
        retrain_deployment,
        score_deployment,
        serve_deployments,
    )

    try:
        api_url = require_server(get_settings().prefect_api_url)
        deployments = [retrain_deployment(cron, timezone, dataset, profile),
                       score_deployment(dataset, uploads, score_cron, timezone, score_limit)]
    except ServeError as exc:
        fail(str(exc))
    emit({"prefect_api_url": api_url, "deployments": [describe(d) for d in deployments]},
         as_json, show)
    if not check:
        serve_deployments(deployments, limit=score_limit + 1)
