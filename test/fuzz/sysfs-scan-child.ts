// The scan fuzzer, run in a child process by test/unit/fuzz/sysfs-scan.test.ts: a read that blocks
// in the kernel (a FIFO opened for reading waits for a writer) blocks the whole thread, so only a
// process that can be killed from outside can tell a hang. Exits 0 when every generated tree was
// scanned faithfully; otherwise prints fast-check's counterexample (seed, path) and exits 1.
//   node --import ./test/sysfs/ts-hooks.mjs test/fuzz/sysfs-scan-child.ts [--no-fifos]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { fuzzAsync } from './budget.js';
import { checkInventory, treeCase, writeTree } from './sysfs-tree.js';

const fifos = !process.argv.includes('--no-fifos');
try {
  await fuzzAsync('sysfs scan', 60, [treeCase(fifos)], async (t) => {
    const base = mkdtempSync(path.join(tmpdir(), 'vio-fuzz-sysfs-'));
    try {
      writeTree(base, t);
      const inv = await scan(base);
      checkInventory(t, inv);
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
  process.stdout.write('fuzz ok\n');
} catch (err) {
  process.stderr.write(`${err instanceof Error ? `${err.message}\n${String((err as { cause?: unknown }).cause ?? "")}` : String(err)}\n`);
  process.exit(1);
}
