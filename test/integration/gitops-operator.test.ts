// What a GitOps tool sees of the operator's writes, on a real kube-apiserver (a private control plane
// with kube-controller-manager, for the garbage collector; the operator is cluster-wide):
// * a pool applied with `kubectl apply` (last-applied-configuration) and carrying Helm's and Argo
//   CD's tracking annotations and labels keeps every one of them through the finalizer add, a
//   plan/status round and the finalizer removal, and a VirtualIONode's annotation survives the
//   empty plan (the operator used to write back its cached copy, which has no annotations);
// * the chart's CRDs and a set of pools applied server-side under Argo CD's field manager, applied
//   again once the operator has worked: no conflict and no changed field;
// * DeviceClasses: one deleted by hand comes back; after a pool is re-created under the same name its
//   class names the new pool's UID and the garbage collector leaves it alone.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import pino from 'pino';
import YAML from 'yaml';
import { startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { DeviceClasses } from '../../operator/src/controllers/dra/deviceclass.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, Nodes, POOL_FINALIZER, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { gpu } from '../support/operator-fixtures.js';
import { kubectlAt, waitUntil, writeAgentStatus } from '../support/operator-integration.js';
import { renderedChartCrds } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(240_000);

const run = promisify(execFile);
const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' });
const ARGO = 'argocd-controller';
// The chart's CRDs as rendered by helm template, annotations and all: what Argo CD applies.
const CRD_DIR = renderedChartCrds();
let cp: ControlPlane;
let kube: ClientNodeKube;
let dir: string;
const ac = new AbortController();
let operator: Promise<void> | undefined;

const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);
/** kubectl with its exit code (kubectl diff exits 1 when it found differences). */
async function kubectlRc(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, ...args]);
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
const pool = (name: string) => kube.get<Pool>(VirtualIODevices, name);
const cond = (p: Pool | undefined, type: string) => p?.status?.conditions?.find((c) => c.type === type);
const planOf = async (node: string) => ((await kube.get<VioNode>(VirtualIONodes, node))?.spec?.pools ?? []).map((p) => p.name);
function writeYaml(name: string, docs: unknown[]): string {
  const file = join(dir, name);
  writeFileSync(file, docs.map((d) => YAML.stringify(d)).join('---\n'));
  return file;
}
/** Writes a node's status as its agent does, having acted on the VirtualIONode's current generation. */
async function agentReport(node: string, status: NonNullable<VioNode['status']>): Promise<void> {
  const observedGeneration = (await kube.get<VioNode>(VirtualIONodes, node))?.metadata.generation;
  await writeAgentStatus(kube, node, { ...status, ...(observedGeneration !== undefined ? { observedGeneration } : {}) });
}
const poolDoc = (name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) =>
  ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name, ...metadata }, spec });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vio-gitops-'));
  cp = await startControlPlane({ controllerManager: true });
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  // The chart's CRDs, as Argo CD applies them with ServerSideApply=true.
  await kubectl(['apply', '--server-side', `--field-manager=${ARGO}`, '-f', CRD_DIR]);
  await waitCrdsEstablished(kubectl, ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev'], 60);
  // The garbage collector is running once a dependent of a deleted owner goes away.
  const owner = await kubectl(['create', 'configmap', 'gc-owner', '-o', 'jsonpath={.metadata.uid}']);
  await kubectl(['create', '-f', writeYaml('gc-dependent.yaml', [{
    apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'gc-dependent', namespace: 'default', ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'gc-owner', uid: owner }] },
  }])]);
  await kubectl(['delete', 'configmap', 'gc-owner']);
  await waitUntil('garbage collector running', async () => (await kubectlRc(['get', 'configmap', 'gc-dependent'])).code !== 0, 120_000, 500);

  for (const [i, label] of [[0, 'one'], [1, 'two']] as const) {
    await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: `node-${i}`, labels: { 'gitops.test/group': label } } });
  }
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  operator = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 500, debounceMs: 50 },
  }).run(ac.signal);
  for (const i of [0, 1]) {
    await waitUntil(`VirtualIONode node-${i}`, () => kube.get<VioNode>(VirtualIONodes, `node-${i}`));
    await writeAgentStatus(kube, `node-${i}`, { inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '25b6' })] } });
  }
});

afterAll(async () => {
  ac.abort();
  await operator;
  await cp?.stop();
});

