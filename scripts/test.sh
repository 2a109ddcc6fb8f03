#!/usr/bin/env bash
# Runs the lint and the test suite in the project's .venv (made by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
