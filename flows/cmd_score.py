"""`posecoach score PATH`: mistake reports for a folder (or prefix) of uploaded sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flows.options import (
    DatasetOpt,
    FpsOpt,
    JsonOpt,
    LayoutFileOpt,
    LayoutOpt,
    MirroredOpt,
    UnitsOpt,
    UpOpt,
    ZerosLostOpt,
)
from flows.output import console, emit, fail, work
from model.data.names import terminal_text
from model.data.sequence import SequenceError


def show(result: dict[str, Any]) -> None:
    m = result["model"]
    against = f", judged against reference {m['reference'][:12]}" if m.get("reference") else ""
    table = Table(title=f"scored with {m['name']} v{m['version']}{against}")
    table.add_column("sessions", justify="right")
    table.add_column("reports", justify="right")
    table.add_column("skipped", justify="right")
    table.add_column("duplicates", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("repetitions", justify="right")
    table.add_row(*(str(result[k]) for k in ("sessions", "reports", "skipped", "duplicates",
                                             "errors", "repetitions")))
    console.print(table)
    if result.get("reference_caution"):
        console.print(f"[yellow]note[/yellow]: {result['reference_caution']}")
    if result["mistakes"]:
        mistakes = ", ".join(f"{k} x{v}" for k, v in sorted(result["mistakes"].items()))
        console.print(f"mistakes: {mistakes}; unsure: {result['unsure']}")
    if result["failed_repetitions"]:
        console.print(f"repetitions not scored: {result['failed_repetitions']} (each one's "
                      "reason is in its session's report)")
    for dup in result["duplicate_files"]:
        console.print(f"duplicate {terminal_text(dup['input'])}: the same bytes as "
                      f"{terminal_text(dup['of'])}, scored once")
    for err in result["error_records"]:
        console.print(f"[red]error[/red] {terminal_text(err['kind'])}: "
                      f"{terminal_text(err['reason'])}")
    if result["exercise_disagreements"]:
        console.print("most repetitions look like another exercise than the declared one in: "
                      + ", ".join(map(terminal_text, result["exercise_disagreements"])))
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
    layout: str = LayoutOpt,
    layout_file: Path = LayoutFileOpt,
    units: str = UnitsOpt,
    up: str = UpOpt,
    mirrored: bool = MirroredOpt,
    fps: float = FpsOpt,
    zeros_lost: bool = ZerosLostOpt,
    segmented: bool = typer.Option(
        False, "--segmented", help="Each file is one repetition, scored whole (not cut)."),
    reference: str = typer.Option(
        None, "--reference", help="A session of the person's repetitions known to be correct, "
        "or a folder of people's (by subject, an exercise a session): each repetition is "
        "judged relative to its person's."),
    as_json: bool = JsonOpt,
) -> None:
    """Score uploaded sessions with the champion model; reports per session, errors recorded.

    Each upload is its own source: its up axis, units, mirroring and frame rate (against its
    timestamps) are settled against its own data, as `posecoach ingest` does; one the data
    contradicts is an error record. With --reference, a repetition is judged correct relative
    to its person's own correct ones."""
    from flows.score import OutUnusable, StoreUnavailable, score_flow
    from model.data.readers import checked_declarations
    from model.serve.reference import ReferenceUnusable
    from registry.versions import RegistryError

    try:
        declared = checked_declarations(layout=layout, layout_file=layout_file, units=units,
                                        up=up, mirrored=mirrored, fps=fps,
                                        zeros_lost=zeros_lost, segmented=segmented or None)
    except SequenceError as exc:
        fail(str(exc))
    try:
        with work(as_json):
            result = score_flow(path=path, dataset=dataset, version=version, out=out,
                                model=model, html=not no_html, progress=not as_json,
                                declared=declared, reference=reference)
    except (RegistryError, StoreUnavailable, FileNotFoundError, ReferenceUnusable,
            OutUnusable) as exc:
        fail(str(exc))
    emit(result, as_json, show)
    if not result["accounted"]:
        fail("some sessions ended neither as a report, a skip, a duplicate nor an error record")
