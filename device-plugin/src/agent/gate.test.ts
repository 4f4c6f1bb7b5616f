import type { Inventory } from '../model.js';
import { existingIds, gate, victimsOf } from './gate.js';
import { parseKubeletCheckpoint } from './kubelet-checkpoint.js';

const inv: Inventory = {
  devices: [
    { pciAddress: '0000:81:00.0', driver: 'mlx5_core', sriov: { totalVFs: 8, numVFs: 2, vfs: ['0000:81:00.2', '0000:81:00.3'] } },
    { pciAddress: '0000:81:00.2', driver: 'vfio-pci', physfn: '0000:81:00.0' },
    { pciAddress: '0000:81:00.3', driver: 'vfio-pci', physfn: '0000:81:00.0', mdevs: [{ uuid: 'aaaaaaaa-0000-4000-8000-000000000001' }] },
    { pciAddress: '0000:d8:00.0', driver: 'lpfc' },
    { pciAddress: '0000:3b:00.0' },
  ],
  vports: [{ pciAddress: '0000:d8:00.0', parentHost: 'host5', name: 'vport-5:0-0', wwpn: 'c050760000000001', wwnn: 'c050760000000002' }],
};

describe('victimsOf: what a write destroys, from the kernel side', () => {
  test.each([
    ['sriov_numvfs=0 on a PF takes its VFs and the mdevs on them', 'bus/pci/devices/0000:81:00.0/sriov_numvfs', '0', ['0000:81:00.2', '0000:81:00.3', 'aaaaaaaa-0000-4000-8000-000000000001']],
    ['sriov_numvfs=4 (a different count) too', 'bus/pci/devices/0000:81:00.0/sriov_numvfs', '4', ['0000:81:00.2', '0000:81:00.3', 'aaaaaaaa-0000-4000-8000-000000000001']],
    ['sriov_numvfs equal to the count is a no-op', 'bus/pci/devices/0000:81:00.0/sriov_numvfs', '2', []],
    ['unbind of a VF takes it and its mdev', 'bus/pci/devices/0000:81:00.3/driver/unbind', '0000:81:00.3', ['0000:81:00.3', 'aaaaaaaa-0000-4000-8000-000000000001']],
    ['unbind through the driver folder', 'bus/pci/drivers/vfio-pci/unbind', '0000:81:00.2', ['0000:81:00.2']],
    ['unbind of a PF disables its VFs', 'bus/pci/devices/0000:81:00.0/driver/unbind', '0000:81:00.0', ['0000:81:00.0', '0000:81:00.2', '0000:81:00.3', 'aaaaaaaa-0000-4000-8000-000000000001']],
    ['unbind of a function with no driver destroys nothing', 'bus/pci/devices/0000:3b:00.0/driver/unbind', '0000:3b:00.0', []],
    ['mdev remove', 'bus/mdev/devices/aaaaaaaa-0000-4000-8000-000000000001/remove', '1', ['aaaaaaaa-0000-4000-8000-000000000001']],
    ['vport_delete on the host', 'class/fc_host/host5/vport_delete', 'c050760000000001:c050760000000002', ['c050760000000001']],
    ['vport_delete on the vport itself', 'class/fc_vports/vport-5:0-0/vport_delete', '1', ['c050760000000001']],
    ['PCI remove of the HBA takes its vports', 'bus/pci/devices/0000:d8:00.0/remove', '1', ['0000:d8:00.0', 'c050760000000001']],
    ['driver_override alone destroys nothing', 'bus/pci/devices/0000:81:00.2/driver_override', 'vfio-pci', []],
    ['mdev create destroys nothing', 'bus/pci/devices/0000:81:00.3/mdev_supported_types/t/create', 'x', []],
  ])('%s', (_name, path, value, victims) => {
    expect(victimsOf({ path, value, why: '' }, inv)).toStrictEqual(victims);
  });

  test('a function back on the host driver it had before virtualio moved it (after a reboot) is not itself a victim of its unbind; what hangs off it still is', () => {
    const onOriginal = (addr: string, driver: string) => (addr === '0000:81:00.3' && driver === 'vfio-pci') || (addr === '0000:81:00.0' && driver === 'mlx5_core');
    expect(victimsOf({ path: 'bus/pci/devices/0000:81:00.3/driver/unbind', value: '0000:81:00.3', why: '' }, inv, undefined, onOriginal)).toStrictEqual(['aaaaaaaa-0000-4000-8000-000000000001']);
    expect(victimsOf({ path: 'bus/pci/drivers/vfio-pci/unbind', value: '0000:81:00.3', why: '' }, inv, undefined, onOriginal)).toStrictEqual(['aaaaaaaa-0000-4000-8000-000000000001']);
    expect(victimsOf({ path: 'bus/pci/devices/0000:81:00.0/driver/unbind', value: '0000:81:00.0', why: '' }, inv, undefined, onOriginal)).toStrictEqual(['0000:81:00.2', '0000:81:00.3', 'aaaaaaaa-0000-4000-8000-000000000001']);
    // Another driver than the recorded one: the function counts as before.
    expect(victimsOf({ path: 'bus/pci/drivers/vfio-pci/unbind', value: '0000:81:00.2', why: '' }, inv, undefined, onOriginal)).toStrictEqual(['0000:81:00.2']);
    const held = (id: string) => (id === '0000:81:00.2' || id === '0000:81:00.3' ? 'held by VM a' : undefined);
    const r = gate([
      { path: 'bus/pci/drivers/vfio-pci/unbind', value: '0000:81:00.2', why: 'x', group: 'a' },
      { path: 'bus/pci/drivers/vfio-pci/unbind', value: '0000:81:00.3', why: 'x', group: 'b' },
    ], { ...inv, devices: inv.devices.map((d) => (d.pciAddress === '0000:81:00.3' ? { ...d, mdevs: [] } : d)) }, held, onOriginal);
    expect(r.refused.map((x) => x.write.value)).toStrictEqual(['0000:81:00.2']);
    expect(r.allowed.map((x) => x.write.value)).toStrictEqual(['0000:81:00.3']);
  });

  test('existingIds lists functions, mdevs and vports', () => {
    expect([...existingIds(inv)].sort()).toStrictEqual(['0000:3b:00.0', '0000:81:00.0', '0000:81:00.2', '0000:81:00.3', '0000:d8:00.0', 'aaaaaaaa-0000-4000-8000-000000000001', 'c050760000000001']);
  });
});

