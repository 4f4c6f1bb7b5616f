// Our Allocate against KubeVirt's own virt-launcher code: the env our pure `allocate` returns is
// handed, exactly as the kubelet would put it into the compute container, to KubeVirt v1.9.0's
// host-device builders (pkg/virt-launcher/virtwrap/device/hostdevice/{gpu,generic}), and the host
// devices KubeVirt would give libvirt are checked. Harness: test/conformance/kubevirt-hostdev.
import { allocate, type PoolSpec } from '../../device-plugin/src/plugin/allocate.js';
import type { Slice } from '../../device-plugin/src/model.js';
import { ensureConformance, runKubevirtHostdev, type KubevirtHostdevCase, type KubevirtHostdevResult } from '../conformance/harness.js';

let bin: string;
beforeAll(() => {
  bin = ensureConformance('kubevirt-hostdev')['kubevirt-hostdev'];
}, 20 * 60_000);

// ---- pools and slices as the agent models them --------------------------------------------

const gpuPass: PoolSpec = { name: 't4', resourceName: 'virtualio.dev/t4', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice' };
const vgpu: PoolSpec = { name: 'a16-4q', resourceName: 'nvidia.com/GRID_A16-4Q', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice' };
const nicVfs: PoolSpec = { name: 'cx6-vf', resourceName: 'virtualio.dev/cx6-vf', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice' };
const nvme: PoolSpec = { name: 'nvme-fast.gen4', resourceName: 'virtualio.dev/nvme-fast.gen4', class: 'Storage', mode: 'Passthrough', consumption: 'HostDevice' };

function fn(pool: PoolSpec, addr: string, group: number): Slice {
  return { id: addr, pool: pool.name, resourceName: pool.resourceName, kind: 'Function', parent: addr, pciAddress: addr, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}
function vf(pool: PoolSpec, addr: string, pf: string, group: number): Slice {
  return { id: addr, pool: pool.name, resourceName: pool.resourceName, kind: 'VF', parent: pf, pciAddress: addr, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}
function mdev(pool: PoolSpec, uuid: string, parent: string, group: number): Slice {
  return { id: uuid, pool: pool.name, resourceName: pool.resourceName, kind: 'Mdev', parent, mdevUuid: uuid, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}
const snapshot = (...s: Slice[]): Map<string, Slice> => new Map(s.map((x) => [x.id, x]));

const UUID_A = '6f2a3c56-0a4f-5b49-9c1d-4a3f1b2c3d4e';
const UUID_B = '0b1c2d3e-4f50-5162-8374-a5b6c7d8e9f0';

const slices = {
  t4: snapshot(fn(gpuPass, '0000:3b:00.0', 30), fn(gpuPass, '0000:af:00.0', 31)),
  a16: snapshot(mdev(vgpu, UUID_A, '0000:08:00.4', 101), mdev(vgpu, UUID_B, '0000:08:00.5', 102)),
  cx6: snapshot(vf(nicVfs, '0000:81:00.2', '0000:81:00.0', 60), vf(nicVfs, '0000:81:00.3', '0000:81:00.0', 61)),
  nvme: snapshot(fn(nvme, '0000:c1:00.0', 70)),
};

/** The env of the compute container after the kubelet called our Allocate once for this resource. */
function allocatedEnv(pool: PoolSpec, snap: Map<string, Slice>, ids: string[]): Record<string, string> {
  const out = allocate({ containerRequests: [{ devicesIds: ids }] }, pool, snap, { cdi: false });
  if (!out.ok) throw new Error(`allocate failed: ${out.code} ${out.message}`);
  const first = out.response.containerResponses[0];
  if (!first?.envs) throw new Error('allocate returned no envs');
  return { ...first.envs };
}

/**
 * The kubelet merges the envs of every resource of a container, first seen wins
 * (devicemanager deviceRunContainerOptions); a conflict would be a bug in our naming.
 */
function mergeEnvs(...envs: Record<string, string>[]): Record<string, string> {
  const merged: Record<string, string> = {};
  for (const e of envs) {
    for (const [k, v] of Object.entries(e)) {
      if (k in merged) throw new Error(`env ${k} set by two resources`);
      merged[k] = v;
    }
  }
  return merged;
}

type Entry = { name: string; deviceName: string };
const vmi = (devices: { gpus?: Entry[]; hostDevices?: Entry[] }) => ({
  apiVersion: 'kubevirt.io/v1',
  kind: 'VirtualMachineInstance',
  metadata: { name: 'vm1', namespace: 'default' },
  spec: { domain: { devices } },
});

async function kubevirt(c: KubevirtHostdevCase): Promise<KubevirtHostdevResult> {
  const [r] = await runKubevirtHostdev(bin, [c]);
  if (!r) throw new Error('no result');
  return r;
}

function devicesOf(list: KubevirtHostdevResult['gpus']) {
  if (list.error !== undefined) throw new Error(`KubeVirt refused: ${list.error}`);
  return list.devices;
}

// ---- accepted ---------------------------------------------------------------------------------

test('GPU passthrough: PCI_RESOURCE becomes an unmanaged PCI hostdev on the allocated function', async () => {
  const env = allocatedEnv(gpuPass, slices.t4, ['0000:af:00.0']);
  expect(env).toStrictEqual({ PCI_RESOURCE_VIRTUALIO_DEV_T4: '0000:af:00.0' });
  const r = await kubevirt({ vmi: vmi({ gpus: [{ name: 'gpu0', deviceName: gpuPass.resourceName }] }), env });
  expect(r.error).toBeUndefined();
  expect(devicesOf(r.gpus)).toEqual([
    expect.objectContaining({ type: 'pci', managed: 'no', pciAddress: '0000:af:00.0', alias: 'gpu-gpu0' }),
  ]);
  expect(devicesOf(r.gpus)[0]?.xml).toContain('<address type="pci" domain="0x0000" bus="0xaf" slot="0x00" function="0x0">');
  expect(devicesOf(r.hostDevices)).toEqual([]);
});

test('passthrough function as a generic hostDevices[] entry', async () => {
  const env = allocatedEnv(gpuPass, slices.t4, ['0000:3b:00.0']);
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'dev0', deviceName: gpuPass.resourceName }] }), env });
  expect(devicesOf(r.hostDevices)).toEqual([
    expect.objectContaining({ type: 'pci', managed: 'no', pciAddress: '0000:3b:00.0', alias: 'hostdevice-dev0' }),
  ]);
});

