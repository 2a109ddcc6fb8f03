"""`posecoach demo`: the main job end to end on embedded defaults.

For now: synthesise an EC3D-like dataset in EC3D's data_3D.pickle layout under
`$POSECOACH_HOME/synth` and ingest it into the `ec3d` dataset. The same seed gives the same
sequences, so a second run adds no rows.
"""

from __future__ import annotations

from typing import Any

import typer

from flows.app import app
from flows.cmd_ingest import show_report
from flows.cmd_synth import synthesize
from flows.ingest import ingest_flow
from flows.options import DatasetOpt, JsonOpt, ProfileOpt
from flows.output import console, emit, fail
from model.settings import get_settings


def show(result: dict[str, Any]) -> None:
    synth = result["synth"]
    console.print(f"synthesised {synth['sequences']} repetitions of {synth['subjects']} subjects "
                  f"into {synth['pickle']}")
    show_report(result["ingest"])


@app.command("demo")
def demo(
    profile: str = ProfileOpt,
    dataset: str = DatasetOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
    as_json: bool = JsonOpt,
) -> None:
    """Synthesise an EC3D-like dataset and ingest it (a second run adds nothing)."""
    settings = get_settings()
    try:
        prof = settings.get_profile(profile)
    except KeyError as e:
        fail(str(e.args[0]), 2)
    synth = synthesize(settings.home / "synth", prof.synth_subjects, prof.synth_reps, seed,
                       "pickle", progress=not as_json)
    report = ingest_flow([synth["pickle"]], dataset)
    emit({"profile": prof.name, "synth": synth, "ingest": report.to_dict()}, as_json, show)
    if not report.accounted:
        fail("some inputs ended neither as rows nor as error records")
