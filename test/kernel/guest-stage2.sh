#!/bin/sh
# Stage 2 inside the guest (PID 1 after switch_root): the host's / read-only with a tmpfs overlay,
# the results folder at /vio-results. Mounts the usual filesystems, puts the cached kernel's modules
# at /lib/modules, runs the scenario, records its exit status, and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
. /vio-results/guest.env
# A fresh /tmp, unless the project or the caches live under the host's /tmp (a clone in /tmp): a
# tmpfs there would hide them. The overlay keeps /tmp writable either way.
case "$VIO_PROJECT:$VIO_NODE_BIN:$VIO_KERNEL_ROOT" in
  /tmp/*|*:/tmp/*) echo "[guest] the project or a cache is under /tmp: keeping the host's /tmp (overlaid)" ;;
  *) mount -t tmpfs tmpfs /tmp ;;
esac
mount -t tmpfs tmpfs /run
mkdir -p /lib/modules && mount --bind "$VIO_KERNEL_ROOT/lib/modules" /lib/modules || echo "[guest] cannot bind the kernel modules"
export VIO_KERNEL_VERSION VIO_KERNEL_MDEV_SAMPLES VIO_PROJECT VIO_NODE_BIN VIO_ACCEL VIO_KERNEL_DRA
export VIO_RESULTS=/vio-results HOME=/root PATH="$VIO_NODE_BIN:$PATH"
echo "[guest] up after $(cut -d' ' -f1 /proc/uptime) s; kernel $(uname -r)"
cd "$VIO_PROJECT"
( sh "$VIO_SCENARIO"; echo $? > /tmp/rc ) 2>&1 | tee /vio-results/scenario.log
cp /tmp/rc /vio-results/rc 2>/dev/null || echo 99 > /vio-results/rc
echo "[guest] scenario exit $(cat /vio-results/rc) at $(cut -d' ' -f1 /proc/uptime) s"
sync
echo o > /proc/sysrq-trigger
sleep 30
