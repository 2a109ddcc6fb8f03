#!/usr/bin/env bash
# Runs the lint and the test suite in the project's .venv (made by scripts/setup.sh): the fast
# suite first, then the integration tests (real PostgreSQL, MLflow and Prefect servers; CI runs
# them as their own job with scripts/integration.sh). Extra arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
run() { .venv/bin/python -m pytest "$@" || [ $? -eq 5 ]; }  # 5: nothing selected
run -m "not integration" "$@"
run -m integration "$@"
