"""The integration tests' servers (servers.py), started once per test session: PostgreSQL, an
MLflow server (basic auth) and a Prefect server (API auth string) on it. The clients of this
process find the credentials in the environment, as posecoach's processes do when deployed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import Server, credentials, mlflow_server, postgres, postgres_bin, prefect_server

from model.settings import environment


@dataclass
class Servers:
    mlflow: Server
    prefect: Server
    auth: dict[str, str]
    folder: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a posecoach process using these servers."""
        return {**os.environ, **self.auth, "MLFLOW_TRACKING_URI": self.mlflow.url,
                "PREFECT_API_URL": self.prefect.url, **extra}


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs `postgresql`)")
    folder = tmp_path_factory.mktemp("servers")
    auth = credentials()
    with postgres(bin_dir, ("mlflow", "mlflow_auth", "prefect")) as pg, \
            mlflow_server(pg, folder, auth).serving() as mlflow, \
            prefect_server(pg, folder, auth).serving() as prefect, environment(auth):
        yield Servers(mlflow, prefect, auth, folder)
