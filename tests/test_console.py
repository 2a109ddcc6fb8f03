"""The command line's house-keeping: the libraries' output in a log file (the last 50 kept),
posecoach's own lines on the terminal; what a command starts dies with it even under SIGKILL; a
local Prefect server started once, found by later commands, stopped; `posecoach --help` without
the heavy libraries imported."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).parent.parent
HEAVY = ("prefect", "ray", "mlflow", "torch", "deltalake", "matplotlib")


def python(code: str, home: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSECOACH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


QUIET = """
import logging, os, sys, warnings
from flows.console import quiet, restore
from flows.output import console
shutdown = logging.getLogger("prefect")
shutdown.setLevel(logging.INFO)
shutdown.addHandler(logging.StreamHandler(sys.stderr))
log = quiet("unit")
print("library noise", file=sys.stderr)
os.write(2, b"raw noise from a child process\\n")
logging.getLogger("prefect.flow_runs").warning("a prefect warning")
logging.getLogger("flows.serve").error("no server answers, says posecoach")
warnings.warn("a deprecation of the library's")
console.print("the summary")
restore()
print("after restore", file=sys.stderr)
shutdown.info("stopping the temporary server, at exit")
print(log)
"""


def test_library_output_goes_to_the_log_and_the_summary_to_the_terminal(tmp_path):
    done = python(QUIET, tmp_path)
    assert done.returncode == 0, done.stderr
    log = Path(done.stdout.strip())
    assert log.parent == tmp_path / "logs" and log.name.startswith("unit-")
    assert "the summary" in done.stderr and "after restore" in done.stderr
    assert "no server answers, says posecoach" in done.stderr
    assert "no server answers, says posecoach" in log.read_text()
    assert "stopping the temporary server" not in done.stderr
    for noise in ("library noise", "raw noise", "a prefect warning", "a deprecation"):
        assert noise not in done.stderr
        assert noise in log.read_text()


def test_only_the_last_50_logs_are_kept(tmp_path, monkeypatch):
    from flows.console import KEEP_LOGS, log_path

    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    logs = tmp_path / "logs"
    logs.mkdir()
    for k in range(60):
        old = logs / f"old-{k:02d}.log"
        old.touch()
        os.utime(old, (1_000_000 + k, 1_000_000 + k))
    new = log_path("score")
    kept = sorted(p.name for p in logs.glob("*.log"))
    assert len(kept) == KEEP_LOGS and new.name in kept
    assert "old-59.log" in kept and "old-10.log" not in kept


KILLED = """
import subprocess, sys, time
from flows.lifetime import tie_descendants
assert tie_descendants()
sleeper = subprocess.Popen(["sleep", "300"])
nested = subprocess.Popen([sys.executable, "-c",
                           "import subprocess; subprocess.Popen(['sleep', '301']).wait()"])
