#!/usr/bin/env bash
# The main job (README Quick start, `make demo`): installs what it needs, then runs test/demo/demo.ts.
# Flags (passed on): --keep leaves everything running and prints a KUBECONFIG to explore with kubectl;
# --json prints a machine-readable summary; --timeout <s> bounds each stage.
# A second run is fast: npm ci, tsc and the Kubernetes build are skipped when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
if ! { [ -f node_modules/.vio-lock-hash ] && [ "$(cat node_modules/.vio-lock-hash)" = "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; }; then
  echo "[demo] installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund >/dev/null && sha256sum package-lock.json | cut -d' ' -f1 > node_modules/.vio-lock-hash
fi

# Rebuild dist/ only when a source of the two programs is newer than the last build.
stamp=dist/.demo-build-stamp
if [ ! -f "$stamp" ] || [ ! -f dist/operator/src/main.js ] || [ ! -f dist/device-plugin/src/main.js ] \
  || [ -n "$(find operator/src device-plugin/src proto crds/generated package-lock.json tsconfig.json tsconfig.build.json \
        -newer "$stamp" \( -name '*.ts' -o -name '*.proto' -o -name '*.json' \) -print -quit 2>/dev/null)" ]; then
  echo "[demo] building virtualio (tsc)" >&2
  if npm run --silent build; then
    touch "$stamp"
  elif [ -f dist/operator/src/main.js ] && [ -f dist/device-plugin/src/main.js ]; then
    echo "[demo] warning: tsc reported errors (above); continuing with the dist/ it emitted" >&2
  else
    echo "[demo] the build failed" >&2
    exit 1
  fi
else
  echo "[demo] virtualio is built (dist/ is newer than its sources)" >&2
fi

echo "[demo] Kubernetes binaries (built from the Go module proxy the first time: 10-25 minutes on 2 cores; cached afterwards)" >&2
VIO_BIN_DIR=$(bash test/cluster/build-bins.sh | tail -1)
export VIO_BIN_DIR
if [ "$(id -u)" != 0 ]; then
  echo "[demo] note: not root, so no kubelet (it needs /var/lib/kubelet): no VM can start, and the demo ends NOT OK because it cannot verify them; run 'sudo make demo'" >&2
fi
# The hooks resolve the fake kernel's `./x.js` imports to their .ts sources (node strips types natively).
exec node --import ./test/sysfs/ts-hooks.mjs test/demo/demo.ts "$@"
