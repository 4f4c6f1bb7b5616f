// Local planning: the agent derives its plan with the operator's planner from the status it publishes,
// and gets exactly the plan the operator computes for the same node from the same objects.
import pino from 'pino';
import type { InventoryDevice, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { Pool, PoolPlan, VioNode } from '../../../operator/src/api/types.js';
import { vioNodeCacheForm } from '../../../operator/src/controllers/plan/node-view.js';
import { World } from '../../../operator/src/controllers/world.js';
import type { KubeObject } from '../../../operator/src/kube/ports.js';
import { AGENT_FIELD_MANAGER, Nodes, VirtualIODevices, VirtualIONodes } from '../../../operator/src/kube/resources.js';
import { systemClock } from '../../../operator/src/runtime/clock.js';
import { Informer } from '../../../operator/src/runtime/informer.js';
import { FakeKube } from '../../../test/fakes/kube-api.js';
import { gpu, nicPF, nodeObj, poolObj } from '../../../test/support/operator-fixtures.js';
import { silentLogger } from '../log.js';
import { LocalPlanSource, type KubeItem, type LocalPlanPort } from './local-plan.js';

const log = pino({ level: 'silent' });

/** A port that is never run: the tests feed the source directly. */
const noPort = {} as LocalPlanPort;

function source(): LocalPlanSource {
  return new LocalPlanSource(noPort, 'n1', silentLogger());
}

const item = (o: { metadata: object }) => o as unknown as KubeItem;
const planOfSource = (s: LocalPlanSource): PoolPlan[] | string => {
  const st = s.current();
  return st.kind === 'ok' ? st.spec.pools ?? [] : `${st.kind}: ${st.message}`;
};

/** A GPU the agent moved to vfio-pci, with the facts it recorded before. */
const carvedGpu: InventoryDevice = { ...gpu('0000:c1:00.0', { driver: 'vfio-pci' }), original: { driver: 'nvidia' } };
const inventory: InventoryDevice[] = [
  ...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2 }),
  ...nicPF('0000:82:00.0', { netdev: 'ens2f0', vfs: 2 }),
  carvedGpu,
];
const pools: Pool[] = [
  poolObj('nic-a', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }, { createdSec: 1 }),
  // Same resource name as the older nic-a: never planned (the older keeps the name).
  poolObj('nic-dup', { class: 'NIC', resourceName: 'virtualio.dev/nic-a', deviceSelector: { interfaceNames: ['ens2f0'] }, carving: { mode: 'SRIOV', count: 2 } }, { createdSec: 2 }),
  poolObj('gpus', { class: 'GPU', nodeSelector: { matchLabels: { gpu: 'yes' } }, deviceSelector: { drivers: ['nvidia'] }, carving: { mode: 'Passthrough' } }, { createdSec: 3 }),
  poolObj('elsewhere', { class: 'NIC', nodeSelector: { matchLabels: { zone: 'b' } }, deviceSelector: { interfaceNames: ['ens2f0'] }, carving: { mode: 'SRIOV', count: 1 } }, { createdSec: 4 }),
];
const labels = { gpu: 'yes', zone: 'a' };

/** The status an agent publishes: inventory, and the plan it serves in localPlan. */
const statusWith = (served: PoolPlan[], devices = inventory): VirtualIONodeStatus => ({ inventory: { devices }, pools: [], localPlan: { pools: served } });

/** The operator's view: its informers (with its cache form) and World over a fake API server holding the same objects. */
async function operatorPlan(poolObjs: Pool[], nodeLabels: Record<string, string>, status: VirtualIONodeStatus): Promise<PoolPlan[]> {
  const kube = new FakeKube();
  const node = await kube.create(Nodes, nodeObj('n1', nodeLabels));
  await kube.create(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'n1', uid: node.metadata.uid ?? '' }] }, spec: {} } as VioNode);
  await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1' }, status } as VioNode, { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  for (const p of poolObjs) {
    const { metadata, ...rest } = p;
    await kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name, creationTimestamp: metadata.creationTimestamp } } as Pool);
  }
  const ac = new AbortController();
  const nodes = new Informer<KubeObject>({ kube, resource: Nodes, clock: systemClock, log });
  const vios: Informer<VioNode> = new Informer<VioNode>({ kube, resource: VirtualIONodes, clock: systemClock, log, transform: (v) => vioNodeCacheForm(vios.get(v.metadata.name), v) });
  const poolInf = new Informer<Pool>({ kube, resource: VirtualIODevices, clock: systemClock, log });
  const world = new World(nodes, vios, poolInf, { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } });
  const runs = [nodes, vios, poolInf].map((i) => i.run(ac.signal));
  await Promise.all([nodes, vios, poolInf].map((i) => i.synced()));
  const plan = world.planFor('n1').pools;
  ac.abort();
  await Promise.all(runs);
  return plan;
}

