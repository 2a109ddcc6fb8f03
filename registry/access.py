"""Reaching the MLflow server: who asks, and errors that are the server's told apart from answers.

A deployed MLflow server runs its basic-auth app: clients send MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD from their environment (MLflow reads them on every request). A request
the server refuses (not authenticated, no permission) is a `RegistryRefused`; one no server
answered (connection refused, timeout, a proxy's 502-504) after MLflow's own retries
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, with backoff) is a `RegistryUnavailable`. Both name the server,
and neither is ever read as "no such model, version or alias".
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import requests
from mlflow.exceptions import MlflowException

from model.data.names import safe_name, slug

REFUSED_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST"})
GATEWAY_STATUS = frozenset({502, 503, 504})
USER_VARIABLE = "MLFLOW_TRACKING_USERNAME"


class RegistryError(RuntimeError):
    """A registry request that cannot be done (unknown model or version, no champion, ...)."""


class RegistryUnavailable(RegistryError):
    """No MLflow server answered."""


class RegistryRefused(RegistryError):
    """The MLflow server refused the request: no or wrong credentials, or no permission."""


def server() -> str:
    return mlflow.get_tracking_uri()


def unreachable(exc: BaseException) -> bool:
    """Whether an MLflow error says that no server answered (rather than what it answered)."""
    if not isinstance(exc, MlflowException):
        return False
    if isinstance(exc.__context__, requests.exceptions.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc.__cause__, requests.Timeout):
        return True
    return exc.get_http_status_code() in GATEWAY_STATUS


def refused(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code in REFUSED_CODES


def not_found(exc: MlflowException, *codes: str) -> bool:
    """A plain 'there is none' answer (RESOURCE_DOES_NOT_EXIST, or one of `codes`)."""
    return exc.error_code in NOT_FOUND_CODES or exc.error_code in codes


def server_error(exc: BaseException) -> RegistryError | None:
    """The RegistryUnavailable / RegistryRefused an MLflow error stands for, else None."""
    if unreachable(exc):
        return RegistryUnavailable(
            f"the MLflow server at {server()} did not answer ({exc}); check that it runs and "
            "that MLFLOW_TRACKING_URI points at it, then run again")
    if refused(exc):
        who = os.environ.get(USER_VARIABLE)
        asked = f"as user {who!r}" if who else f"without credentials ({USER_VARIABLE} unset)"
        return RegistryRefused(
            f"the MLflow server at {server()} refused the request {asked}: {exc}; set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account allowed to do it")
    return None


def registry_error(exc: MlflowException, message: str) -> RegistryError:
    """The server's own error when it is one, else RegistryError(message)."""
    return server_error(exc) or RegistryError(message)


@contextmanager
def server_errors() -> Iterator[None]:
    """Around work on the MLflow server: its unreachable / refused errors become
    RegistryUnavailable / RegistryRefused naming the server; other errors pass unchanged."""
    try:
        yield
    except MlflowException as exc:
        found = server_error(exc)
        if found is None:
            raise
        raise found from exc


def actor() -> str:
    """Who asks: the user the MLflow server authenticates (MLFLOW_TRACKING_USERNAME), else the
    person logged in; as a tag value, safe (a value with other characters than letters,
    digits, `.`, `_`, `-` becomes a slug with a hash of the original)."""
    who = os.environ.get(USER_VARIABLE, "").strip()
    if not who:
        try:
            who = getpass.getuser()
        except (OSError, KeyError):
            who = "unknown"
    return who if slug(who) == who else safe_name(who)
