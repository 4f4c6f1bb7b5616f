// On-demand NVMe queue pools: the counter model, checked against a fake controller that answers as
// QEMU's hw/nvme (test/fakes/nvme-ctrl.ts). Whatever the counters let a scheduler allocate, the
// drive then accepts, over rounds of claims coming and going.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNvmeCtrl } from '../../../test/fakes/nvme-ctrl.js';
import { provisionNvme } from '../carving/nvme.js';
import { parseNvmeDevice, type NvmeState } from '../carving/ondemand-nvme.js';
import type { WantedMdev } from '../carving/ondemand.js';
import type { Inventory, InventoryDevice, PoolPlan } from '../model.js';
import type { CounterSet } from './counters.js';
import type { DraDevice } from './devices.js';
import { MAX_VFS_PER_NVME, nvmeContent } from './nvme-counters.js';

const DEV = mkdtempSync(join(tmpdir(), 'vio-nvme-ctr-'));
writeFileSync(join(DEV, 'nvme0'), '');
const PF = '0000:02:00.0';
const VFS = ['0000:02:00.1', '0000:02:00.2', '0000:02:00.3', '0000:02:00.4'];
const pool: PoolPlan = { name: 'nvmeq', resourceName: 'virtualio.dev/nvmeq', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, vfDriver: 'vfio-pci', onDemand: { nvmeQueues: [2, 4, 8] }, devices: [{ pciAddress: PF }] };
const inventory: Inventory = {
  devices: [{ pciAddress: PF, driver: 'nvme', nvme: [{ name: 'nvme0' }], sriov: { totalVFs: 4, numVFs: 4, vfs: VFS } }, ...VFS.map((a) => ({ pciAddress: a, physfn: PF, driver: 'vfio-pci', numaNode: 0 }))],
};
const devices = new Map<string, InventoryDevice>(inventory.devices.map((d) => [d.pciAddress, d]));
const facts = { devices };
const drive = (): FakeNvmeCtrl => {
  const f = new FakeNvmeCtrl({ maxVfs: 4, vqFlexible: 16, viFlexible: 8, maxVqPerVf: 8, maxViPerVf: 4 });
  f.numVfs = 4;
  return f;
};
const want = (vf: string, queues: number, uid: string): WantedMdev => ({ pool: 'nvmeq', uuid: vf, queues, claim: `default/${uid}`, namespace: 'default', name: uid, uid });
const writer = { write: (): Promise<void> => Promise.resolve() };

/** What the agent publishes for the drive now, with `live` (VF → queue count) counted by the scheduler. */
async function publish(f: FakeNvmeCtrl, wanted: Map<string, WantedMdev>, ours: Set<string>, held = new Set<string>()): Promise<{ sets: CounterSet[]; devs: DraDevice[]; state: NvmeState; failed: string[] }> {
  const r = await provisionNvme({ spec: { pools: [pool] }, inventory, devRoot: DEV, cli: f.cli, writer, held, onDemand: { wanted, ours, record: (vf) => void ours.add(vf) } });
  const state = r.nvme ?? {};
  const live = new Map([...wanted.values()].map((w) => [w.uuid, w.queues as number]));
  const c = nvmeContent(pool, state, devices, live, facts);
  return { sets: c.counterChunks.flat(), devs: c.chunks.flat(), state, failed: (r.failed ?? []).map((x) => x.reason) };
}

/** The scheduler's check: do these devices together fit the published counters? */
function fits(sets: readonly CounterSet[], chosen: readonly DraDevice[]): boolean {
  const left = new Map<string, number>(sets.flatMap((s) => Object.entries(s.counters).map(([k, v]): [string, number] => [`${s.name}/${k}`, Number(v.value)])));
  for (const d of chosen) {
    for (const cc of d.consumesCounters ?? []) {
      for (const [k, v] of Object.entries(cc.counters)) {
        const key = `${cc.counterSet}/${k}`;
        const now = (left.get(key) ?? 0) - Number(v.value);
        if (now < 0) return false;
        left.set(key, now);
      }
    }
  }
  return true;
}

