"""registry.access without a server: an MLflow URI where nothing listens is an error naming it in
every lookup (never "no such model, version or alias"), and who asks comes from the MLflow user
or the login, made safe as a tag value."""

from __future__ import annotations

import getpass
import socket

import pytest

from model.data.names import slug
from registry.access import RegistryUnavailable, actor
from registry.gate import default_actor
from registry.lookup import find_versions
from registry.versions import alias_version, get_version


@pytest.fixture
def nobody_listens(monkeypatch) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return uri


@pytest.mark.parametrize("lookup", [
    lambda: find_versions("posecoach-ec3d", dataset_version="1"),
    lambda: alias_version("posecoach-ec3d", "champion"),
    lambda: get_version("posecoach-ec3d", 1),
], ids=["find_versions", "alias_version", "get_version"])
def test_an_unreachable_server_is_an_error_naming_it(nobody_listens, lookup) -> None:
    with pytest.raises(RegistryUnavailable, match=f"MLflow server at {nobody_listens} did not"):
        lookup()


def test_a_missing_alias_on_a_working_store_is_none(mlflow_uri, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    assert alias_version("posecoach-nothing-here", "champion") is None
    assert find_versions("posecoach-nothing-here") == []


def test_who_asks_is_the_mlflow_user_else_the_login(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert actor() == default_actor() == "alice"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "<b>eve</b>\n")
    hostile = actor()
    assert hostile.startswith("b_eve_b-") and slug(hostile) == hostile
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert actor() == getpass.getuser()
