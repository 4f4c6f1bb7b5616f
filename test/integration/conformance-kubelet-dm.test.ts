// Our device plugin against the kubelet's own device-manager code: the kubelet's registration
// server and plugin client (k8s.io/kubernetes v1.36.3 pkg/kubelet/cm/devicemanager/plugin/v1beta1,
// harness test/conformance/kubelet-dm) on a temp plugin directory. The kubelet's code validates our
// Register call, dials back, reads our options, consumes ListAndWatch, and calls
// GetPreferredAllocation / Allocate with one container request each, as its device manager does.
// A harness "restart" wipes the directory's sockets the way a starting kubelet does.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../../device-plugin/src/log.js';
import { createMetrics } from '../../device-plugin/src/metrics.js';
import type { Slice } from '../../device-plugin/src/model.js';
import { PluginDirWatcher } from '../../device-plugin/src/kubelet/watcher.js';
import type { PoolSpec } from '../../device-plugin/src/plugin/allocate.js';
import { PoolPlugin } from '../../device-plugin/src/plugin/pool.js';
import { ensureConformance, KubeletDm, type DmAllocateResponse, type DmEvent } from '../conformance/harness.js';

type Ev<K extends DmEvent['event']> = Extract<DmEvent, { event: K }>;
const is =
  <K extends DmEvent['event']>(kind: K, resource?: string) =>
  (e: DmEvent): e is Ev<K> =>
    e.event === kind && (resource === undefined || (e as { resource?: string }).resource === resource);

let bin: string;
beforeAll(() => {
  bin = ensureConformance('kubelet-dm')['kubelet-dm'];
}, 20 * 60_000);