test('annotations and labels of kubectl, Helm and Argo CD survive the finalizer add, a plan/status round, the empty plan and the finalizer removal', async () => {
  const tracking = {
    'meta.helm.sh/release-name': 'pools',
    'meta.helm.sh/release-namespace': 'virtualio-system',
    'argocd.argoproj.io/tracking-id': 'pools:virtualio.dev/VirtualIODevice:/tracked',
  };
  const labels = { 'app.kubernetes.io/managed-by': 'Helm', 'app.kubernetes.io/instance': 'pools', 'argocd.argoproj.io/instance': 'pools' };
  const file = writeYaml('tracked.yaml', [poolDoc('tracked', {
    class: 'GPU', nodeSelector: { matchLabels: { 'gitops.test/group': 'one' } }, deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Passthrough' },
  }, { labels, annotations: tracking })]);
  await kubectl(['apply', '-f', file]);
  const keeps = (p: Pool | undefined) => {
    expect(p?.metadata.annotations).toMatchObject(tracking);
    expect(p?.metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration']).toContain('"tracked"');
    expect(p?.metadata.labels).toEqual(labels);
  };

  // Finalizer added.
  keeps(await waitUntil('finalizer', async () => {
    const p = await pool('tracked');
    return p?.metadata.finalizers?.includes(POOL_FINALIZER) && p;
  }));
  expect((await kubectlRc(['diff', '-f', file])).code).toBe(0);

  // A plan and a status round; an annotation on the VirtualIONode (its plan is emptied later).
  await waitUntil('planned on node-0', async () => (await planOf('node-0')).includes('tracked'));
  await kubectl(['annotate', 'virtualionode', 'node-0', 'example.com/note=keep']);
  await agentReport('node-0', {
    inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '25b6' })] },
    pools: [{ name: 'tracked', state: 'Ready', capacity: 1, allocatable: 1, allocated: 0 }],
  });
  keeps(await waitUntil('Ready', async () => {
    const p = await pool('tracked');
    return cond(p, 'Ready')?.status === 'True' && p;
  }));
  expect((await kubectlRc(['diff', '-f', file])).code).toBe(0);

  // Deletion: someone else's finalizer keeps the object after ours is removed, so it can be read.
  await kubectl(['patch', 'virtualiodevice', 'tracked', '--type=json', '-p', '[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/hold"}]']);
  await kubectl(['delete', 'virtualiodevice', 'tracked', '--wait=false']);
  const marked = await waitUntil('deleting in the plan', async () => {
    const v = await kube.get<VioNode>(VirtualIONodes, 'node-0');
    return v?.spec?.pools?.find((p) => p.name === 'tracked')?.deleting === true && v;
  });
  // The agent reports on the plan it acted on: the operator counts Released only for the deleting plan.
  await writeAgentStatus(kube, 'node-0', {
    inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '25b6' })] },
    observedGeneration: marked.metadata.generation, pools: [{ name: 'tracked', state: 'Released' }], slices: [],
  });
  const released = await waitUntil('our finalizer removed', async () => {
    const p = await pool('tracked');
    return p && !p.metadata.finalizers?.includes(POOL_FINALIZER) && p;
  });
  keeps(released);
  expect(released.metadata.finalizers).toEqual(['example.com/hold']);

  // The pool goes; node-0's plan is emptied and its VirtualIONode keeps its annotation.
  await kubectl(['patch', 'virtualiodevice', 'tracked', '--type=json', '-p', '[{"op":"remove","path":"/metadata/finalizers/0"}]']);
  await waitUntil('pool gone', async () => !(await pool('tracked')));
  const emptied = await waitUntil('empty plan', async () => {
    const v = await kube.get<VioNode>(VirtualIONodes, 'node-0');
    return v && Array.isArray(v.spec?.pools) && v.spec.pools.length === 0 && v;
  });
  expect(emptied.metadata.annotations).toMatchObject({ 'example.com/note': 'keep' });
});

