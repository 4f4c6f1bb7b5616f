// What the GitOps tools' own health logic says about pools and VirtualIONodes on a real
// kube-apiserver (a private control plane: the operator is cluster-wide), in every state:
// * Flux (and every kstatus user): sigs.k8s.io/cli-utils' kstatus status.Compute, built from the Go
//   module proxy by test/gitops/build.sh. Ready → Current; carving, waiting for an agent to act on a
//   new plan, no status yet → InProgress; device conflict, failed carving → Failed; deleting →
//   Terminating. observedGeneration is honoured end to end: a spec change is InProgress until the
//   node's agent reports the VirtualIONode generation that carries it.
// * Argo CD: the health Lua shipped in docs/gitops/argocd/, run the way Argo CD's controller runs it
//   (gopher-lua with the package, base and table libraries, the `obj` global): Healthy, Progressing,
//   Degraded for the same objects.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import pino from 'pino';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import type { VirtualIONodeStatus } from '../../crds/generated/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { gpu } from '../support/operator-fixtures.js';
import { installCrdFiles, kubectlAt, waitUntil, writeAgentStatus } from '../support/operator-integration.js';

jest.setTimeout(15 * 60_000); // the first run builds the harnesses from the module proxy

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' });
const LUA = { VirtualIODevice: join(REPO_ROOT, 'docs/gitops/argocd/virtualio.dev_VirtualIODevice.lua'), VirtualIONode: join(REPO_ROOT, 'docs/gitops/argocd/virtualio.dev_VirtualIONode.lua') };
let cp: ControlPlane;
let kube: ClientNodeKube;
let bins: Record<string, string>;
const ac = new AbortController();
let operator: Promise<void> | undefined;

interface Verdict { status: string; message: string }
const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);

/** Runs a harness over `kubectl get <kind> -o json`: verdict per object name. */
async function judge(kind: 'virtualiodevices' | 'virtualionodes', harness: 'kstatus' | 'argo-health'): Promise<Record<string, Verdict>> {
  const list = await kubectl(['get', kind, '-o', 'json']);
  const args = harness === 'argo-health' ? [kind === 'virtualiodevices' ? LUA.VirtualIODevice : LUA.VirtualIONode] : [];
  const out = execFileSync(bins[harness] ?? '', args, { input: list, encoding: 'utf8' });
  const verdicts: Record<string, Verdict> = {};
  for (const line of out.trim().split('\n').filter(Boolean)) {
    const r = JSON.parse(line) as { name: string } & Verdict;
    verdicts[r.name] = { status: r.status, message: r.message };
  }
  return verdicts;
}
const kstatus = () => judge('virtualiodevices', 'kstatus');
const argo = () => judge('virtualiodevices', 'argo-health');

const inventory = { devices: [gpu('0000:c1:00.0', { device: '25b6', mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q', availableInstances: 8 }] }), gpu('0000:c2:00.0', { device: '25b6', mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q', availableInstances: 8 }] })] };
const T = '2026-01-01T00:00:00Z';

/** Writes a node's status as its agent does, having acted on generation `observed` (default: the current one). */
type PoolState = NonNullable<VirtualIONodeStatus['pools']>[number]['state'];
async function agent(node: string, pools: { name: string; state: PoolState; message?: string; unhealthy?: number }[], observed?: number): Promise<void> {
  const vio = await kube.get<VioNode>(VirtualIONodes, node);
  const generation = observed ?? vio?.metadata.generation ?? 1;
  const error = pools.find((p) => p.state === 'Error');
  await writeAgentStatus(kube, node, {
    observedGeneration: generation, inventory,
    pools: pools.map(({ unhealthy, ...p }) => ({
      ...p, registered: p.state === 'Ready', capacity: 1 + (unhealthy ?? 0), allocatable: p.state === 'Ready' ? 1 : 0, allocated: 0,
    })),
    conditions: [
      { type: 'Degraded', status: error ? 'True' : 'False', reason: error ? 'CarvingFailed' : 'AsPlanned', message: error?.message ?? 'every slice healthy, nothing blocked', lastTransitionTime: T, observedGeneration: generation },
      { type: 'Ready', status: 'True', reason: 'PoolsRegistered', message: `${pools.length} pool(s) registered`, lastTransitionTime: T, observedGeneration: generation },
    ],
  });
}

