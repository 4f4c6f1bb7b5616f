// The isolated writer against writes that really block: opening a FIFO for writing blocks in the
// kernel until a reader opens it, as unbinding a vfio device a VMM holds open does.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IsolatedSysfsWriter, type StuckWrite } from './isolated-writer.js';

describe('IsolatedSysfsWriter', () => {
  let root: string;
  let writer: IsolatedSysfsWriter;
  const unstuck: { w: StuckWrite; error?: string }[] = [];

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'vio-iw-'));
    mkdirSync(join(root, 'bus/pci/devices/0000:01:00.0'), { recursive: true });
    mkdirSync(join(root, 'bus/pci/devices/0000:02:00.0'), { recursive: true });
    writeFileSync(join(root, 'bus/pci/devices/0000:02:00.0/driver_override'), '');
    execFileSync('mkfifo', [join(root, 'bus/pci/devices/0000:01:00.0/unbind')]);
    unstuck.length = 0;
    writer = new IsolatedSysfsWriter({ root, timeoutMs: 300, onUnstuck: (w, error) => unstuck.push({ w, ...(error ? { error } : {}) }) });
  });

  afterEach(() => {
    writer.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('a write that blocks times out, its device is stuck, other devices proceed, and it is noticed when it returns', async () => {
    const blocked = 'bus/pci/devices/0000:01:00.0/unbind';
    await expect(writer.write(blocked, '0000:01:00.0', { lane: '0000:01:00.0' })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(writer.stuck()).toStrictEqual([expect.objectContaining({ lane: '0000:01:00.0', path: blocked, value: '0000:01:00.0' })]);
    // The same device is refused at once, naming the pending write.
    await expect(writer.write(blocked, 'again', { lane: '0000:01:00.0' })).rejects.toMatchObject({ code: 'ESTUCK', message: expect.stringContaining('has not returned') });
    // Another device is written right away by a fresh helper.
    await writer.write('bus/pci/devices/0000:02:00.0/driver_override', 'vfio-pci', { lane: '0000:02:00.0' });
    expect(readFileSync(join(root, 'bus/pci/devices/0000:02:00.0/driver_override'), 'utf8')).toBe('vfio-pci');
    // The "VMM" lets go: the blocked write completes and the device is no longer stuck.
    const fd = openSync(join(root, blocked), constants.O_RDONLY | constants.O_NONBLOCK);
    const until = Date.now() + 10_000;
    while (unstuck.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    closeSync(fd);
    expect(unstuck).toStrictEqual([{ w: expect.objectContaining({ lane: '0000:01:00.0' }) }]);
    expect(writer.stuck()).toStrictEqual([]);
  });

  test('kernel refusals carry their errno; a missing attribute is ENOENT, never a new file', async () => {
    await expect(writer.write('bus/pci/devices/0000:02:00.0/sriov_numvfs', '4')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(writer.write('../../etc/passwd', 'x')).rejects.toThrow(/escapes the root/);
  });

  test('close() returns at once even while a write is blocked in the kernel', async () => {
    const p = writer.write('bus/pci/devices/0000:01:00.0/unbind', 'x', { lane: 'a' });
    await new Promise((r) => setTimeout(r, 100));
    writer.close();
    await expect(p).rejects.toMatchObject({ code: 'ECANCELED' });
  });
});
