#!/usr/bin/env bash
# Installs what the real-kernel harness needs, idempotently, and prints the cache folder's variables
# (KEY=VALUE lines) on stdout. Everything large lives under ~/.cache/virtualio/kernel (never in the repo):
#   - host tools from Debian: qemu-system-x86 (≥ 8, from bookworm-backports: bookworm's own 7.2 has no
#     igb), busybox-static, kmod, nvme-cli, cpio, zstd, and a C toolchain for out-of-tree modules;
#   - Debian's newest linux-image-6.12.*+deb12-amd64-unsigned with its headers, kbuild and source,
#     unpacked with dpkg-deb -x (nothing is installed into /boot or /lib/modules);
#   - the kernel's vfio-mdev sample drivers (mtty, mdpy, mbochs) built against those headers;
#   - a small initramfs (static busybox + the 9p/overlay modules) that boots into the host's own root.
# Exit status 2 means "cannot run here" (not root and nothing cached); the reason is on stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${VIO_KERNEL_CACHE:-$HOME/.cache/virtualio/kernel}
mkdir -p "$CACHE"
log() { echo "[kernel-setup] $*" >&2; }
cannot() { echo "[kernel-setup] cannot run: $*" >&2; exit 2; }

# Serialise concurrent setups (a developer's run.sh and a jest run at once).
exec 9>"$CACHE/.setup.lock"
flock 9

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n '1s/.*version \([0-9]*\)\..*/\1/p')
  [ -n "$v" ] && [ "$v" -ge 8 ]
}
tools_ok() {
  # No `| head`/`grep -q` on a producer here: under pipefail its SIGPIPE would fail the check at random.
  local bb; bb=$(/bin/busybox --help 2>&1 || true)
  qemu_ok && [ -x /bin/busybox ] && [[ $bb == *BusyBox* ]] \
    && command -v nvme >/dev/null && command -v cpio >/dev/null && command -v zstd >/dev/null \
    && command -v depmod >/dev/null && command -v gcc >/dev/null && command -v make >/dev/null \
    && ! ldd /bin/busybox >/dev/null 2>&1
}

apt_ready=0
apt_prepare() {
  [ "$apt_ready" = 1 ] && return 0
  [ "$(id -u)" = 0 ] || cannot "not root: cannot apt-get install the harness's packages"
  local src=/etc/apt/sources.list.d/virtualio-bookworm-backports.sources
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to apt's sources ($src)"
    cat > "$src" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  log "apt-get update"
  apt-get update -qq >&2 || log "apt-get update reported errors (continuing with what it fetched)"
  apt_ready=1
}

if ! tools_ok; then
  apt_prepare
  log "installing host tools"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    busybox-static kmod nvme-cli cpio zstd gcc make libc6-dev xz-utils >&2
  if ! qemu_ok; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports qemu-system-x86 >&2
  fi
  tools_ok || cannot "host tools still missing after apt-get install"
fi

# --- the guest kernel ---------------------------------------------------------------------------
# Newest cached kernel first (no apt needed on warm runs); VIO_KERNEL_REFRESH=1 resolves again.
KV=""
if [ "${VIO_KERNEL_REFRESH:-0}" != 1 ]; then
  KV=$(find "$CACHE" -mindepth 2 -maxdepth 2 -name .unpacked -printf '%h\n' 2>/dev/null | xargs -r -n1 basename | sort -V | tail -1)
