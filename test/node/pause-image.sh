#!/usr/bin/env bash
# The pod sandbox ("pause") image for the test node, which cannot pull registry.k8s.io/pause: the
# Kubernetes source's own build/pause/linux/pause.c (from the Go module cache, where build-bins.sh
# put it) compiled statically, packed with umoci as an OCI archive named localhost/pause:local.
#
#   K8S_VERSION   default 1.36.3 (the module the source comes from)
#
# Prints the OCI archive path on its last line; a second run only checks the cache.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../../scripts/env.sh
source "$ROOT/scripts/env.sh"
K8S_VERSION=${K8S_VERSION:-1.36.3}
CACHE=${VIO_BIN_CACHE:-$HOME/.cache/virtualio}
OUT_DIR="$CACHE/pause-k8s$K8S_VERSION"
OUT="$OUT_DIR/pause.oci.tar"
log() { printf '[pause-image] %s\n' "$*" >&2; }

if [ ! -s "$OUT" ]; then
  export GOTOOLCHAIN=local
  unset GOFLAGS
  SRC_DIR=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  PAUSE_C="$SRC_DIR/build/pause/linux/pause.c"
  [ -f "$PAUSE_C" ] || { log "no $PAUSE_C in the Go module cache"; exit 1; }
  command -v umoci >/dev/null || { log "umoci missing: run test/node/build-tools.sh first"; exit 1; }
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  mkdir -p "$WORK/rootfs" "$OUT_DIR"
  log "compiling $PAUSE_C (static)"
  gcc -Os -Wall -Werror -static -DVERSION="v$K8S_VERSION-virtualio" -o "$WORK/rootfs/pause" "$PAUSE_C"
  strip "$WORK/rootfs/pause"
  L="$WORK/layout"
  umoci init --layout "$L"
  umoci new --image "$L:local"
  umoci insert --image "$L:local" "$WORK/rootfs" /
  umoci config --image "$L:local" --os linux --architecture amd64 --config.user 65535:65535 \
    --config.entrypoint /pause --author virtualio-test
  umoci gc --layout "$L"
  # ctr import names the image from the io.containerd.image.name annotation.
  node -e '
    const fs = require("node:fs");
    const idx = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    for (const m of idx.manifests) m.annotations = { ...m.annotations, "io.containerd.image.name": "localhost/pause:local" };
    fs.writeFileSync(process.argv[1], JSON.stringify(idx));
  ' "$L/index.json"
  tar -C "$L" -cf "$OUT.partial" .
  mv "$OUT.partial" "$OUT"
fi
echo "$OUT"