describe('gate', () => {
  test('a write that would destroy a held slice is refused with the rest of its group; other devices proceed', () => {
    const writes = [
      { path: 'bus/pci/devices/0000:81:00.0/sriov_numvfs', value: '0', why: 're-carve', group: '0000:81:00.0' },
      { path: 'bus/pci/devices/0000:81:00.0/sriov_numvfs', value: '4', why: 're-carve', group: '0000:81:00.0' },
      { path: 'class/fc_host/host5/vport_delete', value: 'c050760000000001:c050760000000002', why: 'release', group: '0000:d8:00.0/host5' },
    ];
    const r = gate(writes, inv, (id) => (id === 'aaaaaaaa-0000-4000-8000-000000000001' ? 'held by VM a' : undefined));
    expect(r.refused.map((x) => [x.write.value, x.victim, x.why])).toStrictEqual([
      ['0', 'aaaaaaaa-0000-4000-8000-000000000001', 'held by VM a'],
      ['4', 'aaaaaaaa-0000-4000-8000-000000000001', 'held by VM a'],
    ]);
    expect(r.allowed.map((a) => [a.write.path, a.victims])).toStrictEqual([['class/fc_host/host5/vport_delete', ['c050760000000001']]]);
  });
});

describe('gate and IOMMU groups', () => {
  test('unbinding the audio function of a held GPU is refused: the VM holds the whole group', () => {
    const withGroup: Inventory = {
      devices: [
        { pciAddress: '0000:3b:00.0', driver: 'vfio-pci', iommuGroup: 60, iommuGroupMembers: ['0000:3b:00.1'] },
        { pciAddress: '0000:3b:00.1', driver: 'vfio-pci', iommuGroup: 60, iommuGroupMembers: ['0000:3b:00.0'] },
      ],
    };
    const r = gate([{ path: 'bus/pci/devices/0000:3b:00.1/driver/unbind', value: '0000:3b:00.1', why: 'return' }], withGroup, (id) => (id === '0000:3b:00.0' ? 'held by VM a' : undefined));
    expect(r.refused.map((x) => [x.victim, x.why])).toStrictEqual([['0000:3b:00.1', 'in the IOMMU group of 0000:3b:00.0, held by VM a']]);
    expect(r.allowed).toStrictEqual([]);
  });
});

describe('parseKubeletCheckpoint', () => {
  test('reads 1.20+ (per NUMA node) and older (list) DeviceIDs', () => {
    const text = JSON.stringify({
      Data: {
        PodDeviceEntries: [
          { PodUID: 'u1', ContainerName: 'compute', ResourceName: 'virtualio.dev/net', DeviceIDs: { '0': ['a'], '-1': ['b'] }, AllocResp: '' },
          { PodUID: 'u2', ContainerName: 'compute', ResourceName: 'virtualio.dev/gpu', DeviceIDs: ['c'], AllocResp: '' },
        ],
        RegisteredDevices: {},
      },
      Checksum: 1,
    });
    const st = parseKubeletCheckpoint(text);
    expect(st.kind).toBe('ok');
    if (st.kind !== 'ok') return;
    expect([...st.entries.keys()].sort()).toStrictEqual(['a', 'b', 'c']);
    expect(st.entries.get('c')).toStrictEqual([{ podUID: 'u2', container: 'compute', resourceName: 'virtualio.dev/gpu' }]);
  });

  test.each([
    ['truncated', '{"Data":{"PodDeviceEntries":[{"PodUID"'],
    ['no Data', '{"Checksum":1}'],
    ['entries not a list', '{"Data":{"PodDeviceEntries":{}}}'],
    ['malformed DeviceIDs', '{"Data":{"PodDeviceEntries":[{"PodUID":"u","ResourceName":"r","DeviceIDs":{"0":[1]}}]}}'],
  ])('%s is corrupt (unknown), never empty', (_n, text) => {
    expect(parseKubeletCheckpoint(text).kind).toBe('corrupt');
  });

  test('a kubelet with no allocations writes null entries', () => {
    expect(parseKubeletCheckpoint('{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{}},"Checksum":0}')).toMatchObject({ kind: 'ok' });
  });
});
