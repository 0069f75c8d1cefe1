#!/usr/bin/env bash
# A private dockerd for dpulab's tests and CI, isolated from any other docker on the machine:
# its own socket, data and exec roots, no default bridge and no iptables rules (containers
# on one user-defined network talk over the bridge; nothing is shared with, or left in,
# the machine's firewall). Then a tiny local node image: no registry is needed.
#
#   scripts/docker-engine.sh start [NAME]   # prints `export DOCKER_HOST=...`
#   scripts/docker-engine.sh image [NAME] [TAG]   # OCI_BIN=podman: into podman instead
#   scripts/docker-engine.sh stop  [NAME]
set -euo pipefail

cmd=${1:?usage: $0 start|image|stop [NAME] [TAG]}
name=${2:-dpulab-docker}
sock=/run/$name.sock
pidfile=/run/$name.pid
export DOCKER_HOST=unix://$sock

running() { [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case $cmd in
start)
    if ! running; then
        dockerd -H "$DOCKER_HOST" --data-root "/var/lib/$name" --exec-root "/run/$name" \
            --pidfile "$pidfile" --bridge none --iptables=false --ip-masq=false \
            >"/run/$name.log" 2>&1 &
        for _ in $(seq 150); do
            docker version >/dev/null 2>&1 && break
            sleep 0.2
        done
        docker version >/dev/null 2>&1 || { tail -5 "/run/$name.log" >&2; exit 1; }
    fi
    echo "export DOCKER_HOST=$DOCKER_HOST"
    ;;
image)
    # A static busybox is all a node needs: dpulab wires namespaces by fd, needing no tools inside.
    tag=${3:-dpulab-node:test}
    busybox=$(command -v busybox)
    ! ldd "$busybox" >/dev/null 2>&1 || { echo "busybox is not static: apt-get install busybox-static" >&2; exit 1; }
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root/bin" "$root/proc" "$root/sys" "$root/dev" "$root/etc" "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for tool in $("$busybox" --list); do
        [[ $tool == busybox ]] || ln -sf busybox "$root/bin/$tool"
    done
    tar -C "$root" -c . | "${OCI_BIN:-docker}" import -c 'ENV PATH=/bin' - "$tag" >/dev/null
    echo "$tag"
    ;;
stop)
    if running; then
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$sock" "$pidfile"
    ;;
*)
    echo "usage: $0 start|image|stop [NAME] [TAG]" >&2
    exit 2
    ;;
esac
