"""The deployments' default schedule (`posecoach serve`, flows/serve.py), apart from Prefect so
that the command line's options show it without importing Prefect."""

from __future__ import annotations

DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
