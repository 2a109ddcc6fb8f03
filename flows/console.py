"""A console a person reads: posecoach's own progress bars and summaries on the terminal, what
the libraries print (Prefect, Ray, MLflow and its download bars, telemetry, warnings) in
$POSECOACH_HOME/logs/<command>-<time>.log, the last `KEEP_LOGS` kept; `--verbose` shows it all.

`quiet(command)` sends file descriptor 2 (stderr, which the libraries, their loggers and the
processes they start write to) to the log, and gives flows.output.console a copy of the
terminal's stderr, until `restore()`. posecoach's own warnings and errors (its loggers: flows,
model, workers, registry) go to both. It does so only when stderr is the process's real stderr
(not a test runner's capture). After `restore()` those libraries' loggers keep to warnings:
what they say while the process shuts down is not for the terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from model.settings import get_settings

KEEP_LOGS = 50
OWN_LOGGERS = ("flows", "model", "workers", "registry")
SHUTDOWN_QUIET = ("prefect",)  # loggers that still talk at exit (its temporary server stops)


def log_dir() -> Path:
    return get_settings().home / "logs"


def log_path(command: str) -> Path:
    """A new log file for one command, the oldest beyond KEEP_LOGS removed."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[: max(0, len(logs) - KEEP_LOGS + 1)]:
        old.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{command}-{stamp}-{os.getpid()}.log"
    path.touch()
    return path


@dataclass
class Quiet:
    """What `quiet` changed, to put back."""

    log: Path
    saved_fd: int
    terminal: TextIO
    handlers: list[logging.Handler]


_active: Quiet | None = None


def _real_stderr() -> bool:
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def quiet(command: str) -> Path | None:
    """Send what the libraries print to a log file of this command; returns its path (None
    when stderr is not the process's own, e.g. under a test runner, or already quiet)."""
    global _active
    if _active is not None or not _real_stderr():
        return None
    from flows.output import console

    log = log_path(command)
    sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal = os.fdopen(os.dup(saved_fd), "w", buffering=1, encoding="utf-8",
                         errors="replace")
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    _active = Quiet(log, saved_fd, terminal, _own_handlers(terminal))
    console.file = terminal
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return log


def _own_handlers(terminal: TextIO) -> list[logging.Handler]:
    """Handlers that show posecoach's own warnings and errors on the terminal and in the log
    (stderr, now the log), attached to its loggers."""
    handlers: list[logging.Handler] = [logging.StreamHandler(terminal),
                                       logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for name in OWN_LOGGERS:
            logging.getLogger(name).addHandler(handler)
    return handlers


def restore() -> None:
    """Put stderr back as it was before `quiet`."""
    global _active
    if _active is None:
        return
    from flows.output import console

    for handler in _active.handlers:
        for name in OWN_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    for name in SHUTDOWN_QUIET:  # the command is done: the libraries' exit chatter stays out
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.stderr.flush()
    os.dup2(_active.saved_fd, 2)
    os.close(_active.saved_fd)
    console.file = None
    _active.terminal.close()
    _active = None


def current_log() -> Path | None:
    return None if _active is None else _active.log
