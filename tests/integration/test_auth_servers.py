"""Who may do what on the servers (tests/integration/conftest.py: MLflow's basic-auth app, and
Prefect's API auth string, credentials in the environment as deployed): `posecoach models
promote` without credentials, and a promote by a user who may only read, are refused and move
nothing; the service user's promotes (the CLI's and the registry's) and rollback go through and
are tagged with who made them."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess

import httpx
import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.server.auth.client import AuthServiceClient
from servers import PERMISSIVE_GATE, tool

from registry.access import RegistryRefused
from registry.gate import promote, rollback
from registry.versions import CHAMPION, model_name, register_candidate

pytestmark = pytest.mark.integration

DATASET = "authz"
NAME = model_name(DATASET)
FIGURES = {"macro": 0.9, "correction": {"independent": {"all": 0.8}}, "per_class": []}


def register(servers) -> str:
    """A version with gate figures (its artifact a bare MLmodel: the gate loads no model)."""
    mlflow.set_tracking_uri(servers.mlflow.url)
    mlflow.set_registry_uri(servers.mlflow.url)
    with mlflow.start_run() as run:
        mlflow.log_text("flavors: {}\n", "model/MLmodel")
    return register_candidate(f"runs:/{run.info.run_id}/model", DATASET, dataset_version=1,
                              code_version="test", skeleton="ec3d19", classes=["squat/correct"],
                              gate=FIGURES)


def models(servers, *argv: str, **env: str | None) -> subprocess.CompletedProcess:
    """`posecoach models ... --dataset authz --json` with `env` over the servers' environment
    (None: the variable unset)."""
    full = servers.env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **PERMISSIVE_GATE)
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([tool("posecoach"), "models", *argv, "--dataset", DATASET, "--json"],
                          env=full, capture_output=True, text=True, timeout=300)


def said(done: subprocess.CompletedProcess) -> str:
    """The command's stderr with its line wrapping undone."""
    return " ".join(done.stderr.split())


def test_promote_needs_an_account_allowed_to_and_records_who(servers, monkeypatch) -> None:
    for key, value in {"MLFLOW_TRACKING_URI": servers.mlflow.url, **PERMISSIVE_GATE}.items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=servers.mlflow.url, registry_uri=servers.mlflow.url)
    first, second = register(servers), register(servers)
    reader, password = "reader", secrets.token_urlsafe(18)
    AuthServiceClient(servers.mlflow.url).create_user(reader, password)

    anonymous = models(servers, "promote", first, MLFLOW_TRACKING_USERNAME=None,
                       MLFLOW_TRACKING_PASSWORD=None)
    assert anonymous.returncode == 1, anonymous.stderr
    assert f"MLflow server at {servers.mlflow.url} refused" in said(anonymous)
    assert "without credentials" in said(anonymous)
    with monkeypatch.context() as as_reader:
        as_reader.setenv("MLFLOW_TRACKING_USERNAME", reader)
        as_reader.setenv("MLFLOW_TRACKING_PASSWORD", password)
        with pytest.raises(RegistryRefused, match="as user 'reader'"):
            promote(NAME, first)
    assert CHAMPION not in client.get_registered_model(NAME).aliases

    service = servers.auth["MLFLOW_TRACKING_USERNAME"]
    done = models(servers, "promote", first)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["actor"] == service
    assert promote(NAME, second).actor == service
    assert rollback(NAME, reason="checking who").actor == service
    assert client.get_model_version_by_alias(NAME, CHAMPION).version == first
    for version in (first, second):
        assert client.get_model_version(NAME, version).tags["gate.actor"] == service
    assert client.get_model_version(NAME, second).tags["gate.decision"] == "rolled_back"


def test_prefect_answers_only_with_the_auth_string(servers) -> None:
    url = f"{servers.prefect.url}/flows/filter"
    assert httpx.post(url, json={}).status_code == 401
    wrong = base64.b64encode(b"posecoach:wrong").decode()
    assert httpx.post(url, json={}, headers={"Authorization": f"Basic {wrong}"}
                      ).status_code == 401
    right = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
    assert httpx.post(url, json={}, headers={"Authorization": f"Basic {right}"}
                      ).status_code == 200
    assert httpx.get(f"{servers.prefect.url}/health").status_code == 200
