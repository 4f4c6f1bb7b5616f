// The REAL agent process (standalone mode: plan file, fake sysfs kernel) against the kubelet's own
// device-manager code (harness test/conformance/kubelet-dm on the agent's --plugin-dir), and the
// Allocate answer the kubelet's client received handed on to KubeVirt's own host-device code
// (harness test/conformance/kubevirt-hostdev): sysfs → carving → ListAndWatch → Allocate → libvirt
// host devices, with only the hardware faked.
import { mkdirSync, mkdtempSync, readdirSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { FakeKernel, connectX6, mdevGpu } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { ensureConformance, KubeletDm, runKubevirtHostdev, type DmAllocateResponse, type DmEvent } from '../conformance/harness.js';

type Ev<K extends DmEvent['event']> = Extract<DmEvent, { event: K }>;
const is =
  <K extends DmEvent['event']>(kind: K, resource?: string) =>
  (e: DmEvent): e is Ev<K> =>
    e.event === kind && (resource === undefined || (e as { resource?: string }).resource === resource);

const NIC = 'virtualio.dev/cx6-vf';
const VGPU = 'nvidia.com/GRID_T4-1B';

let bins: { 'kubelet-dm': string; 'kubevirt-hostdev': string };
let base: string;
let kernel: KernelHandle;
let dm: KubeletDm;
let agent: AgentProcess;

/** The latest device list the kubelet holds for a resource whose healthy count is `n`. */
async function devicesWithHealthy(resource: string, n: number): Promise<Ev<'devices'>> {
  return dm.waitFor((e): e is Ev<'devices'> => is('devices', resource)(e) && e.healthy === n, 0, 60_000);
}

beforeAll(async () => {
  bins = ensureConformance('kubelet-dm', 'kubevirt-hostdev');
  base = mkdtempSync(join(tmpdir(), 'vio-dma-'));
  const sys = join(base, 'sys');
  const dev = join(base, 'dev');
  const plugins = join(base, 'plugins');
  mkdirSync(plugins);
  mkdirSync(join(base, 'podres'));
  const k = await FakeKernel.create(sys, dev);
  await k.loadModule('vfio-pci');
  await k.addFunction(connectX6('0000:81:00.0', { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 1 }));
  await k.addFunction(mdevGpu('0000:3b:00.0', { numaNode: 0, instances: 4 }));
  kernel = await startKernel(sys, dev);

  dm = new KubeletDm(bins['kubelet-dm'], plugins);
  await dm.waitFor(is('ready'));

  const plan = {
    pools: [
      { name: 'cx6-vf', resourceName: NIC, class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: 4, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }] },
      { name: 't4-1b', resourceName: VGPU, class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', count: 2, mdevType: 'nvidia-222', devices: [{ pciAddress: '0000:3b:00.0' }] },
    ],
  };
  const planFile = join(base, 'plan.json');
  writeFileSync(planFile, JSON.stringify(plan));
  agent = await startAgent([
    '--node-name', 'node-a',
    '--plan-file', planFile,
    '--sysfs-root', sys,
    '--dev-root', dev,
    '--plugin-dir', plugins,
    '--pod-resources-socket', join(base, 'podres/kubelet.sock'),
    '--devinfo-dir', join(base, 'devinfo'),
    '--metrics-address', '127.0.0.1:0',
    '--log-level', 'debug',
  ]);
}, 20 * 60_000);

