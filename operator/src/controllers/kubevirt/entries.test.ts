import { gpu, nicPF, nvme, poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { planNode, preparePools } from '../plan/plan.js';
import { desiredLists, entryPresent, kubevirtCondition, mdevSelectorName, poolEntries, type KubeVirtView } from './entries.js';

const inv = [
  ...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2, vfDevice: '10ed' }),
  gpu('0000:c1:00.0', { mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q' }] }),
  gpu('0000:c2:00.0', { device: '20b5' }),
  nvme('0000:e1:00.0'),
];
const pools = preparePools([
  poolObj('nic-vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 }, kubevirt: { consumption: 'HostDevice' } }),
  poolObj('net', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }, { createdSec: 9 }),
  poolObj('vgpu', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } }),
  poolObj('gpu', { class: 'GPU', resourceName: 'nvidia.com/a100', deviceSelector: { pciAddresses: ['0000:c2:00.0'] }, carving: { mode: 'Passthrough' } }),
  poolObj('disk', { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'Passthrough' }, kubevirt: { permit: false } }),
]);
const node = vioNodeObj('n1', { devices: inv });
const planned = vioNodeObj('n1', { devices: inv, plan: planNode({ metadata: { name: 'n1' } }, node, pools).pools });
const p = (name: string) => pools.byName.get(name)!;

describe('poolEntries', () => {
  test('SR-IOV host devices are permitted by the VF device ID, not the PF one', () => {
    expect(poolEntries(p('nic-vfs'), [planned])).toEqual([
      { list: 'pciHostDevices', resourceName: 'virtualio.dev/nic-vfs', pciVendorSelector: '8086:10ed', externalResourceProvider: true },
    ]);
  });
  test('mediated pools use the type name with spaces as "_"', () => {
    expect(mdevSelectorName('NVIDIA A16-4Q')).toBe('NVIDIA_A16-4Q');
    expect(poolEntries(p('vgpu'), [planned])).toEqual([
      { list: 'mediatedDevices', resourceName: 'virtualio.dev/vgpu', mdevNameSelector: 'NVIDIA_A16-4Q', externalResourceProvider: true },
    ]);
  });
  test('mediated pools fall back to the configured type before any inventory names it', () => {
    expect(poolEntries(p('vgpu'), [])).toEqual([
      { list: 'mediatedDevices', resourceName: 'virtualio.dev/vgpu', mdevNameSelector: 'nvidia-754', externalResourceProvider: true },
    ]);
  });
  test('NVIDIA vendor-VFIO vGPU pools: one pciHostDevices entry per profile pool, by the VF ID, external provider', () => {
    const l40s = [
      { pciAddress: '0000:3b:00.0', vendorID: '10de', deviceID: '26b9', classCode: '030200', driver: 'nvidia', sriov: { totalVFs: 32, numVFs: 2, vfs: ['0000:3b:00.4', '0000:3b:00.5'] } },
      ...['0000:3b:00.4', '0000:3b:00.5'].map((a) => ({ pciAddress: a, vendorID: '10de', deviceID: '26b9', classCode: '030200', driver: 'nvidia', physfn: '0000:3b:00.0', nvidiaVgpu: { currentType: 0 } })),
    ];
    const vp = preparePools([
      poolObj('l40s-12q', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'SRIOV', count: 1, vgpu: { profile: 'L40S-12Q', heterogeneous: true } } }),
      poolObj('l40s-24q', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'SRIOV', count: 1, vgpu: { profile: 'L40S-24Q', heterogeneous: true } } }),
    ]);
    const n = vioNodeObj('n1', { devices: l40s });
    const withPlan = vioNodeObj('n1', { devices: l40s, plan: planNode({ metadata: { name: 'n1' } }, n, vp).pools });
    expect(['l40s-12q', 'l40s-24q'].flatMap((x) => poolEntries(vp.byName.get(x)!, [withPlan]))).toEqual([
      { list: 'pciHostDevices', resourceName: 'virtualio.dev/l40s-12q', pciVendorSelector: '10de:26b9', externalResourceProvider: true },
      { list: 'pciHostDevices', resourceName: 'virtualio.dev/l40s-24q', pciVendorSelector: '10de:26b9', externalResourceProvider: true },
    ]);
  });
  test('passthrough uses the function ID', () => {
    expect(poolEntries(p('gpu'), [planned])).toEqual([
      { list: 'pciHostDevices', resourceName: 'nvidia.com/a100', pciVendorSelector: '10de:20b5', externalResourceProvider: true },
    ]);
  });
  test('SR-IOV networks and permit: false need no entries', () => {
    expect(poolEntries(p('net'), [planned])).toEqual([]);
    expect(poolEntries(p('disk'), [planned])).toEqual([]);
  });
});

