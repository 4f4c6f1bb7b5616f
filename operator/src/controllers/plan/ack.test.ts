// The acknowledgement of agents that plan locally (VirtualIONodeAck): the shared digest, the ack an
// agent builds from its report, and the pool status roll-up with and without acks.
import type { PoolPlan, VioNode } from '../../api/types.js';
import { Reason } from '../../api/conditions.js';
import { FakeKube } from '../../../../test/fakes/kube-api.js';
import { gpu, nodeObj, waitFor } from '../../../../test/support/operator-fixtures.js';
import { AGENT_FIELD_MANAGER, Nodes, VirtualIONodes } from '../../kube/resources.js';
import { computeStatus } from '../status/status.js';
import { gpuPoolWorld } from '../../../../test/support/operator-world.js';
import { ackCacheForm, ackPools, currentAck, isPoolAck, planEntryDigest, type NodeAck, type PoolAck } from './ack.js';

const entry = (count: number): PoolPlan => ({
  name: 'vfs', resourceName: 'virtualio.dev/vfs', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned',
  count, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0' }],
});

describe('planEntryDigest', () => {
  test('is the same for equal entries whatever their key order or absent members, and differs when the entry does', () => {
    const a = entry(4);
    const reordered = Object.fromEntries(Object.entries(a).reverse()) as PoolPlan;
    expect(planEntryDigest(reordered)).toBe(planEntryDigest(a));
    expect(planEntryDigest({ ...a, deleting: undefined })).toBe(planEntryDigest(a));
    expect(planEntryDigest({ ...a, devices: [{ pciAddress: '0000:81:00.0', vfFirst: undefined }] })).toBe(planEntryDigest(a));
    expect(planEntryDigest(entry(8))).not.toBe(planEntryDigest(a));
    expect(planEntryDigest({ ...a, devices: [{ pciAddress: '0000:82:00.0' }] })).not.toBe(planEntryDigest(a));
    expect(planEntryDigest(a)).toMatch(/^[0-9a-f]{32}$/);
  });

  test('the ack of a report: served pools with a state, digested, sorted; messages cut to the schema limit', () => {
    const plan = [{ ...entry(4), name: 'b' }, { ...entry(2), name: 'a' }, { ...entry(1), name: 'c' }];
    const acks = ackPools(plan, [{ name: 'a', state: 'Ready' }, { name: 'b', state: 'Error', message: 'x'.repeat(5000) }, { name: 'gone', state: 'Released' }]);
    expect(acks.map((p) => [p.name, p.state])).toEqual([['a', 'Ready'], ['b', 'Error']]);
    expect(acks[0]!.digest).toBe(planEntryDigest(plan[1]!));
    expect(acks[1]!.message).toHaveLength(1024);
    expect(acks.every(isPoolAck)).toBe(true);
    expect(isPoolAck({ name: 'a', digest: 'd', state: 'Pending' })).toBe(false);
  });

  test('an ack entry is current only for the same entry, never for one marked deleting', () => {
    const ack: NodeAck = ackCacheForm({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONodeAck', metadata: { name: 'n1', managedFields: [{}] } as NodeAck['metadata'],
      status: { pools: [{ name: 'vfs', digest: planEntryDigest(entry(4)), state: 'Ready' }, { name: 'bad' } as PoolAck] } });
    expect(ack.status?.pools).toHaveLength(1);
    expect(ack.metadata).toEqual({ name: 'n1' });
    expect(currentAck(ack, entry(4))?.state).toBe('Ready');
    expect(currentAck(ack, entry(8))).toBeUndefined();
    expect(currentAck(ack, { ...entry(4), deleting: true })).toBeUndefined();
    expect(currentAck(undefined, entry(4))).toBeUndefined();
  });
});

const until = (what: string, fn: () => boolean): Promise<true> => waitFor(what, async () => fn() || undefined);