test('SR-IOV VF as a host device: the VF address (not the PF) reaches libvirt', async () => {
  const env = allocatedEnv(nicVfs, slices.cx6, ['0000:81:00.3']);
  expect(env).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_CX6-VF': '0000:81:00.3' });
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'vf0', deviceName: nicVfs.resourceName }] }), env });
  expect(r.ok).toBe(true);
  expect(devicesOf(r.hostDevices)).toEqual([
    expect.objectContaining({ type: 'pci', managed: 'no', pciAddress: '0000:81:00.3', alias: 'hostdevice-vf0' }),
  ]);
});

test('mdev vGPU: MDEV_PCI_RESOURCE becomes an mdev hostdev with the UUID, display and ramfb on for gpus[]', async () => {
  const env = allocatedEnv(vgpu, slices.a16, [UUID_B]);
  expect(env).toStrictEqual({ 'MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_A16-4Q': UUID_B });
  const r = await kubevirt({ vmi: vmi({ gpus: [{ name: 'vgpu0', deviceName: vgpu.resourceName }] }), env });
  expect(r.ok).toBe(true);
  expect(devicesOf(r.gpus)).toEqual([
    expect.objectContaining({ type: 'mdev', mode: 'subsystem', model: 'vfio-pci', mdevUUID: UUID_B, alias: 'gpu-vgpu0', display: 'on', ramfb: 'on' }),
  ]);
  // No PCI variable for the resource: KubeVirt only notes its absence.
  expect(r.warnings).toContain('PCI_RESOURCE_NVIDIA_COM_GRID_A16-4Q not set for resource nvidia.com/GRID_A16-4Q');
});

