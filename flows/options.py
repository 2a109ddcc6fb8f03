"""The options every verb shares, declared once."""

from __future__ import annotations

import typer

JsonOpt = typer.Option(False, "--json", help="Print one JSON document on stdout.")
ProfileOpt = typer.Option(None, "--profile", help="test | demo | nightly (default: settings).")
DatasetOpt = typer.Option("ec3d", "--dataset", help="Dataset name, e.g. ec3d or uiprmd.")
