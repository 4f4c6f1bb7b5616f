// Releasing vGPU pools after an agent restart on a busy GPU (simulated L40S, test/sysfs/nvidia.ts):
// the VFs then list only the types that still fit (a typed VF lists nothing, a full GPU lists
// nothing anywhere), so the name of a type a pool holds can be listed nowhere. Deleting or retiring
// the pool must resolve its profile from the table kept in the checkpoint and clear its VFs.
import { rememberCatalogues, type VgpuType } from './gpu.js';
import { learnFramebuffer, withKeptCatalogues } from './ondemand-vgpu.js';
import { planUncarve } from './plan.js';
import { scan } from '../discovery/scan.js';
import type { Inventory, PoolPlan } from '../model.js';
import { FakeKernel } from '../../../test/sysfs/kernel.js';
import { addNvidiaVfioGpu, L40S, setMixedSize, sriovManage } from '../../../test/sysfs/nvidia.js';
import { tempTree } from '../../../test/sysfs/tmp.js';
import { join } from 'node:path';
import { Checkpoint } from '../agent/checkpoint.js';
import { beforeOnDemand } from '../agent/ondemand.js';
import { silentLogger } from '../log.js';

const PF = '0000:3b:00.0';
const VF = (i: number): string => `0000:3b:${(Math.floor((i + 4) / 8)).toString(16).padStart(2, '0')}.${(i + 4) % 8}`;
const ID = { '12Q': 1153, '24Q': 1155 } as const;
const typePath = (vf: string): string => `bus/pci/devices/${vf}/nvidia/current_vgpu_type`;
const base = (): Omit<PoolPlan, 'name'> => ({ resourceName: 'virtualio.dev/l40s', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', vfDriver: 'nvidia', devices: [{ pciAddress: PF }] });
const onDemand = (): PoolPlan => ({ ...base(), name: 'od', frontEnd: 'DRA', vgpuHeterogeneous: true, onDemand: { vgpuProfiles: ['L40S-12Q', 'L40S-24Q'] }, deleting: true });
const profile = (): PoolPlan => ({ ...base(), name: 'q12', vgpuProfile: 'L40S-12Q', count: 4, deleting: true });

let k: FakeKernel;
let dir: string;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  const t = await tempTree('vio-vgpu-rel-');
  cleanup = t.cleanup;
  dir = t.root;
  k = await FakeKernel.create(t.root, t.devRoot);
  await addNvidiaVfioGpu(k, PF, L40S);
  await sriovManage(k, '-e', PF);
});
afterEach(() => cleanup());

/** A scan as a process sees it: `memory` is what it remembered of the catalogues (empty: just started). */
async function look(memory: Map<string, VgpuType[]>): Promise<Inventory> {
  return rememberCatalogues(await scan(k.root, { devRoot: k.devRoot }), memory);
}
const clears = (inv: Inventory, pool: PoolPlan, kept?: Record<string, Record<string, number>>): string[] =>
  planUncarve({ pool, spec: { pools: [] }, inventory: inv, nodeName: 'n1', allocated: new Set(), ...(kept ? { kept } : {}) })
    .writes.filter((w) => w.value === '0' && w.path.endsWith('current_vgpu_type')).map((w) => w.path);

test('deleting an on-demand vGPU pool after a restart clears a type the busy GPU no longer lists', async () => {
  await setMixedSize(k, PF, true);
  const before = await look(new Map());
  const devices = new Map(before.devices.map((d) => [d.pciAddress, d]));
  const kept = learnFramebuffer({}, [{ ...onDemand(), deleting: false }], devices, before); // what the checkpoint holds
  await k.write(typePath(VF(0)), String(ID['12Q']));
  await k.write(typePath(VF(1)), String(ID['24Q']));
  const after = await look(new Map()); // a new process: 12 GB left, so no VF lists 24Q
  expect(after.vgpuCatalogues?.[PF]?.some((t) => t.id === ID['24Q'])).toBe(false);
  expect(clears(after, onDemand())).toEqual([typePath(VF(0))]); // the table the VFs show: 24Q stays for ever
  expect(clears(after, onDemand(), kept).sort()).toEqual([typePath(VF(0)), typePath(VF(1))]);
  for (const p of clears(after, onDemand(), kept)) await k.write(p, '0'); // the driver takes them
  expect(clears(await look(new Map()), onDemand(), kept)).toEqual([]);
});

test('deleting a profile pool after a restart on a full GPU clears its types from the kept table', async () => {
  const before = await look(new Map());
  const devices = new Map(before.devices.map((d) => [d.pciAddress, d]));
  const kept = learnFramebuffer({}, [{ ...profile(), deleting: false }], devices, before);
  for (let i = 0; i < 4; i++) await k.write(typePath(VF(i)), String(ID['12Q'])); // 4 × 12 GB: full
  const after = await look(new Map());
  expect(after.vgpuCatalogues?.[PF] ?? []).toEqual([]); // nothing listed anywhere
  expect(clears(after, profile())).toEqual([]);
  expect(clears(after, profile(), kept)).toEqual([0, 1, 2, 3].map((i) => typePath(VF(i))));
  // The kept table only adds names: a GPU the record does not know is left as scanned.
  expect(withKeptCatalogues(after, {})).toBe(after);
});

test('the agent keeps a profile pool\'s type table in the checkpoint (no on-demand pool on the node), and a new process reads it back', async () => {
  const file = join(dir, '.agent', 'checkpoint.json');
  const cp = new Checkpoint(file, 'n1', silentLogger());
  const spec = { pools: [{ ...profile(), deleting: false }] };
  expect(beforeOnDemand(spec, await look(new Map()), cp, new Map(), new Date())).toBeUndefined();
  const kept = new Checkpoint(file, 'n1', silentLogger()).mdevCapacity();
  expect(kept[PF]).toMatchObject({ 'type:NVIDIA L40S-12Q': ID['12Q'], 'type:NVIDIA L40S-24Q': ID['24Q'] });
});
