#!/usr/bin/env bash
# Builds or installs what a real test node and the image build need, into a versioned cache outside the
# repository (nothing built here is ever committed):
#   - containerd + ctr + containerd-shim-runc-v2 from the Go module proxy (Debian's 1.6 is too old to
#     keep: the 1.36 kubelet warns that support for it ends in 1.37)
#   - BuildKit (buildkitd + buildctl) from the Go module proxy (`go install` is refused: its go.mod has
#     exclude directives, so the module is downloaded, copied and built)
#   - crictl (cri-tools) from the Go module proxy: the node harness removes pod sandboxes through CRI
#     on teardown, so their network namespaces and IP leases go the normal way
#   - Debian packages: runc, umoci, debootstrap, the CNI plugins (bridge, host-local, loopback)
#
#   VIO_BIN_CACHE        cache root (default: $HOME/.cache/virtualio)
#   CONTAINERD_VERSION   default 2.4.2
#   BUILDKIT_VERSION     default 0.34.2
#   CRICTL_VERSION       default 1.37.0
#
# Prints the tools directory on its last line. A second run with the same versions only checks the cache.
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.4.2}
BUILDKIT_VERSION=${BUILDKIT_VERSION:-0.34.2}
CRICTL_VERSION=${CRICTL_VERSION:-1.37.0}
CACHE=${VIO_BIN_CACHE:-$HOME/.cache/virtualio}
TOOLS="$CACHE/tools-containerd$CONTAINERD_VERSION-buildkit$BUILDKIT_VERSION"
SRC="$CACHE/src"
export GOTOOLCHAIN=local
unset GOFLAGS

log() { printf '[build-tools] %s\n' "$*" >&2; }
mkdir -p "$TOOLS" "$SRC"

# Debian packages, only when one is missing (apt-get update once, then install the missing ones).
missing=()
command -v runc >/dev/null || missing+=(runc)
command -v umoci >/dev/null || missing+=(umoci)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v gcc >/dev/null || missing+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "missing Debian packages (${missing[*]}); installing them needs root"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x "$TOOLS/containerd" ] || [ ! -x "$TOOLS/ctr" ] || [ ! -x "$TOOLS/containerd-shim-runc-v2" ]; then
  log "building containerd v$CONTAINERD_VERSION (first time only; ~4 min on 2 cores)"
  for cmd in containerd ctr containerd-shim-runc-v2; do
    GOBIN="$TOOLS" go install -trimpath -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$cmd@v$CONTAINERD_VERSION" >&2
  done
fi

if [ ! -x "$TOOLS/buildkitd" ] || [ ! -x "$TOOLS/buildctl" ]; then
  log "building BuildKit v$BUILDKIT_VERSION (first time only; ~3-5 min on 2 cores)"
  BDIR=$(cd "$(mktemp -d)" && go mod download -json "github.com/moby/buildkit@v$BUILDKIT_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  BSRC="$SRC/buildkit-$BUILDKIT_VERSION"
  if [ ! -f "$BSRC/go.mod" ]; then
    rm -rf "$BSRC" && cp -r "$BDIR" "$BSRC" && chmod -R u+w "$BSRC"
  fi
  (cd "$BSRC" && go build -mod=mod -trimpath \
    -ldflags "-s -w -X github.com/moby/buildkit/version.Version=v$BUILDKIT_VERSION" \
    -o "$TOOLS/" ./cmd/buildkitd ./cmd/buildctl) >&2
fi

if [ ! -x "$TOOLS/crictl" ]; then
  log "building crictl v$CRICTL_VERSION (first time only; ~1-2 min)"
  GOBIN="$TOOLS" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION" >&2
fi

"$TOOLS/containerd" --version >&2
"$TOOLS/buildctl" --version >&2
echo "$TOOLS"
