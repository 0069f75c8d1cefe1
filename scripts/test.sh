#!/usr/bin/env bash
# Install everything and run the test suite (as root: the tests use real namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pytest -q "$@"
