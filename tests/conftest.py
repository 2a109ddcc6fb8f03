"""Session fixtures: one isolated POSECOACH_HOME, PREFECT_HOME and MLflow store per test run;
Ray and Prefect's test harness are started once, on first use, and shared by every test."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="posecoach-tests-"))
os.environ["POSECOACH_HOME"] = str(_SESSION_DIR / "home")
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'home' / 'mlflow.db'}"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("PREFECT_API_URL", None)
(_SESSION_DIR / "home").mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """The run's scratch folder (POSECOACH_HOME is its home/)."""
    return _SESSION_DIR


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the whole run (2 CPUs)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """Prefect's test harness, started once; yields its API URL for child processes."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def mlflow_uri() -> str:
    """The run's sqlite tracking URI."""
    return os.environ["MLFLOW_TRACKING_URI"]
