"""Real servers on localhost for the integration tests: PostgreSQL (a fresh cluster in a temporary
folder, run as the postgres user when the tests run as root), an MLflow tracking server behind
its basic-auth app and a Prefect server with an API auth string, both on it, and moto's S3
server. Each is a process group of its own, stopped by its id; MLflow and Prefect can be stopped
and started again on the same port and stores (the servers-down tests)."""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings


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
        time.sleep(0.5)
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
    with log.open("a") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def tool(name: str) -> str:
    """A console script of this virtualenv (mlflow, prefect, posecoach)."""
    return str(Path(sys.executable).with_name(name))


class Server:
    """One server process on a fixed port: `start()` waits for its health URL, `stop()` ends
    it; started again it finds the same stores (PostgreSQL, the artifact folder)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, url: str,
                 health: str):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.url, self.health = url, health
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = spawn(self.argv, self.log, self.env)
        wait_for(self.health, self.proc, self.log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @contextmanager
    def serving(self) -> Iterator[Server]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


@contextmanager
def postgres(bin_dir: Path, databases: tuple[str, ...]) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free port holding `databases`; yields the server address
    `user@127.0.0.1:port`."""
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
            for name in databases:
                pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user,
                   name)
            yield f"{user}@127.0.0.1:{port}"
        finally:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def credentials() -> dict[str, str]:
    """Fresh credentials, as the clients read them from the environment (what the deployment's
    Secret posecoach-auth holds)."""
    return {"MLFLOW_TRACKING_USERNAME": "posecoach",
            "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(18),
            "PREFECT_API_AUTH_STRING": f"posecoach:{secrets.token_urlsafe(18)}"}


def mlflow_server(pg: str, folder: Path, auth: dict[str, str]) -> Server:
    """`mlflow server --app-name basic-auth`: runs, registry and users in PostgreSQL, artifacts
    proxied to a folder; the admin user is the clients' MLFLOW_TRACKING_USERNAME/PASSWORD."""
    port = free_port()
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = postgresql+psycopg2://{pg}/mlflow_auth\n"
                      "auth_cache_ttl_seconds = 60\n")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_AUTH_CONFIG_PATH": str(config),
           "MLFLOW_AUTH_ADMIN_USERNAME": auth["MLFLOW_TRACKING_USERNAME"],
           "MLFLOW_AUTH_ADMIN_PASSWORD": auth["MLFLOW_TRACKING_PASSWORD"],
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    url = f"http://127.0.0.1:{port}"
    argv = [tool("mlflow"), "server", "--app-name", "basic-auth",
            "--backend-store-uri", f"postgresql+psycopg2://{pg}/mlflow",
            "--artifacts-destination", str(folder / "mlartifacts"), "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]
    return Server("mlflow", argv, env, folder / "mlflow.log", url, f"{url}/health")


def prefect_server(pg: str, folder: Path, auth: dict[str, str]) -> Server:
    """`prefect server start` on PostgreSQL, refusing requests without the API auth string."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(folder / "prefect-server"),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect",
           "PREFECT_SERVER_API_AUTH_STRING": auth["PREFECT_API_AUTH_STRING"],
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{port}/api"
    argv = [tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    return Server("prefect", argv, env, folder / "prefect.log", api, f"{api}/health")


def s3_server(folder: Path) -> Server:
    """moto's S3 server (its data lives in memory: stopped, it forgets everything)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return Server("s3", argv, dict(os.environ), folder / "moto.log", url, f"{url}/moto-api/")


class Relay:
    """A TCP relay on a free localhost port to `target_port`, which can be cut (new connections
    refused, open ones dropped: the server is unreachable) and mended again; `cut_at` cuts it
    as the `nth` request matching a pattern comes through, before the server sees it."""

    def __init__(self, target_port: int):
        self.port, self.target = free_port(), target_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._trigger: tuple[re.Pattern[bytes], int] | None = None
        self.mend()

    def mend(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut_at(self, pattern: bytes, nth: int = 1) -> None:
        self._trigger = (re.compile(pattern), nth)

    def cut(self) -> None:
        self._trigger = None
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for conn in self._open:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outgoing: bool) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                if outgoing and self._trips(data):
                    self.cut()
                    return
                dst.sendall(data)
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _trips(self, data: bytes) -> bool:
        with self._lock:
            if self._trigger is None:
                return False
            pattern, left = self._trigger
            left -= len(pattern.findall(data))
            self._trigger = (pattern, left)
            return left <= 0


#: Gate settings that let any candidate through: the tests check the flow, not the model.
PERMISSIVE_GATE = {"POSECOACH_PROFILE": "test", "POSECOACH_GATE_FLOOR_MACRO": "0",
                   "POSECOACH_GATE_FLOOR_CORRECTION": "0", "POSECOACH_GATE_CLASS_FLOOR": "none",
                   "POSECOACH_GATE_MIN_CORRECTION_GAIN": "none"}


def prefect_settings(api: str) -> Any:
    """Prefect's client settings for the server at `api`, with the auth string of this
    process's environment (Prefect reads its environment once, at import)."""
    return temporary_settings({PREFECT_API_URL: api,
                               PREFECT_API_AUTH_STRING: os.environ.get("PREFECT_API_AUTH_STRING")})


RUN_TIMEOUT_S = 480


def read_deployment(api: str, name: str, proc, log: Path, seconds: float = 180.0):
    """The deployment once `posecoach serve` has registered it."""
    deadline = time.monotonic() + seconds
    with prefect_settings(api), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"posecoach serve exited: {log.read_text()[-3000:]}"
            try:
                return client.read_deployment_by_name(name)
            except Exception:  # noqa: BLE001 - not registered yet
                time.sleep(2)
    raise TimeoutError(f"{name} was not registered in {seconds:.0f} s: {log.read_text()[-3000:]}")


def run(api: str, name: str, **parameters: object):
    with prefect_settings(api):
        return run_deployment(name, parameters=parameters, timeout=RUN_TIMEOUT_S,
                              poll_interval=3, as_subflow=False)