test('the pool status of a node that plans locally reads its ack when it acknowledges the current entry, and its VirtualIONode otherwise', async () => {
  const kube = new FakeKube();
  const node = await kube.create(Nodes, nodeObj('n1'));
  await kube.create(VirtualIONodes, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'n1', uid: node.metadata.uid ?? '' }] },
  } as VioNode);
  // The agent plans locally and has not served the pool yet (its report predates the pool).
  const report = (localPlan: PoolPlan[] | undefined, pools: { name: string; state: 'Ready' }[] = []) => kube.apply(VirtualIONodes, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1' },
    status: { inventory: { devices: [gpu('0000:c1:00.0')] }, ...(localPlan ? { localPlan: { pools: localPlan } } : {}), pools },
  } as VioNode, { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  await report([]);
  const acks = new Map<string, NodeAck>();
  const { world, vios, stop } = await gpuPoolWorld(kube, { get: (n) => acks.get(n) });
  const setAck = (pools: PoolAck[] | undefined) => {
    if (pools) acks.set('n1', { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONodeAck', metadata: { name: 'n1' }, status: { pools } });
    else acks.delete('n1');
    world.acksChanged();
  };
  const rollUp = () => {
    const prepared = world.prepared().byName.get('gpus')!;
    const { nodes: mentioning, conflicts, pending, acked } = world.poolIndex().get('gpus') ?? { nodes: [], conflicts: [], pending: [], acked: new Map() };
    const s = computeStatus(undefined, {
      prepared, nodes: mentioning, conflicts, pendingNodes: pending, ackedNodes: acked, kubevirtEntries: [],
      kubevirtCondition: { type: 'KubeVirtPermitted', status: 'True', reason: Reason.NotRequired, message: '' }, now: 0,
    }).status;
    return { ready: s.conditions?.find((c) => c.type === 'Ready')?.status, nodes: s.nodes, states: s.nodeStatuses?.map((n) => `${n.node}:${n.state}`) };
  };
  const want = world.planFor('n1').pools.find((p) => p.name === 'gpus')!;
  expect(want).toBeDefined();

  // No ack (an older agent): Pending until its VirtualIONode reports the entry, as before.
  expect(rollUp()).toEqual({ ready: 'False', nodes: 1, states: ['n1:Pending'] });
  // An ack of the current entry: Ready before the VirtualIONode status says anything of the pool.
  setAck([{ name: 'gpus', digest: planEntryDigest(want), state: 'Ready' }]);
  expect(rollUp()).toEqual({ ready: 'True', nodes: 1, states: ['n1:Ready'] });
  // In the state it acknowledged.
  setAck([{ name: 'gpus', digest: planEntryDigest(want), state: 'Carving', message: 'creating' }]);
  expect(rollUp()).toEqual({ ready: 'False', nodes: 1, states: ['n1:Carving'] });
  // An ack of another entry (older, or a plan the operator does not derive) says nothing: Pending.
  setAck([{ name: 'gpus', digest: planEntryDigest({ ...want, devices: [] }), state: 'Ready' }]);
  expect(rollUp()).toEqual({ ready: 'False', nodes: 1, states: ['n1:Pending'] });
  // Then the VirtualIONode status reports the entry served and Ready: it is read as before.
  await report([want], [{ name: 'gpus', state: 'Ready' }]);
  await until('report cached', () => !!vios.get('n1')?.status?.localPlan?.pools.length);
  expect(rollUp()).toEqual({ ready: 'True', nodes: 1, states: ['n1:Ready'] });
  // A node whose agent no longer plans locally (no status.localPlan): its ack is not read.
  await report(undefined);
  await until('report cached', () => !vios.get('n1')?.status?.localPlan);
  setAck([{ name: 'gpus', digest: planEntryDigest(world.planFor('n1').pools.find((p) => p.name === 'gpus')!), state: 'Ready' }]);
  expect(rollUp()).toEqual({ ready: 'False', nodes: 1, states: ['n1:Pending'] });
  await stop();
});