test('an empty drive publishes its whole budget, one device per free VF and queue count', async () => {
  const { sets, devs } = await publish(drive(), new Map(), new Set());
  expect(sets).toEqual([{ name: 'nvme-0000-02-00-0', counters: { vq: { value: '16' }, vi: { value: '8' }, 'vf-0': { value: '1' }, 'vf-1': { value: '1' }, 'vf-2': { value: '1' }, 'vf-3': { value: '1' } } }]);
  expect(devs.map((d) => d.name)).toEqual(VFS.flatMap((v) => [2, 4, 8].map((q) => `nvme-${v.replace(/[:.]/g, '-')}-q${q}`)).sort());
  const q8 = devs.find((d) => d.name === 'nvme-0000-02-00-1-q8') as DraDevice;
  expect(q8.consumesCounters).toEqual([{ counterSet: 'nvme-0000-02-00-0', counters: { vq: { value: '8' }, vi: { value: '4' }, 'vf-0': { value: '1' } } }]);
  expect(q8.attributes).toMatchObject({ nvmeQueues: { int: 8 }, nvmeInterrupts: { int: 4 }, pool: { string: 'nvmeq' }, kind: { string: 'VF' } });
  expect(q8.bindingConditions).toEqual(['virtualio.dev/Carved']);
  expect(q8.bindingFailureConditions).toEqual(['virtualio.dev/CarveFailed']);
  expect(MAX_VFS_PER_NVME).toBe(30);
});

test('sized controllers of live claims count as room (the scheduler subtracts them); anyone else\'s do not, nor are their VFs published', async () => {
  const f = drive();
  // An admin's controller on VF 3 (2 VQ, 1 VI).
  for (const a of [['-r', '0', '-a', '8', '-n', '2'], ['-r', '1', '-a', '8', '-n', '1'], ['-a', '9', '-n', '0']]) f.run(['virt-mgmt', 'x', '-c', '4', ...a]);
  const wanted = new Map([[VFS[0] as string, want(VFS[0] as string, 8, 'a')]]);
  const { sets, devs, state } = await publish(f, wanted, new Set());
  expect(state[PF]?.vfs[VFS[0] as string]).toMatchObject({ online: true, nvq: 8 });
  // Free: 16 − 8 − 2 = 6 VQ, 8 − 4 − 1 = 3 VI; plus the live claim's 8 and 4.
  expect(sets[0]?.counters).toEqual({ vq: { value: '14' }, vi: { value: '7' }, 'vf-0': { value: '1' }, 'vf-1': { value: '1' }, 'vf-2': { value: '1' } });
  expect(devs.some((d) => parseNvmeDevice(d.name)?.vf === VFS[3])).toBe(false);
  // The claim gone, its controller Offline again: nothing of it counted, its VF free again.
  const after = await publish(f, new Map(), new Set([VFS[0] as string]));
  expect(after.sets[0]?.counters).toMatchObject({ vq: { value: '14' }, vi: { value: '7' }, 'vf-0': { value: '1' } });
  // Released but held (the VM still runs): its resources stay out of the room and its VF unpublished.
  const g = drive();
  const ours = new Set<string>();
  await publish(g, wanted, ours);
  const heldNow = await publish(g, new Map(), ours, new Set([VFS[0] as string]));
  expect(heldNow.sets[0]?.counters).toEqual({ vq: { value: '8' }, vi: { value: '4' }, 'vf-1': { value: '1' }, 'vf-2': { value: '1' }, 'vf-3': { value: '1' } });
});

test('rounds of random claims: what the counters let the scheduler allocate the drive accepts, and releases give it back', async () => {
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const f = drive();
  const ours = new Set<string>();
  const wanted = new Map<string, WantedMdev>();
  let allocated = 0;
  for (let round = 0; round < 40; round++) {
    const { sets, devs, failed } = await publish(f, wanted, ours);
    expect(failed).toEqual([]);
    // Every live claim's controller is Online at its size; every other VF is Offline and empty.
    for (const [i, vf] of VFS.entries()) {
      const sc = f.secs[i];
      const w = wanted.get(vf);
      expect([vf, sc?.online, sc?.nvq]).toEqual([vf, w !== undefined, w?.queues ?? 0]);
    }
    // The scheduler: the live claims' devices plus new ones while they fit.
    const chosen = devs.filter((d) => wanted.get(parseNvmeDevice(d.name)?.vf ?? '')?.queues === parseNvmeDevice(d.name)?.queues);
    expect(fits(sets, chosen)).toBe(true);
    for (let k = 0; k < 3; k++) {
      const d = devs[rand(devs.length)] as DraDevice;
      const n = parseNvmeDevice(d.name);
      if (!n || wanted.has(n.vf) || !fits(sets, [...chosen, d])) continue;
      chosen.push(d);
      wanted.set(n.vf, want(n.vf, n.queues, `c${round}-${k}`));
      allocated++;
    }
    // Some claims go.
    for (const vf of [...wanted.keys()]) if (rand(3) === 0) wanted.delete(vf);
  }
  expect(allocated).toBeGreaterThan(10);
});