describe('desiredLists', () => {
  test('extra entries first, then ours sorted, duplicates dropped', () => {
    const entries = [...poolEntries(p('gpu'), [planned]), ...poolEntries(p('vgpu'), [planned]), ...poolEntries(p('nic-vfs'), [planned])];
    const extra = {
      pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/TU104GL_Tesla_T4' }, { pciVendorSelector: '10de:20b5', resourceName: 'nvidia.com/a100', externalResourceProvider: true }],
      mediatedDevices: [],
    };
    expect(desiredLists(entries, extra)).toEqual({
      pciHostDevices: [
        { pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/TU104GL_Tesla_T4' },
        { pciVendorSelector: '10de:20b5', resourceName: 'nvidia.com/a100', externalResourceProvider: true },
        { pciVendorSelector: '8086:10ed', resourceName: 'virtualio.dev/nic-vfs', externalResourceProvider: true },
      ],
      mediatedDevices: [{ mdevNameSelector: 'NVIDIA_A16-4Q', resourceName: 'virtualio.dev/vgpu', externalResourceProvider: true }],
    });
  });
});

describe('kubevirtCondition', () => {
  const entries = poolEntries(p('vgpu'), [planned]);
  const view = (o: Partial<KubeVirtView>): KubeVirtView => ({
    installed: true, found: true, ref: 'kubevirt/kubevirt', managed: false, current: { pciHostDevices: [], mediatedDevices: [] }, ...o,
  });
  test.each<[string, Partial<KubeVirtView>, string, string]>([
    ['not installed', { installed: false }, 'False', 'KubeVirtNotInstalled'],
    ['CR missing', { found: false }, 'False', 'KubeVirtNotFound'],
    ['unmanaged and missing', {}, 'False', 'NotManaged'],
    ['managed, not applied yet', { managed: true }, 'False', 'ApplyPending'],
    ['present', { current: { pciHostDevices: [], mediatedDevices: [{ mdevNameSelector: 'NVIDIA A16-4Q', resourceName: 'virtualio.dev/vgpu', externalResourceProvider: true }] } }, 'True', 'Permitted'],
    ['present but KubeVirt would serve it itself', { current: { pciHostDevices: [], mediatedDevices: [{ mdevNameSelector: 'NVIDIA_A16-4Q', resourceName: 'virtualio.dev/vgpu' }] } }, 'False', 'NotManaged'],
  ])('%s', (_n, o, status, reason) => {
    expect(kubevirtCondition(p('vgpu'), entries, view(o))).toMatchObject({ status, reason });
  });
  test('the unmanaged message carries the exact entries to add', () => {
    expect(kubevirtCondition(p('vgpu'), entries, view({})).message).toContain(
      'mediatedDevices: [{mdevNameSelector: "NVIDIA_A16-4Q", resourceName: "virtualio.dev/vgpu", externalResourceProvider: true}]');
  });
  test('SR-IOV network pools need nothing; permit: false says so', () => {
    expect(kubevirtCondition(p('net'), [], view({}))).toMatchObject({ status: 'True', reason: 'NotRequired' });
    expect(kubevirtCondition(p('disk'), [], view({}))).toMatchObject({ status: 'False', reason: 'PermitDisabled' });
  });
  test('entryPresent compares pci selectors case-insensitively', () => {
    expect(entryPresent({ list: 'pciHostDevices', resourceName: 'r', pciVendorSelector: '10de:20b5' },
      { pciHostDevices: [{ pciVendorSelector: '10DE:20B5', resourceName: 'r', externalResourceProvider: true }], mediatedDevices: [] })).toBe(true);
  });
});
