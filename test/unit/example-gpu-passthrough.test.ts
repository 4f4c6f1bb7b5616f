// examples/nvidia-gpu-passthrough through the real planner and the real carving, not only the schema:
// a fake-kernel host with an RTX A5000, its HDMI audio function and a PCIe bridge in one IOMMU group;
// the operator plans the example's pool from the agent's scan, the agent's carving moves the GPU and
// its audio companion (not the bridge) to vfio-pci, the pool exposes one Healthy slice whose device
// nodes cover the group, and Allocate hands KubeVirt what it needs. Planning again on the carved
// host gives the same plan (with a `drivers` selector too, through the recorded original facts).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { recordOriginals, withOriginals, type OriginalRecord } from '../../device-plugin/src/discovery/original.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { buildSlices } from '../../device-plugin/src/health/slices.js';
import type { Inventory } from '../../device-plugin/src/model.js';
import { containerResponse } from '../../device-plugin/src/plugin/allocate.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { planNode, preparePools } from '../../operator/src/controllers/plan/plan.js';
import { nodeObj } from '../support/operator-fixtures.js';
import { FakeKernel, type FunctionSpec } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

const REPO = join(import.meta.dirname, '../..');
const GPU = '0000:41:00.0';
const AUDIO = '0000:41:00.1';
const BRIDGE = '0000:40:01.1';
const GROUP = 40;
const NODE = 'gpu-node-1';

const host: FunctionSpec[] = [
  { address: BRIDGE, vendor: '1022', device: '1483', classCode: '060400', driver: 'pcieport', numaNode: 0, iommuGroup: GROUP },
  { address: GPU, vendor: '10de', device: '2231', classCode: '030000', driver: 'nvidia', numaNode: 0, iommuGroup: GROUP },
  { address: AUDIO, vendor: '10de', device: '1aef', classCode: '040300', driver: 'snd_hda_intel', numaNode: 0, iommuGroup: GROUP },
];

function examplePools(): Pool[] {
  const docs = YAML.parseAllDocuments(readFileSync(join(REPO, 'examples/nvidia-gpu-passthrough/virtualiodevice.yaml'), 'utf8')).map((d) => d.toJS() as Pool);
  return docs.map((p) => ({ ...p, metadata: { ...p.metadata, uid: `uid-${p.metadata.name}`, creationTimestamp: '2026-01-01T00:00:00Z' } }));
}

const vioOf = (inv: Inventory, plan?: VioNode['spec']): VioNode => ({
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: NODE }, ...(plan ? { spec: plan } : {}), status: { inventory: { devices: inv.devices } },
});

let kernel: FakeKernel;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  const t = await tempTree('vio-example-gpu-');
  cleanup = t.cleanup;
  kernel = await FakeKernel.create(t.root, t.devRoot, { driverIds: { '10de:2231': 'nvidia', '10de:1aef': 'snd_hda_intel' } });
  for (const f of host) await kernel.addFunction(f);
});
afterEach(() => cleanup());

/** One agent pass: record original facts of what is about to move, apply the carving writes, rescan. */
async function carve(spec: NonNullable<VioNode['spec']>, inv: Inventory, record: OriginalRecord): Promise<{ inv: Inventory; record: OriginalRecord; writes: string[] }> {
  const plan = planCarving({ spec, inventory: inv, nodeName: NODE, allocated: new Set() });
  expect(plan.blocked).toEqual([]);
  const moved = plan.writes.filter((w) => w.path.endsWith('/driver_override')).map((w) => w.path.split('/')[3] as string);
  const next = recordOriginals(record, inv.devices, moved).record;
  for (const w of plan.writes) await kernel.write(w.path, w.value);
  const after = await scan(kernel.root, { devRoot: kernel.devRoot });
  return { inv: { ...after, devices: withOriginals(after.devices, next) }, record: next, writes: plan.writes.map((w) => `${w.path}=${w.value.trim()}`) };
}

