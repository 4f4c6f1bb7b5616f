#!/usr/bin/env bash
# Builds the GitOps harnesses from the Go module proxy into a cache outside the repository (nothing
# built is committed), so the jest suites run the tools' own code:
#
#   kstatus      sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute (what Flux's health checks use)
#   argo-health  an Argo CD health Lua run the way Argo CD's controller runs it (gopher-lua, the
#                package/base/table libraries only, `obj` global, 1 s deadline)
#   flux         Flux's helm-controller, built inside its extracted module zip (its go.mod replaces
#                the api module with ./api, which the zip does not carry, so the replace is dropped and
#                the published api module of the same version is used), plus the CRDs it and the
#                docs' recipes need, copied from the module zips: HelmRelease (helm-controller),
#                GitRepository, HelmChart, OCIRepository, ExternalArtifact... (source-controller),
#                Kustomization (kustomize-controller). Prints helm-controller=<binary> and
#                flux-crds=<folder>.
#   argocd-crds  Argo CD's Application and AppProject CRDs from its module zip (manifests/crds), for
#                checking the docs' Argo CD recipes against the real schema. v3.5: v3.6 needs Go 1.27.
#
# Usage: test/gitops/build.sh [kstatus] [argo-health] [flux] [argocd-crds]   (default: all)
# Prints `name=path` per target on stdout (logs go to stderr). A warm cache is only checked: a target
# is rebuilt when its inputs or this script changed.
#   VIO_CACHE   cache root (default $HOME/.cache/virtualio)
set -euo pipefail
CACHE=${VIO_CACHE:-$HOME/.cache/virtualio}
OUT="$CACHE/gitops/bin"
HERE=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
# Flux 2.7: helm-controller v1.4.5 requires source-controller/api v1.7.2 (its go.mod).
HELM_CONTROLLER=v1.4.5
SOURCE_CONTROLLER=v1.7.2
KUSTOMIZE_CONTROLLER=v1.7.3
ARGO_CD=v3.5.8
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kstatus argo-health flux argocd-crds)

moddir() { # moddir MODULE@VERSION: the extracted module folder in the Go module cache
  go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

build_flux() {
  local bin="$OUT/helm-controller" crds="$OUT/flux-crds"
  local st="helm-controller@$HELM_CONTROLLER source-controller@$SOURCE_CONTROLLER kustomize-controller@$KUSTOMIZE_CONTROLLER"
  if [ -x "$bin" ] && [ -d "$crds" ] && [ "$(cat "$bin.stamp" 2>/dev/null)" = "$st" ]; then
    echo "helm-controller=$bin"; echo "flux-crds=$crds"; return
  fi
  printf '[gitops] building helm-controller %s\n' "$HELM_CONTROLLER" >&2
  local tmp; tmp=$(mktemp -d)
  local hc sc kc
  hc=$(cd "$tmp" && moddir "github.com/fluxcd/helm-controller@$HELM_CONTROLLER")
  sc=$(cd "$tmp" && moddir "github.com/fluxcd/source-controller@$SOURCE_CONTROLLER")
  kc=$(cd "$tmp" && moddir "github.com/fluxcd/kustomize-controller@$KUSTOMIZE_CONTROLLER")
  [ -n "$hc" ] && [ -n "$sc" ] && [ -n "$kc" ] || { echo "[gitops] a Flux module did not download" >&2; exit 1; }
  cp -r "$hc" "$tmp/src" && chmod -R u+w "$tmp/src"
  (cd "$tmp/src" && go mod edit -dropreplace github.com/fluxcd/helm-controller/api \
    && go build -trimpath -ldflags "-s -w" -o "$bin.new" . >&2)
  rm -rf "$crds.new" && mkdir -p "$crds.new"
  cp "$hc"/config/crd/bases/*.yaml "$sc"/config/crd/bases/*.yaml "$kc"/config/crd/bases/*.yaml "$crds.new/"
  chmod u+w "$crds.new"/*
  rm -rf "$crds" "$tmp" && mv "$crds.new" "$crds" && mv "$bin.new" "$bin"
  echo "$st" > "$bin.stamp"
  echo "helm-controller=$bin"; echo "flux-crds=$crds"
}

argocd_crds() {
  local dir="$OUT/argocd-crds-$ARGO_CD"
  if ! [ -f "$dir/application-crd.yaml" ]; then
    local tmp src; tmp=$(mktemp -d)
    src=$(cd "$tmp" && moddir "github.com/argoproj/argo-cd/v3@$ARGO_CD")
    [ -n "$src" ] || { echo "[gitops] argo-cd $ARGO_CD did not download" >&2; exit 1; }
    rm -rf "$dir.new" && mkdir -p "$dir.new"
    cp "$src/manifests/crds/application-crd.yaml" "$src/manifests/crds/appproject-crd.yaml" "$dir.new/"
    chmod u+w "$dir.new"/* && mv "$dir.new" "$dir" && rm -rf "$tmp"
  fi
  echo "argocd-crds=$dir"
}

for name in "${targets[@]}"; do
  case $name in
    kstatus|argo-health)
      bin="$OUT/$name"
      st=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/cmd/$name/main.go" | sha256sum | cut -c1-16)
      if ! [ -x "$bin" ] || [ "$(cat "$bin.stamp" 2>/dev/null)" != "$st" ]; then
        printf '[gitops] building %s\n' "$name" >&2
        (cd "$HERE" && go build -trimpath -ldflags "-s -w" -o "$bin" "./cmd/$name" >&2)
        echo "$st" > "$bin.stamp"
      fi
      echo "$name=$bin"
      ;;
    flux) build_flux ;;
    argocd-crds) argocd_crds ;;
    *) echo "unknown target $name (kstatus, argo-health, flux, argocd-crds)" >&2; exit 2 ;;
  esac
done
