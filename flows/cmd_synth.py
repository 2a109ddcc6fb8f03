"""`posecoach synth [OUT]`: write a synthetic EC3D-like dataset and, on request, uploads
(flows/synth.py): `--format pickle` (the default, EC3D's layout) or one JSON, NPZ or CSV file per
repetition; `--sessions N` uploaded sessions, `--broken N` bad uploads among them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flows.options import JsonOpt, ProfileOpt
from flows.output import console, emit, fail
from model.settings import get_settings


def show(result: dict[str, Any]) -> None:
    table = Table(title=f"synthetic data in {result['out']} (seed {result['seed']})")
    table.add_column("class")
    table.add_column("repetitions", justify="right")
    for name, count in result["classes"].items():
        table.add_row(name, str(count))
    console.print(table)
    console.print(f"{result['sequences']} repetitions of {result['subjects']} subjects as "
                  f"{result['format']} ({result['files']} file(s)); "
                  f"{len(result['sessions'])} sessions, {len(result['broken'])} broken uploads")


def synth_command(
    out: Path = typer.Argument(None, help="Output folder (default: $POSECOACH_HOME/synth)."),
    subjects: int = typer.Option(None, "--subjects", help="Subjects (default: the profile's)."),
    reps: int = typer.Option(None, "--reps", help="Repetitions per subject and class."),
    seed: int = typer.Option(0, "--seed"),
    fmt: str = typer.Option("pickle", "--format", help="pickle | json | npz | csv"),
    sessions: int = typer.Option(0, "--sessions", help="Uploaded sessions to write too."),
    session_format: str = typer.Option(None, "--session-format",
                                       help="json | npz | parquet (default: all three in turn)"),
    broken: int = typer.Option(0, "--broken", help="Bad uploads to add to the sessions."),
    profile: str = ProfileOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Write a synthetic EC3D-like dataset (and uploaded sessions) into a folder."""
    from flows.synth import LABELLED_WRITERS, SESSION_FORMATS, synthesize

    settings = get_settings()
    try:
        prof = settings.get_profile(profile)
    except KeyError as e:
        fail(str(e.args[0]), 2)
    if fmt not in ("pickle", *LABELLED_WRITERS):
        fail(f"--format {fmt!r}: choose pickle, json, npz or csv", 2)
    if session_format not in (None, *SESSION_FORMATS):
        fail(f"--session-format {session_format!r}: choose json, npz or parquet", 2)
    if min(subjects or 1, reps or 1) < 1 or min(sessions, broken) < 0:
        fail("--subjects and --reps must be at least 1, --sessions and --broken not negative", 2)
    result = synthesize(out or settings.home / "synth", subjects or prof.synth_subjects,
                        reps or prof.synth_reps, seed, fmt, sessions, broken, session_format,
                        progress=not as_json)
    emit(result, as_json, show)
