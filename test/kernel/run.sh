#!/usr/bin/env bash
# The real-kernel harness, one command: boots Debian's kernel in QEMU (emulated Intel IOMMU, igb and
# NVMe with SR-IOV, a VGA + audio function pair in one slot, no network unless asked), runs a scenario script
# inside the guest with the host's / mounted read-only (plus a tmpfs overlay) so the guest runs this
# checkout's own code with the host's Node, QEMU and nvme-cli, powers off, and leaves the results in
# a shared folder. The guest also has a persistent disk (ext4, /vio-disk) and may reboot once when its
# scenario asks (guest-stage2.sh): QEMU restarts the machine, the disk and the results folder stay.
#
#   bash test/kernel/run.sh <scenario.sh> [results-dir]
#
# Results folder: console.log (serial console), scenario.log (the script's output), rc (its exit
# status), anything the scenario writes to $VIO_RESULTS (mounted at /vio-results in the guest), and
# timing.json. Exit status: the scenario's; 2 when the guest cannot run here (reason on stderr);
# 3 when the guest died or timed out before the scenario finished.
# Environment: VIO_KERNEL_ACCEL=kvm|tcg forces an accelerator (default: KVM if a probe boot works,
# else TCG; the probe's verdict is cached), VIO_KERNEL_TIMEOUT (seconds, default 600),
# VIO_KERNEL_MEM (MiB, default 2048), VIO_KERNEL_APISERVER_PORT_FILE (a file that holds, or will hold,
# the loopback port of a kube-apiserver on this machine: the guest then gets one more NIC, virtio-net
# at 00:06.0 on QEMU's user network with restrict=on, where 10.0.2.100:6443 reaches that port through
# tcp-relay.mjs and nothing else is reachable; without it the guest has no network).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PROJECT=$(cd "$HERE/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 <scenario.sh> [results-dir]" >&2; exit 64; }
SCENARIO=$(realpath "$1")
[ -f "$SCENARIO" ] || { echo "scenario $1 not found" >&2; exit 64; }
RESULTS=${2:-$(mktemp -d /tmp/vio-kernel.XXXXXX)}
mkdir -p "$RESULTS"; RESULTS=$(realpath "$RESULTS")
CACHE=${VIO_KERNEL_CACHE:-$HOME/.cache/virtualio/kernel}
t_start=$(date +%s.%N)
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

set +e
envout=$(bash "$HERE/setup.sh")
rc=$?
set -e
[ $rc -eq 0 ] || exit $rc
eval "$envout"
t_setup=$(date +%s.%N)

# Node 24 for the guest: the same one scripts/env.sh puts on the host's PATH.
# shellcheck source=../../scripts/env.sh
source "$PROJECT/scripts/env.sh" >/dev/null
NODE_BIN=$(dirname "$(command -v node)")

base_args() { # the machine, without devices (a guest reboot restarts it: the probe adds -no-reboot)
  echo -machine q35,kernel-irqchip=split -m "${VIO_KERNEL_MEM:-2048}" -smp 2 \
    -kernel "$VIO_KERNEL_VMLINUZ" -initrd "$VIO_KERNEL_INITRD" \
    -display none -monitor none -serial stdio -nodefaults \
    -virtfs "local,path=/,mount_tag=hostroot,readonly=on,security_model=none,multidevs=remap,id=hostroot"
}
accel_args() {
  if [ "$1" = kvm ]; then echo -accel kvm -cpu host; else echo -accel tcg,thread=multi -cpu max; fi
}

