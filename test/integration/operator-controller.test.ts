// The operator's controllers against a real kube-apiserver (a private control plane: the operator is
// cluster-wide, so it must not meet other suites' objects): plans written with server-side apply
// under virtualio-operator, status rolled up from agent-written VirtualIONode status, conflicts,
// node relabelling, KubeVirt's permittedHostDevices with KubeVirt's real CRD, and deletion that
// waits for allocated slices.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import pino from 'pino';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, FIELD_MANAGER, KubeVirts, Nodes, POOL_FINALIZER, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { gpu, nicPF } from '../support/operator-fixtures.js';
import { installCrdFiles, kubectlAt, waitUntil, writeAgentStatus } from '../support/operator-integration.js';

jest.setTimeout(240_000);

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
let cp: ControlPlane;
let kube: ClientNodeKube;
let stopOperator: (() => Promise<void>) | undefined;

const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);
const pool = (name: string) => kube.get<Pool>(VirtualIODevices, name);
const vio = (name: string) => kube.get<VioNode>(VirtualIONodes, name);
const cond = (p: Pool | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);
const planOf = async (node: string) => ((await vio(node))?.spec?.pools ?? []).map((p) => p.name);

/**
 * What every node's agent does once it sees a pool deleting and nothing holds it: reports the pool
 * Released on that plan (observedGeneration), as the real agent does. The operator counts a node
 * released only on such a report.
 */
async function agentsRelease(pool: string): Promise<void> {
  for (let i = 0; i < 4; i++) {
    const node = `node-${i}`;
    const v = await waitUntil(`${pool} deleting (or not planned) on ${node}`, async () => {
      const x = await vio(node);
      const p = x?.spec?.pools?.find((q) => q.name === pool);
      return (!p || p.deleting) && x;
    });
    if (!v.spec?.pools?.some((p) => p.name === pool)) continue;
    await writeAgentStatus(kube, node, {
      ...v.status, observedGeneration: v.metadata.generation,
      pools: [...(v.status?.pools ?? []).filter((p) => p.name !== pool), { name: pool, state: 'Released' }],
      slices: (v.status?.slices ?? []).filter((s) => s.pool !== pool),
    });
  }
}

function startOperator(manage: boolean) {
  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  const op = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: {
      namespace: 'kubevirt', name: 'kubevirt', manage,
      extra: { pciHostDevices: [{ pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/TU104GL_Tesla_T4' }], mediatedDevices: [] },
    },
    tuning: { kubevirtRecheckMs: 500, debounceMs: 50 },
  });
  const run = op.run(ac.signal);
  stopOperator = async () => {
    ac.abort();
    await run;
    stopOperator = undefined;
  };
}

async function createPool(name: string, spec: Pool['spec']): Promise<void> {
  await kube.create(VirtualIODevices, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec } as Pool);
}

