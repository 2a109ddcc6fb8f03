#!/usr/bin/env bash
# The integration tests alone (CI's second job): they start PostgreSQL (as the postgres user
# when run as root; `postgresql` comes from scripts/setup.sh), an MLflow server and a Prefect
# server on free localhost ports, serve and run the deployments, and stop everything again.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -m integration "$@"
