"""How every verb answers: a short human summary (rich), or with --json one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

console = Console(stderr=True)


def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def emit(result: dict, as_json: bool, human: Callable[[dict], None]) -> None:
    """Print `result` as one JSON document on stdout, or hand it to `human` for a summary."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=_default, indent=2) + "\n")
    else:
        human(result)


def fail(message: str, code: int = 1) -> None:
    """Stop the command with a reason on stderr and a non-zero exit status."""
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)
