// Fuzzing the sysfs readers and the scan (issue 21, hostile input): generated trees of PCI functions
// whose attributes and links are well-formed or hostile (junk bytes, numbers past what the kernel
// prints, missing, folders, symlink loops, dangling links, FIFOs, oversized files). The scan must
// finish, report every well-formed value as written and name every hostile one in the device's
// errors. The property runs in a child process (test/fuzz/sysfs-scan-child.ts): a read blocked in
// open(2) on a FIFO blocks the whole thread, which only a kill from outside can tell.
// Budget: VIO_FUZZ_RUNS / VIO_FUZZ_SEED (test/fuzz/budget.ts).
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { scan } from '../../../device-plugin/src/discovery/scan.js';
import { tempTree } from '../../sysfs/tmp.js';

const REPO = path.resolve(import.meta.dirname, '../../..');

/** Runs the child fuzzer; a run that has not finished after `ms` is killed and counted as a hang. */
function runChild(ms: number): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', path.join(REPO, 'test/sysfs/ts-hooks.mjs'), path.join(REPO, 'test/fuzz/sysfs-scan-child.ts')], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

function pf(root: string, name: string): string {
  const dir = path.join(root, 'bus/pci/devices', name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'vendor'), '0x8086\n');
  writeFileSync(path.join(dir, 'device'), '0x10fb\n');
  writeFileSync(path.join(dir, 'class'), '0x020000\n');
  return dir;
}

test('generated hostile sysfs trees: scan never hangs or throws, keeps good values, names bad ones', async () => {
  // Generous for the CI budget (about 3 s); a long run (VIO_FUZZ_RUNS) scales it.
  const runs = Number(process.env.VIO_FUZZ_RUNS) || 60;
  const r = await runChild(Math.max(60_000, runs * 100));
  if (r.signal) throw new Error(`the scan fuzzer was killed (${r.signal}): a scan hung\n${r.out}`);
  expect({ code: r.code, out: r.out.trim() }).toEqual({ code: 0, out: 'fuzz ok' });
});

describe('counterexamples the fuzzer found, kept as examples', () => {
  test('an iommu_group link to a number past an int is malformed, not group 1.2e29', async () => {
    const t = await tempTree();
    try {
      const dir = pf(t.root, '0000:04:00.0');
      symlinkSync('../../../kernel/iommu_groups/123456789012345678901234567890', path.join(dir, 'iommu_group'));
      const inv = await scan(t.root);
      const d = inv.devices[0];
      expect(d?.iommuGroup).toBeUndefined();
      expect(d?.errors).toEqual(['iommu_group: malformed link target "123456789012345678901234567890"']);
    } finally {
      await t.cleanup();
    }
  });

  test('a FIFO in place of an attribute is reported, never opened for a blocking read', async () => {
    const t = await tempTree();
    const dir = pf(t.root, '0000:04:00.0');
    const fifo = path.join(dir, 'numa_node');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    // Without the fix the scan sits in open(2) for ever; this writer lets it through after 5 s (so
    // the test fails instead of hanging) and then writes "0", which the scan would report.
    const writer = spawn('sh', ['-c', `sleep 5; printf '0\\n' > '${fifo}'`], { stdio: 'ignore' });
    try {
      const t0 = Date.now();
      const inv = await scan(t.root);
      expect(Date.now() - t0).toBeLessThan(4000);
      expect(inv.devices[0]?.numaNode).toBeUndefined();
      expect(inv.devices[0]?.errors).toEqual(['numa_node: unreadable (not read: a FIFO, not an attribute)']);
    } finally {
      writer.kill('SIGKILL');
      await t.cleanup();
    }
  });

  test('an attribute file larger than a sysfs page is not read', async () => {
    const t = await tempTree();
    try {
      const dir = pf(t.root, '0000:04:00.0');
      writeFileSync(path.join(dir, 'numa_node'), Buffer.alloc(1 << 20, 0x31));
      const inv = await scan(t.root);
      expect(inv.devices[0]?.errors).toEqual(['numa_node: unreadable (not read: 1048576 bytes, more than an attribute holds (65536))']);
    } finally {
      await t.cleanup();
    }
  });
});
