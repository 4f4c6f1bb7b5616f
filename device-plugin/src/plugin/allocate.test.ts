import type { Slice } from '../model.js';
import { allocate, type PoolSpec } from './allocate.js';
import { devinfoFileName, mdevEnvName, pciEnvName, resourceEnvSuffix } from './names.js';

const nicPool: PoolSpec = { name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork' };
const gpuPool: PoolSpec = { name: 'a16', resourceName: 'nvidia.com/GRID_A16-4Q', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice' };
const passPool: PoolSpec = { name: 't4', resourceName: 'virtualio.dev/t4.pass', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice' };
const npivPool: PoolSpec = { name: 'fc', resourceName: 'virtualio.dev/fc-npiv', class: 'Storage', mode: 'NPIV', consumption: 'HostDevice' };

function vf(addr: string, group: number, extra: Partial<Slice> = {}): Slice {
  return { id: addr, pool: 'fast-net', resourceName: nicPool.resourceName, kind: 'VF', parent: '0000:81:00.0', pciAddress: addr, iommuGroup: group, numaNode: 1, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy', ...extra };
}
function mdev(uuid: string, group: number): Slice {
  return { id: uuid, pool: 'a16', resourceName: gpuPool.resourceName, kind: 'Mdev', parent: '0000:08:00.4', mdevUuid: uuid, iommuGroup: group, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}
const snap = (...s: Slice[]): Map<string, Slice> => new Map(s.map((x) => [x.id, x]));
const req = (...containers: string[][]) => ({ containerRequests: containers.map((devicesIds) => ({ devicesIds })) });

describe('env names', () => {
  test.each([
    ['virtualio.dev/a16-vgpu', 'VIRTUALIO_DEV_A16-VGPU'],
    ['nvidia.com/GRID_T4-1Q', 'NVIDIA_COM_GRID_T4-1Q'],
    ['example.org/a.b/c', 'EXAMPLE_ORG_A_B_C'],
  ])('%s → %s', (name, env) => expect(resourceEnvSuffix(name)).toBe(env));
});

describe('allocate', () => {
  const vfs = snap(vf('0000:81:02.0', 40), vf('0000:81:02.1', 41), vf('0000:81:02.2', 42, { health: 'Unhealthy', reason: 'driver is ixgbevf, want vfio-pci' }));

  test('NIC VFs: PCI env with one address per slice, vfio nodes, device-info per VF', () => {
    const out = allocate(req(['0000:81:02.1', '0000:81:02.0']), nicPool, vfs, { cdi: false });
    expect(out).toStrictEqual({
      ok: true,
      response: {
        containerResponses: [
          {
            envs: { 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:02.1,0000:81:02.0' },
            devices: [
              { containerPath: '/dev/vfio/vfio', hostPath: '/dev/vfio/vfio', permissions: 'mrw' },
              { containerPath: '/dev/vfio/41', hostPath: '/dev/vfio/41', permissions: 'mrw' },
              { containerPath: '/dev/vfio/40', hostPath: '/dev/vfio/40', permissions: 'mrw' },
            ],
            mounts: [],
            annotations: {},
          },
        ],
      },
      devinfo: [
        { fileName: 'virtualio.dev-fast-net-0000:81:02.1-device.json', deviceId: '0000:81:02.1', content: '{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:81:02.1","pf-pci-address":"0000:81:00.0"}}' },
        { fileName: 'virtualio.dev-fast-net-0000:81:02.0-device.json', deviceId: '0000:81:02.0', content: '{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:81:02.0","pf-pci-address":"0000:81:00.0"}}' },
      ],
    });
  });

  test('mdevs: only MDEV_PCI_RESOURCE, never PCI_RESOURCE; CDI names when enabled', () => {
    const a = '6f2a3c56-0a4f-5b49-9c1d-4a3f1b2c3d4e';
    const b = '0b1c2d3e-4f50-5162-8374-a5b6c7d8e9f0';
    const out = allocate(req([a, b]), gpuPool, snap(mdev(a, 101), mdev(b, 102)), { cdi: true });
    if (!out.ok) throw new Error(out.message);
    const c = out.response.containerResponses[0];
    expect(c?.envs).toStrictEqual({ [mdevEnvName(gpuPool.resourceName)]: `${a},${b}` });
    expect(c?.envs?.[pciEnvName(gpuPool.resourceName)]).toBeUndefined();
    expect(c?.cdiDevices).toStrictEqual([{ name: `virtualio.dev/a16=${a}` }, { name: `virtualio.dev/a16=${b}` }]);
    expect(out.devinfo).toStrictEqual([]);
  });

  test('passthrough functions sharing a group: both addresses, group node once', () => {
    const gpu: Slice = { id: '0000:3b:00.0', pool: 't4', resourceName: passPool.resourceName, kind: 'Function', parent: '0000:3b:00.0', pciAddress: '0000:3b:00.0', iommuGroup: 7, deviceNodes: ['/dev/vfio/7', '/dev/vfio/devices/vfio3'], health: 'Healthy' };
    const audio: Slice = { ...gpu, id: '0000:3b:00.1', parent: '0000:3b:00.1', pciAddress: '0000:3b:00.1', deviceNodes: ['/dev/vfio/7'] };
    const out = allocate(req(['0000:3b:00.0', '0000:3b:00.1']), passPool, snap(gpu, audio), { cdi: true });
    if (!out.ok) throw new Error(out.message);
    const c = out.response.containerResponses[0];
    expect(c?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_T4_PASS': '0000:3b:00.0,0000:3b:00.1' });
    expect(c?.devices?.map((d) => d.hostPath)).toStrictEqual(['/dev/vfio/vfio', '/dev/vfio/7', '/dev/vfio/devices/vfio3']);
    expect(c?.cdiDevices).toStrictEqual([{ name: 'virtualio.dev/t4=0000:3b:00.0' }, { name: 'virtualio.dev/t4=0000:3b:00.1' }]);
    expect(out.devinfo).toStrictEqual([]);
  });

  test('NPIV vports: VIRTUALIO_NPIV env with wwpn:wwnn, no PCI env, no vfio nodes', () => {
    const vp: Slice = { id: 'c05076000a000001', pool: 'fc', resourceName: npivPool.resourceName, kind: 'VPort', parent: '0000:5e:00.0', vport: { wwpn: 'c05076000a000001', wwnn: 'c05076000a00ff01', parentHost: 'host3' }, deviceNodes: [], health: 'Healthy' };
    const out = allocate(req(['c05076000a000001']), npivPool, snap(vp), { cdi: false });
    if (!out.ok) throw new Error(out.message);
    expect(out.response.containerResponses[0]?.envs).toStrictEqual({ 'VIRTUALIO_NPIV_VIRTUALIO_DEV_FC-NPIV': 'c05076000a000001:c05076000a00ff01' });
    expect(out.response.containerResponses[0]?.devices).toStrictEqual([]);
  });

  test('one response per container request', () => {
    const out = allocate(req(['0000:81:02.0'], ['0000:81:02.1']), nicPool, vfs, { cdi: false });
    if (!out.ok) throw new Error(out.message);
    expect(out.response.containerResponses.map((c) => c.envs)).toStrictEqual([
      { 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:02.0' },
      { 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:02.1' },
    ]);
  });

  test.each([
    ['unknown ID', [['0000:81:02.0', '0000:99:00.0']], 'INVALID_ARGUMENT', /unknown device IDs: 0000:99:00\.0/],
    ['duplicate ID', [['0000:81:02.0', '0000:81:02.0']], 'INVALID_ARGUMENT', /duplicate device IDs: 0000:81:02\.0/],
    ['unhealthy ID, with reason', [['0000:81:02.2']], 'FAILED_PRECONDITION', /unhealthy device IDs: 0000:81:02\.2 \(driver is ixgbevf/],
    ['unknown and unhealthy together', [['0000:81:02.2', 'nope']], 'INVALID_ARGUMENT', /unknown device IDs: nope; unhealthy device IDs: 0000:81:02\.2/],
    ['empty container request', [[]], 'INVALID_ARGUMENT', /no device IDs/],
    ['no container request', [], 'INVALID_ARGUMENT', /no container requests/],
    ['second container bad', [['0000:81:02.0'], ['bad']], 'INVALID_ARGUMENT', /unknown device IDs: bad/],
  ])('%s → %s', (_name, containers, code, message) => {
    const out = allocate(req(...(containers as string[][])), nicPool, vfs, { cdi: false });
    expect(out.ok).toBe(false);
    if (out.ok) return;
    expect(out.code).toBe(code);
    expect(out.message).toMatch(message);
  });

  test('device-info name replaces / in resource and device ID', () => {
    expect(devinfoFileName('example.com/a/b', '0000:01:00.1')).toBe('example.com-a-b-0000:01:00.1-device.json');
  });
});