test('mdev as a generic hostDevices[] entry gets no display', async () => {
  const env = allocatedEnv(vgpu, slices.a16, [UUID_A]);
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'm0', deviceName: vgpu.resourceName }] }), env });
  expect(devicesOf(r.hostDevices)).toEqual([expect.objectContaining({ type: 'mdev', mdevUUID: UUID_A, display: '', ramfb: '' })]);
});

test('two devices from one pool: KubeVirt assigns the addresses to the entries in env order', async () => {
  const env = allocatedEnv(gpuPass, slices.t4, ['0000:af:00.0', '0000:3b:00.0']);
  expect(env.PCI_RESOURCE_VIRTUALIO_DEV_T4).toBe('0000:af:00.0,0000:3b:00.0');
  const r = await kubevirt({
    vmi: vmi({ gpus: [{ name: 'g0', deviceName: gpuPass.resourceName }, { name: 'g1', deviceName: gpuPass.resourceName }] }),
    env,
  });
  expect(devicesOf(r.gpus).map((d) => [d.alias, d.pciAddress])).toStrictEqual([
    ['gpu-g0', '0000:af:00.0'],
    ['gpu-g1', '0000:3b:00.0'],
  ]);

  const m = allocatedEnv(vgpu, slices.a16, [UUID_A, UUID_B]);
  const r2 = await kubevirt({
    vmi: vmi({ gpus: [{ name: 'v0', deviceName: vgpu.resourceName }, { name: 'v1', deviceName: vgpu.resourceName }] }),
    env: m,
  });
  // Display goes to the first mdev of gpus[] only.
  expect(devicesOf(r2.gpus).map((d) => [d.alias, d.mdevUUID, d.display])).toStrictEqual([
    ['gpu-v0', UUID_A, 'on'],
    ['gpu-v1', UUID_B, ''],
  ]);
});

test('two pools in one VMI: vGPU in gpus[], VF and NVMe in hostDevices[], envs merged like the kubelet', async () => {
  const env = mergeEnvs(
    allocatedEnv(vgpu, slices.a16, [UUID_A]),
    allocatedEnv(nicVfs, slices.cx6, ['0000:81:00.2', '0000:81:00.3']),
    allocatedEnv(nvme, slices.nvme, ['0000:c1:00.0']),
  );
  const r = await kubevirt({
    vmi: vmi({
      gpus: [{ name: 'vgpu', deviceName: vgpu.resourceName }],
      hostDevices: [
        { name: 'vf-a', deviceName: nicVfs.resourceName },
        { name: 'disk', deviceName: nvme.resourceName },
        { name: 'vf-b', deviceName: nicVfs.resourceName },
      ],
    }),
    env,
  });
  expect(r.ok).toBe(true);
  expect(devicesOf(r.gpus).map((d) => [d.alias, d.type, d.mdevUUID])).toStrictEqual([['gpu-vgpu', 'mdev', UUID_A]]);
  expect(devicesOf(r.hostDevices).map((d) => [d.alias, d.pciAddress])).toStrictEqual([
    ['hostdevice-vf-a', '0000:81:00.2'],
    ['hostdevice-disk', '0000:c1:00.0'],
    ['hostdevice-vf-b', '0000:81:00.3'],
  ]);
});

test('a resource name with "-" and ".": our env name is the one KubeVirt looks up', async () => {
  const env = allocatedEnv(nvme, slices.nvme, ['0000:c1:00.0']);
  expect(Object.keys(env)).toStrictEqual(['PCI_RESOURCE_VIRTUALIO_DEV_NVME-FAST_GEN4']);
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'nvme0', deviceName: nvme.resourceName }] }), env });
  expect(r.ok).toBe(true);
  expect(devicesOf(r.hostDevices)).toEqual([expect.objectContaining({ type: 'pci', pciAddress: '0000:c1:00.0' })]);
  expect(r.warnings.some((w) => w.startsWith('PCI_RESOURCE_'))).toBe(false);
});

