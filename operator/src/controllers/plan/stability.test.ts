// Plans that do not flap: a device a pool carved stays the pool's until the admin's intent changes
// (not when carving changes how the device looks), a missing, stale or truncated report never
// unplans a pool, a second pool with the same resource name does not unplan the first, and a
// passthrough GPU takes its IOMMU-group companions (audio function) along.
import type { InventoryDevice } from '../../../../crds/generated/types.js';
import type { Pool, PoolPlan, VioNode } from '../../api/types.js';
import { gpu, nicPF, nodeObj, poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { planNode, preparePools, type NodePlan } from './plan.js';
import { selectDevices } from './selectors.js';

const node = nodeObj('n1', { gpu: 'yes' });
/** The device as the agent reports it once it moved it to vfio-pci (no netdev any more), with or without its original facts. */
function carved(d: InventoryDevice, withOriginal = true): InventoryDevice {
  const { netdevs, ...rest } = d;
  return {
    ...rest, driver: 'vfio-pci',
    ...(withOriginal ? { original: { ...(d.driver ? { driver: d.driver } : {}), ...(netdevs?.length ? { interfaceNames: netdevs.map((n) => n.name) } : {}) } } : {}),
  };
}
const names = (p: NodePlan) => p.pools.map((x) => x.name);
const devicesOf = (p: NodePlan, pool: string) => p.pools.find((x) => x.name === pool)?.devices;
const vioWith = (devices: InventoryDevice[] | undefined, plan?: PoolPlan[], inventory?: { truncated?: boolean }): VioNode => {
  const v = vioNodeObj('n1', { devices: devices ?? [], ...(plan ? { plan } : {}) });
  if (devices === undefined) delete v.status;
  else if (inventory?.truncated) v.status = { ...v.status, inventory: { devices, truncated: true } };
  return v;
};

describe('stable pool membership (selected by drivers or interfaceNames)', () => {
  const a5000 = gpu('0000:41:00.0', { device: '2231', driver: 'nvidia' });
  const ice = nicPF('0000:82:00.0', { netdev: 'ens2f0', driver: 'ice', device: '1593' })[0] as InventoryDevice;
  const byDriver = poolObj('rtx', { class: 'GPU', nodeSelector: { matchLabels: { gpu: 'yes' } }, deviceSelector: { drivers: ['nvidia'] }, carving: { mode: 'Passthrough' } });
  const byName = poolObj('pt-nic', { class: 'NIC', deviceSelector: { interfaceNames: ['ens2f0'] }, carving: { mode: 'Passthrough' } });
  const pools = preparePools([byDriver, byName]);

  test('plan → carve → plan gives the same plan when the agent reports the original facts', () => {
    const first = planNode(node, vioWith([a5000, ice]), pools);
    expect(names(first)).toEqual(['pt-nic', 'rtx']);
    // The agent carved both: now on vfio-pci, the NIC without its netdev.
    const after = planNode(node, vioWith([carved(a5000), carved(ice)], first.pools), pools);
    expect(after).toEqual(first);
    // Even with no current plan (a fresh operator, a re-created VirtualIONode) the facts suffice.
    expect(planNode(node, vioWith([carved(a5000), carved(ice)]), pools)).toEqual(first);
  });

  test('selectors match current ∪ original facts, including VF ranges of a PF whose netdev vanished', () => {
    const pf = carved(nicPF('0000:81:00.0', { netdev: 'ens1f0' })[0] as InventoryDevice);
    expect(selectDevices({ interfaceNames: ['ens1f0#0-3'] }, 'NIC', 'SRIOV', [pf])).toEqual([{ pciAddress: '0000:81:00.0', vfFirst: 0, vfLast: 3 }]);
    expect(selectDevices({ drivers: ['ixgbe'] }, 'NIC', 'SRIOV', [pf])).toHaveLength(1);
    expect(selectDevices({ drivers: ['vfio-pci'] }, 'NIC', 'SRIOV', [pf])).toHaveLength(1);
    expect(selectDevices({ drivers: ['i40e'] }, 'NIC', 'SRIOV', [pf])).toEqual([]);
  });

  test('an edited selector is a change of intent: the carved device leaves the pool', () => {
    const first = planNode(node, vioWith([a5000]), pools);
    const edited = preparePools([poolObj('rtx', { ...byDriver.spec, deviceSelector: { drivers: ['amdgpu'] } })]);
    expect(planNode(node, vioWith([carved(a5000)], first.pools), edited).pools).toEqual([]);
    // So is a node label removed.
    expect(planNode(nodeObj('n1', {}), vioWith([carved(a5000)], first.pools), pools).pools.map((p) => p.name)).toEqual([]);
  });

  test('fallback without original facts (older agent, lost record): the current plan keeps a device carving changed', () => {
    const first = planNode(node, vioWith([a5000, ice]), pools);
    const noFacts = [carved(a5000, false), carved(ice, false)];
    // Without a current plan there is nothing to go on: vfio-pci does not match drivers: [nvidia].
    expect(planNode(node, vioWith(noFacts), pools).pools).toEqual([]);
    // With it, the devices stay.
    expect(planNode(node, vioWith(noFacts, first.pools), pools)).toEqual(first);
    // ...but only while the rest of the selector still matches them.
    const narrowed = preparePools([poolObj('rtx', { ...byDriver.spec, deviceSelector: { drivers: ['nvidia'], deviceIDs: ['2204'] } }), byName]);
    expect(names(planNode(node, vioWith(noFacts, first.pools), narrowed))).toEqual(['pt-nic']);
    // A device on its own driver that stopped matching is not kept by the fallback (no carving explains it).
    const rebound = { ...a5000, driver: 'nouveau' };
    expect(names(planNode(node, vioWith([rebound, carved(ice, false)], first.pools), pools))).toEqual(['pt-nic']);
  });
});

describe('a missing, stale or truncated report never unplans a pool', () => {
  const inv = [...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2 }), gpu('0000:c1:00.0')];
  const pools = preparePools([
    poolObj('vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#0-1'] }, carving: { mode: 'SRIOV', count: 4 } }),
    poolObj('gpus', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } }),
  ]);
  const planned = planNode(node, vioWith(inv), pools);

  test('the baseline plans both pools', () => {
    expect(names(planned)).toEqual(['gpus', 'vfs']);
    expect(devicesOf(planned, 'vfs')).toEqual([{ pciAddress: '0000:81:00.0', vfFirst: 0, vfLast: 1 }]);
  });

  test('no status (no inventory) keeps the current plan', () => {
    expect(planNode(node, vioWith(undefined, planned.pools), pools)).toEqual(planned);
  });

  test('a truncated inventory without the planned PF keeps it; a complete one without it drops it', () => {
    const withoutPf = inv.filter((d) => d.pciAddress !== '0000:81:00.0');
    expect(planNode(node, vioWith(withoutPf, planned.pools, { truncated: true }), pools)).toEqual(planned);
    expect(names(planNode(node, vioWith(withoutPf, planned.pools), pools))).toEqual(['gpus']);
  });

  test('a VirtualIONode deleted and re-created by the agent (empty plan, no status): the last known one stands in', () => {
    const last = vioWith(inv, planned.pools);
    const recreated: VioNode = { ...vioNodeObj('n1', { plan: [] }) };
    delete recreated.status;
    expect(planNode(node, recreated, pools, last)).toEqual(planned);
    expect(planNode(node, undefined, pools, last)).toEqual(planned);
    // Once the agent reports again, its report decides (the fallback is ignored).
    expect(planNode(node, vioWith(inv.filter((d) => d.pciAddress !== '0000:c1:00.0'), []), pools, last).pools.map((p) => p.name)).toEqual(['vfs']);
  });

  test('keeping is not a way around intent: the nodeSelector still decides with an unknown inventory', () => {
    const labelled = preparePools([poolObj('gpus', { class: 'GPU', nodeSelector: { matchLabels: { gpu: 'yes' } }, deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } })]);
    const cur = planNode(node, vioWith(inv), labelled).pools;
    expect(cur).toHaveLength(1);
    expect(planNode(nodeObj('n1', {}), vioWith(undefined, cur), labelled).pools).toEqual([]);
  });
});