const inventory = (i: number) => [
  ...nicPF('0000:81:00.0', { netdev: 'ens1f0', vfs: 4, vfDevice: '10ed' }),
  gpu('0000:c1:00.0', { device: '25b6', mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q', availableInstances: 4 }], numa: i % 2 }),
];

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  await kubectl(['create', 'namespace', 'virtualio-system']);
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  for (let i = 0; i < 4; i++) {
    await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${i}`, labels: i < 2 ? { 'virtualio.dev/nic': 'x520' } : {} } });
  }
  startOperator(true);
  // The operator creates a VirtualIONode for every Node; agents then report their inventory.
  for (let i = 0; i < 4; i++) {
    await waitUntil(`VirtualIONode node-${i}`, () => vio(`node-${i}`));
    await writeAgentStatus(kube, `node-${i}`, { inventory: { devices: inventory(i) } });
  }
});

afterAll(async () => {
  await stopOperator?.();
  await cp?.stop();
});

describe('operator against a real kube-apiserver', () => {
  test('every Node gets a VirtualIONode owned by it; the pool is planned on matching nodes with SSA under virtualio-operator', async () => {
    const node0 = (await kube.get<KubeObject>(Nodes, 'node-0'))!;
    expect((await vio('node-0'))?.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: 'node-0', uid: node0.metadata.uid }]);
    await createPool('vfs', {
      class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/nic': 'x520' } },
      deviceSelector: { interfaceNames: ['ens1f0#0-1'] }, carving: { mode: 'SRIOV', count: 4 }, kubevirt: { consumption: 'HostDevice' },
    });
    await waitUntil('plans on node-0 and node-1', async () => (await planOf('node-0')).includes('vfs') && (await planOf('node-1')).includes('vfs'));
    expect(await planOf('node-2')).toEqual([]);
    const v = (await vio('node-0'))!;
    expect(v.spec?.pools).toEqual([{
      name: 'vfs', resourceName: 'virtualio.dev/vfs', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned',
      count: 4, vfDriver: 'vfio-pci', devices: [{ pciAddress: '0000:81:00.0', vfFirst: 0, vfLast: 1 }],
    }]);
    const managed = (v.metadata as { managedFields?: { manager: string; operation: string; subresource?: string; fieldsV1?: Record<string, unknown> }[] }).managedFields ?? [];
    const ours = managed.find((m) => m.manager === FIELD_MANAGER);
    expect(ours).toMatchObject({ operation: 'Apply' });
    expect(Object.keys(ours?.fieldsV1 ?? {})).toEqual(expect.arrayContaining(['f:spec']));
    expect(managed.find((m) => m.manager === 'virtualio-agent')).toMatchObject({ operation: 'Apply', subresource: 'status' });
    await waitUntil('finalizer', async () => (await pool('vfs'))?.metadata.finalizers?.includes(POOL_FINALIZER));
  });

  test('status rolls up from what agents report', async () => {
    await writeAgentStatus(kube, 'node-0', {
      inventory: { devices: inventory(0) },
      pools: [{ name: 'vfs', resourceName: 'virtualio.dev/vfs', state: 'Ready', registered: true, capacity: 2, allocatable: 2, allocated: 1 }],
      slices: [
        { id: '0000:81:10.0', pool: 'vfs', kind: 'VF', parent: '0000:81:00.0', health: 'Healthy', allocation: { namespace: 'vms', pod: 'virt-launcher-web-x1', vmi: 'web' } },
        { id: '0000:81:11.1', pool: 'vfs', kind: 'VF', parent: '0000:81:00.0', health: 'Healthy' },
      ],
    });
    await writeAgentStatus(kube, 'node-1', {
      inventory: { devices: inventory(1) },
      pools: [{ name: 'vfs', state: 'Carving', message: 'Creating 4 VFs on 0000:81:00.0' }],
    });
    let p = await waitUntil('NodesNotReady', async () => {
      const x = await pool('vfs');
      return cond(x, 'Ready')?.reason === 'NodesNotReady' && x;
    });
    expect(cond(p, 'Progressing')).toMatchObject({ status: 'True', reason: 'Carving' });
    await writeAgentStatus(kube, 'node-1', {
      inventory: { devices: inventory(1) },
      pools: [{ name: 'vfs', state: 'Ready' }],
      slices: [
        { id: '0000:81:10.0', pool: 'vfs', kind: 'VF', health: 'Healthy' },
        { id: '0000:81:11.1', pool: 'vfs', kind: 'VF', health: 'Unhealthy', reason: 'not bound to vfio-pci' },
      ],
    });
    p = await waitUntil('Ready', async () => {
      const x = await pool('vfs');
      return cond(x, 'Ready')?.status === 'True' && x;
    });
    expect(p.status).toMatchObject({
      observedGeneration: 1, resourceName: 'virtualio.dev/vfs', consumption: 'HostDevice', nodes: 2, capacity: 4, allocatable: 3, allocated: 1,
      allocations: [{ node: 'node-0', namespace: 'vms', pod: 'virt-launcher-web-x1', vmi: 'web', slices: ['0000:81:10.0'] }],
    });
    expect(cond(p, 'Degraded')).toMatchObject({ status: 'True', reason: 'UnhealthySlices' });
    expect(p.status?.nodeStatuses?.map((n) => n.node)).toEqual(['node-0', 'node-1']);
  });

  test('a younger pool that selects a held device gets Conflict (with an Event); a disjoint VF range does not', async () => {
    await createPool('x-overlap', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#1-2'] }, carving: { mode: 'SRIOV', count: 4 }, kubevirt: { consumption: 'HostDevice' } });
    await createPool('x-disjoint', { class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/nic': 'x520' } }, deviceSelector: { interfaceNames: ['ens1f0#2-3'] }, carving: { mode: 'SRIOV', count: 4 } });
    const p = await waitUntil('Conflict', async () => {
      const x = await pool('x-overlap');
      return cond(x, 'Conflict')?.status === 'True' && (x?.status?.conflicts?.length ?? 0) === 2 && x;
    });
    expect(p.status?.conflicts).toEqual([
      { node: 'node-0', device: '0000:81:00.0#1-2', heldBy: 'vfs' },
      { node: 'node-1', device: '0000:81:00.0#1-2', heldBy: 'vfs' },
    ]);
    expect(cond(p, 'Conflict')?.reason).toBe('DeviceConflict');
    // On unlabelled nodes nothing holds the device, so "overlap" is planned there.
    await waitUntil('overlap planned on node-2', async () => (await planOf('node-2')).includes('x-overlap'));
    // "x-disjoint" (VFs 2-3) shares the PF with "vfs" (VFs 0-1) without conflict.
    await waitUntil('disjoint planned next to vfs', async () => (await planOf('node-0')).join() === 'vfs,x-disjoint');
    expect(cond(await pool('x-disjoint'), 'Conflict')).toMatchObject({ status: 'False', reason: 'NoConflict' });
    const events = JSON.parse(await kubectl(['get', 'events', '-n', 'default', '-o', 'json'])) as { items: { reason: string; type: string; involvedObject: { name: string; kind: string }; message: string }[] };
    const ev = events.items.find((e) => e.reason === 'DeviceConflict' && e.involvedObject.name === 'x-overlap');
    expect(ev).toMatchObject({ type: 'Warning', involvedObject: { kind: 'VirtualIODevice', name: 'x-overlap' } });
    expect(ev?.message).toContain('held by vfs');
    // Where an admin looks: kubectl describe finds the Event.
    expect(await kubectl(['describe', 'virtualiodevice', 'x-overlap'])).toMatch(/Warning\s+DeviceConflict/);
  });

  test('two pools with one resource name: the older keeps it and stays planned, the younger is in Conflict', async () => {
    await createPool('dup-a', { class: 'GPU', resourceName: 'example.com/gpu', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
    await waitUntil('dup-a planned', async () => (await planOf('node-3')).includes('dup-a'));
    const generation = (await vio('node-3'))?.metadata.generation;
    // Same second or later: dup-b is younger (creationTimestamp, then name).
    await createPool('dup-b', { class: 'GPU', resourceName: 'example.com/gpu', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
    const b = await waitUntil('dup-b ResourceNameConflict', async () => {
      const x = await pool('dup-b');
      return cond(x, 'Conflict')?.reason === 'ResourceNameConflict' && x;
    });
    expect(cond(b, 'Conflict')?.message).toContain('already used by the older VirtualIODevice dup-a');
    expect(cond(await pool('dup-a'), 'Conflict')?.status).toBe('False');
    for (let i = 0; i < 4; i++) expect(await planOf(`node-${i}`)).not.toContain('dup-b');
    expect(await planOf('node-3')).toContain('dup-a');
    expect((await vio('node-3'))?.metadata.generation).toBe(generation);
    await kube.delete(VirtualIODevices, 'dup-b');
    await kube.delete(VirtualIODevices, 'dup-a');
    await agentsRelease('dup-a');
    await waitUntil('dup-a and dup-b gone', async () => !(await pool('dup-a')) && !(await pool('dup-b')));
  });

  test('a node that loses its label loses the pool', async () => {
    const n1 = (await kube.get<KubeObject>(Nodes, 'node-1'))!;
    await kube.replace(Nodes, { ...n1, metadata: { ...n1.metadata, labels: {} } });
    await waitUntil('vfs left node-1', async () => !(await planOf('node-1')).includes('vfs'));
    // With the label gone, "x-overlap" (no nodeSelector) now gets node-1's VFs 1-2.
    await waitUntil('overlap takes node-1', async () => (await planOf('node-1')).includes('x-overlap'));
    expect(await planOf('node-0')).toContain('vfs');
  });

  test('KubeVirt installed later: its real CRD is discovered and the owned lists are applied with SSA', async () => {
    const p0 = await pool('vfs');
    expect(cond(p0, 'KubeVirtPermitted')).toMatchObject({ status: 'False', reason: 'KubeVirtNotInstalled' });
    const dir = execFileSync('bash', [join(REPO_ROOT, 'test/kubevirt/crds.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000 }).trim().split('\n').pop() ?? '';
    expect(existsSync(join(dir, 'kubevirts.kubevirt.io.yaml'))).toBe(true);
    await installCrdFiles(cp.binDir, cp.kubeconfig, [join(dir, 'kubevirts.kubevirt.io.yaml')], ['kubevirts.kubevirt.io']);
    await waitUntil('KubeVirtNotFound', async () => cond(await pool('vfs'), 'KubeVirtPermitted')?.reason === 'KubeVirtNotFound');
    await kubectl(['create', 'namespace', 'kubevirt']);
    await kube.create(KubeVirts, {
      apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt', metadata: { name: 'kubevirt', namespace: 'kubevirt' },
      spec: { configuration: { developerConfiguration: { featureGates: ['HostDevices'] } } },
    } as KubeObject);
    await createPool('vgpu', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } });
    await waitUntil('vgpu Permitted', async () => cond(await pool('vgpu'), 'KubeVirtPermitted')?.reason === 'Permitted');
    await waitUntil('vfs Permitted', async () => cond(await pool('vfs'), 'KubeVirtPermitted')?.reason === 'Permitted');
    const cr = (await kube.get<KubeObject & { spec: { configuration: Record<string, unknown> } }>(KubeVirts, 'kubevirt', 'kubevirt'))!;
    expect(cr.spec.configuration).toEqual({
      developerConfiguration: { featureGates: ['HostDevices'] },
      permittedHostDevices: {
        pciHostDevices: [
          { pciVendorSelector: '10de:1eb8', resourceName: 'nvidia.com/TU104GL_Tesla_T4' },
          { pciVendorSelector: '8086:10ed', resourceName: 'virtualio.dev/vfs', externalResourceProvider: true },
          { pciVendorSelector: '8086:10ed', resourceName: 'virtualio.dev/x-overlap', externalResourceProvider: true },
        ],
        mediatedDevices: [{ mdevNameSelector: 'NVIDIA_A16-4Q', resourceName: 'virtualio.dev/vgpu', externalResourceProvider: true }],
      },
    });
    const managed = (cr.metadata as { managedFields?: { manager: string; operation: string }[] }).managedFields ?? [];
    expect(managed.find((m) => m.manager === FIELD_MANAGER)).toMatchObject({ operation: 'Apply' });
    expect((await pool('vgpu'))?.status?.kubevirtEntries).toEqual([
      { list: 'mediatedDevices', resourceName: 'virtualio.dev/vgpu', mdevNameSelector: 'NVIDIA_A16-4Q', externalResourceProvider: true },
    ]);
    // An admin edit of the owned list is taken back.
    await kubectl(['patch', 'kubevirt', 'kubevirt', '-n', 'kubevirt', '--type=merge', '-p', JSON.stringify({ spec: { configuration: { permittedHostDevices: { mediatedDevices: [] } } } })]);
    await waitUntil('mediated list restored', async () => {
      const x = await kube.get<KubeObject & { spec: { configuration: { permittedHostDevices?: { mediatedDevices?: unknown[] } } } }>(KubeVirts, 'kubevirt', 'kubevirt');
      return (x?.spec.configuration.permittedHostDevices?.mediatedDevices?.length ?? 0) === 1;
    });
  });

  test('without --manage-permitted-host-devices the pool reports the exact entries to add', async () => {
    await stopOperator?.();
    startOperator(false);
    await createPool('gpu-pt', { class: 'GPU', resourceName: 'example.com/a16', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
    // vgpu (older, Mediated) holds the GPUs everywhere, so make the passthrough pool take what vgpu does not: nothing.
    // Delete vgpu first so gpu-pt gets the GPUs.
    await kube.delete(VirtualIODevices, 'vgpu');
    await agentsRelease('vgpu');
    await waitUntil('vgpu deleted', async () => !(await pool('vgpu')));
    const p = await waitUntil('NotManaged', async () => {
      const x = await pool('gpu-pt');
      return cond(x, 'KubeVirtPermitted')?.reason === 'NotManaged' && x;
    });
    expect(cond(p, 'KubeVirtPermitted')).toMatchObject({ status: 'False' });
    expect(cond(p, 'KubeVirtPermitted')?.message).toContain('pciHostDevices: [{pciVendorSelector: "10de:25b6", resourceName: "example.com/a16", externalResourceProvider: true}]');
    expect(p.status?.kubevirtEntries).toEqual([{ list: 'pciHostDevices', resourceName: 'example.com/a16', pciVendorSelector: '10de:25b6', externalResourceProvider: true }]);
    await kube.delete(VirtualIODevices, 'gpu-pt');
    await agentsRelease('gpu-pt');
    await waitUntil('gpu-pt deleted', async () => !(await pool('gpu-pt')));
  });

  test('deletion is blocked by allocated slices and completes once every node released the pool', async () => {
    await kube.delete(VirtualIODevices, 'vfs');
    await waitUntil('deleting in the plan', async () => (await vio('node-0'))?.spec?.pools?.find((x) => x.name === 'vfs')?.deleting === true);
    const p = await waitUntil('DeletionBlocked', async () => {
      const x = await pool('vfs');
      return cond(x, 'Progressing')?.reason === 'DeletionBlocked' && x;
    });
    expect(cond(p, 'Progressing')?.message).toContain('VMI vms/web (pod virt-launcher-web-x1) on node node-0');
    expect(cond(p, 'Ready')).toMatchObject({ status: 'False', reason: 'Deleting' });
    await waitUntil('DeletionBlocked event', async () => {
      const ev = JSON.parse(await kubectl(['get', 'events', '-n', 'default', '-o', 'json'])) as { items: { reason: string; involvedObject: { name: string } }[] };
      return ev.items.some((e) => e.reason === 'DeletionBlocked' && e.involvedObject.name === 'vfs');
    });
    // The VM goes away; node-0's agent uncarves and reports Released; node-1 (unlabelled) still reports slices of vfs.
    const generation = async (node: string) => (await vio(node))?.metadata.generation;
    await writeAgentStatus(kube, 'node-0', { inventory: { devices: inventory(0) }, observedGeneration: await generation('node-0'), pools: [{ name: 'vfs', state: 'Released' }], slices: [] });
    await waitUntil('waiting for node-1', async () => cond(await pool('vfs'), 'Progressing')?.message.includes('node-1'));
    expect(await pool('vfs')).toBeDefined();
    await writeAgentStatus(kube, 'node-1', { inventory: { devices: inventory(1) }, observedGeneration: await generation('node-1'), pools: [{ name: 'vfs', state: 'Released' }], slices: [] });
    await waitUntil('pool deleted', async () => !(await pool('vfs')));
    await waitUntil('vfs left every plan', async () => !(await planOf('node-0')).includes('vfs') && !(await planOf('node-1')).includes('vfs'));
  });
});
