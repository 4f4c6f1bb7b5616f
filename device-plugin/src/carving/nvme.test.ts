import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Inventory, VirtualIONodeSpec } from '../model.js';
import { parsePrimaryCaps, parseSecondaries, provisionNvme, shareOf, type NvmeCli } from './nvme.js';

/** A dev root where the controller's node exists, as /dev/nvme0 does on a node. */
const DEV = mkdtempSync(join(tmpdir(), 'vio-nvme-dev-'));
writeFileSync(join(DEV, 'nvme0'), '');

const PF = '0000:02:00.0';
const VFS = ['0000:02:00.1', '0000:02:00.2'];
const spec: VirtualIONodeSpec = {
  pools: [{ name: 'nvme', resourceName: 'virtualio.dev/nvme', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', count: 2, devices: [{ pciAddress: PF }] }],
};
function inventory(numVFs: number): Inventory {
  return {
    devices: [
      { pciAddress: PF, driver: 'nvme', nvme: [{ name: 'nvme0' }], sriov: { totalVFs: 4, numVFs, vfs: VFS.slice(0, numVFs) } },
      ...VFS.slice(0, numVFs).map((a) => ({ pciAddress: a, physfn: PF, driver: 'vfio-pci' })),
    ],
  };
}

// What QEMU 10's NVMe controller answered in test/kernel (nvme-cli 2.4 JSON).
const CAPS = { cntlid: 0, portid: 0, crt: 3, vqfrt: 8, vqrfa: 0, vqrfap: 0, vqprt: 5, vqfrsm: 2, vqgran: 1, vifrt: 4, virfa: 0, virfap: 0, viprt: 6, vifrsm: 1, vigran: 1 };
const sec = (scid: number, state: number, nvq = 0, nvi = 0): Record<string, number> => ({
  'secondary-controller-identifier': scid,
  'primary-controller-identifier': 0,
  'secondary-controller-state': state,
  'virtual-function-number': scid,
  'num-virtual-queues': nvq,
  'num-virtual-interrupts': nvi,
});

/** A fake nvme-cli recording its calls, answering from `state`. */
function fakeCli(state: { caps: typeof CAPS; secs: Record<string, number>[] }, fail?: (args: string[]) => string | undefined): { cli: NvmeCli; calls: string[] } {
  const calls: string[] = [];
  const cli: NvmeCli = (args) => {
    calls.push(args.join(' '));
    const err = fail?.(args);
    if (err) return Promise.reject(new Error(err));
    if (args[0] === 'primary-ctrl-caps') return Promise.resolve(JSON.stringify(state.caps));
    if (args[0] === 'list-secondary') return Promise.resolve(JSON.stringify({ num: state.secs.length, 'secondary-controllers': state.secs }));
    return Promise.resolve('success');
  };
  return { cli, calls };
}
const writer = { writes: [] as string[], write(p: string, v: string): Promise<void> { this.writes.push(`${p}=${v}`); return Promise.resolve(); } };

test('parsers read nvme-cli JSON; shares are equal, at least the minimum, in granules', () => {
  expect(parsePrimaryCaps(JSON.stringify(CAPS))).toMatchObject({ cntlid: 0, vqfrt: 8, vifrt: 4, vqfrsm: 2 });
  expect(parseSecondaries(JSON.stringify({ 'secondary-controllers': [sec(1, 1, 2, 1)] }))).toEqual([{ scid: 1, vfn: 1, online: true, nvq: 2, nvi: 1 }]);
  expect(() => parsePrimaryCaps('{"cntlid":0}')).toThrow(/vqfrt/);
  expect(() => parseSecondaries('not json')).toThrow(/not a JSON object/);
  expect(shareOf(8, 4, 2, 1)).toBe(2);
  expect(shareOf(4, 4, 1, 1)).toBe(1);
  expect(shareOf(10, 4, 1, 4)).toBe(0); // floor(10/4)=2 → not one granule of 4
  expect(shareOf(64, 4, 2, 4)).toBe(2); // VQFRSM is the most a secondary may get, not the least
  expect(shareOf(64, 4, 8, 4)).toBe(8);
  expect(shareOf(64, 4, 0, 4)).toBe(16); // no maximum reported
});

test('Offline secondaries of the pool\'s VFs get resources and go Online; Online ones and held VFs are left alone', async () => {
  const state = { caps: CAPS, secs: [sec(1, 0), sec(2, 1, 2, 1), sec(3, 0), sec(4, 0)] };
  const { cli, calls } = fakeCli(state);
  const r = await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli, writer });
  expect(r.problems).toEqual([]);
  expect(calls.filter((c) => c.startsWith('virt-mgmt'))).toEqual([`virt-mgmt ${DEV}/nvme0 -c 1 -r 0 -a 8 -n 2`, `virt-mgmt ${DEV}/nvme0 -c 1 -r 1 -a 8 -n 1`, `virt-mgmt ${DEV}/nvme0 -c 1 -a 9 -n 0`]);
  expect(r.actions).toEqual([{ pool: 'nvme', device: PF, what: 'VF 0000:02:00.1: secondary controller 1 Online with 2 VQ and 1 VI resources' }]);
  const held = await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli: fakeCli(state).cli, writer, held: new Set([VFS[0] as string]) });
  expect(held.actions).toEqual([]);
});

