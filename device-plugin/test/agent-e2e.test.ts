// End to end: the REAL agent process (node dist/device-plugin/src/main.js, built on demand by
// ensureAgentBuilt) in standalone mode, on a temp sysfs tree run by the fake kernel daemon, driven
// by the fake kubelet (Registration + dial-back + ListAndWatch + Allocate) and a fake PodResources.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VirtualIONodeStatus } from '../../crds/generated/types.js';
import { ensureAgentBuilt, startAgent, type AgentProcess } from '../../test/fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../../test/fakes/kubelet.js';
import { FakeKernel, connectX6, emulexFc, gpuWithAudio, mdevGpu, nvmeWithSriov } from '../../test/sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../../test/sysfs/kernel-daemon.js';
import type { PoolPlan } from '../src/model.js';
import { jest } from '@jest/globals';

jest.setTimeout(90_000);

const NIC = '0000:81:00.0';
const NVME = '0000:83:00.0';
const VGPU = '0000:3b:00.0';
const GPU = '0000:5e:00.0';
const AUDIO = '0000:5e:00.1';
const HBA = '0000:d8:00.0';

const R = {
  net: 'virtualio.dev/fast-net',
  nvme: 'virtualio.dev/nvme-vf',
  vgpu: 'nvidia.com/GRID_T4-1B',
  gpu: 'virtualio.dev/a10-pass',
  fc: 'virtualio.dev/fc-npiv',
};

