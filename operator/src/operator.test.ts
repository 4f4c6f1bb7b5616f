import pino from 'pino';
import type { Pool, VioNode } from './api/types.js';
import { KubeVirtReconciler, KUBEVIRT_KEY } from './controllers/kubevirt/reconciler.js';
import { PlanReconciler } from './controllers/plan/reconciler.js';
import { StatusReconciler } from './controllers/status/reconciler.js';
import { World, type KubeVirtSettings } from './controllers/world.js';
import { KubeError } from './kube/errors.js';
import { FakeKube } from '../../test/fakes/kube-api.js';
import type { KubeObject } from './kube/ports.js';
import { AGENT_FIELD_MANAGER, FIELD_MANAGER, KubeVirts, Nodes, POOL_FINALIZER, VirtualIODevices, VirtualIONodes } from './kube/resources.js';
import { Operator } from './operator.js';
import { systemClock } from './runtime/clock.js';
import { EventRecorder } from './runtime/events.js';
import { Informer } from './runtime/informer.js';
import { gpu, nicPF, nodeObj, poolObj } from '../../test/support/operator-fixtures.js';

const log = pino({ level: 'silent' });
const noKubevirt: KubeVirtSettings = { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } };

async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Seeds nodes and their agent-written inventories. */
async function seed(kube: FakeKube, n: number) {
  for (let i = 0; i < n; i++) {
    const name = `node-${i}`;
    const node = await kube.create(Nodes, nodeObj(name, { 'virtualio.dev/nic': i % 2 === 0 ? 'x520' : 'none' }));
    await kube.create(VirtualIONodes, {
      apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode',
      metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: node.metadata.uid ?? '' }] },
    });
    await agentStatus(kube, name, { inventory: { devices: [...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 2 }), gpu('0000:c1:00.0', { mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q' }] })] } });
  }
}

async function agentStatus(kube: FakeKube, name: string, status: Record<string, unknown>) {
  const cur = await kube.get<VioNode>(VirtualIONodes, name);
  await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name }, status: { ...cur?.status, ...status } },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
}

function createPool(kube: FakeKube, pool: Pool) {
  const { metadata, ...rest } = pool;
  return kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);
}

function start(kube: FakeKube, kubevirt = noKubevirt) {
  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: 'virtualio-system', component: 'virtualio-operator', instance: 'test', clock: systemClock, log });
  const op = new Operator({ kube, clock: systemClock, log, events, kubevirt, tuning: { debounceMs: 1, kubevirtRecheckMs: 20 } });
  const run = op.run(ac.signal);
  return { op, stop: async () => { ac.abort(); await run; } };
}

const poolOf = (kube: FakeKube, name: string) => kube.get<Pool>(VirtualIODevices, name);
const vio = (kube: FakeKube, name: string) => kube.get<VioNode>(VirtualIONodes, name);
const cond = (p: Pool | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);

