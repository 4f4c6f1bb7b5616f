// On-demand NVMe VFs: the planner (which controllers to size, which to set Offline) and its run
// through provisionNvme against a fake controller that answers as QEMU's hw/nvme does
// (test/fakes/nvme-ctrl.ts): what a claim asks for is what the drive ends up with, a restart in the
// middle neither doubles nor leaks, and a held VF is never touched.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNvmeCtrl } from '../../../test/fakes/nvme-ctrl.js';
import type { Inventory, PoolPlan, VirtualIONodeSpec } from '../model.js';
import { parsePrimaryCaps, provisionNvme, type NvmeOnDemandInput } from './nvme.js';
import { interruptsFor, nvmeDeviceName, offeredQueues, parseNvmeDevice, planNvmeOnDemand, type NvmePfState } from './ondemand-nvme.js';
import type { WantedMdev } from './ondemand.js';

const DEV = mkdtempSync(join(tmpdir(), 'vio-nvme-od-'));
writeFileSync(join(DEV, 'nvme0'), '');
const PF = '0000:02:00.0';
const VFS = ['0000:02:00.1', '0000:02:00.2', '0000:02:00.3', '0000:02:00.4'];
const pool: PoolPlan = { name: 'nvmeq', resourceName: 'virtualio.dev/nvmeq', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, vfDriver: 'vfio-pci', onDemand: { nvmeQueues: [2, 4, 8] }, devices: [{ pciAddress: PF }] };
const spec: VirtualIONodeSpec = { pools: [pool] };
const inventory: Inventory = {
  devices: [{ pciAddress: PF, driver: 'nvme', nvme: [{ name: 'nvme0' }], sriov: { totalVFs: 4, numVFs: 4, vfs: VFS } }, ...VFS.map((a) => ({ pciAddress: a, physfn: PF, driver: 'vfio-pci' }))],
};
/** 16 VQ and 8 VI flexible (or `vi`), up to 8 VQ and 4 VI per secondary. */
const drive = (vi = 8): FakeNvmeCtrl => {
  const f = new FakeNvmeCtrl({ maxVfs: 4, vqFlexible: 16, viFlexible: vi, maxVqPerVf: 8, maxViPerVf: 4 });
  f.numVfs = 4;
  return f;
};
const want = (vf: string, queues: number, uid = `u-${vf}`): WantedMdev => ({ pool: 'nvmeq', uuid: vf, queues, claim: `default/${uid}`, namespace: 'default', name: uid, uid });
const state = (f: FakeNvmeCtrl): NvmePfState => {
  const secs = JSON.parse(f.run(['list-secondary'])) as { 'secondary-controllers': Record<string, number>[] };
  const vfs: NvmePfState['vfs'] = {};
  for (const s of secs['secondary-controllers']) {
    const i = (s['virtual-function-number'] as number) - 1;
    vfs[VFS[i] as string] = { scid: s['secondary-controller-identifier'] as number, vfn: i + 1, online: s['secondary-controller-state'] === 1, nvq: s['num-virtual-queues'] as number, nvi: s['num-virtual-interrupts'] as number, index: i };
  }
  return { pool: 'nvmeq', caps: parsePrimaryCaps(f.run(['primary-ctrl-caps'])), vfs };
};
/** Runs provisioning with claims; `ours` is the checkpoint's records, kept across calls like the agent's. */
async function provision(f: FakeNvmeCtrl, wanted: WantedMdev[], ours: Set<string>, held = new Set<string>()): Promise<Awaited<ReturnType<typeof provisionNvme>> & { order: string[] }> {
  const order: string[] = [];
  const od: NvmeOnDemandInput = { wanted: new Map(wanted.map((w) => [w.uuid, w])), ours, record: (vf) => void (ours.add(vf), order.push(`record ${vf}`, `virt-mgmt before: ${f.calls.filter((c) => c.startsWith('virt-mgmt')).length}`)) };
  const writer = { write: (): Promise<void> => Promise.resolve() };
  return { ...(await provisionNvme({ spec, inventory, devRoot: DEV, cli: f.cli, writer, held, onDemand: od })), order };
}

