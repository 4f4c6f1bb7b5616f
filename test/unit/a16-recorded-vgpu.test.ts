// The recorded server's NVIDIA GA107 (10de:25b6, the A16/A2 of test/fixtures/real-sysfs/vgpu-node)
// both ways, decided per device: as recorded (mdev vGPUs on its VFs: the vGPU ≤ 16 ABI) and the same
// card under the vGPU 17+ vendor-VFIO driver (the recorded mdevs gone, every VF with its nvidia/
// folder). Each pool kind works on the interface the card speaks and is refused, with the reason,
// on the other.
import { realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { buildSlices } from '../../device-plugin/src/health/slices.js';
import type { PoolPlan } from '../../device-plugin/src/model.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { GA107_RECORDED, registerVfioGpu } from '../sysfs/nvidia.js';
import { tempTree } from '../sysfs/tmp.js';
import { loadUmockdev } from '../sysfs/umockdev.js';

const GPU = '0000:08:00.0';
const RECORDED_MDEVS = ['f715f63c-0d00-4007-9c5a-b07b0c6c05de', '3deab9a4-200a-4c54-99b1-5eb0722d1d81', 'c728e022-f16f-434b-ad2c-9665ee634d3d'];
const vgpuPool: PoolPlan = { name: 'a16-4q', resourceName: 'virtualio.dev/a16-4q', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count: 2, vfDriver: 'nvidia', vgpuProfile: 'A2-4Q', devices: [{ pciAddress: GPU }] };
const mdevPool: PoolPlan = { name: 'a16-mdev', resourceName: 'virtualio.dev/a16-mdev', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', count: 1, mdevType: 'nvidia-754', devices: [{ pciAddress: GPU }] };

let t: Awaited<ReturnType<typeof tempTree>>;
beforeEach(async () => {
  t = await tempTree();
  await loadUmockdev(path.resolve(import.meta.dirname, '../fixtures/real-sysfs/vgpu-node.umockdev'), t.root, { devRoot: t.devRoot });
}, 60_000);
afterEach(() => t.cleanup());

test('as recorded the GPU speaks mdev: a vGPU-profile pool is refused with the reason', async () => {
  const inv = await scan(t.root, { devRoot: t.devRoot });
  expect(inv.devices.find((d) => d.pciAddress === GPU)?.gpuInterface).toBe('Mdev');
  const plan = planCarving({ spec: { pools: [vgpuPool] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(plan.writes).toEqual([]);
  expect(plan.blocked).toEqual([{ pool: 'a16-4q', device: GPU, reason: expect.stringContaining(`${GPU} speaks the mdev vGPU interface`) }]);
}, 60_000);

test('the same card under the vendor-VFIO driver: the profile is resolved on this card, typed on two VFs, served as PCI slices on nvidia', async () => {
  const k = await FakeKernel.create(t.root, t.devRoot);
  // The vGPU 16 mdevs do not survive the driver change (the recording has no `remove` attribute: added).
  for (const u of RECORDED_MDEVS) {
    writeFileSync(path.join(realpathSync(path.join(t.root, 'bus/mdev/devices', u)), 'remove'), '');
    await k.write(`bus/mdev/devices/${u}/remove`, '1');
  }
  await registerVfioGpu(k, GPU, GA107_RECORDED);
  let inv = await scan(t.root, { devRoot: t.devRoot });
  expect(inv.devices.find((d) => d.pciAddress === GPU)?.gpuInterface).toBe('NvidiaVendorVfio');
  const refused = planCarving({ spec: { pools: [mdevPool] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(refused.writes).toEqual([]);
  expect(refused.blocked.map((b) => b.pool)).toEqual(['a16-mdev']);

  const plan = planCarving({ spec: { pools: [vgpuPool] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(plan.blocked).toEqual([]);
  expect(plan.writes.map((w) => `${w.path}=${w.value}`)).toEqual([
    'bus/pci/devices/0000:08:00.4/nvidia/current_vgpu_type=746',
    'bus/pci/devices/0000:08:00.5/nvidia/current_vgpu_type=746',
  ]);
  for (const w of plan.writes) await k.write(w.path, w.value);
  inv = await scan(t.root, { devRoot: t.devRoot });
  expect(planCarving({ spec: { pools: [vgpuPool] }, inventory: inv, nodeName: 'n', allocated: new Set() }).writes).toEqual([]);
  const slices = buildSlices({ spec: { pools: [vgpuPool] }, inventory: inv, devRoot: t.devRoot, nodeName: 'n' });
  expect(slices.map((s) => [s.id, s.kind, s.health, s.reason])).toEqual([
    ['0000:08:00.4', 'VF', 'Healthy', undefined],
    ['0000:08:00.5', 'VF', 'Healthy', undefined],
  ]);
  for (const s of slices) expect(s.deviceNodes).toEqual([`/dev/vfio/${s.iommuGroup ?? '?'}`, expect.stringMatching(/^\/dev\/vfio\/devices\/vfio\d+$/)]);
  expect(await k.driverOf('0000:08:00.4')).toBe('nvidia');
}, 60_000);