# KVM only where it really works: boot the guest once with a stage 2 that just powers off.
probe_kvm() {
  local marker=$CACHE/$VIO_KERNEL_VERSION/.accel
  if [ -f "$marker" ]; then cat "$marker"; return; fi
  local verdict=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    local d; d=$(mktemp -d)
    printf '#!/bin/sh\necho VIO-KVM-PROBE-OK\necho o > /proc/sysrq-trigger\n' > "$d/probe.sh"
    mkdir -p "$d/results"
    # shellcheck disable=SC2046
    if timeout 30 qemu-system-x86_64 $(base_args) -no-reboot $(accel_args kvm) \
        -virtfs "local,path=$d/results,mount_tag=results,security_model=none,id=results" \
        -append "console=ttyS0 panic=-1 quiet vio.stage2=$d/probe.sh" </dev/null 2>&1 | grep -q VIO-KVM-PROBE-OK; then
      verdict=kvm
    fi
    rm -rf "$d"
  fi
  echo "$verdict" > "$marker"
  echo "$verdict"
}
ACCEL=${VIO_KERNEL_ACCEL:-$(probe_kvm)}
if [ "$ACCEL" = tcg ]; then echo "[kernel] accelerator: TCG (software emulation; KVM absent or failed a probe boot)" >&2
else echo "[kernel] accelerator: KVM" >&2; fi

# The NVMe namespace's backing file: 64 MiB, a known marker in its first block.
NVME_IMG=$RESULTS/nvme-ns1.img
if [ ! -f "$NVME_IMG" ]; then
  truncate -s 64M "$NVME_IMG"
  printf 'VIRTUALIO-NVME-NAMESPACE-MARKER\n' | dd of="$NVME_IMG" conv=notrunc status=none
fi

# The persistent disk: ext4 on a raw image, made here per run (mke2fs needs no root for a file). The
# guest mounts it at /vio-disk ($VIO_DISK); a scenario that keeps state there and asks for a reboot
# finds it again after the reboot (guest-stage2.sh).
PERSIST_IMG=$RESULTS/persist.img
MKFS=$(PATH="$PATH:/usr/sbin:/sbin" command -v mkfs.ext4 || true)
[ -n "$MKFS" ] || { echo "mkfs.ext4 not found (e2fsprogs): the guest's persistent disk needs it" >&2; exit 2; }
rm -f "$PERSIST_IMG"
truncate -s 64M "$PERSIST_IMG"
"$MKFS" -q -F -L vio-persist "$PERSIST_IMG"

cat > "$RESULTS/guest.env" <<EOF
VIO_KERNEL_VERSION='$VIO_KERNEL_VERSION'
VIO_KERNEL_ROOT='$VIO_KERNEL_ROOT'
VIO_KERNEL_MDEV_SAMPLES='$VIO_KERNEL_MDEV_SAMPLES'
VIO_PROJECT='$PROJECT'
VIO_SCENARIO='/vio-results/scenario.sh'
VIO_NODE_BIN='$NODE_BIN'
VIO_ACCEL='$ACCEL'
VIO_KERNEL_DRA='$([ -n "${VIO_KERNEL_APISERVER_PORT_FILE:-}" ] && echo 1 || echo 0)'
VIO_KERNEL_TIMEOUT='${VIO_KERNEL_TIMEOUT:-600}'
EOF
rm -f "$RESULTS/rc"
cp "$SCENARIO" "$RESULTS/scenario.sh"   # the guest's /tmp is its own tmpfs: run a copy in the shared folder