// ---- rejected -------------------------------------------------------------------------------

test('both PCI_RESOURCE and MDEV_PCI_RESOURCE for one resource: KubeVirt rejects the count mismatch', async () => {
  // Two pools wrongly sharing one resource name, one of functions and one of mdevs: the merged
  // container env carries both variables for the same resource.
  const shared = 'virtualio.dev/shared';
  const pciPool: PoolSpec = { ...gpuPass, name: 'p1', resourceName: shared };
  const mdevPool: PoolSpec = { ...vgpu, name: 'p2', resourceName: shared };
  const env = mergeEnvs(
    allocatedEnv(pciPool, snapshot(fn(pciPool, '0000:3b:00.0', 30)), ['0000:3b:00.0']),
    allocatedEnv(mdevPool, snapshot(mdev(mdevPool, UUID_A, '0000:08:00.4', 101)), [UUID_A]),
  );
  expect(Object.keys(env).sort()).toStrictEqual(['MDEV_PCI_RESOURCE_VIRTUALIO_DEV_SHARED', 'PCI_RESOURCE_VIRTUALIO_DEV_SHARED']);
  const r = await kubevirt({ vmi: vmi({ gpus: [{ name: 'g', deviceName: shared }] }), env });
  expect(r.ok).toBe(false);
  expect(r.gpus.error).toMatch(/^failed to create GPU host-devices: the number of device plugin GPU\/s do not match the number of devices/);

  const r2 = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'h', deviceName: shared }] }), env });
  expect(r2.hostDevices.error).toMatch(/^failed to create generic host-devices: the number of device plugin HostDevice\/s do not match the number of devices/);
});

test('one pool never produces both variables: our Allocate refuses a request mixing mdevs and functions', () => {
  const mixed: PoolSpec = { ...gpuPass, name: 'mixed', resourceName: 'virtualio.dev/mixed' };
  const snap = snapshot(fn(mixed, '0000:3b:00.0', 30), mdev(mixed, UUID_A, '0000:08:00.4', 101));
  const out = allocate({ containerRequests: [{ devicesIds: ['0000:3b:00.0', UUID_A] }] }, mixed, snap, { cdi: false });
  expect(out).toMatchObject({ ok: false, code: 'FAILED_PRECONDITION' });
});

test('fewer allocated addresses than VMI entries: KubeVirt rejects', async () => {
  const env = allocatedEnv(gpuPass, slices.t4, ['0000:3b:00.0']);
  const r = await kubevirt({
    vmi: vmi({ gpus: [{ name: 'g0', deviceName: gpuPass.resourceName }, { name: 'g1', deviceName: gpuPass.resourceName }] }),
    env,
  });
  expect(r.gpus.error).toMatch(/the number of device plugin GPU\/s do not match the number of devices/);
});

test('a five-digit PCI domain (VMD) cannot be handed to KubeVirt', async () => {
  // KubeVirt's PCI address parser wants a 4-hex-digit domain; such a function must not be offered
  // for VM passthrough. This pins KubeVirt's behaviour for whoever filters those devices.
  const vmdPool: PoolSpec = { ...nvme, name: 'vmd', resourceName: 'virtualio.dev/vmd-nvme' };
  const env = allocatedEnv(vmdPool, snapshot(fn(vmdPool, '10000:01:00.0', 80)), ['10000:01:00.0']);
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'n', deviceName: vmdPool.resourceName }] }), env });
  expect(r.hostDevices.error).toMatch(/failed to parse pci address 10000:01:00\.0/);
});

test('no variable at all for a requested resource: KubeVirt rejects', async () => {
  const r = await kubevirt({ vmi: vmi({ hostDevices: [{ name: 'x', deviceName: 'virtualio.dev/missing' }] }), env: {} });
  expect(r.ok).toBe(false);
  expect(r.warnings).toContain('PCI_RESOURCE_VIRTUALIO_DEV_MISSING not set for resource virtualio.dev/missing');
  expect(r.hostDevices.error).toMatch(/do not match the number of devices/);
});