test('CRDs and pools applied server-side by Argo CD, applied again after the operator worked: no conflict, no changed field', async () => {
  const pools = writeYaml('pools.yaml', [
    poolDoc('ssa-a', { class: 'GPU', nodeSelector: { matchLabels: { 'gitops.test/group': 'two' } }, deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Passthrough' } }),
    poolDoc('ssa-b', { class: 'GPU', nodeSelector: { matchLabels: { 'gitops.test/group': 'two' } }, deviceSelector: { pciAddresses: ['0000:c2:00.0'] }, carving: { mode: 'Passthrough' } },
      { annotations: { 'argocd.argoproj.io/tracking-id': 'pools:virtualio.dev/VirtualIODevice:/ssa-b' } }),
  ]);
  const files = ['-f', CRD_DIR, '-f', pools];
  await kubectl(['apply', '--server-side', `--field-manager=${ARGO}`, ...files]);
  await waitUntil('planned on node-1', async () => {
    const plan = await planOf('node-1');
    return plan.includes('ssa-a') && plan.includes('ssa-b');
  });
  await agentReport('node-1', {
    inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6' }), gpu('0000:c2:00.0', { device: '25b6' })] },
    pools: [{ name: 'ssa-a', state: 'Ready', capacity: 1, allocatable: 1, allocated: 0 }, { name: 'ssa-b', state: 'Ready', capacity: 1, allocatable: 1, allocated: 0 }],
  });
  for (const name of ['ssa-a', 'ssa-b']) {
    await waitUntil(`${name} Ready with finalizer`, async () => {
      const p = await pool(name);
      return cond(p, 'Ready')?.status === 'True' && p?.metadata.finalizers?.includes(POOL_FINALIZER);
    });
  }
  // Let the operator settle (debounced status writes), then compare.
  await new Promise((r) => setTimeout(r, 1500));
  const versions = async () => {
    const out: Record<string, string | undefined> = {};
    for (const n of ['ssa-a', 'ssa-b']) out[n] = (await pool(n))?.metadata.resourceVersion;
    for (const f of readdirSync(CRD_DIR)) {
      const name = (YAML.parse(readFileSync(join(CRD_DIR, f), 'utf8')) as KubeObject).metadata.name;
      out[name] = JSON.parse(await kubectl(['get', 'crd', name, '-o', 'json'])).metadata.resourceVersion;
    }
    return out;
  };
  const before = await versions();
  const diff = await kubectlRc(['diff', '--server-side', `--field-manager=${ARGO}`, ...files]);
  expect({ code: diff.code, stdout: diff.stdout, stderr: diff.stderr }).toEqual({ code: 0, stdout: '', stderr: '' });
  const again = await kubectlRc(['apply', '--server-side', `--field-manager=${ARGO}`, ...files]);
  expect(again.stderr).toBe('');
  expect(again.code).toBe(0);
  expect(await versions()).toEqual(before);
});

test('a DeviceClass deleted by hand comes back; a pool re-created under the same name owns its class and the garbage collector leaves it', async () => {
  type DeviceClass = KubeObject & { spec: { selectors: unknown[] } };
  const file = writeYaml('dra.yaml', [poolDoc('dra', {
    class: 'GPU', frontEnd: 'DRA', nodeSelector: { matchLabels: { 'gitops.test/group': 'none' } },
    deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' },
  })]);
  await kubectl(['apply', '-f', file]);
  const first = (await pool('dra'))!;
  const dc = await waitUntil('DeviceClass', () => kube.get<DeviceClass>(DeviceClasses, 'dra.virtualio.dev'));
  expect(dc.metadata.ownerReferences?.map((o) => o.uid)).toEqual([first.metadata.uid]);

  await kubectl(['delete', 'deviceclass', 'dra.virtualio.dev']);
  const back = await waitUntil('DeviceClass re-created', async () => {
    const x = await kube.get<DeviceClass>(DeviceClasses, 'dra.virtualio.dev');
    return x && x.metadata.uid !== dc.metadata.uid && x;
  }, 30_000);
  expect(back.metadata.ownerReferences?.map((o) => o.uid)).toEqual([first.metadata.uid]);

  // Re-created under the same name: a new UID. The class must end up owned by it, and stay.
  await kubectl(['delete', 'virtualiodevice', 'dra']);
  await kubectl(['apply', '-f', file]);
  const second = (await pool('dra'))!;
  expect(second.metadata.uid).not.toBe(first.metadata.uid);
  await waitUntil('class owned by the new pool', async () => {
    const x = await kube.get<DeviceClass>(DeviceClasses, 'dra.virtualio.dev');
    return x?.metadata.ownerReferences?.length === 1 && x.metadata.ownerReferences[0]?.uid === second.metadata.uid;
  }, 30_000);
  // The garbage collector (running, see beforeAll) acts within a second on a dangling owner.
  await new Promise((r) => setTimeout(r, 5000));
  const final = await kube.get<DeviceClass>(DeviceClasses, 'dra.virtualio.dev');
  expect(final?.metadata.ownerReferences?.map((o) => o.uid)).toEqual([second.metadata.uid]);
});
