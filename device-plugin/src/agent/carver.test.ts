// The carver's answer to an mdev create the kernel refuses with EEXIST: the mdev is there and the
// inventory is behind, so it scans again instead of backing off and retrying the same create.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { CarvingPlan, Inventory, Slice, VirtualIONodeSpec } from '../model.js';
import { Carver, type RoundInput } from './carver.js';
import { Checkpoint } from './checkpoint.js';
import type { NodeOps, WriteResult } from './ports.js';

const GPU = '0000:0a:00.0';
const UUID = 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2';
const CREATE = `bus/pci/devices/${GPU}/mdev_supported_types/nvidia-747/create`;

/** A node whose kernel already holds the mdev; `scanShows` says whether a scan sees it. */
class LaggingNode implements NodeOps {
  scans = 0;
  attempts: string[] = [];
  constructor(private readonly scanShows: boolean) {}
  async scan(): Promise<Inventory> {
    this.scans++;
    return inventory(this.scanShows);
  }
  planCarving(_spec: VirtualIONodeSpec, inv: Inventory): CarvingPlan {
    const there = inv.devices.some((d) => d.mdevs?.some((m) => m.uuid === UUID));
    return { writes: there ? [] : [{ path: CREATE, value: UUID, why: 'create for claim default/c', group: `${GPU}/${UUID}`, pools: ['od'] }], blocked: [] };
  }
  planUncarve(): CarvingPlan {
    return { writes: [], blocked: [] };
  }
  async applyCarving(plan: CarvingPlan): Promise<WriteResult[]> {
    return plan.writes.map((write) => {
      this.attempts.push(write.path);
      return { write, error: `EEXIST: mdev ${UUID} exists`, code: 'EEXIST' };
    });
  }
  buildSlices(): Slice[] {
    return [];
  }
}

function inventory(withMdev: boolean): Inventory {
  return { devices: [{ pciAddress: GPU, mdevTypes: [{ id: 'nvidia-747', availableInstances: 1 }], ...(withMdev ? { mdevs: [{ uuid: UUID, type: 'nvidia-747' }] } : {}) }] };
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vio-carver-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function setup(node: LaggingNode): { carver: Carver; input: RoundInput } {
  const log = silentLogger();
  const carver = new Carver(node, new Checkpoint(join(dir, 'checkpoint.json'), 'n1', log), createMetrics(), log, () => 1_000);
  const spec: VirtualIONodeSpec = { pools: [{ name: 'od', resourceName: 'virtualio.dev/od', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: ['nvidia-747'] }, devices: [{ pciAddress: GPU }] }] } as VirtualIONodeSpec;
  const input: RoundInput = {
    spec, provisional: false, retired: new Map(), inventory: inventory(false),
    protectedIds: () => new Set(), protection: () => undefined, activeIds: () => new Set(), fence: () => undefined, unfence: () => undefined,
    onDemand: { wanted: new Map([[UUID, { pool: 'od', uuid: UUID, claim: 'default/c', namespace: 'default', name: 'c', uid: 'u1' }]]), capacity: {} },
    suspectScan: () => undefined, signal: new AbortController().signal,
  };
  return { carver, input };
}

test('EEXIST on an mdev create: the carver rescans and finds the mdev; no error, no backoff, no second create', async () => {
  const node = new LaggingNode(true);
  const { carver, input } = setup(node);
  const r = await carver.round(input);
  expect(node.attempts).toEqual([CREATE]);
  expect(node.scans).toBe(1);
  expect(r.inventory.devices[0]?.mdevs?.map((m) => m.uuid)).toEqual([UUID]);
  expect(carver.errors).toEqual([]);
  expect(carver.nextDue()).toBeUndefined();
  expect(carver.onDemandFailed.size).toBe(0);
});

test('EEXIST again after the rescan (the scan does not see what the kernel has): one failure, backed off, with the reason; the claim is not failed', async () => {
  const node = new LaggingNode(false);
  const { carver, input } = setup(node);
  const r = await carver.round(input);
  expect(node.attempts).toEqual([CREATE, CREATE]);
  expect(node.scans).toBe(1);
  expect(carver.errors).toEqual([{ pool: 'od', message: expect.stringMatching(/EEXIST.*but a rescan does not show it under its parent\) \(next try in \d+ s\)$/) }]);
  expect(carver.nextDue()).toBeGreaterThan(1_000);
  expect(carver.onDemandFailed.size).toBe(0);
  // The next round within the backoff does not write it again.
  await carver.round({ ...input, inventory: r.inventory });
  expect(node.attempts).toHaveLength(2);
});

/** A node whose kernel has the mdev and whose plan removes it; the remove gets `answer`. */
class RemovingNode extends LaggingNode {
  constructor(private readonly answer: Pick<WriteResult, 'error' | 'code'>) {
    super(true);
  }
  override planCarving(_spec: VirtualIONodeSpec, inv: Inventory): CarvingPlan {
    const there = this.attempts.length === 0 && inv.devices.some((d) => d.mdevs?.some((m) => m.uuid === UUID));
    return { writes: there ? [{ path: `bus/mdev/devices/${UUID}/remove`, value: '1', why: 'no claim wants it', pools: ['od'] }] : [], blocked: [] };
  }
  override async applyCarving(plan: CarvingPlan): Promise<WriteResult[]> {
    return plan.writes.map((write) => {
      this.attempts.push(write.path);
      return { write, ...this.answer };
    });
  }
}

test.each([
  ['done', {}, [[UUID]]],
  ['ENOENT (gone already)', { error: 'ENOENT: no such file', code: 'ENOENT' }, [[UUID]]],
  ['refused (EBUSY)', { error: 'EBUSY: device busy', code: 'EBUSY' }, []],
])('the slices a round destroyed are reported (a remove %s)', async (_what, answer, calls) => {
  const node = new RemovingNode(answer as Pick<WriteResult, 'error' | 'code'>);
  const { carver, input } = setup(node);
  const destroyed: (readonly string[])[] = [];
  await carver.round({ ...input, inventory: inventory(true), onDemand: { wanted: new Map(), capacity: {} }, destroyed: (ids) => destroyed.push(ids) });
  expect(node.attempts).toEqual([`bus/mdev/devices/${UUID}/remove`]);
  expect(destroyed).toEqual(calls);
});
