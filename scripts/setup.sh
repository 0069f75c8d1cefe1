#!/usr/bin/env bash
# Installs what dpulab needs on a fresh Debian/Ubuntu machine (as root): system packages
# and the project's virtualenv in .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  python3 python3-venv python3-pip      # the tool
  iproute2 ethtool iputils-ping util-linux procps   # netns, offloads, probes, nsenter
  openvswitch-switch openvswitch-common ovn-central ovn-host   # the DPU data plane
  docker.io busybox-static              # the docker engine tests (a local busybox image)
  podman runc netavark                  # the podman engine tests (runc: podman's fallback runtime here)
  graphviz                              # dpulab graph --format svg
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/dpulab ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,ovnk]'
  touch .venv/.installed
fi