const nicPool: PoolSpec = { name: 'cx6-vf', resourceName: 'virtualio.dev/cx6-vf', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned' };
const gpuPool: PoolSpec = { name: 'a16-4q', resourceName: 'nvidia.com/GRID_A16-4Q', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice' };

function vf(addr: string, group: number, numa: number | undefined, health: 'Healthy' | 'Unhealthy' = 'Healthy'): Slice {
  const s: Slice = { id: addr, pool: nicPool.name, resourceName: nicPool.resourceName, kind: 'VF', parent: '0000:81:00.0', pciAddress: addr, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health };
  if (numa !== undefined) s.numaNode = numa;
  if (health === 'Unhealthy') s.reason = 'driver is mlx5_core, want vfio-pci';
  return s;
}
const UUID_A = '6f2a3c56-0a4f-5b49-9c1d-4a3f1b2c3d4e';
const UUID_B = '0b1c2d3e-4f50-5162-8374-a5b6c7d8e9f0';
function mdev(uuid: string, group: number): Slice {
  return { id: uuid, pool: gpuPool.name, resourceName: gpuPool.resourceName, kind: 'Mdev', parent: '0000:08:00.4', mdevUuid: uuid, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}

describe('the agent pool plugin against the kubelet device manager code', () => {
  let dir: string;
  let dm: KubeletDm;
  let controller: AbortController;
  let watcher: PluginDirWatcher;
  const plugins: PoolPlugin[] = [];

  function plugin(pool: PoolSpec, slices: Slice[]): PoolPlugin {
    const p = new PoolPlugin({
      pool,
      pluginDir: dir,
      devinfoDir: join(dir, 'devinfo'),
      cdi: { enabled: false, dir: join(dir, 'cdi') },
      watcher,
      logger: silentLogger(),
      metrics: createMetrics(),
      signal: controller.signal,
    });
    p.update(slices);
    plugins.push(p);
    p.start();
    return p;
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-dm-'));
    dm = new KubeletDm(bin, dir);
    await dm.waitFor(is('ready'));
    controller = new AbortController();
    watcher = new PluginDirWatcher({ dir, logger: silentLogger(), signal: controller.signal });
    watcher.start();
    plugin(nicPool, [vf('0000:81:00.2', 60, 1), vf('0000:81:00.3', 61, 1), vf('0000:81:00.4', 62, 0), vf('0000:81:00.5', 63, undefined, 'Unhealthy')]);
    plugin(gpuPool, [mdev(UUID_A, 101), mdev(UUID_B, 102)]);
  });

  afterAll(async () => {
    controller?.abort();
    await Promise.all(plugins.map((p) => p.stop()));
    await dm?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the kubelet accepts our Register: endpoint is our socket in its dir, options advertise preferred allocation', async () => {
    const reg = await dm.waitFor(is('registered', nicPool.resourceName));
    expect(reg.endpoint).toBe('virtualio-cx6-vf.sock');
    expect(reg.socket).toBe(join(dir, 'virtualio-cx6-vf.sock'));
    expect(reg.options).toStrictEqual({ preStartRequired: false, getPreferredAllocationAvailable: true });
    await dm.waitFor(is('registered', gpuPool.resourceName));
    expect(dm.events.filter(is('kubelet-error'))).toStrictEqual([]);
  });

  test('ListAndWatch as the kubelet sees it: IDs, health, NUMA topology (none when unknown)', async () => {
    const ev = await dm.waitFor(is('devices', nicPool.resourceName));
    expect(ev.devices).toStrictEqual([
      { id: '0000:81:00.2', health: 'Healthy', topology: [1] },
      { id: '0000:81:00.3', health: 'Healthy', topology: [1] },
      { id: '0000:81:00.4', health: 'Healthy', topology: [0] },
      { id: '0000:81:00.5', health: 'Unhealthy', topology: null },
    ]);
    const st = await dm.command({ op: 'state' });
    expect((st.resources as Record<string, unknown>)[nicPool.resourceName]).toStrictEqual({ stopped: false, capacity: 4, allocatable: 3 });
    const g = await dm.waitFor(is('devices', gpuPool.resourceName));
    expect(g.devices.map((d) => [d.id, d.health])).toStrictEqual([[UUID_B, 'Healthy'], [UUID_A, 'Healthy']]);
  });

  test('a health change reaches the kubelet as a full replacement list', async () => {
    const p = plugins[0] as PoolPlugin;
    const from = dm.mark();
    p.update([vf('0000:81:00.2', 60, 1), vf('0000:81:00.3', 61, 1, 'Unhealthy'), vf('0000:81:00.4', 62, 0), vf('0000:81:00.5', 63, undefined)]);
    const ev = await dm.waitFor(is('devices', nicPool.resourceName), from);
    expect(ev.devices.map((d) => [d.id, d.health])).toStrictEqual([
      ['0000:81:00.2', 'Healthy'],
      ['0000:81:00.3', 'Unhealthy'],
      ['0000:81:00.4', 'Healthy'],
      ['0000:81:00.5', 'Healthy'],
    ]);
    const st = await dm.command({ op: 'state' });
    expect((st.resources as Record<string, unknown>)[nicPool.resourceName]).toStrictEqual({ stopped: false, capacity: 4, allocatable: 3 });
  });

  test('GetPreferredAllocation called the kubelet way: must-include kept, size honoured, only available IDs', async () => {
    const r = await dm.preferred(nicPool.resourceName, ['0000:81:00.2', '0000:81:00.4', '0000:81:00.5'], ['0000:81:00.4'], 2);
    expect(r.ok).toBe(true);
    expect(r.called).toBe(true);
    const ids = r.deviceIDs as string[];
    expect(ids).toHaveLength(2);
    expect(ids).toContain('0000:81:00.4');
    for (const id of ids) expect(['0000:81:00.2', '0000:81:00.4', '0000:81:00.5']).toContain(id);
  });

  test('Allocate called the kubelet way: one container response with the KubeVirt env and vfio nodes', async () => {
    const r = await dm.allocate(nicPool.resourceName, ['0000:81:00.4', '0000:81:00.2']);
    expect(r.ok).toBe(true);
    const [c] = r.containerResponses as DmAllocateResponse[];
    expect(c).toStrictEqual({
      envs: { 'PCI_RESOURCE_VIRTUALIO_DEV_CX6-VF': '0000:81:00.4,0000:81:00.2' },
      devices: [
        { containerPath: '/dev/vfio/vfio', hostPath: '/dev/vfio/vfio', permissions: 'mrw' },
        { containerPath: '/dev/vfio/62', hostPath: '/dev/vfio/62', permissions: 'mrw' },
        { containerPath: '/dev/vfio/60', hostPath: '/dev/vfio/60', permissions: 'mrw' },
      ],
      mounts: [],
      annotations: {},
      cdiDevices: [],
    });
    const g = await dm.allocate(gpuPool.resourceName, [UUID_A]);
    expect((g.containerResponses as DmAllocateResponse[])[0]?.envs).toStrictEqual({ 'MDEV_PCI_RESOURCE_NVIDIA_COM_GRID_A16-4Q': UUID_A });
  });

  test('Allocate errors reach the kubelet as gRPC status codes', async () => {
    const unknown = await dm.allocate(nicPool.resourceName, ['0000:99:00.0']);
    expect(unknown).toMatchObject({ ok: false, code: 'InvalidArgument' });
    expect(unknown.message).toMatch(/unknown device IDs: 0000:99:00\.0/);
    const unhealthy = await dm.allocate(nicPool.resourceName, ['0000:81:00.3']);
    expect(unhealthy).toMatchObject({ ok: false, code: 'FailedPrecondition' });
  });

  test('a kubelet restart (sockets wiped, new kubelet.sock): we re-register and resend the list', async () => {
    const from = dm.mark();
    const r = await dm.restart();
    expect(r.ok).toBe(true);
    // The old server disconnected both plugins; the kubelet's cleanup removed our sockets.
    await dm.waitFor(is('disconnected', nicPool.resourceName), from);
    await dm.waitFor(is('disconnected', gpuPool.resourceName), from);
    const reg = await dm.waitFor(is('registered', nicPool.resourceName), from);
    expect(reg.endpoint).toBe('virtualio-cx6-vf.sock');
    await dm.waitFor(is('registered', gpuPool.resourceName), from);
    const ev = await dm.waitFor(is('devices', nicPool.resourceName), from);
    expect(ev.devices).toHaveLength(4);
    expect(existsSync(join(dir, 'virtualio-cx6-vf.sock'))).toBe(true);
    const a = await dm.allocate(gpuPool.resourceName, [UUID_B]);
    expect(a.ok).toBe(true);
  });

  test('an invalid resource name is refused by the kubelet and our pool reports why', async () => {
    const bad: PoolSpec = { ...gpuPool, name: 'bad', resourceName: 'kubernetes.io/not-extended' };
    const p = plugin(bad, [mdev('11111111-2222-4333-8444-555555555555', 200)]);
    const err = await dm.waitFor((e): e is Ev<'kubelet-error'> => e.event === 'kubelet-error' && (e.error ?? '').includes('kubernetes.io/not-extended'));
    expect(err.error).toBe('the ResourceName "kubernetes.io/not-extended" is invalid');
    expect(dm.events.some(is('registered', bad.resourceName))).toBe(false);
    for (let i = 0; i < 100 && !p.state.error; i++) await new Promise((r) => setTimeout(r, 50));
    expect(p.state.registered).toBe(false);
    expect(p.state.error).toMatch(/the ResourceName "kubernetes.io\/not-extended" is invalid/);
    await p.stop();
  });

  test('stopping a pool: the kubelet gets an empty list, then the stream ends and the endpoint stops', async () => {
    const p = plugins[1] as PoolPlugin;
    const from = dm.mark();
    await p.stop();
    const ev = await dm.waitFor(is('devices', gpuPool.resourceName), from);
    expect(ev.devices).toStrictEqual([]);
    await dm.waitFor(is('disconnected', gpuPool.resourceName), from);
    const a = await dm.allocate(gpuPool.resourceName, [UUID_A]);
    expect(a).toMatchObject({ ok: false, error: `endpoint ${gpuPool.resourceName} has been stopped` });
    expect(existsSync(join(dir, 'virtualio-a16-4q.sock'))).toBe(false);
  });
});
