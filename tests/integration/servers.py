"""Real servers on localhost for the integration tests: PostgreSQL (a fresh cluster in a temporary
folder, run as the postgres user when the tests run as root), an MLflow tracking server and a
Prefect server backed by it. Each is a process group of its own, stopped by its id."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 240.0) -> None:
    """Wait until `url` answers 200, or fail with the tail of the server's log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"nothing answered at {url} in {seconds:.0f} s: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, seconds: float = 60.0) -> None:
    """Stop a process started with start_new_session=True, and its children, by its group id."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def tool(name: str) -> str:
    """A console script of this virtualenv (mlflow, prefect, posecoach)."""
    return str(Path(sys.executable).with_name(name))


@contextmanager
def postgres(bin_dir: Path) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free port with the databases `mlflow` and `prefect`;
    yields the server address `user@127.0.0.1:port`."""
    as_root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="posecoach-pg-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port, user = folder / "data", free_port(), "posecoach"

    def pg(*argv: str) -> None:
        subprocess.run([*run_as, *argv], check=True, capture_output=True, cwd=folder)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8")
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
           "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
        try:
            for name in ("mlflow", "prefect"):
                pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user,
                   name)
            yield f"{user}@127.0.0.1:{port}"
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def mlflow_server(pg: str, folder: Path) -> Iterator[str]:
    """`mlflow server` with its runs and registry in PostgreSQL; yields its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = folder / "mlflow.log"
    proc = spawn([tool("mlflow"), "server",
                  "--backend-store-uri", f"postgresql+psycopg2://{pg}/mlflow",
                  "--artifacts-destination", str(folder / "mlartifacts"), "--host", "127.0.0.1",
                  "--port", str(port), "--workers", "1"], log, env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", proc, log)
        yield url
    finally:
        stop(proc)


@contextmanager
def prefect_server(pg: str, folder: Path) -> Iterator[str]:
    """`prefect server start` with its database in PostgreSQL; yields its API URL."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect-server"),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = folder / "prefect.log"
    proc = spawn([tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                  str(port)], log, env)
    try:
        api = f"http://127.0.0.1:{port}/api"
        wait_for(f"{api}/health", proc, log)
        yield api
    finally:
        stop(proc)