const pools: PoolPlan[] = [
  { name: 'fast-net', resourceName: R.net, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 4, policy: 'Spread', devices: [{ pciAddress: NIC }] },
  { name: 'nvme-vf', resourceName: R.nvme, class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', count: 2, devices: [{ pciAddress: NVME }] },
  { name: 't4-vgpu', resourceName: R.vgpu, class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', count: 2, mdevType: 'nvidia-222', devices: [{ pciAddress: VGPU }] },
  { name: 'a10-pass', resourceName: R.gpu, class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', devices: [{ pciAddress: GPU }] },
  { name: 'fc-npiv', resourceName: R.fc, class: 'Storage', mode: 'NPIV', consumption: 'HostDevice', count: 2, wwnPrefix: 'c05076', devices: [{ pciAddress: HBA }] },
];

let dir: string;
let sys: string;
let dev: string;
let kernel: KernelHandle;
let kubelet: FakeKubelet;
let podres: FakePodResources;
let agent: AgentProcess;
let planFile: string;

const devinfoDir = (): string => join(dir, 'devinfo');
const cdiDir = (): string => join(dir, 'cdi');

async function status(): Promise<VirtualIONodeStatus> {
  const r = await agent.get('/status');
  return JSON.parse(r.text) as VirtualIONodeStatus;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (!agent.alive) throw new Error(`agent died while waiting for ${what}\n${agent.tail()}`);
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${agent.tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const ids = (resource: string): string[] => (kubelet.lastList(resource) ?? []).map((d) => d.ID);

beforeAll(async () => {
  await ensureAgentBuilt();
  dir = mkdtempSync(join(tmpdir(), 'vio-e2e-'));
  sys = join(dir, 'sys');
  dev = join(dir, 'dev');
  const k = await FakeKernel.create(sys, dev);
  await k.addFunction(connectX6(NIC, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 1 }));
  await k.addFunction(nvmeWithSriov(NVME, { name: 'nvme0', serial: 'S4YNNE0N800123', totalVFs: 4, numaNode: 1 }));
  await k.addFunction(mdevGpu(VGPU, { numaNode: 0 }));
  for (const f of gpuWithAudio(GPU, AUDIO, { group: 77, numaNode: 0 })) await k.addFunction(f);
  await k.addFunction(emulexFc(HBA, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 8 }));
  kernel = await startKernel(sys, dev);
  kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
  planFile = join(dir, 'plan.yaml');
  writeFileSync(planFile, JSON.stringify({ pools }));
  agent = await startAgent([
    '--plan-file', planFile,
    '--node-name', 'e2e-node',
    '--sysfs-root', sys,
    '--dev-root', dev,
    '--plugin-dir', kubelet.pluginDir,
    '--pod-resources-socket', podres.socket,
    '--devinfo-dir', devinfoDir(),
    '--cdi', '--cdi-dir', cdiDir(),
    '--rescan-interval', '2s',
    '--metrics-address', '127.0.0.1:0',
    '--log-level', 'debug',
  ]);
});

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await kubelet?.stop();
  await podres?.stop();
  await kernel?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('agent process, standalone mode', () => {
  test('carves every pool and registers one plugin per pool with the kubelet', async () => {
    for (const r of Object.values(R)) await kubelet.waitFor(`registration of ${r}`, () => kubelet.endpoints.get(r), 60_000);
    for (const ep of kubelet.endpoints.values()) {
      expect(ep.options).toStrictEqual({ preStartRequired: false, getPreferredAllocationAvailable: true });
      expect(ep.endpoint).toMatch(/^virtualio-[a-z0-9-]+\.sock$/);
    }
    await kubelet.waitFor('4 healthy NIC VFs', () => kubelet.lastList(R.net)?.filter((d) => d.health === 'Healthy').length === 4, 60_000);
    await kubelet.waitFor('2 healthy NVMe VFs', () => kubelet.lastList(R.nvme)?.filter((d) => d.health === 'Healthy').length === 2, 60_000);
    await kubelet.waitFor('2 healthy mdevs', () => kubelet.lastList(R.vgpu)?.filter((d) => d.health === 'Healthy').length === 2, 60_000);
    await kubelet.waitFor('GPU healthy', () => kubelet.lastList(R.gpu)?.[0]?.health === 'Healthy', 60_000);
    await kubelet.waitFor('2 healthy vports', () => kubelet.lastList(R.fc)?.filter((d) => d.health === 'Healthy').length === 2, 60_000);

    expect(kubelet.lastList(R.net)?.[0]).toStrictEqual({ ID: '0000:81:00.2', health: 'Healthy', topology: { nodes: [{ ID: 1 }] } });
    expect(ids(R.net)).toStrictEqual(['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5']);
    expect(ids(R.gpu)).toStrictEqual([GPU]);
    for (const id of ids(R.vgpu)) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    for (const id of ids(R.fc)) expect(id).toMatch(/^c05076[0-9a-f]{10}$/);
    // The audio function of the GPU's group went to vfio-pci too (group viability). The daemon applies
    // the agent's writes after they return, so a bind the agent repeated may still be in flight here.
    await until('the audio function on vfio-pci', async () => (await kernel.idle(), (await kernel.kernel.driverOf(AUDIO)) === 'vfio-pci'));
    await until('readyz 200', async () => (await agent.get('/readyz')).status === 200);
    expect((await agent.get('/healthz')).status).toBe(200);
    const metrics = (await agent.get('/metrics')).text;
    expect(metrics).toMatch(/virtualio_agent_slices\{pool="fast-net",health="Healthy"\} 4/);
    expect(metrics).toMatch(/virtualio_agent_registrations_total\{pool="fast-net",result="ok"\} 1/);
  });

  test('Allocate: SR-IOV NIC for SRIOVNetwork → PCI_RESOURCE, vfio nodes, Multus device-info, CDI', async () => {
    const res = await kubelet.allocate(R.net, ['0000:81:00.3']);
    const c = res.containerResponses[0];
    expect(c?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:00.3' });
    const paths = c?.devices.map((d) => d.hostPath) ?? [];
    expect(paths[0]).toBe('/dev/vfio/vfio');
    expect(paths.some((p) => /^\/dev\/vfio\/\d+$/.test(p))).toBe(true);
    for (const d of c?.devices ?? []) {
      expect(d.containerPath).toBe(d.hostPath);
      expect(d.permissions).toBe('mrw');
      expect(existsSync(join(dev, d.hostPath.replace(/^\/dev\//, '')))).toBe(true);
    }
    expect(c?.cdiDevices).toStrictEqual([{ name: 'virtualio.dev/fast-net=0000:81:00.3' }]);
    const info = join(devinfoDir(), 'virtualio.dev-fast-net-0000:81:00.3-device.json');
    expect(JSON.parse(readFileSync(info, 'utf8'))).toStrictEqual({ type: 'pci', version: '1.1.0', pci: { 'pci-address': '0000:81:00.3', 'pf-pci-address': NIC } });
    expect(statSync(info).mode & 0o777).toBe(0o444);
    const spec = JSON.parse(readFileSync(join(cdiDir(), 'virtualio.dev-fast-net.json'), 'utf8'));
    expect(spec).toMatchObject({ cdiVersion: '0.5.0', kind: 'virtualio.dev/fast-net' });
    expect(spec.devices.map((d: { name: string }) => d.name)).toStrictEqual(ids(R.net));
  });

  test('Allocate: SR-IOV storage VF as HostDevice → PCI_RESOURCE, no device-info', async () => {
    const [a, b] = ids(R.nvme);
    const res = await kubelet.allocate(R.nvme, [b ?? '', a ?? '']);
    expect(res.containerResponses[0]?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_NVME-VF': `${b},${a}` });
    expect(readdirSync(devinfoDir()).filter((f) => f.includes('nvme'))).toStrictEqual([]);
  });

  test('Allocate: mediated devices → MDEV_PCI_RESOURCE only', async () => {
    const [u] = ids(R.vgpu);
    const res = await kubelet.allocate(R.vgpu, [u ?? '']);
    const c = res.containerResponses[0];
    expect(c?.envs).toStrictEqual({ 'MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_T4-1B': u });
    expect(c?.devices.map((d) => d.hostPath)[0]).toBe('/dev/vfio/vfio');
    expect(c?.devices.length).toBeGreaterThan(1);
  });

  test('Allocate: passthrough GPU with its audio function in one IOMMU group', async () => {
    const res = await kubelet.allocate(R.gpu, [GPU]);
    const c = res.containerResponses[0];
    expect(c?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_A10-PASS': GPU });
    expect(c?.devices.map((d) => d.hostPath)).toEqual(expect.arrayContaining(['/dev/vfio/vfio', '/dev/vfio/77']));
  });

  test('Allocate: NPIV vport → VIRTUALIO_NPIV (wwpn:wwnn), no PCI env, no vfio', async () => {
    const [w] = ids(R.fc);
    const res = await kubelet.allocate(R.fc, [w ?? '']);
    const c = res.containerResponses[0];
    expect(Object.keys(c?.envs ?? {})).toStrictEqual(['VIRTUALIO_NPIV_VIRTUALIO_DEV_FC-NPIV']);
    expect(c?.envs['VIRTUALIO_NPIV_VIRTUALIO_DEV_FC-NPIV']).toMatch(new RegExp(`^${w}:c05076[0-9a-f]{10}$`));
    expect(c?.devices).toStrictEqual([]);
  });

  test('GetPreferredAllocation honours must_include and spreads', async () => {
    const all = ids(R.net);
    const got = await kubelet.preferred(R.net, all, ['0000:81:00.5'], 2);
    expect(got).toHaveLength(2);
    expect(got[0]).toBe('0000:81:00.5');
  });

  test('Allocate with bad IDs: a gRPC error naming them, and the agent keeps serving', async () => {
    await expect(kubelet.allocate(R.net, ['0000:99:00.1'])).rejects.toMatchObject({ code: 3, details: expect.stringContaining('unknown device IDs: 0000:99:00.1') });
    await expect(kubelet.allocate(R.net, ['0000:81:00.2', '0000:81:00.2'])).rejects.toMatchObject({ code: 3, details: expect.stringContaining('duplicate device IDs: 0000:81:00.2') });
    expect(agent.alive).toBe(true);
    const ok = await kubelet.allocate(R.net, ['0000:81:00.2']);
    expect(ok.containerResponses[0]?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:00.2' });
  });

  test('a VF unbound from vfio-pci is reported Unhealthy, then Healthy once the agent re-binds it', async () => {
    const vf = '0000:81:00.4';
    const ep = kubelet.endpoints.get(R.net);
    if (!ep) throw new Error('not registered');
    // Let the fake kernel daemon drain the writes it still has queued (its writes are applied
    // asynchronously, unlike a real kernel's), so nothing re-binds the VF behind our back.
    await new Promise((r) => setTimeout(r, 500));
    await kernel.idle();
    const seen = ep.lists.length;
    await kernel.kernel.write('bus/pci/drivers/vfio-pci/unbind', vf);
    expect(await kernel.kernel.driverOf(vf)).toBeUndefined();
    const broken = await kubelet.waitFor('VF unhealthy in a list', () => ep.lists.slice(seen).find((l) => l.find((d) => d.ID === vf)?.health === 'Unhealthy')).catch((err: unknown) => {
      throw new Error(`${String(err)}\n${agent.tail()}`);
    });
    expect(broken.filter((d) => d.ID !== vf).every((d) => d.health === 'Healthy')).toBe(true);
    await kubelet.waitFor('VF healthy again', () => kubelet.lastList(R.net)?.find((d) => d.ID === vf)?.health === 'Healthy');
    expect(await kernel.kernel.driverOf(vf)).toBe('vfio-pci');
  });

  test('a VF whose /dev/vfio group node vanished stays Unhealthy (Allocate refuses it) until the node is back', async () => {
    const vf = '0000:81:00.5';
    const st0 = await status();
    const group = st0.slices?.find((s) => s.id === vf)?.iommuGroup;
    expect(group).toBeDefined();
    const node = join(dev, 'vfio', String(group));
    rmSync(node);
    await kubelet.waitFor('VF unhealthy', () => kubelet.lastList(R.net)?.find((d) => d.ID === vf)?.health === 'Unhealthy');
    // The event itself flipped it (the health fast path), not a later rescan.
    expect(agent.logs.some((l) => (l as { node?: string }).node === `/dev/vfio/${group}` && /device node gone/.test(String(l.msg)))).toBe(true);
    await expect(kubelet.allocate(R.net, [vf])).rejects.toMatchObject({ code: 9, details: expect.stringContaining(vf) });
    await until('status names the reason', async () => /vfio/.test((await status()).slices?.find((s) => s.id === vf)?.reason ?? '') || undefined);
    writeFileSync(node, '');
    await kubelet.waitFor('VF healthy again', () => kubelet.lastList(R.net)?.find((d) => d.ID === vf)?.health === 'Healthy');
  });

  test('a malformed sysfs value: the agent keeps running and reports the device with an error', async () => {
    const nvmeDir = await kernel.kernel.functionDir(NVME);
    writeFileSync(join(nvmeDir, 'numa_node'), 'garbage\n');
    const st = await until('inventory error', async () => {
      const s = await status();
      return s.inventory?.devices?.find((d) => d.pciAddress === NVME)?.errors?.length ? s : undefined;
    });
    expect(st.inventory?.devices?.find((d) => d.pciAddress === NVME)?.errors?.join(' ')).toMatch(/numa_node/);
    expect(st.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True' });
    expect(agent.alive).toBe(true);
    expect(kubelet.endpoints.get(R.nvme)?.connected).toBe(true);
    writeFileSync(join(nvmeDir, 'numa_node'), '1\n');
  });

  test('PodResources: allocations map to pods in status', async () => {
    podres.setPods([{ name: 'virt-launcher-vm1-x2x4z', namespace: 'vms', containers: [{ name: 'compute', devices: [{ resourceName: R.net, deviceIds: ['0000:81:00.3'] }] }] }]);
    const st = await until('allocation in status', async () => {
      const s = await status();
      return s.slices?.find((x) => x.id === '0000:81:00.3')?.allocation ? s : undefined;
    });
    expect(st.slices?.find((x) => x.id === '0000:81:00.3')?.allocation).toStrictEqual({ namespace: 'vms', pod: 'virt-launcher-vm1-x2x4z', container: 'compute' });
    expect(st.pools?.find((p) => p.name === 'fast-net')).toMatchObject({ registered: true, capacity: 4, allocated: 1 });
  });

  test('kubelet restart (sockets wiped, kubelet.sock recreated): every pool re-registers and re-lists', async () => {
    const before = kubelet.generation;
    await kubelet.restart();
    for (const r of Object.values(R)) {
      const ep = await kubelet.waitFor(`re-registration of ${r}`, () => {
        const e = kubelet.endpoints.get(r);
        return e && e.generation > before && e.lists.length > 0 ? e : undefined;
      });
      expect(ep.connected).toBe(true);
    }
    expect(ids(R.net)).toStrictEqual(['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5']);
    for (const p of pools) expect(existsSync(join(kubelet.pluginDir, `virtualio-${p.name}.sock`))).toBe(true);
    const m = (await agent.get('/metrics')).text;
    expect(m).toMatch(/virtualio_agent_kubelet_restarts_seen_total\{pool="fast-net"\} [1-9]/);
  });

  test('an invalid plan file is reported and the last good plan keeps being served', async () => {
    writeFileSync(planFile, 'pools: [ { name: Bad_Name } ]');
    await until('InvalidPlan', async () => ((await status()).conditions?.find((c) => c.type === 'Ready')?.reason === 'InvalidPlan' ? true : undefined));
    expect(kubelet.endpoints.get(R.net)?.connected).toBe(true);
    expect((await agent.get('/readyz')).status).toBe(200);
    writeFileSync(planFile, JSON.stringify({ pools }));
    await until('plan valid again', async () => ((await status()).conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? true : undefined));
  });

  test('SIGTERM (restart, upgrade): devices not withdrawn, sockets removed, device-info files and CDI specs kept, exit 0', async () => {
    const eps = [...kubelet.endpoints.values()];
    const lastLists = eps.map((ep) => ep.lists.at(-1));
    expect(lastLists.some((l) => (l ?? []).length > 0)).toBe(true);
    const devinfo = readdirSync(devinfoDir()).sort();
    expect(devinfo.length).toBeGreaterThan(0);
    const cdi = existsSync(cdiDir()) ? readdirSync(cdiDir()).filter((f) => f.endsWith('.json')).sort() : [];
    const code = await agent.stop('SIGTERM');
    expect(code).toBe(0);
    // No empty list: the kubelet keeps the devices through its grace period until the next agent registers.
    eps.forEach((ep, i) => expect(ep.lists.at(-1)).toStrictEqual(lastLists[i]));
    expect(readdirSync(kubelet.pluginDir).filter((f) => f.startsWith('virtualio-'))).toStrictEqual([]);
    // Running pods keep what they were given.
    expect(readdirSync(devinfoDir()).sort()).toStrictEqual(devinfo);
    expect(existsSync(cdiDir()) ? readdirSync(cdiDir()).filter((f) => f.endsWith('.json')).sort() : []).toStrictEqual(cdi);
    mkdirSync(dir, { recursive: true });
  });
});
