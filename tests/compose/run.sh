#!/usr/bin/env bash
# make compose-test: the Docker Compose stack built and run as users run it.
#   1. setup-host.sh: docker.io, Compose v2, mmdebstrap; dockerd started if none answers;
#   2. stand-ins/build.sh: the base images the files name (real ones when pullable);
#   3. pytest tests/compose: up --build --wait, round trip, restart, hot reload, bad config.
# Cleans up its containers, networks and volumes (and stops a dockerd it started); the
# images and build cache stay, so the next run is fast.
set -euo pipefail
cd "$(dirname "$0")/../.."

export BROKER_COMPOSE_TEST=1
PROJECT=broker-compose-test  # tests/compose/stack.py
pidfile=$(mktemp)

cleanup() {
    docker compose --project-name "$PROJECT" down --volumes --remove-orphans --timeout 10 \
        >/dev/null 2>&1 || true
    local pid; pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ]; then
        echo "stopping the dockerd this run started (pid $pid)"
        kill "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$pidfile"
}
trap cleanup EXIT

start=$SECONDS
BROKER_DOCKERD_PIDFILE=$pidfile tests/compose/setup-host.sh
# Leftovers of an interrupted run would hold the ports.
docker compose --project-name "$PROJECT" down --volumes --remove-orphans >/dev/null 2>&1 || true
tests/compose/stand-ins/build.sh
echo "compose-test: host and base images ready after $((SECONDS - start)) s"
# The first build compiles MinIO (several minutes): a longer timeout than the suite's.
.venv/bin/python -m pytest tests/compose -p no:cacheprovider --timeout=3600 -v -rA $*
echo "compose-test: done in $((SECONDS - start)) s"
