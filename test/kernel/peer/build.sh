#!/usr/bin/env bash
# Builds test/kernel/peer/main.go (kubevirt-dp: KubeVirt's built-in PCI and mediated host-device
# plugins from kubevirt.io/kubevirt pkg/virt-handler/device-manager) from the Go module proxy into the
# cache, never into the repository. Prints the binary's path on stdout; logs go to stderr. A warm
# cache is only checked: the binary is rebuilt when main.go, this script or the version changes.
#
#   VIO_CACHE          cache root (default $HOME/.cache/virtualio)
#   KUBEVIRT_VERSION   KubeVirt release (default 1.9.0)
#   VIO_VIRT_TEMPLATE_GIT  optional: a git clone of github.com/kubevirt/virt-template (the monorepo),
#                      used instead of the stand-ins when the module proxy refuses
#                      kubevirt.io/virt-template-{api,client-go} (below)
#
# The wrapper module requires kubevirt.io/kubevirt and repeats KubeVirt's own replace directives
# (Go ignores a dependency's replaces), with its staging modules kubevirt.io/{api,client-go} pointed
# at their published versions; its go.sum starts as KubeVirt's, because the checksum database does
# not answer for some of KubeVirt's dependencies. The same approach as test/conformance/build.sh,
# in a module of its own so neither build rewrites the other's go.mod.
#
# KubeVirt v1.9.0's device-manager package imports pkg/controller (through pkg/storage/reservation),
# which imports kubevirt.io/virt-template-api and -client-go v0.2.0; some module proxies refuse both
# ("403 This module version is not available"). Then, given VIO_VIRT_TEMPLATE_GIT, the two modules
# are taken from the v$VT_VERSION tag of virt-template's monorepo (api/ and
# staging/src/kubevirt.io/virt-template-client-go/, which its release job publishes as the two
# modules, with the root LICENSE and .gitignore) into the cache and wired in with replace
# directives. The API module is checked against the h1: hash in KubeVirt's own go.sum and refused if
# it differs; the client module cannot be checked that way (its published go.mod pins the API module
# to a pseudo-version that the tag does not hold), so only its go.mod's relative replace is dropped.
# Neither is called by the device plugins: pkg/controller's virt-template informer is virt-controller's.
set -euo pipefail
shopt -s inherit_errexit
KUBEVIRT_VERSION=${KUBEVIRT_VERSION:-1.9.0}
CACHE=${VIO_CACHE:-$HOME/.cache/virtualio}
HERE=$(cd "$(dirname "$0")" && pwd)
MOD="$CACHE/src/kernel-peer-kubevirt-$KUBEVIRT_VERSION"
BIN="$CACHE/kernel/peer/kubevirt-dp-$KUBEVIRT_VERSION"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
log() { printf '[peer] %s\n' "$*" >&2; }
command -v go >/dev/null || { echo "[peer] go is not installed (needed to build KubeVirt's device plugins)" >&2; exit 2; }

mkdir -p "$MOD" "$(dirname "$BIN")"
exec 9>"$(dirname "$BIN")/.lock"
flock 9
stamp=$(cat "$HERE/main.go" "$HERE/build.sh" "$HERE/virt-template-standin.sh" <(echo "kubevirt=$KUBEVIRT_VERSION $(go env GOVERSION)") | sha256sum | cut -c1-16)
if [ -x "$BIN" ] && [ "$(cat "$BIN.stamp" 2>/dev/null)" = "$stamp" ]; then echo "$BIN"; exit 0; fi

