// The isolated writer against writes that really block. Opening a FIFO for writing blocks in
// open(2) until a reader opens it, and writing to a FIFO whose pipe is full blocks in write(2)
// until the reader reads: both stand for the kernel holding a sysfs write (unbinding a vfio device
// a VMM holds open). Helper processes are counted in /proc, as the agent's container would see them.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyCarving } from '../carving/apply.js';
import { IsolatedSysfsWriter, type StuckWrite } from './isolated-writer.js';

/** Live (not zombie) child processes of this process that run the write helper. */
function helperChildren(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) !== process.pid || state === 'Z') continue;
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('write-child')) out.push(Number(p));
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('IsolatedSysfsWriter', () => {
  let root: string;
  let writer: IsolatedSysfsWriter;
  const unstuck: { w: StuckWrite; error?: string }[] = [];
  const fds: number[] = [];
  const dev = (bdf: string): string => `bus/pci/devices/${bdf}`;

  /** A device folder with a FIFO `unbind` (blocks a writer) and a plain `driver_override`. */
  function device(bdf: string): void {
    mkdirSync(join(root, dev(bdf)), { recursive: true });
    writeFileSync(join(root, dev(bdf), 'driver_override'), '');
    execFileSync('mkfifo', [join(root, dev(bdf), 'unbind')]);
  }

  function make(opts: Partial<ConstructorParameters<typeof IsolatedSysfsWriter>[0]> = {}): IsolatedSysfsWriter {
    writer.close();
    writer = new IsolatedSysfsWriter({ root, timeoutMs: 500, onUnstuck: (w, error) => unstuck.push({ w, ...(error ? { error } : {}) }), ...opts });
    return writer;
  }

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'vio-iw-'));
    for (const d of ['0000:01:00.0', '0000:02:00.0', '0000:03:00.0', '0000:04:00.0']) device(d);
    unstuck.length = 0;
    writer = new IsolatedSysfsWriter({ root, timeoutMs: 500, onUnstuck: (w, error) => unstuck.push({ w, ...(error ? { error } : {}) }) });
  });

  afterEach(async () => {
    writer.close();
    for (const fd of fds.splice(0)) closeSync(fd);
    rmSync(root, { recursive: true, force: true });
    await until(() => helperChildren().length === 0); // close() killed them; nothing is left behind
  });

  test('a write blocked in open(2) times out, its device is stuck, other devices proceed, and it is noticed when it returns', async () => {
    const blocked = `${dev('0000:01:00.0')}/unbind`;
    await expect(writer.write(blocked, '0000:01:00.0', { lane: '0000:01:00.0' })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(writer.stuck()).toStrictEqual([expect.objectContaining({ lane: '0000:01:00.0', path: blocked, value: '0000:01:00.0' })]);
    // The same device is refused at once, naming the pending write.
    await expect(writer.write(blocked, 'again', { lane: '0000:01:00.0' })).rejects.toMatchObject({ code: 'ESTUCK', message: expect.stringContaining('has not returned') });
    // Another device is written right away, by the same helper.
    await writer.write(`${dev('0000:02:00.0')}/driver_override`, 'vfio-pci', { lane: '0000:02:00.0' });
    expect(readFileSync(join(root, dev('0000:02:00.0'), 'driver_override'), 'utf8')).toBe('vfio-pci');
    expect(helperChildren()).toHaveLength(1);
    // The "VMM" lets go: the blocked write completes and the device is no longer stuck.
    fds.push(openSync(join(root, blocked), constants.O_RDONLY | constants.O_NONBLOCK));
    await until(() => unstuck.length > 0);
    expect(unstuck).toStrictEqual([{ w: expect.objectContaining({ lane: '0000:01:00.0' }) }]);
    expect(writer.stuck()).toStrictEqual([]);
    await writer.write(blocked, 'again', { lane: '0000:01:00.0' });
  });

  test('a write blocked in write(2) (a pipe whose reader does not read) is stuck the same way and returns once the reader drains it', async () => {
    const fifo = join(root, dev('0000:01:00.0'), 'unbind');
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    fds.push(reader, filler);
    const chunk = Buffer.alloc(4096, 'x');
    for (;;) {
      try {
        writeSync(filler, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
        throw err;
      }
    }
    await expect(writer.write(`${dev('0000:01:00.0')}/unbind`, '0000:01:00.0', { lane: 'pf' })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    await expect(writer.write(`${dev('0000:01:00.0')}/driver_override`, 'x', { lane: 'pf' })).rejects.toMatchObject({ code: 'ESTUCK' });
    await writer.write(`${dev('0000:02:00.0')}/driver_override`, 'vfio-pci', { lane: 'other' });
    expect(writer.stuck().map((s) => s.lane)).toStrictEqual(['pf']);
    const buf = Buffer.alloc(65536);
    const drain = (): void => {
      try {
        while (readSync(reader, buf) > 0);
      } catch {
        /* EAGAIN: empty */
      }
    };
    await until(() => {
      drain();
      return unstuck.length > 0;
    });
    expect(unstuck).toStrictEqual([{ w: expect.objectContaining({ lane: 'pf', value: '0000:01:00.0' }) }]);
  });

  test('at most maxStuck writes are outstanding: past it, other devices are refused at once and no process is added', async () => {
    make({ maxStuck: 3 });
    for (const d of ['0000:01:00.0', '0000:02:00.0', '0000:03:00.0']) {
      await expect(writer.write(`${dev(d)}/unbind`, d, { lane: d })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    }
    expect(writer.stuck().map((s) => s.lane)).toStrictEqual(['0000:01:00.0', '0000:02:00.0', '0000:03:00.0']);
    // A fresh device: refused at once with a clear reason, nothing started for it.
    await expect(writer.write(`${dev('0000:04:00.0')}/driver_override`, 'vfio-pci', { lane: '0000:04:00.0' })).rejects.toMatchObject({
      code: 'EAGAIN',
      message: expect.stringMatching(/3 sysfs writes are stuck.*0000:01:00\.0, 0000:02:00\.0, 0000:03:00\.0.*until one of them returns/),
    });
    await expect(writer.write(`${dev('0000:02:00.0')}/driver_override`, 'x', { lane: '0000:02:00.0' })).rejects.toMatchObject({ code: 'ESTUCK' });
    // Three stuck writes, one helper process.
    expect(helperChildren()).toHaveLength(1);
    expect(writer.helperPids()).toStrictEqual(helperChildren());
    expect(readFileSync(join(root, dev('0000:04:00.0'), 'driver_override'), 'utf8')).toBe('');
    // One returns: a slot is free again.
    fds.push(openSync(join(root, dev('0000:02:00.0'), 'unbind'), constants.O_RDONLY | constants.O_NONBLOCK));
    await until(() => unstuck.length === 1);
    await writer.write(`${dev('0000:04:00.0')}/driver_override`, 'vfio-pci', { lane: '0000:04:00.0' });
    expect(readFileSync(join(root, dev('0000:04:00.0'), 'driver_override'), 'utf8')).toBe('vfio-pci');
    expect(helperChildren()).toHaveLength(1);
  });

  test('one write per device at a time: a second write for a busy device waits its turn; other devices run alongside', async () => {
    const lane = '0000:02:00.0';
    const file = `${dev(lane)}/driver_override`;
    await Promise.all([writer.write(file, 'a', { lane }), writer.write(file, 'bb', { lane }), writer.write(`${dev('0000:03:00.0')}/driver_override`, 'c', { lane: '0000:03:00.0' })]);
    expect(readFileSync(join(root, file), 'utf8')).toBe('bb');
    // A write queued behind one that gets stuck fails as stuck, without being issued.
    const first = writer.write(`${dev('0000:01:00.0')}/unbind`, 'x', { lane: 'pf' });
    const second = writer.write(`${dev('0000:01:00.0')}/driver_override`, 'y', { lane: 'pf' });
    await expect(first).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    await expect(second).rejects.toMatchObject({ code: 'ESTUCK' });
    expect(readFileSync(join(root, dev('0000:01:00.0'), 'driver_override'), 'utf8')).toBe('');
  });

  test('kernel refusals carry their errno; a missing attribute is ENOENT, never a new file', async () => {
    await expect(writer.write(`${dev('0000:02:00.0')}/sriov_numvfs`, '4')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(writer.write('../../etc/passwd', 'x')).rejects.toThrow(/escapes the root/);
  });

  test('close() returns at once with writes blocked in the kernel, rejects what is pending, and leaves no helper behind', async () => {
    await expect(writer.write(`${dev('0000:01:00.0')}/unbind`, 'x', { lane: 'a' })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const pending = writer.write(`${dev('0000:02:00.0')}/unbind`, 'x', { lane: 'b' });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    writer.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(pending).rejects.toMatchObject({ code: 'ECANCELED' });
    await expect(writer.write(`${dev('0000:03:00.0')}/driver_override`, 'x')).rejects.toMatchObject({ code: 'ECANCELED' });
    await until(() => helperChildren().length === 0);
  });

  test('a helper that does not start in time is killed and the write fails with the reason', async () => {
    make({ startTimeoutMs: 1 });
    await expect(writer.write(`${dev('0000:02:00.0')}/driver_override`, 'x')).rejects.toMatchObject({ code: 'EIO', message: expect.stringContaining('did not start within 1 ms') });
    await until(() => helperChildren().length === 0);
  });

  test('a helper that dies is replaced at the next write; its stuck writes end with it', async () => {
    await expect(writer.write(`${dev('0000:01:00.0')}/unbind`, 'x', { lane: 'pf' })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const [pid] = writer.helperPids();
    process.kill(pid as number, 'SIGKILL');
    await until(() => unstuck.length === 1);
    expect(unstuck[0]).toMatchObject({ w: { lane: 'pf' }, error: expect.stringContaining('helper exited (SIGKILL) before the write returned') });
    expect(writer.stuck()).toStrictEqual([]);
    await writer.write(`${dev('0000:01:00.0')}/driver_override`, 'vfio-pci', { lane: 'pf' });
    expect(writer.helperPids()).not.toContain(pid);
    expect(helperChildren()).toHaveLength(1);
  });

  test('an idle helper exits by itself and a later write starts another', async () => {
    make({ idleMs: 50 });
    await writer.write(`${dev('0000:02:00.0')}/driver_override`, 'a');
    await until(() => helperChildren().length === 0 && writer.helperPids().length === 0);
    await writer.write(`${dev('0000:02:00.0')}/driver_override`, 'b');
    expect(readFileSync(join(root, dev('0000:02:00.0'), 'driver_override'), 'utf8')).toBe('b');
  });

  test('applyCarving with a stuck device: results carry the errors, nothing throws, the event loop keeps running', async () => {
    const ticks = { n: 0 };
    const tick = setInterval(() => ticks.n++, 10);
    try {
      const plan = {
        writes: [
          { path: `${dev('0000:01:00.0')}/unbind`, value: '0000:01:00.0', why: 'unbind', group: '0000:01:00.0' },
          { path: `${dev('0000:01:00.0')}/driver_override`, value: 'vfio-pci', why: 'override', group: '0000:01:00.0' },
          { path: `${dev('0000:02:00.0')}/driver_override`, value: 'vfio-pci', why: 'override', group: '0000:02:00.0' },
        ],
        blocked: [],
      };
      const first = await applyCarving(plan, writer);
      expect(first.map((r) => (r.ok ? 'ok' : (r.code ?? (r.skipped ? 'skipped' : '?'))))).toStrictEqual(['ETIMEDOUT', 'skipped', 'ok']);
      expect(ticks.n).toBeGreaterThan(5); // the loop ran while the write was blocked
      const again = await applyCarving(plan, writer);
      expect(again.map((r) => (r.ok ? 'ok' : (r.code ?? (r.skipped ? 'skipped' : '?'))))).toStrictEqual(['ESTUCK', 'skipped', 'ok']);
    } finally {
      clearInterval(tick);
    }
  });
});
