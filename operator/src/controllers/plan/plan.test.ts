import type { InventoryDevice } from '../../../../crds/generated/types.js';
import type { Pool } from '../../api/types.js';
import { gpu, nicPF, nodeObj, nvme, poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { effectiveConsumption, planNode, preparePools } from './plan.js';
import { poolSpecProblem } from './shape.js';
import { claimsOverlap, labelSelectorMatches, parseInterfaceName, selectDevices, type LabelSelector } from './selectors.js';

describe('labelSelectorMatches', () => {
  const labels = { 'virtualio.dev/nic': 'x520', zone: 'a', gpu: '' };
  test.each<[string, LabelSelector | undefined, boolean]>([
    ['absent selector matches every node', undefined, true],
    ['empty selector matches every node', {}, true],
    ['matchLabels equal', { matchLabels: { zone: 'a' } }, true],
    ['matchLabels differ', { matchLabels: { zone: 'b' } }, false],
    ['matchLabels missing key', { matchLabels: { rack: '1' } }, false],
    ['In hit', { matchExpressions: [{ key: 'zone', operator: 'In', values: ['a', 'b'] }] }, true],
    ['In miss', { matchExpressions: [{ key: 'zone', operator: 'In', values: ['c'] }] }, false],
    ['In on a missing key', { matchExpressions: [{ key: 'rack', operator: 'In', values: ['1'] }] }, false],
    ['NotIn hit', { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, false],
    ['NotIn on a missing key', { matchExpressions: [{ key: 'rack', operator: 'NotIn', values: ['1'] }] }, true],
    ['Exists with empty value', { matchExpressions: [{ key: 'gpu', operator: 'Exists' }] }, true],
    ['Exists missing', { matchExpressions: [{ key: 'rack', operator: 'Exists' }] }, false],
    ['DoesNotExist', { matchExpressions: [{ key: 'rack', operator: 'DoesNotExist' }] }, true],
    ['DoesNotExist present', { matchExpressions: [{ key: 'zone', operator: 'DoesNotExist' }] }, false],
    ['labels and expressions ANDed', { matchLabels: { zone: 'a' }, matchExpressions: [{ key: 'rack', operator: 'Exists' }] }, false],
  ])('%s', (_name, sel, want) => {
    expect(labelSelectorMatches(sel, labels)).toBe(want);
  });
});

describe('parseInterfaceName', () => {
  test.each([
    ['ens1f0', { name: 'ens1f0' }],
    ['ens1f0#3', { name: 'ens1f0', first: 3, last: 3 }],
    ['ens1f0#0-7', { name: 'ens1f0', first: 0, last: 7 }],
    ['ens1f0#7-0', { name: 'ens1f0' }],
  ])('%s', (s, want) => expect(parseInterfaceName(s)).toEqual(want));
});

describe('selectDevices', () => {
  const inv = [
    ...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2, numa: 0 }),
    ...nicPF('0000:82:00.0', { netdev: 'ens2f0', numa: 1, driver: 'ice', device: '1593' }),
    gpu('0000:c1:00.0'),
    nvme('0000:e1:00.0', { vendor: '8086', device: '0a54' }),
    { pciAddress: '0000:00:14.0', vendorID: '8086', deviceID: 'a36d', classCode: '0c0330', driver: 'xhci_hcd' },
  ];
  const addrs = (xs: { pciAddress: string }[]) => xs.map((x) => x.pciAddress);
  test.each<[string, Pool['spec']['deviceSelector'], Pool['spec']['class'], string[]]>([
    ['vendor picks NIC PFs only (no VFs, no USB controller of the same vendor)', { vendorIDs: ['8086'] }, 'NIC', ['0000:81:00.0', '0000:82:00.0']],
    ['vendor upper case', { vendorIDs: ['10DE'] }, 'GPU', ['0000:c1:00.0']],
    ['deviceIDs', { deviceIDs: ['1593'] }, 'NIC', ['0000:82:00.0']],
    ['pciAddresses', { pciAddresses: ['0000:81:00.0'] }, 'NIC', ['0000:81:00.0']],
    ['a VF address never matches', { pciAddresses: ['0000:81:10.0'] }, 'NIC', []],
    ['drivers', { drivers: ['ice'] }, 'NIC', ['0000:82:00.0']],
    ['numaNodes', { numaNodes: [1] }, 'NIC', ['0000:82:00.0']],
    ['fields are ANDed', { vendorIDs: ['8086'], numaNodes: [0] }, 'NIC', ['0000:81:00.0']],
    ['values are ORed', { pciAddresses: ['0000:81:00.0', '0000:82:00.0'] }, 'NIC', ['0000:81:00.0', '0000:82:00.0']],
    ['empty fields are ignored', { vendorIDs: [], deviceIDs: ['10fb'] }, 'NIC', ['0000:81:00.0']],
    ['storage class takes NVMe, not NICs of the same vendor', { vendorIDs: ['8086'] }, 'Storage', ['0000:e1:00.0']],
    ['interface name', { interfaceNames: ['ens2f0'] }, 'NIC', ['0000:82:00.0']],
  ])('%s', (_n, sel, cls, want) => {
    expect(addrs(selectDevices(sel, cls, 'Passthrough', inv))).toEqual(want);
  });

  test('interfaceNames VF ranges become vfFirst/vfLast for SRIOV, one claim per distinct range', () => {
    expect(selectDevices({ interfaceNames: ['ens1f0#0-3', 'ens1f0#8-9', 'ens1f0#0-3'] }, 'NIC', 'SRIOV', inv)).toEqual([
      { pciAddress: '0000:81:00.0', vfFirst: 0, vfLast: 3 },
      { pciAddress: '0000:81:00.0', vfFirst: 8, vfLast: 9 },
    ]);
    expect(selectDevices({ interfaceNames: ['ens1f0#5'] }, 'NIC', 'SRIOV', inv)).toEqual([{ pciAddress: '0000:81:00.0', vfFirst: 5, vfLast: 5 }]);
  });

  test('a plain name next to a range claims the whole device; ranges are ignored for other modes', () => {
    expect(selectDevices({ interfaceNames: ['ens1f0#0-3', 'ens1f0'] }, 'NIC', 'SRIOV', inv)).toEqual([{ pciAddress: '0000:81:00.0' }]);
    expect(selectDevices({ interfaceNames: ['ens1f0#0-3'] }, 'NIC', 'Passthrough', inv)).toEqual([{ pciAddress: '0000:81:00.0' }]);
  });

  test.each([
    [{ pciAddress: 'a' }, { pciAddress: 'a' }, true],
    [{ pciAddress: 'a' }, { pciAddress: 'b' }, false],
    [{ pciAddress: 'a', vfFirst: 0, vfLast: 3 }, { pciAddress: 'a' }, true],
    [{ pciAddress: 'a', vfFirst: 0, vfLast: 3 }, { pciAddress: 'a', vfFirst: 4, vfLast: 7 }, false],
    [{ pciAddress: 'a', vfFirst: 0, vfLast: 4 }, { pciAddress: 'a', vfFirst: 4, vfLast: 7 }, true],
  ])('claimsOverlap %#', (a, b, want) => expect(claimsOverlap(a, b)).toBe(want));
});