print(sleeper.pid, nested.pid, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_what_a_command_starts_dies_with_it_even_under_sigkill(tmp_path):
    env = {**os.environ, "POSECOACH_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", KILLED], env=env, stdout=subprocess.PIPE,
                             text=True)
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
        deadline = time.monotonic() + 60
        while not [p for p in _all_pids() if _ppid(p) == pids[1]]:
            assert time.monotonic() < deadline, "the nested sleep did not start"
            time.sleep(0.1)
        pids += [p for p in _all_pids() if _ppid(p) == pids[1]]
        time.sleep(2.0)  # the watcher notes descendants every half second
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(running(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if running(p)]
        time.sleep(0.2)


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_help_imports_none_of_the_heavy_libraries(tmp_path):
    done = python("import sys\nfrom typer.testing import CliRunner\nfrom flows.cli import app\n"
                  "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0, r.output\n"
                  f"print([m for m in {HEAVY!r} if m in sys.modules])", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = """
import json, os
from flows import server
started = server.start(port={port})
again = server.start(port={port})
os.environ.pop("PREFECT_API_URL", None)
used = server.use_running_server()
status = server.status()
stopped = server.stop()
print(json.dumps({{"started": started, "again": again, "used": used, "status": status,
                  "stopped": stopped, "after": server.status()}}))
"""


def test_a_started_server_is_found_by_later_commands_until_stopped(tmp_path):
    done = python(SERVER.format(port=_free_port()), tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["started"]["running"] and not doc["started"]["already_running"]
    assert doc["again"]["already_running"] and doc["again"]["pid"] == doc["started"]["pid"]
    assert doc["used"] == doc["started"]["api_url"] == doc["status"]["api_url"]
    assert doc["stopped"]["stopped"] and not doc["after"]["running"]
    assert not running(doc["started"]["pid"])


def server_cli(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "POSECOACH_HOME": str(home), "PYTHONPATH": str(ROOT), "COLUMNS": "500"}
    return subprocess.run([sys.executable, "-c", "from flows.cli import app; app()", "server",
                           *argv], env=env, capture_output=True, text=True, timeout=300)


def test_a_damaged_state_file_is_reported_and_stop_still_stops_its_server(tmp_path):
    started = server_cli(tmp_path, "start", "--port", str(_free_port()), "--json")
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    path = tmp_path / "prefect-server.json"
    path.write_text(path.read_text()[:30])  # cut off after the pid, as a full disk leaves it
    try:
        status = server_cli(tmp_path, "status")
        again = server_cli(tmp_path, "start")
        stop = server_cli(tmp_path, "stop")
    finally:
        if running(pid):
            os.killpg(pid, signal.SIGKILL)
    assert status.returncode == 1 and f"{path} is damaged" in status.stderr
    assert f"pid {pid}, the Prefect server started here" in status.stderr
    assert again.returncode == 1 and "`posecoach server stop` first" in again.stderr
    assert stop.returncode == 0 and "stopped it, removed the file" in stop.stderr, stop.stderr
    assert not running(pid) and not path.exists()


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


@pytest.mark.parametrize(("text", "found"), [
    ('{"pid": {pid}, "url": ', "runs but is not shown to be a Prefect server started from"),
    ('{"pi', "no pid can be read from it"),
])
def test_stop_leaves_a_damaged_state_file_it_cannot_vouch_for_and_says_how(
        tmp_path, monkeypatch, text, found):
    from flows import server

    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    path = tmp_path / server.STATE_FILE
    path.write_text(text.replace("{pid}", str(os.getpid())))  # this test's own process
    assert server.status()["running"] is None
    with pytest.raises(server.ServerError, match=found) as refused:
        server.stop()
    assert f"{path} is damaged" in str(refused.value) and f"remove {path}" in str(refused.value)
    assert running(os.getpid()) and path.exists()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert server.use_running_server() is None


def test_stop_removes_a_damaged_state_file_whose_server_is_gone(tmp_path, monkeypatch):
    from flows import server

    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    path = tmp_path / server.STATE_FILE
    gone = _dead_pid()
    path.write_text(f'{{"pid": {gone}, "url": "http://127.0.0.1:9", "lo')
    assert server.status()["running"] is False
    stopped = server.stop()
    assert not stopped["stopped"] and f"pid {gone}) no longer runs" in stopped["note"]
    assert not path.exists()


def test_stop_does_not_signal_a_pid_that_now_runs_another_program(tmp_path, monkeypatch):
    from flows import server

    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)  # leads its own group
    try:
        server.state_file().write_text(json.dumps(
            {"pid": other.pid, "url": "http://127.0.0.1:9", "log": "x", "started": "then"}))
        stopped = server.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
    assert not stopped["stopped"] and "now runs another program" in stopped["reason"]
    assert not server.state_file().exists()


HOSTILE = "evil\x1b]0;owned\x07\x1b[2J[bold red]name[/bold red].json"


def _printed(show, result: dict) -> str:
    from flows.output import console

    with console.capture() as captured:
        show(result)
    return captured.get()


def _plain(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text
    assert "[bold red]name[/bold red]" in text  # markup shown, not obeyed


def test_an_error_naming_a_hostile_file_is_printed_as_plain_text():
    from flows.output import console, fail

    with console.capture() as captured, pytest.raises(typer.Exit):
        fail(f"{HOSTILE}: not valid JSON")
    _plain(captured.get())


def test_ingest_and_review_summaries_print_upload_names_as_plain_text():
    from flows.cmd_ingest import show_report
    from flows.cmd_review import show_review

    report = {"dataset": "d", "version": 2, "files": 1, "inputs": 1, "accepted": 0,
              "inserted": 0, "duplicates": 0, "updated": 0, "rejected": 1,
              "rejected_by_kind": {"bad_json": 1},
              "rejections": [{"kind": "bad_json", "file": HOSTILE, "reason": "not JSON"}],
              "conventions": {}, "released": [], "warnings": [], "seconds": 0.1,
              "per_second": 10, "accounted": True,
              "ignored_columns": {HOSTILE: ["nose_visibility", "neck_visibility"]}}
    printed = _printed(show_report, report)
    _plain(printed)
    assert "read past per-joint confidence columns (*_visibility) in 1 file" in printed
    review = {"file": HOSTILE, "version": 3, "dataset": "d", "labelled": 1, "unlabelled": 0,
              "inserted": 0, "duplicates": 0, "updated": 0,
              "errors": [{"line": 2, "reason": HOSTILE}]}
    _plain(_printed(show_review, review))


def test_flows_on_the_ephemeral_api_send_no_heartbeats_and_with_a_server_they_do(monkeypatch):
    from prefect.settings import get_current_settings

    from flows.engine import flow_engine
    from flows.output import work

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    before = get_current_settings().flows.heartbeat_frequency
    with flow_engine():
        assert get_current_settings().flows.heartbeat_frequency is None
    with work(as_json=True):  # every verb runs its flows inside work()
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == before
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with flow_engine():
        assert get_current_settings().flows.heartbeat_frequency == before is not None