test('queue counts a controller can take, and the interrupts that go with them', () => {
  const caps = parsePrimaryCaps(drive().run(['primary-ctrl-caps']));
  expect(offeredQueues({ onDemand: { nvmeQueues: [8, 2, 4, 16, 3] } }, caps)).toEqual([2, 3, 4, 8]); // 16 > VQFRSM 8
  expect(interruptsFor(2, caps)).toBe(2);
  expect(interruptsFor(8, caps)).toBe(4); // capped at VIFRSM
  // QEMU's defaults in test/kernel: 2 VQ and 1 VI per secondary.
  const q = parsePrimaryCaps(new FakeNvmeCtrl({ maxVfs: 4, vqFlexible: 8, viFlexible: 4 }).run(['primary-ctrl-caps']));
  expect(offeredQueues(pool, q)).toEqual([2]);
  expect(interruptsFor(2, q)).toBe(1);
  expect(nvmeDeviceName('0000:02:00.1', 4)).toBe('nvme-0000-02-00-1-q4');
  expect(parseNvmeDevice('nvme-0000-02-00-1-q4')).toEqual({ vf: '0000:02:00.1', queues: 4 });
  expect(parseNvmeDevice('vf-0000-02-00-1')).toBeUndefined();
});

test('a claim brings its VF\'s controller Online at its queue count, recorded before the first command; nothing else is touched', async () => {
  const f = drive();
  const ours = new Set<string>();
  const r = await provision(f, [want(VFS[1] as string, 4)], ours);
  expect(r.problems).toEqual([]);
  expect(r.failed ?? []).toEqual([]);
  expect(r.order).toEqual([`record ${VFS[1]}`, 'virt-mgmt before: 0']);
  expect(f.calls.filter((c) => c.startsWith('virt-mgmt'))).toEqual([`virt-mgmt ${DEV}/nvme0 -c 2 -r 0 -a 8 -n 4`, `virt-mgmt ${DEV}/nvme0 -c 2 -r 1 -a 8 -n 4`, `virt-mgmt ${DEV}/nvme0 -c 2 -a 9 -n 0`]);
  expect(f.secs.map((s) => [s.online, s.nvq, s.nvi])).toEqual([[false, 0, 0], [true, 4, 4], [false, 0, 0], [false, 0, 0]]);
  expect(r.nvme?.[PF]?.vfs[VFS[1] as string]).toMatchObject({ online: true, nvq: 4, nvi: 4 });
  // Again: nothing to do (idempotent).
  f.calls.length = 0;
  await provision(f, [want(VFS[1] as string, 4)], ours);
  expect(f.calls.filter((c) => c.startsWith('virt-mgmt'))).toEqual([]);
});

test('once the claim is gone the controller goes Offline and its resources back to the primary, unless the VF is held', async () => {
  const f = drive();
  const ours = new Set<string>();
  await provision(f, [want(VFS[0] as string, 8)], ours);
  expect(f.caps()).toMatchObject({ vqrfa: 8, virfa: 4 });
  f.calls.length = 0;
  const held = await provision(f, [], ours, new Set([VFS[0] as string]));
  expect(f.calls.filter((c) => c.startsWith('virt-mgmt'))).toEqual([]);
  expect(held.actions).toEqual([]);
  await provision(f, [], ours);
  expect(f.secs[0]).toMatchObject({ online: false, nvq: 0, nvi: 0 });
  expect(f.caps()).toMatchObject({ vqrfa: 0, virfa: 0 });
});

test('a controller someone else set Online is never set Offline, and a claim on it fails with why', () => {
  const f = drive();
  f.run(['virt-mgmt', 'x', '-c', '3', '-r', '0', '-a', '8', '-n', '2']);
  f.run(['virt-mgmt', 'x', '-c', '3', '-r', '1', '-a', '8', '-n', '1']);
  f.run(['virt-mgmt', 'x', '-c', '3', '-a', '9', '-n', '0']);
  const idle = planNvmeOnDemand('nvmeq', state(f), new Map(), new Set(), new Set());
  expect(idle.steps).toEqual([]);
  const claimed = planNvmeOnDemand('nvmeq', state(f), new Map([[VFS[2] as string, want(VFS[2] as string, 4)]]), new Set(), new Set());
  expect(claimed.steps).toEqual([]);
  expect(claimed.failed[0]?.reason).toMatch(/Online with 2 queues, set by someone else/);
});