test('before VFs exist, a primary holding flexible resources releases them and the PF is reset', async () => {
  writer.writes = [];
  const { cli, calls } = fakeCli({ caps: { ...CAPS, vqrfa: 8, vqrfap: 8, virfa: 4, virfap: 4 }, secs: [] });
  const r = await provisionNvme({ spec, inventory: inventory(0), devRoot: DEV, cli, writer });
  expect(calls.slice(1)).toEqual([`virt-mgmt ${DEV}/nvme0 -c 0 -r 0 -a 1 -n 0`, `virt-mgmt ${DEV}/nvme0 -c 0 -r 1 -a 1 -n 0`]);
  expect(writer.writes).toEqual([`bus/pci/devices/${PF}/reset=1`]);
  expect(r.actions.map((a) => a.what)).toEqual(["released the primary controller's flexible resources (8 VQ, 4 VI)", 'reset the PF so the release takes effect']);
});

test('resources already assigned to secondaries (VQRFA) are no reason to report the primary', async () => {
  const { cli } = fakeCli({ caps: { ...CAPS, vqrfa: 4, virfa: 2 }, secs: [sec(1, 1, 2, 1), sec(2, 1, 2, 1)] });
  expect(await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli, writer })).toEqual({ actions: [], problems: [] });
  const held = fakeCli({ caps: { ...CAPS, vqrfap: 8, virfap: 4 }, secs: [sec(1, 1, 2, 1), sec(2, 1, 2, 1)] });
  expect((await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli: held.cli, writer })).problems[0]?.reason).toMatch(/holds 8 VQ and 4 VI flexible resources/);
});

test('failures are problems naming the VF, the controller and nvme-cli\'s message; drives without flexible resources need nothing', async () => {
  const { cli } = fakeCli({ caps: CAPS, secs: [sec(1, 0), sec(2, 0)] }, (a) => (a.includes('-a') && a.includes('9') && a.includes('2') ? 'NVMe status: Invalid Controller Identifier' : undefined));
  const r = await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli, writer });
  expect(r.problems).toEqual([{ pool: 'nvme', device: PF, reason: 'VF 0000:02:00.2: secondary controller 2 stays Offline: NVMe status: Invalid Controller Identifier' }]);
  const none = fakeCli({ caps: { ...CAPS, vqfrt: 0, vifrt: 0 }, secs: [] });
  expect(await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli: none.cli, writer })).toEqual({ actions: [], problems: [] });
  expect(none.calls).toEqual([`primary-ctrl-caps ${DEV}/nvme0 -o json`]);
  const missing = await provisionNvme({ spec, inventory: inventory(2), devRoot: DEV, cli: () => Promise.reject(new Error('nvme not found (install nvme-cli or set VIO_NVME_CLI)')), writer });
  expect(missing.problems[0]?.reason).toMatch(/^NVMe provisioning of 0000:02:00.0 \(nvme0\): nvme not found/);
});

test('a controller whose device node the agent cannot see is skipped, not a problem (nothing is tried)', async () => {
  const empty = mkdtempSync(join(tmpdir(), 'vio-nvme-nodev-'));
  mkdirSync(join(empty, 'vfio'));
  const calls: string[][] = [];
  const r = await provisionNvme({ spec, inventory: inventory(2), devRoot: empty, cli: (a) => (calls.push(a), Promise.reject(new Error('must not run'))), writer: { write: () => Promise.reject(new Error('must not write')) } });
  expect(r.problems).toStrictEqual([]);
  expect(r.skipped?.[0]?.reason).toMatch(/nvme0 is not visible to the agent/);
  expect(calls).toStrictEqual([]);
});
