"""`posecoach score PATH`: mistake reports for a folder (or prefix) of uploaded sessions."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flows.options import DatasetOpt, JsonOpt
from flows.output import console, emit, fail, work


def show(result: dict[str, Any]) -> None:
    m = result["model"]
    table = Table(title=f"scored with {m['name']} v{m['version']}")
    table.add_column("sessions", justify="right")
    table.add_column("reports", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("repetitions", justify="right")
    table.add_row(*(str(result[k]) for k in ("sessions", "reports", "skipped", "errors",
                                             "repetitions")))
    console.print(table)
    if result["mistakes"]:
        mistakes = ", ".join(f"{k} x{v}" for k, v in sorted(result["mistakes"].items()))
        console.print(f"mistakes: {mistakes}; unsure: {result['unsure']}")
    for err in result["error_records"]:
        console.print(f"[red]error[/red] {err['kind']}: {err['reason']}")
    if result["exercise_disagreements"]:
        console.print("the model disagrees with the declared exercise in: "
                      + ", ".join(result["exercise_disagreements"]))
    console.print(f"reports in {result['out']}")
    if result.get("review"):
        console.print(f"review queue: {result['review']['csv']} "
                      f"({result['review']['rows']} repetitions; fill in `label`, then "
                      "posecoach ingest it)")
    if result.get("overview"):
        console.print(f"overview: {result['overview']}")


def score(
    path: str = typer.Argument(..., help="Folder, object-store prefix or file of sessions."),
    dataset: str = DatasetOpt,
    model: str = typer.Option(None, "--model", help="Registered model name."),
    version: str = typer.Option(None, "--version", help="Pin a version instead of @champion."),
    out: str = typer.Option(None, "--out", help="Where reports go (default: settings' reports)."),
    no_html: bool = typer.Option(False, "--no-html", help="JSON, motions and table only."),
    as_json: bool = JsonOpt,
) -> None:
    """Score uploaded sessions with the champion model; reports per session, errors recorded."""
    from flows.score import StoreUnavailable, score_flow
    from registry.versions import RegistryError

    try:
        with work(as_json):
            result = score_flow(path=path, dataset=dataset, version=version, out=out,
                                model=model, html=not no_html, progress=not as_json)
    except (RegistryError, StoreUnavailable, FileNotFoundError) as exc:
        fail(str(exc))
    emit(result, as_json, show)
    if not result["accounted"]:
        fail("some sessions ended neither as a report, a skip nor an error record")