test('sizes that no longer fit the budget fail with the numbers; a release earlier in the plan makes room', async () => {
  const f = drive();
  const ours = new Set<string>();
  // 8 + 8 VQ take the 16; a third claim fails.
  const r = await provision(f, [want(VFS[0] as string, 8), want(VFS[1] as string, 8), want(VFS[2] as string, 2)], ours);
  expect(r.failed).toEqual([{ pool: 'nvmeq', uuid: VFS[2], reason: expect.stringMatching(/2 queues no longer fit .*0 VQ and 0 VI flexible resources are free, 2 VQ and 2 VI needed/) }]);
  // VF 0's claim goes, VF 2's stays: the release comes first and its room serves VF 2 in the same pass.
  f.calls.length = 0;
  const r2 = await provision(f, [want(VFS[1] as string, 8), want(VFS[2] as string, 2)], ours);
  expect(r2.failed ?? []).toEqual([]);
  expect(f.calls.filter((c) => c.startsWith('virt-mgmt')).map((c) => c.replace(`${DEV}/nvme0 `, ''))).toEqual([
    'virt-mgmt -c 1 -a 7 -n 0', 'virt-mgmt -c 1 -r 0 -a 8 -n 0', 'virt-mgmt -c 1 -r 1 -a 8 -n 0',
    'virt-mgmt -c 3 -r 0 -a 8 -n 2', 'virt-mgmt -c 3 -r 1 -a 8 -n 2', 'virt-mgmt -c 3 -a 9 -n 0',
  ]);
  // A queue count above what one controller may have is refused by the planner, not sent.
  const big = planNvmeOnDemand('nvmeq', state(f), new Map([want(VFS[1] as string, 8), want(VFS[2] as string, 2), want(VFS[3] as string, 16)].map((w) => [w.uuid, w])), ours, new Set());
  expect(big.steps).toEqual([]);
  expect(big.failed[0]?.reason).toMatch(/cannot give one secondary controller 16 queues \(at most 8/);
});

test('a restart between assigning queues and Online resets the half-sized controller and finishes the claim without counting its queues twice', async () => {
  const f = drive(16);
  const ours = new Set<string>();
  await provision(f, [want(VFS[0] as string, 8), want(VFS[1] as string, 4)], ours);
  // The agent died after assigning VF 2's 4 VQ (recorded), before its VI and Online.
  f.run(['virt-mgmt', 'x', '-c', '3', '-r', '0', '-a', '8', '-n', '4']);
  ours.add(VFS[2] as string);
  expect(f.caps()).toMatchObject({ vqrfa: 16 }); // the drive's whole VQ budget is assigned now
  f.calls.length = 0;
  const r = await provision(f, [want(VFS[0] as string, 8), want(VFS[1] as string, 4), want(VFS[2] as string, 4)], ours);
  expect(r.failed ?? []).toEqual([]);
  expect(f.calls.filter((c) => c.startsWith('virt-mgmt')).map((c) => c.replace(`${DEV}/nvme0 `, ''))).toEqual([
    'virt-mgmt -c 3 -a 7 -n 0', 'virt-mgmt -c 3 -r 0 -a 8 -n 0', 'virt-mgmt -c 3 -r 1 -a 8 -n 0',
    'virt-mgmt -c 3 -r 0 -a 8 -n 4', 'virt-mgmt -c 3 -r 1 -a 8 -n 4', 'virt-mgmt -c 3 -a 9 -n 0',
  ]);
  expect(f.secs[2]).toMatchObject({ online: true, nvq: 4, nvi: 4 });
  expect(f.caps()).toMatchObject({ vqrfa: 16, virfa: 12 });
  // The record of a claim that went while its controller was half-sized releases what it got.
  const g = drive();
  g.run(['virt-mgmt', 'x', '-c', '4', '-r', '0', '-a', '8', '-n', '4']);
  await provision(g, [], new Set([VFS[3] as string]));
  expect(g.secs[3]).toMatchObject({ online: false, nvq: 0, nvi: 0 });
  // Without a record it is not ours: left alone (its resources stay out of the published room).
  const h = drive();
  h.run(['virt-mgmt', 'x', '-c', '4', '-r', '0', '-a', '8', '-n', '4']);
  await provision(h, [], new Set());
  expect(h.secs[3]).toMatchObject({ nvq: 4 });
});

test('a drive without flexible resources is a pool problem, and existing pools are provisioned as before', async () => {
  const f = drive();
  const none = { ...f.caps(), vqfrt: 0, vifrt: 0 };
  const cli = (args: string[]): Promise<string> => (args[0] === 'primary-ctrl-caps' ? Promise.resolve(JSON.stringify(none)) : f.cli(args));
  const r = await provisionNvme({ spec, inventory, devRoot: DEV, cli, writer: { write: () => Promise.resolve() } });
  expect(r.problems[0]?.reason).toMatch(/no flexible resources: onDemand.nvmeQueues has no queues to give/);
  // The same drive in a pool without onDemand: every controller Online with an equal share, no state kept.
  const g = new FakeNvmeCtrl({ maxVfs: 4, vqFlexible: 8, viFlexible: 4 }); // QEMU's defaults, as test/kernel runs it
  g.numVfs = 4;
  const plain = await provisionNvme({ spec: { pools: [{ ...pool, onDemand: undefined } as PoolPlan] }, inventory, devRoot: DEV, cli: g.cli, writer: { write: () => Promise.resolve() } });
  expect(g.secs.every((s) => s.online)).toBe(true);
  expect(plain.nvme).toBeUndefined();
});
