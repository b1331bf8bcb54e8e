#!/usr/bin/env bash
# Makes every base image that compose.yaml, Dockerfile and Dockerfile.minio name available
# to the Docker engine, for `make compose-test`:
#
#   1. already present and real (not labelled org.broker.stand-in): used as is;
#   2. pullable from its registry: pulled, and used (a stand-in never hides a real image);
#   3. otherwise a local stand-in is built from Debian bookworm packages (mmdebstrap) and
#      tagged with the exact name the files use, labelled org.broker.stand-in.
#
# The stand-ins are for this test only: tests/services.py refuses them for testcontainers.
# What they cover and what only the real images prove: docs/testing.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
LABEL=org.broker.stand-in

# The names, read from the files themselves, so a version bump there is followed here.
from_images() { sed -n 's/^FROM \([^ ]*\).*/\1/p' "$@" | grep -v '^scratch$' | sort -u; }
PYTHON_IMAGE=$(from_images "$root/Dockerfile")
GO_IMAGE=$(from_images "$root/Dockerfile.minio" | grep '^golang:')
STATIC_IMAGE=$(from_images "$root/Dockerfile.minio" | grep -v '^golang:')
POSTGRES_IMAGE=$(sed -n 's/^ *image: \(postgres:.*\)$/\1/p' "$root/compose.yaml")
for name in PYTHON_IMAGE GO_IMAGE STATIC_IMAGE POSTGRES_IMAGE; do
    [ "$(wc -w <<<"${!name}")" = 1 ] || { echo "stand-ins: cannot tell $name from the files: '${!name}'" >&2; exit 1; }
done

is_stand_in() { docker image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null | grep -q .; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

# A Debian bookworm root filesystem with these packages, imported once as <tag>.
rootfs() {
    local tag=$1; shift
    present "$tag" && return
    echo "stand-ins: mmdebstrap bookworm for $tag ($*)"
    local tar; tar=$(mktemp --suffix=.tar)
    # The host's own CA certificates too: where egress TLS is intercepted (as on our CI
    # machines), pip and go inside the builds trust what the host trusts.
    mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "$*")" \
        --aptopt='APT::Install-Recommends "false"' \
        --customize-hook='if [ -n "$(ls /usr/local/share/ca-certificates 2>/dev/null)" ]; then
            cp -r /usr/local/share/ca-certificates/. "$1/usr/local/share/ca-certificates/"
            chroot "$1" update-ca-certificates >/dev/null 2>&1; fi' \
        bookworm "$tar"
    docker import --change "LABEL $LABEL=rootfs" "$tar" "$tag" >/dev/null
    rm -f "$tar"
}

# build <image> <dockerfile> <context> [build args...]: the stand-in tagged <image>.
build() {
    local image=$1 dockerfile=$2 context=$3; shift 3
    local out; out=$(mktemp)
    # Quiet unless it fails (without buildx, the client also warns that its builder is old).
    docker build --quiet --tag "$image" --file "$here/$dockerfile" \
        --build-arg "IMAGE=$image" "$@" "$context" >"$out" 2>&1 || { cat "$out" >&2; exit 1; }
    rm -f "$out"
    echo "stand-ins: built $image (a stand-in, labelled $LABEL)"
}

ensure() {
    local image=$1; shift
    if present "$image" && ! is_stand_in "$image"; then
        echo "stand-ins: $image is present (real image)"; return
    fi
    if docker pull --quiet "$image" >/dev/null 2>&1; then
        echo "stand-ins: pulled $image (real image)"; return
    fi
    "$@"
}

python_stand_in() {
    rootfs broker-stand-in/python-rootfs:bookworm python3 python3-venv python-is-python3 ca-certificates
    build "$PYTHON_IMAGE" python.Dockerfile "$here"
}

postgres_stand_in() {
    rootfs broker-stand-in/postgres-rootfs:bookworm postgresql-15 ca-certificates
    build "$POSTGRES_IMAGE" postgres.Dockerfile "$here"
}

go_stand_in() {
    # The host's Go toolchain (make minio needs one anyway), in a bookworm root filesystem.
    local goroot version wanted
    goroot=$(go env GOROOT)
    version=$(go env GOVERSION)
    wanted=${GO_IMAGE#golang:}; wanted=go${wanted%%-*}
    [ "$version" = "$wanted" ] || echo "stand-ins: note: $GO_IMAGE stands in with the host's $version" >&2
    rootfs broker-stand-in/go-rootfs:bookworm ca-certificates git
    build "$GO_IMAGE" golang.Dockerfile "$goroot" --build-arg "GO_VERSION=$version"
}

static_stand_in() {
    rootfs broker-stand-in/python-rootfs:bookworm python3 python3-venv python-is-python3 ca-certificates
    build "$STATIC_IMAGE" static.Dockerfile "$here"
}

ensure "$PYTHON_IMAGE" python_stand_in
ensure "$POSTGRES_IMAGE" postgres_stand_in
ensure "$GO_IMAGE" go_stand_in
ensure "$STATIC_IMAGE" static_stand_in