fi
if [ -z "$KV" ]; then
  apt_prepare
  pkg=$(apt-cache pkgnames linux-image-6.12 | grep -E '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$' | sort -V | tail -1)
  [ -n "$pkg" ] || cannot "no linux-image-6.12.*+deb12-amd64-unsigned in apt's lists"
  KV=${pkg#linux-image-}; KV=${KV%-unsigned}            # 6.12.117+deb12-amd64
fi
KDIR=$CACHE/$KV
ROOT=$KDIR/root
if [ ! -f "$KDIR/.unpacked" ]; then
  apt_prepare
  base=${KV%-amd64}                                     # 6.12.117+deb12
  mkdir -p "$KDIR/debs" "$ROOT" && chmod 755 "$KDIR/debs"
  log "downloading Debian's kernel $KV"
  (cd "$KDIR/debs" && apt-get download -qq "linux-image-$KV-unsigned" "linux-headers-$KV" \
     "linux-headers-$base-common" "linux-kbuild-$base" >&2)
  src_ver=$(apt-cache show "linux-image-$KV-unsigned" | sed -n 's/^Version: //p' | head -1)
  (cd "$KDIR/debs" && apt-get download -qq "linux-source-6.12=$src_ver" >&2)
  for d in "$KDIR"/debs/*.deb; do log "unpacking $(basename "$d")"; dpkg-deb -x "$d" "$ROOT"; done
  depmod -b "$ROOT" "$KV"
  rm -rf "$KDIR/debs"
  touch "$KDIR/.unpacked"
fi
VMLINUZ=$ROOT/boot/vmlinuz-$KV
MODDIR=$ROOT/lib/modules/$KV
[ -f "$VMLINUZ" ] || cannot "$VMLINUZ missing (remove $KDIR and run again)"

# --- mdev sample drivers, built out of tree against Debian's headers ------------------------------
MDEV=$KDIR/mdev-samples
if [ ! -f "$MDEV/.built" ]; then
  log "building the vfio-mdev sample drivers"
  rm -rf "$MDEV" && mkdir -p "$MDEV/src"
  tarball=$(find "$ROOT/usr/src" -maxdepth 1 -name 'linux-source-6.12.tar.*' | head -1)
  [ -n "$tarball" ] || cannot "linux-source tarball missing under $ROOT/usr/src"
  tar -xf "$tarball" -C "$MDEV/src" --strip-components=3 --wildcards '*/samples/vfio-mdev/*.[ch]'
  printf 'obj-m := mtty.o mdpy.o mbochs.o\n' > "$MDEV/src/Kbuild"
  # The headers' Makefile includes the -common tree by its absolute /usr/src path: point it at ours.
  hdr=$ROOT/usr/src/linux-headers-$KV
  sed -i "s#^include /usr/src/#include $ROOT/usr/src/#" "$hdr/Makefile"
  # scripts/ and tools/ are symlinks into /usr/lib/linux-kbuild-*: make them point into the cache.
  for l in "$hdr"/scripts "$hdr"/tools "$ROOT/usr/src/linux-headers-${KV%-amd64}-common/scripts" "$ROOT/usr/src/linux-headers-${KV%-amd64}-common/tools"; do
    if [ -L "$l" ]; then
      t=$(readlink "$l")
      case "$t" in /*) ln -sfn "$ROOT$t" "$l" ;; esac
    fi
  done
  make -s -C "$hdr" M="$MDEV/src" CONFIG_DEBUG_INFO_BTF_MODULES= modules >&2
  cp "$MDEV"/src/*.ko "$MDEV/"
  touch "$MDEV/.built"
fi

# --- initramfs: busybox + 9p/overlay modules, /init from this folder --------------------------------
INITRD=$KDIR/initramfs.cpio.gz
stamp=$(sha256sum "$HERE/initramfs-init.sh" "$HERE/setup.sh" /bin/busybox | sha256sum | cut -c1-16)
if [ ! -f "$INITRD" ] || [ "$(cat "$KDIR/.initramfs-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "building the initramfs"
  w=$(mktemp -d)
  mkdir -p "$w"/{bin,dev,proc,sys,lower,upper,newroot,modules}
  cp /bin/busybox "$w/bin/busybox"
  for m in 9p 9pnet_virtio overlay; do
    # the module and everything it depends on, in load order
    modprobe -d "$ROOT" -S "$KV" --show-depends "$m" | awk '$1=="insmod"{print $2}' | while read -r ko; do
      name=$(basename "$ko")
      [ -f "$w/modules/$name" ] && continue
      case "$ko" in
        *.zst) zstd -q -d -c "$ko" > "$w/modules/${name%.zst}" ;;
        *.xz) xz -d -c "$ko" > "$w/modules/${name%.xz}" ;;
        *) cp "$ko" "$w/modules/$name" ;;
      esac
      plain=${name%.zst}; plain=${plain%.xz}
      echo "$plain" >> "$w/modules/order"
    done
  done
  cp "$HERE/initramfs-init.sh" "$w/init"; chmod +x "$w/init"
  (cd "$w" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; echo "$stamp" > "$KDIR/.initramfs-stamp"
  rm -rf "$w"
fi

echo "VIO_KERNEL_VERSION=$KV"
echo "VIO_KERNEL_ROOT=$ROOT"
echo "VIO_KERNEL_VMLINUZ=$VMLINUZ"
echo "VIO_KERNEL_MODULES=$MODDIR"
echo "VIO_KERNEL_INITRD=$INITRD"
echo "VIO_KERNEL_MDEV_SAMPLES=$MDEV"
echo "VIO_KERNEL_QEMU=$(command -v qemu-system-x86_64)"