test('the example plans one device for the GPU\'s IOMMU group, carves the GPU and its audio function, and exposes one slice', async () => {
  const pools = preparePools(examplePools());
  expect(pools.ordered.map((p) => p.name)).toEqual(['rtx-a5000']);
  const node = nodeObj(NODE, { 'virtualio.dev/gpu-passthrough': 'rtx-a5000' });
  const inv0 = await scan(kernel.root, { devRoot: kernel.devRoot });
  expect(inv0.devices.find((d) => d.pciAddress === GPU)?.iommuGroupMembers).toEqual([BRIDGE, GPU, AUDIO]);

  const first = planNode(node, vioOf(inv0), pools);
  expect(first.conflicts).toEqual([]);
  expect(first.pools).toEqual([{
    name: 'rtx-a5000', resourceName: 'virtualio.dev/rtx-a5000', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', policy: 'NUMAAligned',
    devices: [{ pciAddress: GPU }],
  }]);
  // Without the label the example's pool is not planned.
  expect(planNode(nodeObj(NODE, {}), vioOf(inv0), pools).pools).toEqual([]);

  const spec = { pools: first.pools };
  const { inv: inv1, writes } = await carve(spec, inv0, {});
  expect(writes).toContain(`bus/pci/devices/${GPU}/driver_override=vfio-pci`);
  expect(writes).toContain(`bus/pci/devices/${AUDIO}/driver_override=vfio-pci`);
  expect(writes.some((w) => w.includes(BRIDGE))).toBe(false);
  const by = new Map(inv1.devices.map((d) => [d.pciAddress, d]));
  expect([by.get(GPU)?.driver, by.get(AUDIO)?.driver, by.get(BRIDGE)?.driver]).toEqual(['vfio-pci', 'vfio-pci', 'pcieport']);
  expect(by.get(GPU)?.original).toEqual({ driver: 'nvidia' });
  expect(by.get(AUDIO)?.original).toEqual({ driver: 'snd_hda_intel' });

  // One slice for the group, Healthy, with the group's VFIO node (which covers the audio function).
  const slices = buildSlices({ spec, inventory: inv1, devRoot: kernel.devRoot, nodeName: NODE });
  expect(slices.map((s) => [s.id, s.kind, s.health, s.reason])).toEqual([[GPU, 'Function', 'Healthy', undefined]]);
  expect(slices[0]?.deviceNodes).toContain(`/dev/vfio/${GROUP}`);
  const [poolPlan] = first.pools;
  if (!poolPlan) throw new Error('no plan');
  const { response } = containerResponse(poolPlan, slices, { cdi: false });
  expect(response.envs).toEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_RTX-A5000': GPU });
  expect(response.devices?.map((d) => d.hostPath)).toEqual(expect.arrayContaining(['/dev/vfio/vfio', `/dev/vfio/${GROUP}`]));

  // The carved host plans the same, and carving it again writes nothing.
  expect(planNode(node, vioOf(inv1, spec), pools)).toEqual(first);
  expect(planCarving({ spec, inventory: inv1, nodeName: NODE, allocated: new Set() }).writes).toEqual([]);
});

test('a pool selected by drivers: [nvidia] stays planned after carving (original facts), and without them through its current plan', async () => {
  const [example] = examplePools() as [Pool];
  const byDriver: Pool = { ...example, spec: { ...example.spec, deviceSelector: { drivers: ['nvidia'] } } };
  const pools = preparePools([byDriver]);
  const node = nodeObj(NODE, { 'virtualio.dev/gpu-passthrough': 'rtx-a5000' });
  const inv0 = await scan(kernel.root, { devRoot: kernel.devRoot });
  const first = planNode(node, vioOf(inv0), pools);
  expect(first.pools.map((p) => p.devices)).toEqual([[{ pciAddress: GPU }]]);
  const { inv: inv1 } = await carve({ pools: first.pools }, inv0, {});
  // The GPU is on vfio-pci now; with the original facts a fresh plan (no current plan) still takes it.
  expect(planNode(node, vioOf(inv1), pools)).toEqual(first);
  // An agent without the record: the node's current plan keeps it.
  const bare = { ...inv1, devices: inv1.devices.map(({ original: _o, ...d }) => d) };
  expect(planNode(node, vioOf(bare, { pools: first.pools }), pools)).toEqual(first);
  expect(planNode(node, vioOf(bare), pools).pools).toEqual([]);
});
