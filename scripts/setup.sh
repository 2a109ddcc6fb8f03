#!/usr/bin/env bash
# Sets up .venv on a fresh machine: torch pinned first (CPU build on disk), then the project.
# Idempotent: a stamp keyed on pyproject.toml and this script skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System packages the tests use (headless Chromium renders the HTML reports; PostgreSQL backs the
# MLflow and Prefect servers of the integration tests), installed once.
apt_packages=(chromium postgresql)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
elif [ ${#missing[@]} -gt 0 ]; then
  echo "setup: missing system packages (${missing[*]}); install them as root" >&2
fi

stamp_key=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f .venv/.setup-stamp ] && [ "$(cat .venv/.setup-stamp)" = "$stamp_key" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[dev,bench]"
echo "$stamp_key" > .venv/.setup-stamp