test('waits for the pools, its Node and a scanned inventory before it plans; until then it says so', () => {
  const s = source();
  expect(s.current().kind).toBe('none');
  s.observePools(pools.map(item));
  s.observeNode(item(nodeObj('n1', labels)));
  // A status published before the first scan (no devices) is not an inventory: "no pools" would unplan.
  s.observeStatus({ inventory: { devices: [] }, localPlan: { pools: [] } });
  expect(s.current()).toMatchObject({ kind: 'none', message: expect.stringContaining('the inventory') });
  s.observeStatus(statusWith([]));
  expect(s.current().kind).toBe('ok');
});

test('agent and operator derive the same plan from the same objects, before and after a pool edit', async () => {
  const s = source();
  s.observePools(pools.map(item));
  s.observeNode(item(nodeObj('n1', labels)));
  s.observeStatus(statusWith([]));
  const first = planOfSource(s);
  expect(typeof first).not.toBe('string');
  const firstPlan = first as PoolPlan[];
  // nic-dup loses the resource name to the older nic-a; elsewhere does not select this node; the carved GPU stays in gpus by its original driver.
  expect(firstPlan.map((p) => `${p.name}:${p.devices.map((d) => d.pciAddress).join()}`)).toEqual(['gpus:0000:c1:00.0', 'nic-a:0000:81:00.0']);
  expect(firstPlan).toEqual(await operatorPlan(pools, labels, statusWith([])));

  // The agent serves it and reports it; then the admin edits nic-a (count 2 → 4) and relabels the node.
  s.observeStatus(statusWith(firstPlan));
  const edited = pools.map((p) => (p.metadata.name === 'nic-a' ? { ...p, metadata: { ...p.metadata, generation: 2 }, spec: { ...p.spec, carving: { mode: 'SRIOV' as const, count: 4 } } } : p));
  const relabeled = { ...labels, zone: 'b' };
  s.observePools(edited.map(item));
  s.observeNode(item(nodeObj('n1', relabeled)));
  const second = planOfSource(s) as PoolPlan[];
  expect(second.find((p) => p.name === 'nic-a')?.count).toBe(4);
  expect(second.map((p) => p.name)).toEqual(['elsewhere', 'gpus', 'nic-a']);
  expect(second).toEqual(await operatorPlan(edited, relabeled, statusWith(firstPlan)));
});

test('a report that lacks something never unplans: a truncated inventory keeps the served plan; a Node gone keeps serving the last plan', () => {
  const s = source();
  s.observePools(pools.map(item));
  s.observeNode(item(nodeObj('n1', labels)));
  s.observeStatus(statusWith([]));
  const served = planOfSource(s) as PoolPlan[];
  s.observeStatus(statusWith(served));
  // The inventory in status was cut short (more than 2,048 functions) and lost the GPU and ens1f0's PF.
  const cut = inventory.filter((d) => d.pciAddress.startsWith('0000:82'));
  s.observeStatus({ inventory: { devices: cut, truncated: true, total: 99 }, pools: [], localPlan: { pools: served } });
  expect(planOfSource(s)).toEqual(served);
  // Its Node disappears from the watch: not "no pools".
  s.observeNode(undefined);
  expect(s.current()).toMatchObject({ kind: 'error', message: expect.stringContaining('serving the last plan') });
});

test('the older of two pools with one resource name keeps it, whichever the agent saw first', () => {
  const s = source();
  // Only the younger pool at first: it is planned.
  s.observePools([item(pools[1]!)]);
  s.observeNode(item(nodeObj('n1', labels)));
  s.observeStatus(statusWith([]));
  const young = planOfSource(s) as PoolPlan[];
  expect(young.map((p) => p.name)).toEqual(['nic-dup']);
  s.observeStatus(statusWith(young));
  // The older one appears: it takes the name, the younger is not planned anywhere.
  s.observePools(pools.slice(0, 2).map(item));
  expect((planOfSource(s) as PoolPlan[]).map((p) => p.name)).toEqual(['nic-a']);
});
