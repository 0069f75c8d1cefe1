#!/usr/bin/env bash
# The main job: install, bring up the spec's lab (2 host/DPU pairs x 16 links, OVN data
# plane) on the embedded netns engine, put a pod on each host, and verify it all against
# the kernel, pod traffic included. Extra arguments go to `up` (e.g. --name, --pairs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
dpulab=.venv/bin/dpulab
name=dpu
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --name|-n) name="${args[i+1]}" ;;
    --name=*) name="${args[i]#--name=}" ;;
  esac
done
$dpulab up "$@"
if $dpulab status --name "$name" --json | grep -q '"dataplane": "ovn"'; then
  for host in $($dpulab status --name "$name" --json | .venv/bin/python -c \
      'import json,sys; print(" ".join(n["node"] for n in json.load(sys.stdin)["nodes"] if n["role"] == "host"))'); do
    $dpulab pod list --name "$name" --json | grep -q "\"host\": \"$host\"" || $dpulab pod add "$host" "pod-$host" --name "$name"
  done
  $dpulab verify --name "$name" --traffic
else
  $dpulab verify --name "$name"
fi
echo "lab $name is up: 'dpulab status --name $name', 'dpulab down --name $name' (dpulab is .venv/bin/dpulab)"
