#!/bin/busybox sh
# /init of the harness's initramfs: mount the host's / read-only over 9p (tag "hostroot"), put a tmpfs
# overlay on it, mount the shared results folder (tag "results") read-write, and switch_root into the
# overlay running the stage-2 script named by vio.stage2= on the kernel command line.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "/modules/$m" || echo "initramfs: insmod $m failed"; done < /modules/order
stage2=
for a in $(cat /proc/cmdline); do
  case "$a" in vio.stage2=*) stage2=${a#vio.stage2=} ;; esac
done
fail() { echo "initramfs: $*"; echo o > /proc/sysrq-trigger; sleep 10; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower || fail "9p mount of the host root failed"
mount -t tmpfs -o size=512m tmpfs /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail "overlay mount failed"
mkdir -p /newroot/vio-results
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 results /newroot/vio-results || fail "9p mount of the results folder failed"
[ -n "$stage2" ] || fail "no vio.stage2= on the kernel command line"
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /bin/sh "$stage2"
