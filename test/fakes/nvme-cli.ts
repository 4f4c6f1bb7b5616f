// nvme-cli stand-in (VIO_NVME_CLI / the agent's nvmeCli option) over the QEMU-like controller model
// of nvme-ctrl.ts: one process per command, as the agent runs nvme-cli. The controller's state lives
// in a JSON file; its VFs are those the simulated kernel has enabled (the PF's `sriov_numvfs` under
// the fake sysfs root), since QEMU sets a secondary controller Online only when its VF exists.
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { FakeNvmeCtrl, type FakeNvmeOptions } from './nvme-ctrl.js';

/** Creates the state file of a drive behind PF `pf` and an executable `<dir>/nvme` for it. */
export function writeNvmeCliScript(dir: string, o: { root: string; pf: string; drive: FakeNvmeOptions }): { cli: string; state: string } {
  const repo = path.resolve(import.meta.dirname, '../..');
  const state = path.join(dir, 'nvme-state.json');
  writeFileSync(state, JSON.stringify(new FakeNvmeCtrl(o.drive).toJSON()));
  const cli = path.join(dir, 'nvme');
  const sysfs = path.join(o.root, 'bus/pci/devices', o.pf);
  writeFileSync(cli, `#!/bin/sh\nexec "${process.execPath}" --import "${repo}/test/sysfs/ts-hooks.mjs" "${repo}/test/fakes/nvme-cli.ts" --state "${state}" --pf "${sysfs}" "$@"\n`);
  chmodSync(cli, 0o755);
  return { cli, state };
}

/** The drive as the state file says now. */
export function readDrive(state: string): FakeNvmeCtrl {
  return FakeNvmeCtrl.fromJSON(JSON.parse(readFileSync(state, 'utf8')) as ReturnType<FakeNvmeCtrl['toJSON']>);
}

function main(argv: string[]): number {
  const take = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    argv.splice(i, 2);
    return v;
  };
  const state = take('--state');
  const pf = take('--pf');
  if (!state || !pf) {
    process.stderr.write('usage: nvme-cli.ts --state <file> --pf <sysfs dir> <command> args...\n');
    return 2;
  }
  const f = readDrive(state);
  try {
    f.numVfs = Number(readFileSync(path.join(pf, 'sriov_numvfs'), 'utf8').trim()) || 0;
  } catch {
    f.numVfs = 0;
  }
  try {
    const out = f.run(argv);
    writeFileSync(state, JSON.stringify(f.toJSON()));
    process.stdout.write(`${out}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exit(main(process.argv.slice(2)));
