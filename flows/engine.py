"""Prefect's engine settings for the flows a verb runs (`flow_engine`, entered by
flows.output.work around every verb's work)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def flow_engine() -> Iterator[None]:
    """Prefect's engine settings for the flows a verb runs. On the ephemeral API (no
    PREFECT_API_URL) flow runs send no heartbeats: the API ends with the command, so nothing is
    left to watch them, and the engine waits for its heartbeat thread, which looks for the stop
    once a second, at the end of every run. With a server the heartbeats stay, so that it can
    mark a run whose process died as crashed."""
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
