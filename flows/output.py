"""How every verb answers: a short human summary (rich), or with --json one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from typing import Any

import typer
from rich.console import Console

from model.data.names import terminal_text

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


@contextmanager
def work(as_json: bool) -> Iterator[None]:
    """Around a verb's work: Prefect's engine settings for its flows (flows.engine.flow_engine),
    and with --json, whatever libraries print to stdout goes to stderr, so that stdout holds
    the one JSON document alone."""
    from flows.engine import flow_engine

    with flow_engine(), redirect_stdout(sys.stderr) if as_json else nullcontext():
        yield


def fail(message: str, code: int = 1) -> None:
    """Stop the command with a reason on stderr and a non-zero exit status; the reason is
    printed as plain text (it may quote a file's name or content)."""
    console.print(f"[red]error:[/red] {terminal_text(message)}")
    raise typer.Exit(code)
