"""`posecoach ingest SOURCE...` and `posecoach data versions | delete-subject | restore |
compact | vacuum`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from flows.cmd_review import ingest_review_file
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

if TYPE_CHECKING:
    from model.data.dataset import Dataset


def show_report(report: dict[str, Any]) -> None:
    """The human summary of an ingest."""
    from flows.ingest import quarantine_dir

    console.print(f"ingest into {report['dataset']!r}: now at version {report['version']}")
    table = Table()
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    for key in ("files", "inputs", "accepted", "inserted", "duplicates", "updated", "rejected"):
        table.add_row(key, str(report[key]))
    console.print(table)
    if report["rejected_by_kind"]:
        kinds = Table(title=f"rejected, copied to {quarantine_dir(report['dataset'])}")
        kinds.add_column("kind")
        kinds.add_column("count", justify="right")
        kinds.add_column("example")
        for kind, count in report["rejected_by_kind"].items():
            first = next(r for r in report["rejections"] if r["kind"] == kind)
            kinds.add_row(kind, str(count),
                          terminal_text(f"{first['file']}: {first['reason']}"))
        console.print(kinds)
    taken = Counter(f"{key} {value['value']}" for file in report["conventions"].values()
                    for key, value in file.items() if value["source"] == "data")
    if taken:
        console.print("taken from the data: " + ", ".join(
            f"{what} ({n} file{'s' * (n > 1)})" for what, n in sorted(taken.items())))
    if report["ignored_columns"]:
        kinds = sorted({"*_" + c.rsplit("_", 1)[1] for columns in report["ignored_columns"].values()
                        for c in columns})
        n = len(report["ignored_columns"])
        console.print(f"read past per-joint confidence columns ({', '.join(kinds)}) in {n} "
                      f"file{'s' * (n > 1)}: not coordinates")
    for warning in report["warnings"]:
        console.print(f"[yellow]warning[/yellow]: {terminal_text(warning)}")
    if report["released"]:
        console.print(f"{len(report['released'])} fixed file(s) left quarantine")
    console.print(f"{report['inputs']} inputs in {report['seconds']:.1f} s "
                  f"({report['per_second']} per second); "
                  + ("every input accounted for" if report["accounted"] else
                     "[red]inputs unaccounted for[/red]"))


def ingest(
    sources: list[str] = typer.Argument(..., help="Files or folders of labelled sequences."),
    dataset: str = DatasetOpt,
    layout: str = LayoutOpt,
    layout_file: Path = LayoutFileOpt,
    skeleton: str = typer.Option(None, "--skeleton", help="Declared skeleton of the poses."),
    units: str = UnitsOpt,
    up: str = UpOpt,
    mirrored: bool = MirroredOpt,
    fps: float = FpsOpt,
    zeros_lost: bool = ZerosLostOpt,
    exercise: str = typer.Option(None, "--exercise", help="Declared exercise."),
    subject: str = typer.Option(None, "--subject", help="Declared subject."),
    label: str = typer.Option(None, "--label", help="Declared label."),
    pattern: str = typer.Option(None, "--pattern",
                                help="Regular expression on file paths with named groups "
                                     "subject, exercise, label, rep."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate and ingest labelled sequences; rejected inputs go to quarantine with a reason.

    Re-ingest fixed files with `posecoach ingest var/quarantine/DATASET --dataset DATASET`.
    """
    from flows.ingest import IngestReport, ingest_flow
    from flows.review import is_review_file
    from model.data.readers import checked_declarations

    try:
        declared = checked_declarations(layout=layout, layout_file=layout_file,
                                        skeleton=skeleton, units=units, up=up,
                                        mirrored=mirrored, fps=fps, zeros_lost=zeros_lost,
                                        exercise=exercise, subject=subject, label=label,
                                        pattern=pattern)
    except SequenceError as exc:
        fail(str(exc))
    missing = [s for s in sources if not Path(s).exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    if len(sources) == 1 and is_review_file(sources[0]):
        ingest_review_file(sources[0], dataset, as_json)
        return
    try:
        with work(as_json):
            report: IngestReport = ingest_flow(sources, dataset, **declared)
    except SequenceError as exc:
        fail(str(exc))
    emit(report.to_dict(), as_json, show_report)
    if not report.accounted:
        fail("some inputs ended neither as rows nor as error records")


def _dataset(name: str) -> Dataset:
    from model.data.dataset import Dataset

    ds = Dataset(name)
    if not ds.exists():
        fail(f"no dataset {name!r} at {ds.uri}")
    return ds


def _show_versions(result: dict[str, Any]) -> None:
    table = Table(title=f"dataset {result['dataset']!r}: {result['rows']} rows "
                  f"at version {result['version']}")
    for col in ("version", "time", "operation", "inserted", "updated", "deleted", "note"):
        table.add_column(col, justify="right" if col in ("version", "inserted") else "left")
    for h in result["history"]:  # "?": a restore that recorded no row figures
        table.add_row(*("?" if h[c] is None else str(h[c])
                        for c in ("version", "time", "operation", "inserted", "updated",
                                  "deleted", "note")))
    console.print(table)


def versions(dataset: str = DatasetOpt, as_json: bool = JsonOpt) -> None:
    """Every version of a dataset, newest first."""
    ds = _dataset(dataset)
    result = {"dataset": dataset, "version": ds.version(), "rows": ds.count(),
              "history": ds.history()}
    emit(result, as_json, _show_versions)


def _show_kv(title: str) -> Any:
    def show(result: dict[str, Any]) -> None:
        table = Table(title=title)
        table.add_column("")
        table.add_column("value")
        for key, value in result.items():
            table.add_row(key, str(value))
        console.print(table)
    return show


def delete_subject(
    subject: str = typer.Argument(..., help="The subject whose recordings go."),
    purge: bool = typer.Option(False, "--purge",
                               help="Also delete old data files now (older versions become "
                                    "unreadable)."),
    dataset: str = DatasetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove one subject's recordings from the current version (and, with --purge, the disk)."""
    result = {"dataset": dataset, **_dataset(dataset).delete_subject(subject, purge=purge)}
    emit(result, as_json, _show_kv(f"deleted subject {subject!r}"))


def restore(
    version: int = typer.Argument(..., help="The version whose rows become current again."),
    dataset: str = DatasetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Make an earlier version current again, as a new version (undo a bad ingest)."""
    try:
        result = {"dataset": dataset, **_dataset(dataset).restore(version)}
    except SequenceError as exc:
        fail(str(exc))
    emit(result, as_json, _show_kv(f"restored version {version}"))


def compact(dataset: str = DatasetOpt, as_json: bool = JsonOpt) -> None:
    """Rewrite small data files into larger ones (rows unchanged, a new version)."""
    result = {"dataset": dataset, **_dataset(dataset).compact()}
    emit(result, as_json, _show_kv("compacted"))


def vacuum(
    retention_hours: int = typer.Option(None, "--retention-hours",
                                        help="Keep removed files younger than this "
                                             "(default: a week; 0 deletes them all)."),
    dataset: str = DatasetOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Delete data files no longer referenced by recent versions."""
    removed = _dataset(dataset).vacuum(retention_hours)
    emit({"dataset": dataset, "removed_files": len(removed)}, as_json, _show_kv("vacuumed"))
