#!/bin/sh
# Guest-side scenario of the real-kernel suite: the unmodified agent against Debian's kernel.
# Run it with: bash test/kernel/run.sh test/kernel/agent.sh [results-dir]
# (run.sh copies it into the results folder and the guest runs it from the checkout's root).
cd "$VIO_PROJECT" || exit 2
exec node --import ./test/sysfs/ts-hooks.mjs test/kernel/guest/agent-scenarios.ts
