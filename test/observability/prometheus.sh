#!/usr/bin/env bash
# Puts Debian's Prometheus (the `prometheus` server and `promtool`) into the test cache and prints
# the folder of the two binaries on its last line. The package is downloaded (`apt-get download`)
# and unpacked (`dpkg-deb -x`), never installed: no service starts, no user is created, nothing
# outside the cache changes. A second run only checks the cache (no apt at all).
#
#   VIO_CACHE   cache root (default: $HOME/.cache/virtualio); the binaries go to
#               $VIO_CACHE/prometheus-<Debian version>/usr/bin
#
# Needs the apt package lists; when they lack `prometheus` it runs `apt-get update` (root only).
# Exits non-zero with the reason on stderr when it cannot (not root and no lists, no network).
set -euo pipefail

CACHE=${VIO_CACHE:-$HOME/.cache/virtualio}
log() { printf '[prometheus] %s\n' "$*" >&2; }
mkdir -p "$CACHE"
# One at a time (test files may ask at once): the second waits, then finds the cache filled.
exec 9>"$CACHE/.prometheus.lock"
flock 9

for bin in "$CACHE"/prometheus-*/usr/bin; do
  if [ -x "$bin/promtool" ] && [ -x "$bin/prometheus" ]; then echo "$bin"; exit 0; fi
done

candidate() { apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: *//p'; }
VERSION=$(candidate || true)
if [ -z "$VERSION" ] || [ "$VERSION" = "(none)" ]; then
  if [ "$(id -u)" != 0 ]; then
    log "the apt package lists have no 'prometheus' and refreshing them (apt-get update) needs root"
    exit 1
  fi
  log "apt-get update (the package lists have no 'prometheus')"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || { log "apt-get update failed"; exit 1; }
  VERSION=$(candidate || true)
fi
if [ -z "$VERSION" ] || [ "$VERSION" = "(none)" ]; then
  log "no 'prometheus' package in this machine's apt sources"
  exit 1
fi

DEST="$CACHE/prometheus-$VERSION"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"
log "downloading Debian's prometheus $VERSION (about 19 MB, once) into $DEST"
(cd "$TMP" && apt-get -o APT::Sandbox::User=root download -qq "prometheus=$VERSION" >&2) || { log "apt-get download prometheus=$VERSION failed"; exit 1; }
mkdir -p "$TMP/root"
dpkg-deb -x "$TMP"/prometheus_*.deb "$TMP/root"
for b in prometheus promtool; do
  [ -x "$TMP/root/usr/bin/$b" ] || { log "the package has no /usr/bin/$b"; exit 1; }
done
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial/usr/bin"
cp "$TMP/root/usr/bin/prometheus" "$TMP/root/usr/bin/promtool" "$DEST.partial/usr/bin/"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
"$DEST/usr/bin/promtool" --version >&2
echo "$DEST/usr/bin"
