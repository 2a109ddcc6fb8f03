"""A local Prefect server that later commands reuse (`posecoach server start|stop|status`).

Without one, every command starts Prefect's ephemeral API for itself (nothing to start by
hand, but seconds of start-up per command). `start` runs `prefect server start` detached from
the terminal, in a session of its own, on 127.0.0.1, its output in $POSECOACH_HOME/logs/, and
writes what it started to $POSECOACH_HOME/prefect-server.json; it stays until `stop`. Every
later command finds it there and points PREFECT_API_URL at it (`use_running_server`, before
Prefect is imported), unless PREFECT_API_URL is set already.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from model.settings import get_settings

STATE_FILE = "prefect-server.json"
HOST = "127.0.0.1"
DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


class ServerError(RuntimeError):
    """The server could not be started or stopped."""


@dataclass(frozen=True)
class ServerState:
    pid: int
    url: str
    log: str
    started: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def state_file() -> Path:
    return get_settings().home / STATE_FILE


def read_state() -> ServerState | None:
    try:
        return ServerState(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def healthy(url: str, timeout: float = 1.0) -> bool:
    """True when the Prefect API at `url` (without /api) answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def status() -> dict:
    """What `server status` says: running or not, and where."""
    state = read_state()
    if state is None:
        return {"running": False, "state_file": str(state_file())}
    up = alive(state.pid)
    return {"running": up and healthy(state.url), "process_alive": up, **asdict(state),
            "api_url": state.api_url}


def start(port: int = DEFAULT_PORT, timeout: float = START_TIMEOUT_S) -> dict:
    """Start the server (or find the one already running) and wait until it answers."""
    state = read_state()
    if state is not None and alive(state.pid) and healthy(state.url):
        return {**status(), "already_running": True}
    url = f"http://{HOST}:{port}"
    if healthy(url):
        raise ServerError(f"something else already answers at {url}: stop it, or start on "
                          "another port (--port)")
    from flows.console import log_path

    log = log_path("prefect-server")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": HOST, "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port",
             str(port), "--no-ui", "--analytics-off"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    state = ServerState(pid=proc.pid, url=url, log=str(log),
                        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text(json.dumps(asdict(state)))
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_process(proc.pid)
            state_file().unlink(missing_ok=True)
            raise ServerError(f"the Prefect server did not come up within {timeout:.0f} s; "
                              f"its log: {log}")
        time.sleep(0.5)
    return {**status(), "already_running": False}


def _stop_process(pid: int) -> None:
    """SIGTERM the server's process group, SIGKILL it after STOP_TIMEOUT_S."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.2)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _reap(pid: int) -> None:
    """Collect the exit status when this process started the server (no zombie left)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def stop() -> dict:
    """Stop the server `start` started; says so when there was none."""
    state = read_state()
    if state is None:
        return {"stopped": False, "reason": "no server was started (posecoach server start)"}
    if alive(state.pid):
        _stop_process(state.pid)
    state_file().unlink(missing_ok=True)
    return {"stopped": True, "pid": state.pid, "url": state.url}


def use_running_server() -> str | None:
    """Point PREFECT_API_URL at the server `start` left running, unless it is set already or
    none answers; returns the URL used."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    state = read_state()
    if state is None or not alive(state.pid) or not healthy(state.url, timeout=2.0):
        return None
    os.environ["PREFECT_API_URL"] = state.api_url
    return state.api_url

