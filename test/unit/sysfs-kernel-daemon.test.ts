// The kernel daemon gives kernel behaviour to plain file writes (what the unmodified agent does).
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { applyCarving } from '../../device-plugin/src/carving/apply.js';
import { planCarving } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { buildSlices } from '../../device-plugin/src/health/slices.js';
import type { VirtualIONodeSpec } from '../../device-plugin/src/model.js';
import { FsSysfsWriter } from '../../device-plugin/src/sysfs/writer.js';
import { spawnKernelDaemon, splitTriggerMessage, startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { connectX6, emulexFc, FakeKernel, mdevGpu } from '../sysfs/kernel.js';
import { tempTree, waitFor } from '../sysfs/tmp.js';

const PF = '0000:3b:00.0';
const GPU = '0000:af:00.0';
const HBA = '0000:5e:00.0';
const NODE = 'node-a';

let root: string;
let devRoot: string;
let cleanup: () => Promise<void>;
let handle: KernelHandle | undefined;

beforeEach(async () => {
  const t = await tempTree();
  ({ root, devRoot, cleanup } = t);
  const k = await FakeKernel.create(root, devRoot);
  await k.addFunction(connectX6(PF, { netdev: 'ens1f0np0', totalVFs: 8 }));
  await k.addFunction(mdevGpu(GPU, { instances: 4 }));
  await k.addFunction(emulexFc(HBA, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 4 }));
});
afterEach(async () => {
  await handle?.stop();
  handle = undefined;
  await cleanup();
});

test('plain file writes carve SR-IOV, mdevs and vports until the plan is empty', async () => {
  handle = await startKernel(root, devRoot);
  const spec: VirtualIONodeSpec = {
    pools: [
      { name: 'nic', resourceName: 'virtualio.dev/nic', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 3, devices: [{ pciAddress: PF }] },
      { name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', mdevType: 'nvidia-222', count: 3, devices: [{ pciAddress: GPU }] },
      { name: 'fc', resourceName: 'virtualio.dev/fc', class: 'Storage', mode: 'NPIV', consumption: 'HostDevice', wwnPrefix: 'c05076', count: 2, devices: [{ pciAddress: HBA }] },
    ],
  };
  const writer = new FsSysfsWriter(root);
  const h = handle;
  const empty = await waitFor('an empty carving plan', async () => {
    await h.idle();
    const inv = await scan(root, { devRoot });
    const plan = planCarving({ spec, inventory: inv, nodeName: NODE, allocated: new Set() });
    if (plan.writes.length === 0) return inv;
    const results = await applyCarving(plan, writer);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    return undefined;
  });
  expect(empty.devices.filter((d) => d.physfn === PF).map((d) => d.driver)).toEqual(['vfio-pci', 'vfio-pci', 'vfio-pci']);
  expect(empty.devices.find((d) => d.pciAddress === GPU)?.mdevs).toHaveLength(3);
  expect(empty.vports).toHaveLength(2);
  const slices = buildSlices({ spec, inventory: empty, devRoot, nodeName: NODE });
  expect(slices.map((s) => s.health)).toEqual(Array(8).fill('Healthy'));
  expect(handle.events.filter((e) => !e.ok)).toEqual([]);
});

test('the queue never falls behind: a safety poll slower than its interval is not piled up, and a write does not wait behind polls', async () => {
  // Polls every millisecond: each takes longer than that (it reads every watched file), which once
  // queued polls without end, so a write waited behind all of them (seconds, growing with time).
  const h = (handle = await startKernel(root, devRoot, { pollMs: 1 }));
  const most = { pending: 0 };
  const sampler = setInterval(() => (most.pending = Math.max(most.pending, h.pending())), 5);
  try {
    await new Promise((r) => setTimeout(r, 400));
    const uuid = '0c2d5b6e-8f0a-4b1c-9d2e-3f4a5b6c7d8e';
    await writeFile(path.join(root, 'bus/pci/devices', GPU, 'mdev_supported_types/nvidia-222/create'), uuid);
    await waitFor('the mdev created', async () => ((await scan(root, { devRoot })).devices.find((d) => d.pciAddress === GPU)?.mdevs?.some((m) => m.uuid === uuid) ? true : undefined));
  } finally {
    clearInterval(sampler);
  }
  // At most the poll running, one queued behind it and the write (and a value check).
  expect(most.pending).toBeLessThanOrEqual(4);
});

test('a refused write is undone in the file and reported', async () => {
  const errors: string[] = [];
  handle = await startKernel(root, devRoot, { onError: (e) => errors.push(e.error ?? '') });
  await new FsSysfsWriter(root).write(`bus/pci/devices/${PF}/sriov_numvfs`, '12');
  await waitFor('the refusal', async () => errors.length > 0);
  expect(errors[0]).toContain('ERANGE');
  await handle.idle();
  expect(await readFile(path.join(root, 'bus/pci/devices', PF, 'sriov_numvfs'), 'utf8')).toBe('0\n');
  expect(await readFile(path.join(root, '.fake-kernel/errors.log'), 'utf8')).toContain('ERANGE');
});

test('stop turns trigger FIFOs back into files', async () => {
  handle = await startKernel(root, devRoot);
  const probe = path.join(root, 'bus/pci/drivers_probe');
  const { lstat } = await import('node:fs/promises');
  expect((await lstat(probe)).isFIFO()).toBe(true);
  await handle.stop();
  expect((await lstat(probe)).isFile()).toBe(true);
});

test.each([
  ['bus/pci/drivers_probe', '0000:3b:00.20000:3b:00.3', ['0000:3b:00.2', '0000:3b:00.3']],
  ['x/mdev_supported_types/t/create', 'aaaaaaaa-0000-4000-8000-000000000001bbbbbbbb-0000-4000-8000-000000000002', ['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002']],
  ['x/fc_host/host5/vport_create', 'c050760000000001:c050760000000002c050760000000003:c050760000000004', ['c050760000000001:c050760000000002', 'c050760000000003:c050760000000004']],
  ['bus/pci/drivers_probe', 'garbage', ['garbage']],
])('two writes that arrive as one FIFO message are split (%s)', (file, msg, want) => {
  expect(splitTriggerMessage(file, msg)).toEqual(want);
});

test('the CLI prints ready and applies writes from another process', async () => {
  const daemon = await spawnKernelDaemon(root, devRoot);
  try {
    await new FsSysfsWriter(root).write(`bus/pci/devices/${PF}/sriov_numvfs`, '2');
    await waitFor('two VFs', async () => (await scan(root)).devices.find((d) => d.pciAddress === PF)?.sriov?.vfs?.length === 2);
  } finally {
    await daemon.stop();
  }
  const { lstat } = await import('node:fs/promises');
  expect((await lstat(path.join(root, 'bus/pci/drivers_probe'))).isFile()).toBe(true);
}, 60000);
