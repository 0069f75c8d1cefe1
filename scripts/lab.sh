#!/usr/bin/env bash
# The main job: install, bring up the spec's lab (2 host/DPU pairs x 16 links) on the
# embedded netns engine, and verify it against the kernel. Extra arguments go to `up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/dpulab up "$@"
.venv/bin/dpulab verify
