#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it: lint, format, types, tests.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Prometheus 2.42 is the real remote-write sender and remote-read client of the e2e tests.
if ! command -v prometheus >/dev/null 2>&1; then
  echo "== installing prometheus (Debian package)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

# kubectl renders deploy/'s kustomizations in tests/deploy (`kubectl kustomize`). The
# machines this runs on come with it (the Kubernetes apt repository's package); Debian's own
# archive has none, so where it is missing this install fails, and with it the run.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "== installing kubectl"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
  fi
fi
export PATH="$PWD/.venv/bin:$PATH"
echo "== installing strata and its test dependencies"
python -m pip install -q --disable-pip-version-check --upgrade pip
python -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff check";         ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy --strict";      mypy
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