if [ ! -f "$MOD/go.mod" ]; then
  log "creating the wrapper module for kubevirt.io/kubevirt v$KUBEVIRT_VERSION"
  info=$(cd "$MOD" && go mod download -json "kubevirt.io/kubevirt@v$KUBEVIRT_VERSION")
  kvmod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")
  kvdir=$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")
  [ -f "$kvmod" ] && [ -d "$kvdir" ] || { echo "[peer] the module proxy gave no kubevirt.io/kubevirt v$KUBEVIRT_VERSION" >&2; exit 1; }
  (
    cd "$MOD"
    rm -f go.mod
    go mod init local.test/kernel-peer >/dev/null 2>&1
    go mod edit -go=1.26.0 -require="kubevirt.io/kubevirt@v$KUBEVIRT_VERSION"
    install -m 0644 "$kvdir/go.sum" go.sum
    # Each replace of KubeVirt's go.mod, block or single-line form; ./staging/... → the published module.
    awk -v v="$KUBEVIRT_VERSION" '
      function emit(old, new, ver) { if (new ~ /^\.\//) print old "=" old "@v" v; else print old "=" new "@" ver }
      /^replace \(/ { blk = 1; next }
      blk && /^\)/ { blk = 0; next }
      blk && $2 == "=>" { emit($1, $3, $4) }
      /^replace [^(]/ && $3 == "=>" { emit($2, $4, $5) }
    ' "$kvmod" | while read -r r; do go mod edit -replace="$r"; done
  )
fi

# h1 <dir> <module@version>: the go.sum hash of a module's file tree (golang.org/x/mod/sumdb/dirhash Hash1).
h1() {
  (cd "$1" && find . -type f | sed 's#^\./##' | LC_ALL=C sort | while read -r f; do
    printf '%s  %s/%s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$2" "$f"; done) |
    sha256sum | cut -d' ' -f1 | sed 's/../\\x&/g' | { read -r hex; printf '%b' "$hex"; } | base64
}
kvmod="$(go env GOMODCACHE)/cache/download/kubevirt.io/kubevirt/@v/v$KUBEVIRT_VERSION.mod"
VT_VERSION=$(awk '$1 == "kubevirt.io/virt-template-api" {print substr($2, 2); exit}' "$kvmod")
if [ -n "$VT_VERSION" ] && ! grep -q 'kubevirt.io/virt-template-api =>' "$MOD/go.mod" &&
   ! (cd "$MOD" && go mod download "kubevirt.io/virt-template-api@v$VT_VERSION" "kubevirt.io/virt-template-client-go@v$VT_VERSION" >/dev/null 2>&1); then
  git_dir=${VIO_VIRT_TEMPLATE_GIT:-}
  if [ -z "$git_dir" ]; then
    # No clone given: stand-ins for the two modules (virt-template-standin.sh says why that is
    # honest for the device plugins), so the build needs nothing but the module proxy.
    vt="$CACHE/src/virt-template-standin-v$VT_VERSION"
    log "the module proxy refuses kubevirt.io/virt-template-{api,client-go} v$VT_VERSION: building with stand-ins ($vt)"
    bash "$HERE/virt-template-standin.sh" "$vt"
    (cd "$MOD" && go mod edit -replace="kubevirt.io/virt-template-api=$vt/api" -replace="kubevirt.io/virt-template-client-go=$vt/client-go")
  elif ! git -C "$git_dir" rev-parse -q --verify "v$VT_VERSION^{commit}" >/dev/null; then
    echo "[peer] VIO_VIRT_TEMPLATE_GIT=$git_dir has no tag v$VT_VERSION of github.com/kubevirt/virt-template." >&2
    exit 2
  else
    vt="$CACHE/src/virt-template-v$VT_VERSION"
    rm -rf "$vt" && mkdir -p "$vt/api" "$vt/client-go"
    git -C "$git_dir" archive "v$VT_VERSION" api | tar -x -C "$vt/api" --strip-components=1
    git -C "$git_dir" archive "v$VT_VERSION" staging/src/kubevirt.io/virt-template-client-go | tar -x -C "$vt/client-go" --strip-components=4
    for d in api client-go; do
      git -C "$git_dir" show "v$VT_VERSION:LICENSE" > "$vt/$d/LICENSE"
      git -C "$git_dir" show "v$VT_VERSION:.gitignore" > "$vt/$d/.gitignore"
    done
    want=$(awk -v v="v$VT_VERSION" '$1 == "kubevirt.io/virt-template-api" && $2 == v {print $3}' "$MOD/go.sum")
    got="h1:$(h1 "$vt/api" "kubevirt.io/virt-template-api@v$VT_VERSION")"
    [ "$got" = "$want" ] || { echo "[peer] virt-template api/ at v$VT_VERSION hashes to $got, KubeVirt's go.sum says $want: refused" >&2; exit 1; }
    log "kubevirt.io/virt-template-api v$VT_VERSION from $git_dir matches KubeVirt's go.sum ($want)"
    (cd "$vt/client-go" && go mod edit -dropreplace=kubevirt.io/virt-template-api)
    (cd "$MOD" && go mod edit -replace="kubevirt.io/virt-template-api=$vt/api" -replace="kubevirt.io/virt-template-client-go=$vt/client-go")
  fi
fi

log "building kubevirt-dp against kubevirt.io/kubevirt v$KUBEVIRT_VERSION (first time only)"
mkdir -p "$MOD/cmd/kubevirt-dp"
cp "$HERE/main.go" "$MOD/cmd/kubevirt-dp/main.go"
(cd "$MOD" && go mod tidy >&2 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$BIN.tmp" ./cmd/kubevirt-dp >&2)
mv "$BIN.tmp" "$BIN"
echo "$stamp" > "$BIN.stamp"
echo "$BIN"
