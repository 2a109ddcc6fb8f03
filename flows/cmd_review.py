"""`posecoach ingest REVIEW_FILE --dataset NAME` (a filled-in review file; `posecoach ingest`
hands it here) and `posecoach drift [--since ...] [--dataset ...]`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from flows.options import DatasetOpt, JsonOpt
from flows.output import console, emit, fail, work
from model.data.names import terminal_text


def show_review(report: dict[str, Any]) -> None:
    table = Table(title=f"review file {terminal_text(report['file'])} into "
                  f"{report['dataset']!r}, now at version {report['version']}")
    table.add_column("", style="bold")
    table.add_column("rows", justify="right")
    for key in ("labelled", "inserted", "duplicates", "updated", "unlabelled"):
        table.add_row(key, str(report[key]))
    table.add_row("errors", str(len(report["errors"])))
    console.print(table)
    for err in report["errors"]:
        console.print(f"[red]error[/red] line {err['line']}: {terminal_text(err['reason'])}")
    if report["errors"]:
        console.print(f"[red]{len(report['errors'])} of {report['labelled']} labelled rows "
                      "failed[/red]")


def ingest_review_file(path: str, dataset: str, as_json: bool) -> None:
    """Ingest the labelled rows of one review file (unlabelled ones stay for later); the exit
    status is 1 when rows failed and none went in."""
    from flows.review import ingest_review

    report = ingest_review(path, dataset).to_dict()
    emit(report, as_json, show_review)
    if report["errors"] and not (report["inserted"] or report["duplicates"] or report["updated"]):
        fail(f"{path}: none of its {report['labelled']} labelled rows went in "
             f"({len(report['errors'])} failed)")


def show_drift(result: dict[str, Any]) -> None:
    table = Table(title=f"drift of {result['dataset']} since {result['since'] or 'the start'}: "
                  f"{result['n_scored']} scored against {result['n_train']} training")
    for col in ("exercise", "scored", "class PSI", "unsure", "drifted"):
        table.add_column(col)
    for e in result["exercises"]:
        table.add_row(e["exercise"], str(e["n_scored"]), f"{e['class_psi']:.3f}",
                      f"{e['unsure_share']:.0%}" if e["n_scored"] else "-",
                      ", ".join(e["drifted"]) or "-")
    console.print(table)
    console.print(f"page: {result['page']}")
    console.print(f"[red]{result['warning']}[/red]" if result["warning"] else "no drift seen")


def parse_since(text: str | None) -> datetime | None:
    """An ISO date or time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r}: not an ISO date or time (2026-12-01 or 2026-12-01T08:00)")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def drift(
    dataset: str = DatasetOpt,
    since: str = typer.Option(None, "--since", help="Compare what was scored since this ISO "
                              "date/time (default: the last retrain)."),
    reports: str = typer.Option(None, "--reports", help="The score runs' output folder "
                                "(default: settings' reports)."),
    as_json: bool = JsonOpt,
) -> None:
    """Compare the repetitions scored lately with the champion's training data, per exercise."""
    from flows.drift import DriftError, check_drift
    from registry.versions import RegistryError

    start = parse_since(since)
    try:
        with work(as_json):
            result = check_drift(dataset, start, reports).to_dict()
    except (DriftError, RegistryError) as exc:
        fail(str(exc))
    emit(result, as_json, show_drift)