DEVICES=(
  -device intel-iommu,intremap=on,caching-mode=on
  # igb (82576): SR-IOV NIC, 7 VFs with Linux's igb. No netdev: the guest has no network.
  -device pcie-root-port,id=rp1,chassis=1,addr=0x3
  -device igb,bus=rp1,romfile=
  # NVMe with SR-IOV and flexible resources (needs a subsystem); one namespace with a marker.
  -device pcie-root-port,id=rp2,chassis=2,addr=0x4
  -device nvme-subsys,id=nvmesubsys0,nqn=virtualio-test
  -device "nvme,id=nvme0,bus=rp2,serial=vio-nvme0,subsys=nvmesubsys0,sriov_max_vfs=4,sriov_vq_flexible=8,sriov_vi_flexible=4,sriov_max_vq_per_vf=4,max_ioqpairs=12,msix_qsize=10"
  -drive "file=$NVME_IMG,if=none,id=nvmens1,format=raw"
  -device nvme-ns,drive=nvmens1,nsid=1,shared=on
  # A GPU-class function with its companion: VGA at .0 and an HD-audio function at .1 of one slot
  # (no ACS between functions, so one IOMMU group, like a real GPU and its HDMI audio).
  -device pcie-root-port,id=rp3,chassis=3,addr=0x5
  -device VGA,bus=rp3,addr=0x0.0,multifunction=on
  -device ich9-intel-hda,bus=rp3,addr=0x0.1
  # The persistent disk, on the root bus after the root ports and the DRA scenario's NIC (00:06.0): no
  # new bus, so every other device keeps its address.
  -drive "file=$PERSIST_IMG,if=none,id=persist,format=raw"
  -device virtio-blk-pci,drive=persist,addr=0x7
)
if [ -n "${VIO_KERNEL_APISERVER_PORT_FILE:-}" ]; then
  case "$VIO_KERNEL_APISERVER_PORT_FILE$HERE$NODE_BIN" in
    *,*|*' '*) echo "VIO_KERNEL_APISERVER_PORT_FILE, the checkout and Node's folder must not contain commas or spaces (QEMU option syntax)" >&2; exit 64 ;;
  esac
  # The DRA scenario's way to a real kube-apiserver: a NIC on the root bus at a fixed slot after the
  # root ports (no new bus, so every other device keeps its address), restricted user networking (no
  # route off the machine), one forwarding rule; QEMU runs the relay per connection.
  DEVICES+=(
    -netdev "user,id=apinet,restrict=on,guestfwd=tcp:10.0.2.100:6443-cmd:$NODE_BIN/node $HERE/tcp-relay.mjs $VIO_KERNEL_APISERVER_PORT_FILE"
    -device virtio-net-pci,netdev=apinet,addr=0x6,romfile=
  )
fi

echo "[kernel] booting $VIO_KERNEL_VERSION, scenario $(basename "$SCENARIO"), results $RESULTS" >&2
t_boot=$(date +%s.%N)
set +e
# shellcheck disable=SC2046
timeout --kill-after=10 "${VIO_KERNEL_TIMEOUT:-600}" qemu-system-x86_64 $(base_args) $(accel_args "$ACCEL") \
  -virtfs "local,path=$RESULTS,mount_tag=results,security_model=none,id=results" \
  "${DEVICES[@]}" \
  -append "console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4 vio.stage2=$HERE/guest-stage2.sh" \
  </dev/null > "$RESULTS/console.log" 2>&1
qrc=$?
set -e
t_end=$(date +%s.%N)
cat > "$RESULTS/timing.json" <<EOF
{"setupSeconds": $(secs "$t_start" "$t_setup"), "guestSeconds": $(secs "$t_boot" "$t_end"), "accel": "$ACCEL", "kernel": "$VIO_KERNEL_VERSION", "qemuExit": $qrc}
EOF
echo "[kernel] guest ran $(secs "$t_boot" "$t_end") s (setup $(secs "$t_start" "$t_setup") s, qemu exit $qrc)" >&2
if [ ! -f "$RESULTS/rc" ]; then
  echo "[kernel] the guest stopped before the scenario finished (qemu exit $qrc); last console lines:" >&2
  tail -30 "$RESULTS/console.log" >&2
  exit 3
fi
[ "${VIO_KERNEL_KEEP:-0}" = 1 ] || rm -f "$NVME_IMG" "$PERSIST_IMG"   # 64 MiB (sparse) each; VIO_KERNEL_KEEP=1 keeps them
src=$(cat "$RESULTS/rc")
echo "[kernel] scenario exit $src; log $RESULTS/scenario.log" >&2
echo "$RESULTS"
exit "$src"
