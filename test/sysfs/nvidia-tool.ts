// A stand-in for NVIDIA's host tools (`sriov-manage`, `nvidia-smi vgpu -shm`) that an unmodified
// agent process runs: it asks the kernel daemon over `<root>` (its control socket) to do what the
// real tool does in sysfs (nvidia.ts), so every write goes through the witnessed fake kernel.
//   node --import ./test/sysfs/ts-hooks.mjs test/sysfs/nvidia-tool.ts --root <sysfs> sriov-manage -e 0000:3b:00.0
// Prints the tool's output; exits 1 with the kernel's reason on stderr when it refuses.
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { kernelControl } from './kernel-daemon.js';

/** Writes an executable `<dir>/<tool>` that runs this stand-in over `root` (for VIO_NVIDIA_* env). */
export function writeToolScript(dir: string, tool: 'sriov-manage' | 'nvidia-smi', root: string): string {
  const repo = path.resolve(import.meta.dirname, '../..');
  const file = path.join(dir, tool);
  writeFileSync(file, `#!/bin/sh\nexec "${process.execPath}" --import "${repo}/test/sysfs/ts-hooks.mjs" "${repo}/test/sysfs/nvidia-tool.ts" --root "${root}" ${tool} "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

async function main(argv: string[]): Promise<number> {
  const i = argv.indexOf('--root');
  const root = i >= 0 ? argv[i + 1] : undefined;
  const rest = i >= 0 ? [...argv.slice(0, i), ...argv.slice(i + 2)] : argv;
  if (!root || rest.length === 0) {
    process.stderr.write('usage: nvidia-tool.ts --root <sysfs> <sriov-manage|nvidia-smi> args...\n');
    return 2;
  }
  try {
    process.stdout.write(`${await kernelControl(root, `nvidia-tool ${rest.join(' ')}`, 60_000)}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(process.argv.slice(2)).then((code) => process.exit(code));
}
