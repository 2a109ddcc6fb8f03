"""`posecoach server start|stop|status`: the local Prefect server later commands reuse
(see flows/server.py)."""

from __future__ import annotations

from typing import Any

import typer

from flows import server
from flows.options import JsonOpt
from flows.output import console, emit, fail
from model.data.names import terminal_text

server_app = typer.Typer(help="A local Prefect server that later commands reuse.",
                         no_args_is_help=True)


def show_damaged(result: dict[str, Any]) -> None:
    """A damaged state file: what was found of its server, and what to do (status), or what
    stop did."""
    line = f"{result['damaged']}: {result.get('note') or result['by_hand']}"
    if "note" in result and "stopped" not in result:
        line += "; `posecoach server stop` " + ("stops it and removes the file" if "url" in result
                                                else "removes the file")
    console.print(terminal_text(line))


def show(result: dict[str, Any]) -> None:
    if "damaged" in result:
        show_damaged(result)
    elif result.get("running"):
        console.print(f"Prefect server running at {result['url']} (pid {result['pid']}); "
                      f"later commands use it. Log: {result['log']}")
    elif "stopped" in result:
        console.print(f"stopped the Prefect server at {result['url']}" if result["stopped"]
                      else result["reason"])
    else:
        console.print("no Prefect server running: commands start their own (embedded) API; "
                      "`posecoach server start` keeps one for later commands")


@server_app.command("start")
def start(port: int = typer.Option(server.DEFAULT_PORT, "--port", help="Port on 127.0.0.1."),
          as_json: bool = JsonOpt) -> None:
    """Start a local Prefect server (or find the one running); it stays until `stop`."""
    try:
        result = server.start(port=port)
    except server.ServerError as exc:
        fail(str(exc))
    emit(result, as_json, show)


@server_app.command("stop")
def stop(as_json: bool = JsonOpt) -> None:
    """Stop the server `start` started."""
    try:
        result = server.stop()
    except server.ServerError as exc:
        fail(str(exc))
    emit(result, as_json, show)


@server_app.command("status")
def status(as_json: bool = JsonOpt) -> None:
    """Whether the server `start` started is running, and where; exits 1 when its state file
    is damaged."""
    result = server.status()
    emit(result, as_json, show)
    if "damaged" in result:
        raise typer.Exit(1)
