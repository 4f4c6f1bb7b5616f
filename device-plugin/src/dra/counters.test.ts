// The on-demand counter model against the simulated kernel's shared-capacity parents: what is
// published equals what the kernel can still create, given which mdevs the scheduler already counts.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKernel, mdevGpuMixed } from '../../../test/sysfs/kernel.js';
import { mdevUuid } from '../carving/layout.js';
import { learnCapacity, offeredParents, planOnDemand, type WantedMdev } from '../carving/ondemand.js';
import { scan } from '../discovery/scan.js';
import type { CarvingPlan, InventoryDevice, PoolPlan } from '../model.js';
import { counterSetName, onDemandContent, parentOffer, unitsOf } from './counters.js';

const NODE = 'n1';
const GPU = '0000:3b:00.0';
const pool: PoolPlan = { name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: ['nvidia-745', 'nvidia-747', 'NVIDIA_A16-16Q'] }, devices: [{ pciAddress: GPU }] };
let base: string;
let k: FakeKernel;

beforeEach(async () => {
  base = mkdtempSync(join(tmpdir(), 'vio-counters-'));
  k = await FakeKernel.create(join(base, 'sys'), join(base, 'dev'));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

async function devices(): Promise<Map<string, InventoryDevice>> {
  const inv = await scan(join(base, 'sys'), { devRoot: join(base, 'dev') });
  return new Map(inv.devices.map((d) => [d.pciAddress, d]));
}

const values = (o: { counters: { counters: Record<string, { value: string }> } }): Record<string, string> => Object.fromEntries(Object.entries(o.counters.counters).map(([n, c]) => [n, c.value]));

test('units is the lcm of the types capacities; too large a product leaves it out', () => {
  expect(unitsOf([8, 2, 1])).toBe(8);
  expect(unitsOf([8, 4, 2, 1])).toBe(8);
  expect(unitsOf([6, 4])).toBe(12);
  expect(unitsOf([999_983, 999_979])).toBeUndefined();
  expect(counterSetName('0000:3b:00.0')).toBe('parent-0000-3b-00-0');
});

test('an empty parent publishes every creatable instance of each allowed type, consuming its share of the capacity', async () => {
  await k.addFunction(mdevGpuMixed(GPU));
  const devs = await devices();
  const cap = learnCapacity({}, [GPU], devs);
  expect(cap[GPU]).toEqual({ 'nvidia-745': 8, 'nvidia-746': 4, 'nvidia-747': 2, 'nvidia-748': 1 });
  const [p] = offeredParents(pool, devs, cap);
  expect(p!.types.map((t) => [t.id, t.max])).toEqual([['nvidia-745', 8], ['nvidia-747', 2], ['nvidia-748', 1]]);
  const o = parentOffer(NODE, pool, p!, devs.get(GPU)!, new Set(), { devices: devs });
  expect(values(o)).toEqual({ units: '8', 'type-0': '8', 'type-1': '2', 'type-2': '1' });
  expect(o.devices).toHaveLength(11);
  const d = o.devices.find((x) => x.name === `mdev-${mdevUuid(NODE, GPU, 'nvidia-747', 1)}`)!;
  expect(d.consumesCounters).toEqual([{ counterSet: 'parent-0000-3b-00-0', counters: { units: { value: '4' }, 'type-1': { value: '1' } } }]);
  expect(d.attributes).toMatchObject({ mdevType: { string: 'nvidia-747' }, mdevTypeName: { string: 'NVIDIA A16-8Q' }, mdevUUID: { string: mdevUuid(NODE, GPU, 'nvidia-747', 1) }, parent: { string: GPU } });
  expect(d.bindingConditions).toEqual(['virtualio.dev/Carved']);
  expect(d.bindingFailureConditions).toEqual(['virtualio.dev/CarveFailed']);
  const c = onDemandContent(NODE, pool, [p!], devs, new Set(), { devices: devs });
  expect(c.counterChunks).toHaveLength(1);
  expect(c.chunks.flat()).toHaveLength(11);
});

test('a claim counted by the scheduler is added back once carved; an mdev no claim owns takes room and its device', async () => {
  await k.addFunction(mdevGpuMixed(GPU));
  const cap = learnCapacity({}, [GPU], await devices());
  const claimed = mdevUuid(NODE, GPU, 'nvidia-747', 0); // 8Q: half the GPU
  const other = mdevUuid(NODE, GPU, 'nvidia-745', 3); // 2Q
  await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-747/create`, claimed);
  await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-745/create`, other);
  const devs = await devices();
  // The kernel now has 16 - 8 - 2 = 6 GB free: 3 × 2Q, 0 × 8Q, 0 × 16Q.
  expect(Object.fromEntries(devs.get(GPU)!.mdevTypes!.map((t) => [t.id, t.availableInstances]))).toMatchObject({ 'nvidia-745': 3, 'nvidia-747': 0, 'nvidia-748': 0 });
  expect(learnCapacity(cap, [GPU], devs)[GPU]).toEqual(cap[GPU]); // a parent with mdevs keeps what it learned empty
  const [p] = offeredParents(pool, devs, cap);
  // `claimed` belongs to a live claim (the scheduler subtracts it), `other` to nobody.
  const o = parentOffer(NODE, pool, p!, devs.get(GPU)!, new Set([claimed]), { devices: devs });
  // units: 3 × 1 free + 4 for the live claim = 7 of 8; 8Q: 0 + 1 live.
  expect(values(o)).toEqual({ units: '7', 'type-0': '3', 'type-1': '1', 'type-2': '0' });
  const names = o.devices.map((d) => d.name);
  expect(names).toContain(`mdev-${claimed}`);
  expect(names).not.toContain(`mdev-${other}`);
  expect(names).toHaveLength(10);
  // With the live claim released, its mdev takes room too and its device goes.
  const after = parentOffer(NODE, pool, p!, devs.get(GPU)!, new Set(), { devices: devs });
  expect(values(after)).toEqual({ units: '3', 'type-0': '3', 'type-1': '0', 'type-2': '0' });
  expect(after.devices.map((d) => d.name)).not.toContain(`mdev-${claimed}`);
});

test('one type per GPU: once an instance exists, the kernel shows the other types full and so do their counters', async () => {
  await k.addFunction(mdevGpuMixed(GPU, { exclusive: true }));
  const cap = learnCapacity({}, [GPU], await devices());
  const u = mdevUuid(NODE, GPU, 'nvidia-745', 0);
  await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-745/create`, u);
  const devs = await devices();
  const [p] = offeredParents(pool, devs, cap);
  const o = parentOffer(NODE, pool, p!, devs.get(GPU)!, new Set([u]), { devices: devs });
  expect(values(o)).toEqual({ units: '8', 'type-0': '8', 'type-1': '0', 'type-2': '0' });
});

test('the planner creates what claims were allocated, reports what no longer fits, and removes what no claim wants unless held', async () => {
  await k.addFunction(mdevGpuMixed(GPU));
  const cap = learnCapacity({}, [GPU], await devices());
  const a = mdevUuid(NODE, GPU, 'nvidia-748', 0);
  await k.write(`bus/pci/devices/${GPU}/mdev_supported_types/nvidia-748/create`, a); // the whole GPU
  const devs = await devices();
  const want = (uuid: string): [string, WantedMdev] => [uuid, { pool: 'vgpu', uuid, claim: 'default/c', namespace: 'default', name: 'c', uid: 'u1' }];
  const b = mdevUuid(NODE, GPU, 'nvidia-745', 0);
  const plan: CarvingPlan = { writes: [], blocked: [] };
  planOnDemand(NODE, pool, devs, cap, new Map([want(a), want(b)]), new Set(), plan);
  expect(plan.writes).toEqual([]);
  expect(plan.failed).toEqual([{ pool: 'vgpu', uuid: b, reason: expect.stringMatching(/type nvidia-745 no longer fits on 0000:3b:00.0/) }]);
  // `a` no longer wanted: removed, unless held.
  const held: CarvingPlan = { writes: [], blocked: [] };
  planOnDemand(NODE, pool, devs, cap, new Map(), new Set([a]), held);
  expect(held.writes).toEqual([]);
  const free: CarvingPlan = { writes: [], blocked: [] };
  planOnDemand(NODE, pool, devs, cap, new Map([want(b)]), new Set(), free);
  expect(free.writes.map((w) => [w.path, w.value])).toEqual([[`bus/mdev/devices/${a}/remove`, '1']]);
  expect(free.failed?.map((f) => f.uuid)).toEqual([b]); // not in this pass: the removal has not happened yet
});
