"""A local Prefect server that later commands reuse (`posecoach server start|stop|status`).

Without one, every command starts Prefect's ephemeral API for itself (nothing to start by
hand, but seconds of start-up per command). `start` runs `prefect server start` detached from
the terminal, in a session of its own, on 127.0.0.1, its output in $POSECOACH_HOME/logs/, and
writes what it started to $POSECOACH_HOME/prefect-server.json; it stays until `stop`. Every
later command finds it there and points PREFECT_API_URL at it (`use_running_server`, before
Prefect is imported), unless PREFECT_API_URL is set already.

A damaged state file is reported as damaged, naming it. `stop` then stops the server the file
still names only when the process itself shows it is one `start` started from this home (its
command line, and its output going to this home's log folder; Linux, /proc); otherwise it says
what it found and how to stop the server by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.console import log_dir, log_path
from model.settings import get_settings

STATE_FILE = "prefect-server.json"
HOST = "127.0.0.1"
DEFAULT_PORT = 4200
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
PID_FIELD = re.compile(r'"pid"\s*:\s*(\d+)\s*[,}]')
BY_HAND = ("find it with `ps -ef | grep 'prefect server start'`, stop it with `kill -- -PID`, "
           "then remove {path}")


class ServerError(RuntimeError):
    """The server could not be started or stopped."""


class DamagedState(ServerError):
    """The state file is there but is not what `start` wrote; `pid` is the one still legible."""

    def __init__(self, path: Path, problem: str, pid: int | None) -> None:
        super().__init__(f"{path} is damaged ({problem})")
        self.path = path
        self.pid = pid


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
    """What `start` noted, None when it noted nothing; DamagedState when the file cannot be
    read as that."""
    path = state_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedState(path, f"unreadable: {exc}", None) from None
    try:
        state = ServerState(**json.loads(text))
    except (ValueError, TypeError) as exc:
        legible = PID_FIELD.search(text)
        raise DamagedState(path, f"not the JSON `server start` writes: {exc}",
                           int(legible[1]) if legible else None) from None
    if not isinstance(state.pid, int) or not isinstance(state.url, str):
        raise DamagedState(path, "its pid or url is not a number or a text", None)
    return state


def _command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port",
            str(port), "--no-ui", "--analytics-off"]


def started_here(pid: int) -> str | None:
    """The URL of the server `start` started from this home as process `pid`, read from the
    process itself: its command line is `start`'s and its output goes to this home's log
    folder. None when `pid` is not that (or /proc cannot tell)."""
    proc = Path(f"/proc/{pid}")
    try:
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        output = Path(os.readlink(proc / "fd" / "1").removesuffix(" (deleted)"))
        port = int(argv[argv.index("--port") + 1])
    except (OSError, ValueError, IndexError):
        return None
    if argv[1:] != _command(port)[1:] or output.parent != log_dir().resolve():
        return None
    return f"http://{HOST}:{port}"


def alive(pid: int, group: bool = False) -> bool:
    """Process `pid` runs; with `group`, a process of the group it leads does (the server's
    own children included)."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
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
    try:
        state = read_state()
    except DamagedState as exc:
        return _damaged(exc)
    if state is None:
        return {"running": False, "state_file": str(state_file())}
    up = alive(state.pid)
    return {"running": up and healthy(state.url), "process_alive": up, **asdict(state),
            "api_url": state.api_url}


def _damaged(exc: DamagedState) -> dict:
    """What can be told of the server a damaged state file notes: `url` when the process shows
    it is the one `start` started here, `by_hand` (how to stop it) when that cannot be told,
    neither when nothing of it runs; `note` says which."""
    found = {"damaged": str(exc), "state_file": str(exc.path), "pid": exc.pid}
    if exc.pid is None:
        return {**found, "running": None, "by_hand": "no pid can be read from it; if a server "
                "runs, " + BY_HAND.format(path=exc.path)}
    url = started_here(exc.pid)
    if url is not None:
        return {**found, "running": healthy(url), "url": url,
                "note": f"it notes pid {exc.pid}, the Prefect server started here at {url}"}
    if alive(exc.pid) or alive(exc.pid, group=True):
        return {**found, "running": None, "by_hand": f"it names pid {exc.pid}, which (or whose "
                f"process group) runs but is not shown to be a Prefect server started from "
                f"{get_settings().home}; " + BY_HAND.format(path=exc.path)}
    return {**found, "running": False,
            "note": f"the server it noted (pid {exc.pid}) no longer runs"}


def start(port: int = DEFAULT_PORT, timeout: float = START_TIMEOUT_S) -> dict:
    """Start the server (or find the one already running) and wait until it answers."""
    try:
        state = read_state()
    except DamagedState as exc:
        raise ServerError(f"{exc}: run `posecoach server stop` first, it stops the server "
                          "the file notes or says how") from None
    if state is not None and alive(state.pid) and healthy(state.url):
        return {**status(), "already_running": True}
    url = f"http://{HOST}:{port}"
    if healthy(url):
        raise ServerError(f"something else already answers at {url}: stop it, or start on "
                          "another port (--port)")
    log = log_path("prefect-server")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_API_HOST": HOST, "PREFECT_SERVER_API_PORT": str(port)}
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            _command(port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
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
    try:
        state = read_state()
    except DamagedState as exc:
        return _stop_damaged(exc)
    if state is None:
        return {"stopped": False, "reason": "no server was started (posecoach server start)"}
    if alive(state.pid) and _another_process(state.pid):
        state_file().unlink(missing_ok=True)
        return {"stopped": False, "pid": state.pid, "url": state.url, "reason": (
            f"pid {state.pid}, noted in {state_file()}, now runs another program, not the "
            "Prefect server started here (that one is gone): nothing stopped, the file removed")}
    if alive(state.pid):
        _stop_process(state.pid)
    state_file().unlink(missing_ok=True)
    return {"stopped": True, "pid": state.pid, "url": state.url}


def _another_process(pid: int) -> bool:
    """Whether /proc shows that `pid` is not the server `start` started here (a number reused
    after that server ended, or a reboot); False where /proc cannot tell."""
    return Path("/proc/self").is_dir() and started_here(pid) is None


def _stop_damaged(exc: DamagedState) -> dict:
    """Stop the server a damaged state file notes when the process shows it is the one `start`
    started here, and remove the file; ServerError, saying how to stop it, when that cannot be
    told."""
    found = _damaged(exc)
    if "by_hand" in found:
        raise ServerError(f"{exc}: {found['by_hand']}")
    if "url" in found:
        _stop_process(exc.pid)
    exc.path.unlink(missing_ok=True)
    return {**found, "running": False, "stopped": "url" in found,
            "note": f"{found['note']}; {'stopped it, ' if 'url' in found else ''}removed the file"}


def use_running_server() -> str | None:
    """Point PREFECT_API_URL at the server `start` left running, unless it is set already or
    none answers; returns the URL used."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    try:
        state = read_state()
    except DamagedState as exc:
        logging.getLogger(__name__).warning("%s: this command starts its own Prefect API; "
                                            "`posecoach server status` says more", exc)
        return None
    if state is None or not alive(state.pid) or not healthy(state.url, timeout=2.0):
        return None
    os.environ["PREFECT_API_URL"] = state.api_url
    return state.api_url

