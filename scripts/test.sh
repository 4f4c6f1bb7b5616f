#!/usr/bin/env bash
# The whole test suite, as the README's Quick start runs it (`make test`) and as CI runs it.
# Pipeline stages (install, build, typecheck, lint, ...) are reported on their own line; the last
# line counts tests only: "N passed, N failed, N skipped" (a failed stage adds to "failed", since
# CI must show it; skipped tests are listed with their reason above it). The exit code is non-zero
# on any failure. Installs everything it needs: Node 24 (scripts/env.sh), npm dependencies, and the
# Kubernetes/etcd/helm binaries built from the Go module proxy into $HOME/.cache/virtualio.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

RESULTS=${VIO_RESULTS_DIR:-$PWD/.vio-results}
export VIO_RESULTS_DIR=$RESULTS
rm -rf "$RESULTS" && mkdir -p "$RESULTS"
STAGES_OK=0 STAGES_FAILED=0 PASSED=0 FAILED=0 SKIPPED=0
FAILED_STAGES=()

stage() { # stage NAME CMD...: one counted check
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name"
  if "$@"; then
    STAGES_OK=$((STAGES_OK + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    STAGES_FAILED=$((STAGES_FAILED + 1)); FAILED_STAGES+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    return 1
  fi
}

finish() {
  if [ ${#FAILED_STAGES[@]} -gt 0 ]; then echo "failed: ${FAILED_STAGES[*]}"; fi
  echo "pipeline stages: $STAGES_OK ok, $STAGES_FAILED failed"
  FAILED=$((FAILED + STAGES_FAILED))
  echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
  [ "$FAILED" -eq 0 ]
  exit $?
}

lockfile_hash() { sha256sum package-lock.json | cut -d' ' -f1; }
install_deps() {
  if [ -f node_modules/.vio-lock-hash ] && [ "$(cat node_modules/.vio-lock-hash)" = "$(lockfile_hash)" ]; then return 0; fi
  npm ci --no-audit --no-fund && lockfile_hash > node_modules/.vio-lock-hash
}
build_binaries() {
  local out
  out=$(bash test/cluster/build-bins.sh) || return 1
  VIO_BIN_DIR=$(echo "$out" | tail -1); export VIO_BIN_DIR
  if [ -x test/conformance/build.sh ] || [ -f test/conformance/build.sh ]; then
    bash test/conformance/build.sh > "$RESULTS/conformance-build.txt" || return 1
  fi
  # kstatus, the Argo CD health Lua runner and Flux's helm-controller (gitops-*.test.ts).
  bash test/gitops/build.sh > "$RESULTS/gitops-build.txt" || return 1
}

build_node_tools() {
  # containerd, BuildKit, crictl, runc/umoci/debootstrap/CNI, the pause image (cached), then the image
  # from the Dockerfile; without root the real-node suite reports itself skipped, so nothing to build.
  [ "$(id -u)" = 0 ] || { echo "not root: the real-node suite will report itself skipped"; return 0; }
  bash test/node/build-tools.sh > "$RESULTS/node-tools.txt" 2>&1 \
    && bash test/node/pause-image.sh >> "$RESULTS/node-tools.txt" 2>&1 \
    && scripts/build-image.sh --quiet > "$RESULTS/image-build.txt" 2>&1 \
    && grep '^\[build-image\] \(image\|time\)' "$RESULTS/image-build.txt"
}

# Prerequisites: without them nothing else can run, so a failure ends the run here.
stage "install npm dependencies" install_deps || finish
stage "build Kubernetes, etcd, helm, the conformance and GitOps harnesses from the Go module proxy (cached after the first run)" build_binaries || finish
stage "build containerd, BuildKit, crictl and the pause image (cached), then the container image from the Dockerfile" build_node_tools || finish

stage "generated files match their sources (proto, CRD types, chart CRDs)" npm run --silent gen:check
stage "typecheck (tsc --strict)" npm run --silent typecheck
stage "lint (eslint, zero warnings)" npm run --silent lint
stage "build (tsc → dist)" npm run --silent build
if [ -f scripts/gen-docs.mjs ]; then
  stage "generated docs match the schemas (docs/configuration.md)" npm run --silent docs:check
fi

echo "=== jest (unit + integration against a real kube-apiserver)"
# Jest runs in its own process group, watched: once its summary is written, it has 60 s to exit. A
# handle a test leaked (a libuv thread parked in open(2) on a FIFO kept one run alive until CI's
# time ran out) is then a counted failure with a name, not a run that never ends.
set -m
NODE_OPTIONS=--experimental-vm-modules npx jest --ci > >(tee "$RESULTS/jest.txt") 2>&1 &
JEST_PID=$!
set +m
JEST_HUNG=0
while kill -0 "$JEST_PID" 2>/dev/null; do
  if [ -f "$RESULTS/jest-summary.json" ]; then
    for _ in $(seq 60); do kill -0 "$JEST_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$JEST_PID" 2>/dev/null; then JEST_HUNG=1; kill -KILL -- "-$JEST_PID" 2>/dev/null; fi
    break
  fi
  sleep 2
done
wait "$JEST_PID"
JEST_RC=$?
sleep 1 # let tee flush
if [ "$JEST_HUNG" -eq 1 ]; then
  echo "jest did not exit within 60 s of finishing (a test left a handle open); killed"
  STAGES_FAILED=$((STAGES_FAILED + 1)); FAILED_STAGES+=("jest did not exit after its run")
fi
if [ -f "$RESULTS/jest-summary.json" ]; then
  read -r JP JF JS < <(node -e 'const s=require(process.argv[1]);console.log(s.passed, s.failed, s.skipped)' "$RESULTS/jest-summary.json")
  PASSED=$((PASSED + JP)); FAILED=$((FAILED + JF)); SKIPPED=$((SKIPPED + JS))
  node -e 'const s=require(process.argv[1]);for (const f of s.failures ?? []) console.log(`FAILED: ${f}`)' "$RESULTS/jest-summary.json"
  if [ "$JEST_RC" -ne 0 ] && [ "$JF" -eq 0 ] && [ "$JEST_HUNG" -eq 0 ]; then STAGES_FAILED=$((STAGES_FAILED + 1)); FAILED_STAGES+=("jest exited $JEST_RC"); fi
else
  STAGES_FAILED=$((STAGES_FAILED + 1)); FAILED_STAGES+=("jest (no summary)")
fi

finish
