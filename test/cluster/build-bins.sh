#!/usr/bin/env bash
# Builds the real Kubernetes components the tests run against, from the Go module proxy, into a
# versioned cache outside the repository. Nothing built here is ever committed.
#
#   VIO_BIN_CACHE   cache root (default: $HOME/.cache/virtualio)
#   K8S_VERSION     Kubernetes release (default 1.36.3)
#   ETCD_VERSION    etcd release (default 3.6.14)
#   HELM_VERSION    helm release (default 3.21.4)
#
# Prints the bin directory on its last line. A second run with the same versions only checks the cache.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.14}
HELM_VERSION=${HELM_VERSION:-3.21.4}
CACHE=${VIO_BIN_CACHE:-$HOME/.cache/virtualio}
BIN="$CACHE/bin-k8s$K8S_VERSION-etcd$ETCD_VERSION-helm$HELM_VERSION"
SRC="$CACHE/src"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf '[build-bins] %s\n' "$*" >&2; }
mkdir -p "$BIN" "$SRC"

MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
STAGING="0.${K8S_VERSION#1.}"

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kubelet" ] || [ ! -x "$BIN/kubectl" ] || [ ! -x "$BIN/kube-scheduler" ] \
  || [ ! -x "$BIN/kube-controller-manager" ]; then
  log "building Kubernetes v$K8S_VERSION (first time only; ~15-25 min on 2 cores)"
  KSRC="$SRC/k8s-$K8S_VERSION"
  mkdir -p "$KSRC"
  KMOD=$(cd "$(mktemp -d)" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  cd "$KSRC"
  [ -f go.mod ] || go mod init local.test/k8sbins >/dev/null 2>&1
  go mod edit -go=1.26.0 -require="k8s.io/kubernetes@v$K8S_VERSION"
  for m in $(awk '$2=="v0.0.0" && $1 ~ /^k8s\.io\// {print $1}' "$KMOD" | sort -u); do
    go mod edit -replace="$m=$m@v$STAGING"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean"
    LDF="$LDF -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  go build -trimpath -ldflags "$LDF" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-controller-manager
fi

# fakecri is our own code: rebuilt whenever its source changes.
FAKECRI_SUM=$(sha256sum "$HERE/fakecri/main.go" | cut -d' ' -f1)
if [ ! -x "$BIN/fakecri" ] || [ "$(cat "$BIN/fakecri.sha256" 2>/dev/null)" != "$FAKECRI_SUM" ]; then
  log "building fakecri"
  (cd "$SRC/k8s-$K8S_VERSION" && mkdir -p cmd/fakecri && cp "$HERE/fakecri/main.go" cmd/fakecri/main.go \
    && go mod tidy && go build -trimpath -o "$BIN/" ./cmd/fakecri) >&2
  echo "$FAKECRI_SUM" > "$BIN/fakecri.sha256"
fi

if [ ! -x "$BIN/etcd" ]; then
  log "building etcd v$ETCD_VERSION"
  ESRC="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$ESRC" && cd "$ESRC"
  [ -f go.mod ] || go mod init local.test/etcdbin >/dev/null 2>&1
  go mod edit -go=1.26.0 -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

if [ ! -x "$BIN/helm" ]; then
  log "building helm v$HELM_VERSION"
  HMAJ=${HELM_VERSION%%.*}
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v$HMAJ/internal/version.version=v$HELM_VERSION" \
    "helm.sh/helm/v$HMAJ/cmd/helm@v$HELM_VERSION"
fi

# Helm 4 as well, so the chart is tested with both major versions (test/integration/chart-support.ts
# looks for it here).
HELM4_VERSION=${HELM4_VERSION:-4.2.4}
if [ ! -x "$CACHE/helm4-v$HELM4_VERSION/helm" ]; then
  log "building helm v$HELM4_VERSION"
  GOBIN="$CACHE/helm4-v$HELM4_VERSION" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=v$HELM4_VERSION" \
    "helm.sh/helm/v4/cmd/helm@v$HELM4_VERSION"
fi

"$BIN/kube-apiserver" --version >&2
echo "$BIN"
