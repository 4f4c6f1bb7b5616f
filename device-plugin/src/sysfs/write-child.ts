// The process that performs sysfs writes for the agent (started by IsolatedSysfsWriter). A sysfs
// write can block in the kernel for as long as another party holds the device (unbinding a vfio
// device a VMM has open waits until the VMM lets go); doing it here keeps the agent's own event
// loop and thread pool free, and a write that never returns costs one abandoned process, not the
// agent. Protocol over the IPC channel: {id, file, value} in; {id} or {id, code, message} out.
import { closeSync, constants, openSync, writeSync } from 'node:fs';

interface Request { id: number; file: string; value: string }

process.on('message', (m: Request) => {
  let fd: number | undefined;
  try {
    // Write-only without O_CREAT: a missing attribute is ENOENT, never a new file.
    fd = openSync(m.file, constants.O_WRONLY | constants.O_TRUNC);
    writeSync(fd, m.value);
    process.send?.({ id: m.id });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    process.send?.({ id: m.id, code: e.code ?? 'EIO', message: e.message });
  } finally {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* nothing to do */
      }
    }
  }
});
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: true }); // the parent starts a write's clock only once we can take it
