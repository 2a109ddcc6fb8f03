"""The typer apps that command modules (flows/cmd_*.py) attach their verbs to."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="posecoach",
    help="Exercise feedback from 3D pose: ingest, retrain, score, promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Dataset versions, deletion and restore.", no_args_is_help=True)
models_app = typer.Typer(help="Registered models: list, promote, roll back.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
