#!/usr/bin/env bash
# The main job (README Quick start, `make demo`): installs what it needs, then runs test/demo/demo.ts.
# Flags: --keep leaves the cluster running and prints a KUBECONFIG to explore with kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
echo "[demo] installing npm dependencies (cached after the first run)" >&2
if ! { [ -f node_modules/.vio-lock-hash ] && [ "$(cat node_modules/.vio-lock-hash)" = "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; }; then
  npm ci --no-audit --no-fund >/dev/null && sha256sum package-lock.json | cut -d' ' -f1 > node_modules/.vio-lock-hash
fi
echo "[demo] building virtualio (tsc)" >&2
npm run --silent build
echo "[demo] building Kubernetes $( [ -d "$VIO_CACHE" ] && echo '(cached)' ) — the first run on a new machine takes 10-25 minutes" >&2
VIO_BIN_DIR=$(bash test/cluster/build-bins.sh | tail -1)
export VIO_BIN_DIR
exec node test/demo/demo.ts "$@"