afterAll(async () => {
  await agent?.stop();
  await dm?.stop();
  await kernel?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

function failWithLogs(err: unknown): never {
  throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- agent ---\n${agent.tail()}`, { cause: err });
}

test('the agent carves, serves and registers each pool; the kubelet accepts both registrations', async () => {
  const nic = await dm.waitFor(is('registered', NIC), 0, 60_000).catch(failWithLogs);
  expect(nic.endpoint).toBe('virtualio-cx6-vf.sock');
  expect(nic.options).toStrictEqual({ preStartRequired: false, getPreferredAllocationAvailable: true });
  await dm.waitFor(is('registered', VGPU), 0, 60_000).catch(failWithLogs);
  expect(dm.events.filter((e) => is('kubelet-error')(e) && /registration/i.test(e.msg))).toStrictEqual([]);
});

test('the kubelet sees the carved VFs and mdevs as healthy devices with their NUMA node', async () => {
  const nic = await devicesWithHealthy(NIC, 4).catch(failWithLogs);
  expect(nic.devices.map((d) => d.id)).toStrictEqual(['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5']);
  for (const d of nic.devices) expect(d.topology).toStrictEqual([1]);
  const gpu = await devicesWithHealthy(VGPU, 2).catch(failWithLogs);
  for (const d of gpu.devices) {
    expect(d.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(d.topology).toStrictEqual([0]);
  }
});

test('preferred allocation and Allocate the kubelet way; KubeVirt builds the host devices from that answer', async () => {
  const nic = await devicesWithHealthy(NIC, 4);
  const gpu = await devicesWithHealthy(VGPU, 2);
  const ids = nic.devices.map((d) => d.id);
  const pref = await dm.preferred(NIC, ids, [], 2);
  expect(pref).toMatchObject({ ok: true, called: true });
  const chosen = pref.deviceIDs as string[];
  expect(chosen).toHaveLength(2);

  const a = await dm.allocate(NIC, chosen);
  expect(a.ok).toBe(true);
  const [nicResp] = a.containerResponses as DmAllocateResponse[];
  expect(nicResp?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_CX6-VF': chosen.join(',') });
  // /dev/vfio/vfio, then per VF its IOMMU group node and its vfio cdev (the fake kernel has iommufd
  // cdevs), host path = container path, as read from the same sysfs tree the agent scanned.
  const want = ['/dev/vfio/vfio'];
  for (const addr of chosen) {
    const fnDir = join(base, 'sys/bus/pci/devices', addr);
    want.push(`/dev/vfio/${basename(realpathSync(join(fnDir, 'iommu_group')))}`, ...readdirSync(join(fnDir, 'vfio-dev')).map((n) => `/dev/vfio/devices/${n}`));
  }
  expect(nicResp?.devices).toStrictEqual(want.map((p) => ({ containerPath: p, hostPath: p, permissions: 'mrw' })));

  const uuid = gpu.devices[0]?.id as string;
  const g = await dm.allocate(VGPU, [uuid]);
  expect(g.ok).toBe(true);
  const [gpuResp] = g.containerResponses as DmAllocateResponse[];

  const [kv] = await runKubevirtHostdev(bins['kubevirt-hostdev'], [{
    vmi: { domain: { devices: { gpus: [{ name: 'vgpu', deviceName: VGPU }], hostDevices: [{ name: 'vf0', deviceName: NIC }, { name: 'vf1', deviceName: NIC }] } } },
    env: { ...nicResp?.envs, ...gpuResp?.envs },
  }]);
  expect(kv?.error).toBeUndefined();
  expect(kv?.hostDevices.devices?.map((d) => [d.alias, d.type, d.pciAddress])).toStrictEqual([
    ['hostdevice-vf0', 'pci', chosen[0]],
    ['hostdevice-vf1', 'pci', chosen[1]],
  ]);
  expect(kv?.gpus.devices?.map((d) => [d.alias, d.type, d.mdevUUID])).toStrictEqual([['gpu-vgpu', 'mdev', uuid]]);
});

test('after a kubelet restart (sockets wiped) the agent re-registers both pools and resends its lists', async () => {
  const from = dm.mark();
  expect((await dm.restart()).ok).toBe(true);
  await dm.waitFor(is('registered', NIC), from, 60_000).catch(failWithLogs);
  await dm.waitFor(is('registered', VGPU), from, 60_000).catch(failWithLogs);
  const nic = await dm.waitFor((e): e is Ev<'devices'> => is('devices', NIC)(e) && e.healthy === 4, from, 60_000);
  expect(nic.devices).toHaveLength(4);
  const a = await dm.allocate(NIC, [nic.devices[3]?.id as string]);
  expect(a.ok).toBe(true);
});

test('on SIGTERM (restart, upgrade) the agent withdraws nothing: no empty list, the kubelet just sees its endpoints stop', async () => {
  const from = dm.mark();
  expect(await agent.stop('SIGTERM')).toBe(0);
  await dm.waitFor(is('disconnected', NIC), from);
  await dm.waitFor(is('disconnected', VGPU), from);
  // The kubelet's device manager keeps a disconnected plugin's devices for its grace period; an
  // empty list would have dropped them (and the node's capacity) at once.
  expect(dm.events.slice(from).filter((e) => e.event === 'devices' && (e as { devices?: unknown[] }).devices?.length === 0)).toStrictEqual([]);
});
