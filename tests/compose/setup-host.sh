#!/usr/bin/env bash
# What `make compose-test` needs on the host, installed when missing (as root; otherwise it
# says what to install): a Docker engine (Debian's docker.io), Docker Compose v2 as a CLI
# plugin (built from source: Debian 12 does not package it), and mmdebstrap for the
# stand-in base images. Starts dockerd (niced, logging to $BROKER_DOCKERD_LOG) when no
# engine answers, and writes its pid to $BROKER_DOCKERD_PIDFILE so run.sh stops it after.
set -euo pipefail

COMPOSE_VERSION=v2.40.3
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
DOCKERD_LOG=${BROKER_DOCKERD_LOG:-/var/tmp/broker-compose-test-dockerd.log}
DOCKERD_PIDFILE=${BROKER_DOCKERD_PIDFILE:-/dev/null}

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # /docs rendered from the image
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "make compose-test needs: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "installing Debian packages for make compose-test: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt=(apt-get -o DPkg::Lock::Timeout=600 -qq)
    "${apt[@]}" update
    "${apt[@]}" install -y "${missing[@]}" </dev/null >/dev/null
fi

if ! docker compose version 2>/dev/null | grep -q "$COMPOSE_VERSION"; then
    command -v go >/dev/null || { echo "make compose-test: Go is needed to build Docker Compose $COMPOSE_VERSION" >&2; exit 1; }
    echo "building Docker Compose $COMPOSE_VERSION (once) into $PLUGIN_DIR"
    # Not `go install ...@version`: compose's go.mod has exclude directives, which go install
    # refuses; building inside the downloaded module honours them.
    module=$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    work=$(mktemp -d)
    cp -r "$module/." "$work" && chmod -R u+w "$work"
    mkdir -p "$PLUGIN_DIR"
    (cd "$work" && nice -n 19 go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
        -o "$PLUGIN_DIR/docker-compose" ./cmd)
    rm -rf "$work"
    docker compose version
fi

if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] || { echo "make compose-test: no Docker engine answers (start dockerd)" >&2; exit 1; }
    echo "starting dockerd (niced; log: $DOCKERD_LOG)"
    # Images and the build cache stay on disk (/var/lib/docker) for the next run.
    nice -n 19 dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PIDFILE"
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if [ $SECONDS -gt $deadline ]; then
            echo "make compose-test: dockerd did not answer within 60 s; see $DOCKERD_LOG" >&2
            tail -20 "$DOCKERD_LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
fi