describe('two pools with one resource name', () => {
  test('the pool in service stays planned when a younger one takes its name; the younger is planned once renamed', () => {
    const inv = [gpu('0000:c1:00.0'), gpu('0000:c2:00.0')];
    const a = poolObj('a', { class: 'GPU', resourceName: 'example.com/gpu', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Passthrough' } }, { createdSec: 1 });
    const before = planNode(node, vioWith(inv), preparePools([a]));
    const b = poolObj('b', { class: 'GPU', resourceName: 'example.com/gpu', deviceSelector: { pciAddresses: ['0000:c2:00.0'] }, carving: { mode: 'Passthrough' } }, { createdSec: 2 });
    expect(planNode(node, vioWith(inv, before.pools), preparePools([a, b]))).toEqual(before);
    const renamed = poolObj('b', { ...b.spec, resourceName: 'example.com/gpu-b' }, { createdSec: 2 });
    expect(names(planNode(node, vioWith(inv, before.pools), preparePools([a, renamed])))).toEqual(['a', 'b']);
  });
});

describe('IOMMU-group companions of a passthrough device', () => {
  const group = (members: InventoryDevice[], g: number) => members.map((m) => ({ ...m, iommuGroup: g, iommuGroupMembers: members.map((x) => x.pciAddress) }));
  const [card, sound, bridge] = group([
    gpu('0000:41:00.0', { device: '2231' }),
    { pciAddress: '0000:41:00.1', vendorID: '10de', deviceID: '1aef', classCode: '040300', driver: 'snd_hda_intel' },
    { pciAddress: '0000:40:01.0', vendorID: '1022', deviceID: '1483', classCode: '060400', driver: 'pcieport' },
  ], 40) as [InventoryDevice, InventoryDevice, InventoryDevice];
  const gpuPool = poolObj('rtx', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } }, { createdSec: 1 });

  test('a GPU with an audio function (and a bridge) in its group is planned as one device', () => {
    const plan = planNode(node, vioWith([bridge, card, sound]), preparePools([gpuPool]));
    expect(plan).toEqual({ pools: [expect.objectContaining({ name: 'rtx', devices: [{ pciAddress: '0000:41:00.0' }] })], conflicts: [] });
  });

  test('two selected functions of one group: one device (one slice) for the group', () => {
    const [g1, g2] = group([gpu('0000:41:00.0'), gpu('0000:41:00.1')], 41);
    expect(devicesOf(planNode(node, vioWith([g1 as InventoryDevice, g2 as InventoryDevice]), preparePools([gpuPool])), 'rtx')).toEqual([{ pciAddress: '0000:41:00.0' }]);
  });

  test('a companion is held by the GPU pool: a younger pool that selects it is in conflict', () => {
    // A NIC that shares the GPU's group (no ACS on the slot).
    const [g, n] = group([gpu('0000:41:00.0'), nicPF('0000:41:00.2', { netdev: 'enp65s0f2' })[0] as InventoryDevice], 42);
    const nicPool = poolObj('nic', { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] }, carving: { mode: 'Passthrough' } }, { createdSec: 2 });
    const plan = planNode(node, vioWith([g as InventoryDevice, n as InventoryDevice]), preparePools([gpuPool, nicPool]));
    expect(names(plan)).toEqual(['rtx']);
    expect(plan.conflicts).toEqual([{ pool: 'nic', node: 'n1', device: '0000:41:00.2', heldBy: 'rtx' }]);
  });

  test('a GPU whose group member an older pool holds is in conflict, naming the member', () => {
    const [g, n] = group([gpu('0000:41:00.0'), nicPF('0000:41:00.2', { netdev: 'enp65s0f2' })[0] as InventoryDevice], 42);
    const olderNic = poolObj('nic', { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] }, carving: { mode: 'SRIOV', count: 2 } }, { createdSec: 0 });
    const plan = planNode(node, vioWith([g as InventoryDevice, n as InventoryDevice]), preparePools([gpuPool, olderNic]));
    expect(names(plan)).toEqual(['nic']);
    expect(plan.conflicts).toEqual([{ pool: 'rtx', node: 'n1', device: '0000:41:00.0 (IOMMU group member 0000:41:00.2)', heldBy: 'nic' }]);
  });

  test('a deleting GPU pool still holds its companions', () => {
    const cur = planNode(node, vioWith([bridge, card, sound]), preparePools([gpuPool])).pools;
    const [g, n] = group([card, nicPF('0000:41:00.2', { netdev: 'x' })[0] as InventoryDevice], 40);
    const deleting = poolObj('rtx', gpuPool.spec, { createdSec: 1, deleting: true });
    const nicPool = poolObj('nic', { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] }, carving: { mode: 'Passthrough' } }, { createdSec: 2 });
    const plan = planNode(node, vioWith([g as InventoryDevice, n as InventoryDevice], cur), preparePools([deleting, nicPool] as Pool[]));
    expect(plan.pools.map((p) => [p.name, p.deleting])).toEqual([['rtx', true]]);
    expect(plan.conflicts).toEqual([{ pool: 'nic', node: 'n1', device: '0000:41:00.2', heldBy: 'rtx' }]);
  });
});