describe('effectiveConsumption', () => {
  test.each<[Pool['spec']['class'], Pool['spec']['carving']['mode'], string | undefined, string]>([
    ['GPU', 'Mediated', undefined, 'MediatedDevice'],
    ['NIC', 'SRIOV', undefined, 'SRIOVNetwork'],
    ['NIC', 'Passthrough', undefined, 'HostDevice'],
    ['Storage', 'SRIOV', undefined, 'HostDevice'],
    ['Storage', 'NPIV', undefined, 'HostDevice'],
    ['GPU', 'Passthrough', undefined, 'HostDevice'],
    ['NIC', 'SRIOV', 'HostDevice', 'HostDevice'],
  ])('%s %s %s → %s', (cls, mode, explicit, want) => {
    expect(effectiveConsumption({
      class: cls, deviceSelector: {}, carving: { mode },
      ...(explicit ? { kubevirt: { consumption: explicit as 'HostDevice' } } : {}),
    })).toBe(want);
  });
});

describe('planNode', () => {
  const node = nodeObj('n1', { nic: 'x520' });
  const inv = [...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2 }), ...nicPF('0000:82:00.0', { netdev: 'ens2f0' }), gpu('0000:c1:00.0', { mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q' }] })];
  const vio = vioNodeObj('n1', { devices: inv });

  test('plans a matching pool with every default filled in', () => {
    const pools = preparePools([poolObj('vfs', { class: 'NIC', nodeSelector: { matchLabels: { nic: 'x520' } }, deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 8 } })]);
    expect(planNode(node, vio, pools)).toEqual({
      pools: [{
        name: 'vfs', resourceName: 'virtualio.dev/vfs', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', policy: 'NUMAAligned',
        count: 8, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }],
      }],
      conflicts: [],
    });
  });

  test('mode-specific fields: Mediated mdevType, Passthrough without count, NPIV wwnPrefix, explicit values kept', () => {
    const pools = preparePools([
      poolObj('vgpu', { class: 'GPU', resourceName: 'nvidia.com/a16', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' }, allocation: { policy: 'Spread' } }),
      poolObj('pt', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:82:00.0'] }, carving: { mode: 'Passthrough', count: 1 } }),
    ]);
    expect(planNode(node, vio, pools).pools).toEqual([
      { name: 'pt', resourceName: 'virtualio.dev/pt', class: 'NIC', mode: 'Passthrough', consumption: 'HostDevice', policy: 'NUMAAligned', devices: [{ pciAddress: '0000:82:00.0' }] },
      { name: 'vgpu', resourceName: 'nvidia.com/a16', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', policy: 'Spread', count: 4, mdevType: 'nvidia-754', devices: [{ pciAddress: '0000:c1:00.0' }] },
    ]);
  });

  test('a node whose labels do not match gets nothing; a pool with no matching device is left out', () => {
    const pools = preparePools([
      poolObj('a', { class: 'NIC', nodeSelector: { matchLabels: { nic: 'e810' } } }),
      poolObj('b', { class: 'NIC', deviceSelector: { vendorIDs: ['15b3'] } }),
    ]);
    expect(planNode(node, vio, pools)).toEqual({ pools: [], conflicts: [] });
    expect(planNode(nodeObj('n1', {}), vio, preparePools([poolObj('a', { class: 'NIC', nodeSelector: { matchLabels: { nic: 'x520' } } })]))).toEqual({ pools: [], conflicts: [] });
  });

  test('a device claimed by two pools goes to the older one; the younger records a conflict', () => {
    const pools = preparePools([
      poolObj('young', { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] } }, { createdSec: 10 }),
      poolObj('old', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }, { createdSec: 5 }),
    ]);
    const plan = planNode(node, vio, pools);
    expect(plan.pools.map((p) => [p.name, p.devices.map((d) => d.pciAddress)])).toEqual([
      ['old', ['0000:81:00.0']],
      ['young', ['0000:82:00.0']],
    ]);
    expect(plan.conflicts).toEqual([{ pool: 'young', node: 'n1', device: '0000:81:00.0', heldBy: 'old' }]);
  });

  test('same creation time: the name decides', () => {
    const pools = preparePools([
      poolObj('b', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }),
      poolObj('a', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }),
    ]);
    const plan = planNode(node, vio, pools);
    expect(plan.pools.map((p) => p.name)).toEqual(['a']);
    expect(plan.conflicts).toEqual([{ pool: 'b', node: 'n1', device: '0000:81:00.0', heldBy: 'a' }]);
  });

  test('NVIDIA vendor-VFIO vGPU pools share a GPU (the agent lays out their VFs) and carry profile and mode; any other pool still conflicts', () => {
    const l40s: InventoryDevice = { pciAddress: '0000:3b:00.0', vendorID: '10de', deviceID: '26b9', classCode: '030200', driver: 'nvidia', sriov: { totalVFs: 32, numVFs: 0, vfs: [] } };
    const v = vioNodeObj('n1', { devices: [l40s] });
    const sel = { pciAddresses: ['0000:3b:00.0'] };
    const pools = preparePools([
      poolObj('l40s-12q', { class: 'GPU', deviceSelector: sel, carving: { mode: 'SRIOV', count: 2, vgpu: { profile: 'L40S-12Q', heterogeneous: true } } }, { createdSec: 1 }),
      poolObj('l40s-24q', { class: 'GPU', deviceSelector: sel, carving: { mode: 'SRIOV', count: 1, vgpu: { profile: 'L40S-24Q' } } }, { createdSec: 2 }),
      poolObj('pt', { class: 'GPU', deviceSelector: sel, carving: { mode: 'Passthrough' } }, { createdSec: 3 }),
    ]);
    const plan = planNode(node, v, pools);
    expect(plan.pools).toEqual([
      { name: 'l40s-12q', resourceName: 'virtualio.dev/l40s-12q', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned', count: 2, vfDriver: 'nvidia', vgpuProfile: 'L40S-12Q', vgpuHeterogeneous: true, devices: [{ pciAddress: '0000:3b:00.0' }] },
      { name: 'l40s-24q', resourceName: 'virtualio.dev/l40s-24q', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned', count: 1, vfDriver: 'nvidia', vgpuProfile: 'L40S-24Q', devices: [{ pciAddress: '0000:3b:00.0' }] },
    ]);
    expect(plan.conflicts).toEqual([{ pool: 'pt', node: 'n1', device: '0000:3b:00.0', heldBy: 'l40s-12q' }]);
  });

  test('an on-demand vGPU profile pool (DRA) carries its profiles and mode, no count; its GPU is its own; a malformed onDemand is not planned', () => {
    const l40s: InventoryDevice = { pciAddress: '0000:3b:00.0', vendorID: '10de', deviceID: '26b9', classCode: '030200', driver: 'nvidia', sriov: { totalVFs: 32, numVFs: 0, vfs: [] } };
    const v = vioNodeObj('n1', { devices: [l40s] });
    const sel = { pciAddresses: ['0000:3b:00.0'] };
    const od = { class: 'GPU' as const, frontEnd: 'DRA' as const, deviceSelector: sel, carving: { mode: 'SRIOV' as const, onDemand: { vgpuProfiles: ['L40S-12Q', 'L40S-24Q'], heterogeneous: true } } };
    expect(poolSpecProblem({ spec: od } as unknown as Pool)).toBeUndefined();
    expect(poolSpecProblem({ spec: { ...od, carving: { mode: 'SRIOV', onDemand: {} } } } as unknown as Pool)).toMatch(/^spec\.carving\.onDemand: not/);
    const pools = preparePools([
      poolObj('l40s', od, { createdSec: 1 }),
      poolObj('l40s-12q', { class: 'GPU', deviceSelector: sel, carving: { mode: 'SRIOV', count: 2, vgpu: { profile: 'L40S-12Q' } } }, { createdSec: 2 }),
    ]);
    const plan = planNode(node, v, pools);
    expect(plan.pools).toEqual([
      { name: 'l40s', resourceName: 'virtualio.dev/l40s', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned', onDemand: { vgpuProfiles: ['L40S-12Q', 'L40S-24Q'] }, vfDriver: 'nvidia', vgpuHeterogeneous: true, frontEnd: 'DRA', devices: [{ pciAddress: '0000:3b:00.0' }] },
    ]);
    expect(plan.conflicts).toEqual([{ pool: 'l40s-12q', node: 'n1', device: '0000:3b:00.0', heldBy: 'l40s' }]);
  });

  test('an Intel SR-IOV GPU pool carries its gpuVf provisioning; one without it plans as before', () => {
    const flex: InventoryDevice = { pciAddress: '0000:4d:00.0', vendorID: '8086', deviceID: '56c0', classCode: '038000', driver: 'i915', sriov: { totalVFs: 31, numVFs: 0, vfs: [] } };
    const v = vioNodeObj('n1', { devices: [flex] });
    const gpuVf = { lmemBytes: 3221225472, ggttBytes: 536870912, contexts: 1024, execQuantumMs: 20 };
    const carving = (o: object = {}): { mode: 'SRIOV'; count: number } => ({ mode: 'SRIOV', count: 4, ...o });
    const withQuotas = planNode(node, v, preparePools([poolObj('flex', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:4d:00.0'] }, carving: carving({ gpuVf }) }, { createdSec: 1 })]));
    expect(withQuotas.pools).toEqual([{ name: 'flex', resourceName: 'virtualio.dev/flex', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned', count: 4, vfDriver: 'vfio-pci', gpuVf, devices: [{ pciAddress: '0000:4d:00.0' }] }]);
    const plain = planNode(node, v, preparePools([poolObj('flex', { class: 'GPU', deviceSelector: { pciAddresses: ['0000:4d:00.0'] }, carving: carving() }, { createdSec: 1 })]));
    expect(Object.keys(plain.pools[0] ?? {})).not.toContain('gpuVf');
  });

  test('non-overlapping VF ranges of one PF are no conflict; overlapping ones are', () => {
    const pools = preparePools([
      poolObj('low', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#0-3'] } }, { createdSec: 1 }),
      poolObj('high', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#4-7'] } }, { createdSec: 2 }),
      poolObj('mid', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#3-4'] } }, { createdSec: 3 }),
    ]);
    const plan = planNode(node, vio, pools);
    expect(plan.pools.map((p) => [p.name, p.devices])).toEqual([
      ['high', [{ pciAddress: '0000:81:00.0', vfFirst: 4, vfLast: 7 }]],
      ['low', [{ pciAddress: '0000:81:00.0', vfFirst: 0, vfLast: 3 }]],
    ]);
    expect(plan.conflicts).toEqual([{ pool: 'mid', node: 'n1', device: '0000:81:00.0#3-4', heldBy: 'low' }]);
  });

  test('two pools with one resource name: the older keeps it and stays planned, the younger is not planned', () => {
    const pools = preparePools([
      poolObj('b', { class: 'NIC', resourceName: 'example.com/nic', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }, { createdSec: 1 }),
      poolObj('a', { class: 'NIC', resourceName: 'example.com/nic', deviceSelector: { pciAddresses: ['0000:82:00.0'] } }, { createdSec: 2 }),
      poolObj('c', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:82:00.0'] } }),
    ]);
    expect(pools.byName.get('b')?.resourceNameConflicts).toEqual([]);
    expect(pools.byName.get('a')?.resourceNameConflicts).toEqual(['b']);
    expect(planNode(node, vio, pools).pools.map((p) => p.name)).toEqual(['b', 'c']);
  });

  test('a pool being deleted keeps its current entry, marked deleting, and still holds its devices', () => {
    const current = planNode(node, vio, preparePools([poolObj('old', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } })])).pools;
    const pools = preparePools([
      poolObj('old', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }, { deleting: true }),
      poolObj('new', { class: 'NIC', deviceSelector: { pciAddresses: ['0000:81:00.0'] } }, { createdSec: 100 }),
    ]);
    const plan = planNode(node, vioNodeObj('n1', { devices: inv, plan: current }), pools);
    expect(plan.pools).toEqual([{ ...current[0], deleting: true }]);
    expect(plan.conflicts).toEqual([{ pool: 'new', node: 'n1', device: '0000:81:00.0', heldBy: 'old' }]);
    // Not planned here and not reported: nothing to do on this node.
    expect(planNode(node, vio, preparePools([poolObj('old', { class: 'NIC' }, { deleting: true })])).pools).toEqual([]);
    // Not planned but the agent still reports it: a deleting entry so the agent uncarves.
    const reported = vioNodeObj('n1', { devices: inv, status: { pools: [{ name: 'old', state: 'Ready' }] } });
    expect(planNode(node, reported, preparePools([poolObj('old', { class: 'NIC' }, { deleting: true })])).pools.map((p) => [p.name, p.deleting, p.devices])).toEqual([['old', true, []]]);
  });

  test('no Node object: nothing new is planned', () => {
    const pools = preparePools([poolObj('a', { class: 'NIC' })]);
    expect(planNode(undefined, vio, pools).pools).toEqual([]);
  });

  test('idempotent: planning again on top of the written plan gives the same plan', () => {
    const pools = preparePools([
      poolObj('a', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#0-1'] } }),
      poolObj('b', { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] } }, { createdSec: 9 }),
      poolObj('g', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } }),
    ]);
    const first = planNode(node, vio, pools);
    const second = planNode(node, vioNodeObj('n1', { devices: inv, plan: first.pools }), pools);
    expect(second).toEqual(first);
  });
});
