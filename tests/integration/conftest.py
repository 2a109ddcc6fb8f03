"""The integration tests' servers: PostgreSQL, MLflow and Prefect on localhost (servers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import mlflow_server, postgres, postgres_bin, prefect_server


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """PostgreSQL, an MLflow server and a Prefect server on it, for one test module."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs `postgresql`)")
    folder = tmp_path_factory.mktemp("servers")
    with postgres(bin_dir) as pg, mlflow_server(pg, folder) as mlflow_url, \
            prefect_server(pg, folder) as prefect_api:
        yield {"postgres": pg, "mlflow": mlflow_url, "prefect": prefect_api,
               "folder": str(folder)}
