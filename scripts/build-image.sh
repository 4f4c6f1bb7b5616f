#!/usr/bin/env bash
# Builds the project's container image from its own Dockerfile with BuildKit, on a machine with no
# container engine and no registry. (With Docker, `docker build -t <name> .` builds the same
# Dockerfile against the published base images; this script is for machines without it.)
#
#   scripts/build-image.sh [--name REPO:TAG] [--revision REV] [--output FILE] [--containerd SOCKET] [--quiet]
#
#   --name         image name (default ghcr.io/virtualio/virtualio:<chart appVersion>)
#   --revision     org.opencontainers.image.revision label (default: git HEAD)
#   --output       where to write the OCI archive (default $VIO_CACHE/images/<name>.oci.tar, which a
#                  later build of the same name from any checkout on this machine replaces: a caller
#                  that reads the archive later, e.g. a test importing it into a node, gives its own)
#   --containerd   also import the image into the containerd at SOCKET, namespace k8s.io
#
# What it does:
#   1. test/node/build-tools.sh: BuildKit (and containerd, runc, umoci...) into the cache, first time only.
#   2. test/image/bases.sh: local STAND-INS for the two base images (see that script); the image is
#      therefore built on stand-ins, not on the published node:*-bookworm-slim and distroless images.
#   3. buildkitd (OCI worker: runc, overlayfs, host network, state kept in the cache so rebuilds are
#      incremental), then buildctl with the Dockerfile frontend built into BuildKit (`--opt cmdline=`
#      overrides the Dockerfile's `# syntax=` line, which would fetch a frontend image from a registry)
#      and the stand-ins passed as named contexts under the exact names the FROM lines use.
#   4. Writes an OCI archive to --output (default $VIO_CACHE/images/<name>.oci.tar) and prints its size
#      and the build time.
#
# Needs root (buildkitd with the runc worker). Last line of output: the path of the OCI archive.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=env.sh
source "$ROOT/scripts/env.sh"

APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/virtualio/Chart.yaml")
NAME="ghcr.io/virtualio/virtualio:$APP_VERSION"
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
CONTAINERD_SOCK=""
OUT=""
QUIET=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --revision) REVISION=$2; shift 2 ;;
    --output) OUT=$2; shift 2 ;;
    --containerd) CONTAINERD_SOCK=$2; shift 2 ;;
    --quiet) QUIET=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$NAME" in
  *:*) ;;
  *) echo "build-image.sh: --name needs a tag (REPO:TAG), got: $NAME" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "build-image.sh: needs root (buildkitd runs build steps with runc)" >&2; exit 1; }

log() { printf '[build-image] %s\n' "$*" >&2; }
START=$(date +%s%N)

TOOLS=$(bash "$ROOT/test/node/build-tools.sh" | tail -n1)
BASES=$(bash "$ROOT/test/image/bases.sh" | tail -n1)
NODE_VERSION=$(sed -n 's/^ARG NODE_VERSION=//p' "$ROOT/Dockerfile")
RUNTIME_IMAGE=$(sed -n 's/^ARG RUNTIME_IMAGE=//p' "$ROOT/Dockerfile")
BUILD_DIGEST=$(cat "$BASES/node-bookworm-slim.digest")
RUNTIME_DIGEST=$(cat "$BASES/distroless-nodejs24-nonroot.digest")
TOOLS_DONE=$(date +%s%N)

if [ -z "$OUT" ]; then
  OUT="$VIO_CACHE/images/$(printf '%s' "$NAME" | tr '/:@' '___').oci.tar"
fi
mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")

# buildkitd: state in the cache (build cache survives between runs), socket in a private run folder.
# One buildkitd at a time owns the state folder (it locks it and a second one exits): builds from
# other worktrees on this machine wait here for the lock instead of failing.
STATE="$VIO_CACHE/buildkit-state"
exec 9>"$VIO_CACHE/buildkit-state.lock"
flock 9
RUN_DIR=$(mktemp -d /run/virtualio-buildkit-XXXXXX)
SOCK="unix://$RUN_DIR/buildkitd.sock"
BK_PID=""
cleanup() {
  if [ -n "$BK_PID" ] && kill -0 "$BK_PID" 2>/dev/null; then
    kill "$BK_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$BK_PID" 2>/dev/null || true
  fi
  rm -rf "$RUN_DIR"
  # buildkitd's runc worker leaves an empty "buildkit" cgroup in each v1 hierarchy.
  for d in /sys/fs/cgroup/*/buildkit; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
  true
}
trap cleanup EXIT
mkdir -p "$STATE"
"$TOOLS/buildkitd" --root "$STATE" --addr "$SOCK" \
  --oci-worker=true --containerd-worker=false \
  --oci-worker-binary "$(command -v runc)" --oci-worker-snapshotter overlayfs --oci-worker-net host \
  --oci-worker-gc --oci-worker-gc-keepstorage 4096 \
  > "$RUN_DIR/buildkitd.log" 2>&1 &
BK_PID=$!
for i in $(seq 1 100); do
  "$TOOLS/buildctl" --addr "$SOCK" debug workers >/dev/null 2>&1 && break
  if ! kill -0 "$BK_PID" 2>/dev/null || [ "$i" = 100 ]; then
    log "buildkitd did not start:"; cat "$RUN_DIR/buildkitd.log" >&2; exit 1
  fi
  sleep 0.1
done

log "building $NAME from $ROOT/Dockerfile (bases: stand-ins from $BASES)"
BUILD_START=$(date +%s%N)
progress=plain
[ "$QUIET" = 1 ] && progress=quiet
"$TOOLS/buildctl" --addr "$SOCK" build --progress="$progress" \
  --frontend dockerfile.v0 --opt cmdline= \
  --local context="$ROOT" --local dockerfile="$ROOT" \
  --oci-layout build-base="$BASES/node-bookworm-slim" \
  --oci-layout runtime-base="$BASES/distroless-nodejs24-nonroot" \
  --opt "context:node:$NODE_VERSION-bookworm-slim=oci-layout://build-base@$BUILD_DIGEST" \
  --opt "context:$RUNTIME_IMAGE=oci-layout://runtime-base@$RUNTIME_DIGEST" \
  --opt "build-arg:VERSION=${NAME##*:}" --opt "build-arg:REVISION=$REVISION" \
  --output "type=oci,dest=$OUT.partial,name=$NAME" >&2
mv "$OUT.partial" "$OUT"
BUILD_END=$(date +%s%N)

if [ -n "$CONTAINERD_SOCK" ]; then
  "$TOOLS/ctr" --address "$CONTAINERD_SOCK" -n k8s.io images import "$OUT" >&2
  log "imported $NAME into containerd $CONTAINERD_SOCK (namespace k8s.io)"
fi

# Size: compressed (what a registry stores and a node pulls) and unpacked (what the node's disk holds).
read -r COMPRESSED UNPACKED < <(node "$ROOT/test/image/image-size.mjs" "$OUT")
log "image $NAME: $(numfmt --to=iec-i --suffix=B "$COMPRESSED") compressed, $(numfmt --to=iec-i --suffix=B "$UNPACKED") unpacked"
log "time: tools+bases check $(( (TOOLS_DONE - START) / 1000000 )) ms, build+export $(( (BUILD_END - BUILD_START) / 1000000 )) ms, total $(( ($(date +%s%N) - START) / 1000000 )) ms"
echo "$OUT"
