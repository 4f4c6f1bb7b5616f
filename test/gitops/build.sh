#!/usr/bin/env bash
# Builds the GitOps harnesses from the Go module proxy into a cache outside the repository (nothing
# built is committed), so the jest suites run the tools' own code:
#
#   kstatus      sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute (what Flux's health checks use)
#   argo-health  an Argo CD health Lua run the way Argo CD's controller runs it (gopher-lua, the
#                package/base/table libraries only, `obj` global, 1 s deadline)
#
# Usage: test/gitops/build.sh    Prints `name=path` per harness on stdout (logs go to stderr). A warm
# cache is only checked: a harness is rebuilt when go.mod, go.sum, its main.go or this script changed.
#   VIO_CACHE   cache root (default $HOME/.cache/virtualio)
set -euo pipefail
CACHE=${VIO_CACHE:-$HOME/.cache/virtualio}
OUT="$CACHE/gitops/bin"
HERE=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
for name in kstatus argo-health; do
  bin="$OUT/$name"
  st=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/cmd/$name/main.go" "$HERE/build.sh" | sha256sum | cut -c1-16)
  if ! [ -x "$bin" ] || [ "$(cat "$bin.stamp" 2>/dev/null)" != "$st" ]; then
    printf '[gitops] building %s\n' "$name" >&2
    (cd "$HERE" && go build -trimpath -ldflags "-s -w" -o "$bin" "./cmd/$name" >&2)
    echo "$st" > "$bin.stamp"
  fi
  echo "$name=$bin"
done