describe('Operator on the fake API', () => {
  test('plans matching nodes, adds the finalizer, rolls status up and reports Ready when agents are', async () => {
    const kube = new FakeKube();
    await seed(kube, 4);
    await createPool(kube, poolObj('vfs', { class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/nic': 'x520' } }, deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }));
    const op = start(kube);
    try {
      await waitFor('plans on even nodes', async () => (await vio(kube, 'node-2'))?.spec?.pools?.length === 1);
      expect((await vio(kube, 'node-1'))?.spec?.pools ?? []).toEqual([]);
      expect(kube.managers(VirtualIONodes, 'node-0')[FIELD_MANAGER]).toEqual(['metadata.ownerReferences', 'spec.pools']);
      await waitFor('finalizer', async () => (await poolOf(kube, 'vfs'))?.metadata.finalizers?.includes(POOL_FINALIZER));
      await waitFor('status', async () => cond(await poolOf(kube, 'vfs'), 'Ready')?.reason === 'NodesNotReady');
      for (const n of ['node-0', 'node-2']) {
        await agentStatus(kube, n, { pools: [{ name: 'vfs', state: 'Ready', capacity: 2, allocatable: 2, allocated: 0 }] });
      }
      const p = await waitFor('Ready', async () => {
        const x = await poolOf(kube, 'vfs');
        return cond(x, 'Ready')?.status === 'True' && x;
      });
      expect(p.status).toMatchObject({ observedGeneration: 1, nodes: 2, capacity: 4, allocatable: 4, allocated: 0, resourceName: 'virtualio.dev/vfs', consumption: 'SRIOVNetwork' });
      expect(cond(p, 'KubeVirtPermitted')).toMatchObject({ status: 'False', reason: 'KubeVirtNotInstalled' });

      // Relabel: node-2 loses the label and its plan; node-1 gains it.
      const n2 = (await kube.get<KubeObject>(Nodes, 'node-2'))!;
      await kube.replace(Nodes, { ...n2, metadata: { ...n2.metadata, labels: {} } });
      const n1 = (await kube.get<KubeObject>(Nodes, 'node-1'))!;
      await kube.replace(Nodes, { ...n1, metadata: { ...n1.metadata, labels: { 'virtualio.dev/nic': 'x520' } } });
      await waitFor('node-2 plan removed', async () => ((await vio(kube, 'node-2'))?.spec?.pools ?? []).length === 0);
      await waitFor('node-1 planned', async () => ((await vio(kube, 'node-1'))?.spec?.pools ?? []).length === 1);
    } finally {
      await op.stop();
    }
  });

  test('a node no pool selects gets an empty plan written, also when its agent created the VirtualIONode first (the agent reads a missing spec.pools as "no plan yet" and stays unready)', async () => {
    const kube = new FakeKube();
    await seed(kube, 2); // VirtualIONodes as agents create them: owned by the Node, no spec.pools
    const op = start(kube);
    try {
      for (const n of ['node-0', 'node-1']) await waitFor(`${n} planned empty`, async () => Array.isArray((await vio(kube, n))?.spec?.pools));
      expect((await vio(kube, 'node-0'))?.spec?.pools).toEqual([]);
    } finally {
      await op.stop();
    }
  });

  test('a second reconcile of every key changes nothing (idempotence)', async () => {
    const kube = new FakeKube();
    kube.install(KubeVirts);
    await kube.create(KubeVirts, { apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' }, spec: { configuration: { developerConfiguration: { featureGates: ['HostDevices'] } } } } as KubeObject);
    await seed(kube, 3);
    await createPool(kube, poolObj('vgpu', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } }));
    await createPool(kube, poolObj('vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 }, kubevirt: { consumption: 'HostDevice' } }));
    await createPool(kube, poolObj('zlate', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }, { createdSec: 60 }));

    const ac = new AbortController();
    const mk = <T extends KubeObject>(resource: typeof Nodes, list?: { namespace: string }) => new Informer<T>({ kube, resource, clock: systemClock, log, list });
    const nodes = mk<KubeObject>(Nodes);
    const vios = mk<VioNode>(VirtualIONodes);
    const pools = mk<Pool>(VirtualIODevices);
    const kv = mk<KubeObject>(KubeVirts, { namespace: 'kubevirt' });
    const runs = [nodes, vios, pools, kv].map((i) => i.run(ac.signal));
    await Promise.all([nodes, vios, pools, kv].map((i) => i.synced()));
    const world = new World(nodes, vios, pools, { ...noKubevirt, manage: true });
    world.kubevirt.installed = true;
    world.kubevirt.informer = kv as never;
    pools.onChange(() => world.poolsChanged());
    const events = new EventRecorder({ kube, namespace: 'ns', component: 'c', instance: 'i', clock: systemClock, log });
    const plan = new PlanReconciler({ kube, world, log });
    const status = new StatusReconciler({ kube, world, clock: systemClock, events, log });
    const kvr = new KubeVirtReconciler({ kube, world, log });
    const settle = () => new Promise((r) => setTimeout(r, 20));
    const all = async () => {
      for (const n of nodes.list()) await plan.reconcile(n.metadata.name);
      await settle();
      await kvr.reconcile();
      await settle();
      for (const p of pools.list()) await status.reconcile(p.metadata.name); // adds finalizers
      await settle();
      for (const p of pools.list()) await status.reconcile(p.metadata.name);
      await settle();
    };
    try {
      await all();
      await all();
      const first = kube.snapshot();
      const writes = kube.writes;
      await all();
      expect(kube.writes).toBe(writes);
      expect(kube.snapshot()).toStrictEqual(first);
      // And the world is what we expect: conflicts recorded on the younger pool, lists applied.
      const late = await poolOf(kube, 'zlate');
      expect(cond(late, 'Conflict')).toMatchObject({ status: 'True', reason: 'DeviceConflict' });
      const cr = await kube.get<KubeObject & { spec: Record<string, unknown> }>(KubeVirts, 'kubevirt', 'kubevirt');
      expect(cr?.spec).toEqual({
        configuration: {
          developerConfiguration: { featureGates: ['HostDevices'] },
          permittedHostDevices: {
            pciHostDevices: [{ pciVendorSelector: '8086:10ed', resourceName: 'virtualio.dev/vfs', externalResourceProvider: true }],
            mediatedDevices: [{ mdevNameSelector: 'NVIDIA_A16-4Q', resourceName: 'virtualio.dev/vgpu', externalResourceProvider: true }],
          },
        },
      });
      expect(cond(await poolOf(kube, 'vgpu'), 'KubeVirtPermitted')).toMatchObject({ status: 'True', reason: 'Permitted' });
      void KUBEVIRT_KEY;
    } finally {
      ac.abort();
      await Promise.all(runs);
    }
  });

  test('deletion: deleting in every plan, blocked by allocations, finalizer removed once released', async () => {
    const kube = new FakeKube();
    await seed(kube, 2);
    await createPool(kube, poolObj('vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }));
    const op = start(kube);
    try {
      await waitFor('finalizer', async () => (await poolOf(kube, 'vfs'))?.metadata.finalizers?.includes(POOL_FINALIZER));
      await waitFor('planned', async () => (await vio(kube, 'node-1'))?.spec?.pools?.length === 1);
      await agentStatus(kube, 'node-0', {
        pools: [{ name: 'vfs', state: 'Ready' }],
        slices: [{ id: '0000:81:10.0', pool: 'vfs', kind: 'VF', health: 'Healthy', allocation: { namespace: 'vms', pod: 'virt-launcher-web-abc', vmi: 'web' } }],
      });
      await agentStatus(kube, 'node-1', { pools: [{ name: 'vfs', state: 'Ready' }] });
      await kube.delete(VirtualIODevices, 'vfs');
      await waitFor('deleting plans', async () => (await vio(kube, 'node-0'))?.spec?.pools?.[0]?.deleting && (await vio(kube, 'node-1'))?.spec?.pools?.[0]?.deleting);
      await waitFor('blocked', async () => cond(await poolOf(kube, 'vfs'), 'Progressing')?.reason === 'DeletionBlocked');
      expect(cond(await poolOf(kube, 'vfs'), 'Progressing')?.message).toContain('VMI vms/web (pod virt-launcher-web-abc) on node node-0');
      await waitFor('event', () => kube.events.find((e) => e.reason === 'DeletionBlocked' && e.type === 'Warning'));
      // Node 1 releases; node 0's VM goes away and it releases too. An agent reports on the plan it
      // acted on (observedGeneration): a Released from before the deletion mark would not count.
      const report = async (name: string, status: Record<string, unknown>) =>
        agentStatus(kube, name, { ...status, observedGeneration: (await vio(kube, name))?.metadata.generation });
      await agentStatus(kube, 'node-1', { pools: [{ name: 'vfs', state: 'Released' }], observedGeneration: 1 });
      await report('node-0', { pools: [{ name: 'vfs', state: 'Deleting' }], slices: [{ id: '0000:81:10.0', pool: 'vfs', kind: 'VF', health: 'Healthy' }] });
      await waitFor('waiting for node-1 to report on the deleting plan', async () => cond(await poolOf(kube, 'vfs'), 'Progressing')?.message.includes('node-1 (its agent has not reported on the current plan'));
      await report('node-1', { pools: [{ name: 'vfs', state: 'Released' }] });
      await waitFor('waiting for release', async () => cond(await poolOf(kube, 'vfs'), 'Progressing')?.message === 'Waiting for 1 node(s) to release and uncarve the pool: node-0 (Deleting)');
      expect(await poolOf(kube, 'vfs')).toBeDefined();
      await report('node-0', { pools: [{ name: 'vfs', state: 'Released' }], slices: [] });
      await waitFor('pool gone', async () => !(await poolOf(kube, 'vfs')));
      await waitFor('plans emptied', async () => ((await vio(kube, 'node-0'))?.spec?.pools ?? []).length === 0 && ((await vio(kube, 'node-1'))?.spec?.pools ?? []).length === 0);
    } finally {
      await op.stop();
    }
  });

  test('KubeVirt installed later: discovered, lists applied when managed, reported when not', async () => {
    const kube = new FakeKube();
    await seed(kube, 1);
    await createPool(kube, poolObj('gpu', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } }));
    const op = start(kube, { ...noKubevirt, manage: true, extra: { pciHostDevices: [], mediatedDevices: [{ mdevNameSelector: 'GRID T4-1Q', resourceName: 'nvidia.com/GRID_T4-1Q' }] } });
    try {
      await waitFor('not installed', async () => cond(await poolOf(kube, 'gpu'), 'KubeVirtPermitted')?.reason === 'KubeVirtNotInstalled');
      kube.install(KubeVirts);
      await waitFor('CR missing', async () => cond(await poolOf(kube, 'gpu'), 'KubeVirtPermitted')?.reason === 'KubeVirtNotFound');
      await kube.create(KubeVirts, { apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' } } as KubeObject);
      await waitFor('permitted', async () => cond(await poolOf(kube, 'gpu'), 'KubeVirtPermitted')?.reason === 'Permitted');
      const cr = await kube.get<KubeObject & { spec: { configuration: { permittedHostDevices: unknown } } }>(KubeVirts, 'kubevirt', 'kubevirt');
      expect(cr?.spec.configuration.permittedHostDevices).toEqual({
        pciHostDevices: [{ pciVendorSelector: '10de:25b6', resourceName: 'virtualio.dev/gpu', externalResourceProvider: true }],
        mediatedDevices: [{ mdevNameSelector: 'GRID T4-1Q', resourceName: 'nvidia.com/GRID_T4-1Q' }],
      });
      expect((await poolOf(kube, 'gpu'))?.status?.kubevirtEntries).toEqual([
        { list: 'pciHostDevices', resourceName: 'virtualio.dev/gpu', pciVendorSelector: '10de:25b6', externalResourceProvider: true },
      ]);
    } finally {
      await op.stop();
    }
  });

  test('recovers from conflicts and failing writes with backoff', async () => {
    const kube = new FakeKube();
    await seed(kube, 2);
    let failures = 0;
    kube.inject((op, res) => {
      if (op === 'apply' && res?.plural === 'virtualionodes' && failures < 3) {
        failures++;
        return failures === 1 ? new KubeError('Conflict', 409, 'conflict') : new KubeError('Transient', 503, 'etcd timeout');
      }
      return undefined;
    });
    await createPool(kube, poolObj('vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }));
    const op = start(kube);
    try {
      await waitFor('both planned', async () => (await vio(kube, 'node-0'))?.spec?.pools?.length === 1 && (await vio(kube, 'node-1'))?.spec?.pools?.length === 1);
      expect(failures).toBe(3);
    } finally {
      await op.stop();
    }
  });

  test('a broken watch is restarted and no update is lost', async () => {
    const kube = new FakeKube();
    await seed(kube, 1);
    const op = start(kube);
    try {
      await waitFor('ready', () => op.op.ready);
      kube.failWatches(VirtualIODevices);
      await createPool(kube, poolObj('vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'SRIOV', count: 2 } }));
      await waitFor('planned after the watch restarted', async () => (await vio(kube, 'node-0'))?.spec?.pools?.length === 1);
    } finally {
      await op.stop();
    }
  });
});
