#!/bin/sh
# Stage 2 inside the guest (PID 1 after switch_root): the host's / read-only with a tmpfs overlay,
# the results folder at /vio-results, run.sh's persistent disk (ext4 on virtio-blk) at /vio-disk.
# Mounts the usual filesystems, puts the cached kernel's modules at /lib/modules, runs the scenario,
# records its exit status, and powers off.
# One reboot on request: a scenario that writes the path of a script into $VIO_DISK/reboot-requested
# gets the guest rebooted (reboot(2), as `reboot -f`: the kernel's runtime state goes, the disk stays)
# once it has ended; this script then runs that script on the next boot, appending to scenario.log,
# and the exit status recorded is the first nonzero of the two. Any other reboot (a panic: panic=-1)
# powers off at once with status 97.
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
VIO_DISK=/vio-disk
mkdir -p "$VIO_DISK"
modprobe virtio_blk && modprobe ext4 || echo "[guest] cannot load virtio_blk/ext4"
i=0; while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 /dev/vda "$VIO_DISK" || echo "[guest] no persistent disk at /dev/vda"
boot=$(( $(cat "$VIO_DISK/boots" 2>/dev/null || echo 0) + 1 ))
echo "$boot" > "$VIO_DISK/boots"
export VIO_KERNEL_VERSION VIO_KERNEL_MDEV_SAMPLES VIO_PROJECT VIO_NODE_BIN VIO_ACCEL VIO_KERNEL_DRA VIO_DISK VIO_KERNEL_TIMEOUT
export VIO_RESULTS=/vio-results HOME=/root PATH="$VIO_NODE_BIN:$PATH"
echo "[guest] up after $(cut -d' ' -f1 /proc/uptime) s (boot $boot); kernel $(uname -r), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
cd "$VIO_PROJECT"
if [ -f "$VIO_DISK/reboot-requested" ]; then
  after=$(cat "$VIO_DISK/reboot-requested")
  mv "$VIO_DISK/reboot-requested" "$VIO_DISK/rebooted"
  echo "[guest] rebooted as the scenario asked: running $after"
  ( sh "$after"; echo $? > /tmp/rc ) 2>&1 | tee -a /vio-results/scenario.log
  before=$(cat "$VIO_DISK/rc-before-reboot" 2>/dev/null || echo 99)
  [ "$before" = 0 ] || cp "$VIO_DISK/rc-before-reboot" /tmp/rc 2>/dev/null || echo 99 > /tmp/rc
elif [ "$boot" -gt 1 ]; then
  # A boot of this run that finished (run.sh removes rc before it starts QEMU) keeps its status.
  echo "[guest] an unexpected reboot (boot $boot, none asked for): powering off"
  cp /vio-results/rc /tmp/rc 2>/dev/null || echo 97 > /tmp/rc
else
  ( sh "$VIO_SCENARIO"; echo $? > /tmp/rc ) 2>&1 | tee /vio-results/scenario.log
  if [ -f "$VIO_DISK/reboot-requested" ]; then
    cp /tmp/rc "$VIO_DISK/rc-before-reboot"
    echo "[guest] scenario exit $(cat /tmp/rc) at $(cut -d' ' -f1 /proc/uptime) s; rebooting as it asked"
    sync
    umount "$VIO_DISK"
    busybox reboot -f
    sleep 30
  fi
fi
cp /tmp/rc /vio-results/rc 2>/dev/null || echo 99 > /vio-results/rc
echo "[guest] scenario exit $(cat /vio-results/rc) at $(cut -d' ' -f1 /proc/uptime) s"
sync
# Power off through reboot(2) at once (busybox is exec'd before anything shuts down; `sleep` after a sysrq power-off can
# fail to load from 9p, and PID 1 exiting panics, which reboots now that the guest may reboot).
busybox poweroff -f
echo o > /proc/sysrq-trigger
while :; do :; done