async function createPool(name: string, node: string, spec: Partial<Pool['spec']>): Promise<void> {
  await kube.create<Pool>(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name },
    spec: { class: 'GPU', nodeSelector: { matchLabels: { 'health.test/node': node } }, deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Passthrough' }, ...spec },
  } as Pool);
}
const planOf = async (node: string) => ((await kube.get<VioNode>(VirtualIONodes, node))?.spec?.pools ?? []).map((p) => p.name).sort().join(',');

beforeAll(async () => {
  const built = execFileSync('bash', [join(REPO_ROOT, 'test/gitops/build.sh'), 'kstatus', 'argo-health'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10 * 60_000 });
  bins = Object.fromEntries(built.trim().split('\n').map((l) => l.split('=') as [string, string]));
  cp = await startControlPlane();
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  for (const n of ['a', 'b', 'c', 'd', 'e']) {
    await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${n}`, labels: { 'health.test/node': n } } });
  }
});

afterAll(async () => {
  ac.abort();
  await operator;
  await cp?.stop();
});

test('a pool no operator has looked at yet is InProgress for kstatus and Progressing for Argo CD', async () => {
  await createPool('nomatch', 'none', {});
  expect((await kstatus()).nomatch).toEqual({ status: 'InProgress', message: 'VirtualIODevice generation is 1, but latest observed generation is 0' });
  expect((await argo()).nomatch).toEqual({ status: 'Progressing', message: 'Waiting for the operator to observe generation 1' });
});

test('every state: Current/Healthy, InProgress/Progressing, Failed/Degraded, Terminating', async () => {
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  operator = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 500, debounceMs: 50 },
  }).run(ac.signal);
  await createPool('ready', 'a', {});
  await createPool('carving', 'a', { deviceSelector: { pciAddresses: ['0000:c2:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } });
  await createPool('broken', 'b', {});
  await createPool('regen', 'c', { carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-754' } });
  await createPool('going', 'd', {});
  await createPool('worn', 'e', {});
  // Younger than "ready" (creation times have second precision), same device: a conflict.
  await new Promise((r) => setTimeout(r, 1100));
  await createPool('conflict', 'a', {});
  for (const n of ['a', 'b', 'c', 'd', 'e']) await waitUntil(`VirtualIONode node-${n}`, () => kube.get<VioNode>(VirtualIONodes, `node-${n}`));
  for (const n of ['a', 'b', 'c', 'd', 'e']) await agent(`node-${n}`, []);
  const plans = { 'node-a': 'carving,ready', 'node-b': 'broken', 'node-c': 'regen', 'node-d': 'going', 'node-e': 'worn' };
  for (const [n, want] of Object.entries(plans)) {
    let got = '';
    await waitUntil(`plan of ${n} = ${want}`, async () => (got = await planOf(n)) === want).catch((err: unknown) => {
      throw new Error(`${String(err)} (is ${got})`, { cause: err });
    });
  }
  await agent('node-a', [{ name: 'ready', state: 'Ready' }, { name: 'carving', state: 'Carving', message: 'creating 4 mdevs on 0000:c2:00.0' }]);
  await agent('node-b', [{ name: 'broken', state: 'Error', message: 'write sriov_numvfs: device or resource busy' }]);
  await agent('node-c', [{ name: 'regen', state: 'Ready' }]);
  await agent('node-d', [{ name: 'going', state: 'Ready' }]);
  await agent('node-e', [{ name: 'worn', state: 'Ready', unhealthy: 1 }]);

  const wantK: Record<string, string> = { nomatch: 'InProgress', ready: 'Current', carving: 'InProgress', conflict: 'Failed', broken: 'Failed', regen: 'Current', going: 'Current', worn: 'Current' };
  const wantA: Record<string, string> = { nomatch: 'Degraded', ready: 'Healthy', carving: 'Progressing', conflict: 'Degraded', broken: 'Degraded', regen: 'Healthy', going: 'Healthy', worn: 'Degraded' };
  const statuses = (v: Record<string, Verdict>) => Object.fromEntries(Object.entries(v).map(([n, x]) => [n, x.status]));
  const same = (got: Record<string, string>, want: Record<string, string>) =>
    Object.keys(got).length === Object.keys(want).length && Object.entries(want).every(([n, x]) => got[n] === x);
  let last: Record<string, Verdict> = {};
  await waitUntil('kstatus verdicts', async () => same(statuses(last = await kstatus()), wantK), 60_000, 200)
    .catch((err: unknown) => {
      throw new Error(`${String(err)}; kstatus says ${JSON.stringify(last)}`, { cause: err });
    });
  const k = await kstatus();
  expect(statuses(k)).toEqual(wantK);
  expect(k.conflict?.message).toContain('held by ready');
  expect(k.broken?.message).toContain('Carving failed on 1 node(s): node node-b: write sriov_numvfs: device or resource busy');
  expect(k.carving?.message).toBe('Carving on 1 node(s): node-a');
  expect(k.nomatch?.message).toContain('No node carries the pool');
  const a = await argo();
  expect(statuses(a)).toEqual(wantA);
  expect(a.ready?.message).toBe('1 node(s) ready with 1 allocatable of 1 slices');
  expect(a.conflict?.message).toMatch(/^DeviceConflict: /);
  expect(a.nomatch?.message).toMatch(/^NoMatchingDevices: /);
  expect(a.worn?.message).toBe('UnhealthySlices: 1 of 2 slices are unhealthy');

  // VirtualIONodes for Argo CD.
  const nodes = await judge('virtualionodes', 'argo-health');
  expect(statuses(nodes)).toEqual({ 'node-a': 'Progressing', 'node-b': 'Degraded', 'node-c': 'Healthy', 'node-d': 'Healthy', 'node-e': 'Healthy' });
  expect(nodes['node-b']?.message).toBe('Pool broken failed: write sriov_numvfs: device or resource busy');

  // Conditions carry the generation they were computed for.
  for (const name of Object.keys(wantK)) {
    const p = (await kube.get<Pool>(VirtualIODevices, name))!;
    expect(p.status?.observedGeneration).toBe(p.metadata.generation);
    for (const c of p.status?.conditions ?? []) expect({ type: c.type, observedGeneration: c.observedGeneration }).toEqual({ type: c.type, observedGeneration: p.metadata.generation });
  }
});

test('observedGeneration honoured: a spec change is InProgress until the agent reports the plan generation that carries it', async () => {
  const before = (await kube.get<VioNode>(VirtualIONodes, 'node-c'))!.metadata.generation ?? 0;
  await kubectl(['patch', 'virtualiodevice', 'regen', '--type=merge', '-p', '{"spec":{"carving":{"count":4}}}']);
  await waitUntil('new plan on node-c', async () => (await kube.get<VioNode>(VirtualIONodes, 'node-c'))?.spec?.pools?.[0]?.count === 4);
  await waitUntil('status for generation 2', async () => (await kube.get<Pool>(VirtualIODevices, 'regen'))?.status?.observedGeneration === 2);
  // The agent still reports generation `before` and "Ready" for the old plan: not done.
  for (let i = 0; i < 5; i++) {
    expect((await kstatus()).regen).toEqual({ status: 'InProgress', message: 'Carving on 1 node(s): node-c' });
    expect((await argo()).regen?.status).toBe('Progressing');
    await new Promise((r) => setTimeout(r, 300));
  }
  const pending = (await kube.get<Pool>(VirtualIODevices, 'regen'))!;
  expect(pending.status?.nodeStatuses).toEqual([{ node: 'node-c', capacity: 1, allocatable: 1, allocated: 0, state: 'Pending', message: 'the agent has not acted on the latest plan yet' }]);
  expect((await judge('virtualionodes', 'argo-health'))['node-c']?.status).toBe('Progressing');
  // The agent acts on it.
  expect((await kube.get<VioNode>(VirtualIONodes, 'node-c'))!.metadata.generation).toBeGreaterThan(before);
  await agent('node-c', [{ name: 'regen', state: 'Ready' }]);
  await waitUntil('Current again', async () => (await kstatus()).regen?.status === 'Current', 30_000, 200);
  expect((await argo()).regen?.status).toBe('Healthy');
});

test('a pool being deleted is Terminating for kstatus and Progressing for Argo CD until every node released it', async () => {
  await kube.delete(VirtualIODevices, 'going');
  await waitUntil('deleting in the plan', async () => (await kube.get<VioNode>(VirtualIONodes, 'node-d'))?.spec?.pools?.[0]?.deleting === true);
  expect((await kstatus()).going?.status).toBe('Terminating');
  const a = await waitUntil('Argo CD message', async () => {
    const v = (await argo()).going;
    return v?.message.startsWith('Deleting: ') && v;
  });
  expect(a).toEqual({ status: 'Progressing', message: expect.stringMatching(/^Deleting: Waiting for 1 node\(s\) to release and uncarve the pool: node-d/) });
});
