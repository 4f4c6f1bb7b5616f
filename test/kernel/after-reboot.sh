#!/bin/sh
# Guest-side, on the boot after the reboot guest/reboot-scenario.ts asked for (guest-stage2.sh runs
# the script named in $VIO_DISK/reboot-requested): the node-reboot checks of issue 21.
cd "$VIO_PROJECT" || exit 2
echo "[after-reboot.sh] at $(cut -d' ' -f1 /proc/uptime) s"
exec node --import ./test/sysfs/ts-hooks.mjs test/kernel/guest/after-reboot.ts
