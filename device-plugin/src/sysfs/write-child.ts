// The one long-lived process that performs sysfs writes for the agent (started by
// IsolatedSysfsWriter). A sysfs write can block in the kernel for as long as another party holds
// the device (unbinding a vfio device a VMM has open waits until the VMM lets go). Each write runs
// on a thread of this process's libuv pool (the parent sizes it with UV_THREADPOOL_SIZE to the
// number of writes it keeps outstanding), so a write that never returns costs one parked thread,
// while this process's event loop stays free to take writes for other devices and to answer.
//
// Protocol over the IPC channel (JSON): out {ready: true} once; in {id, file, value}; out
// {ack: id} at once (the parent's proof that this process is alive), then {id} or
// {id, code, message} when the kernel returned.
import { close, constants, open, write } from 'node:fs';

interface Request { id: number; file: string; value: string }

let inFlight = 0;

function reply(m: object): void {
  if (process.connected) process.send?.(m);
}

function done(id: number, err: NodeJS.ErrnoException | null | undefined): void {
  inFlight--;
  reply(err ? { id, code: err.code ?? 'EIO', message: err.message } : { id });
}

process.on('message', (m: Request) => {
  reply({ ack: m.id });
  inFlight++;
  // Write-only without O_CREAT: a missing attribute is ENOENT, never a new file. One write(2) of
  // the whole value, as `echo -n value > file` does.
  open(m.file, constants.O_WRONLY | constants.O_TRUNC, (openErr, fd) => {
    if (openErr) return done(m.id, openErr);
    const buf = Buffer.from(m.value);
    write(fd, buf, 0, buf.length, null, (writeErr) => {
      close(fd, (closeErr) => done(m.id, writeErr ?? closeErr));
    });
  });
});

// The agent closed the channel (idle, shutdown, or it died). With no write in the kernel, exit
// normally. With one, exit() would hang: libuv joins its pool threads at exit and one of them is
// blocked in the kernel. SIGKILL ends every other thread at once; a thread in uninterruptible sleep
// (D state) still keeps this process around until the kernel lets it go (see isolated-writer.ts).
process.on('disconnect', () => {
  if (inFlight === 0) process.exit(0);
  process.kill(process.pid, 'SIGKILL');
});
reply({ ready: true }); // the parent starts a write's clock only once we can take it
