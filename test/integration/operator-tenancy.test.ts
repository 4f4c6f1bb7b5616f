// Tenancy on a real kube-apiserver: the operator writes "<pool>.tenancy.virtualio.dev" (policy and
// binding) for each pool with spec.tenancy, and the API server itself refuses, in a namespace the
// pool does not grant, a Pod that requests the pool's extended resource (device-plugin front end, and
// so a KubeVirt virt-launcher pod) and a ResourceClaim or ResourceClaimTemplate that names the pool's
// DeviceClass (DRA front end), with a message naming the pool and the namespace. Requests go through
// `kubectl create --dry-run=server`, which runs admission in full and stores nothing, so each case
// shows what a user sees. Relabelling a namespace takes effect without the operator; a pool without
// spec.tenancy is unaffected; deleting a pool removes its policy.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import pino from 'pino';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool } from '../../operator/src/api/types.js';
import { AdmissionPolicies, AdmissionPolicyBindings } from '../../operator/src/controllers/tenancy/policy.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, FIELD_MANAGER, VirtualIODevices } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { installCrdFiles, kubectlAt, waitUntil } from '../support/operator-integration.js';

jest.setTimeout(240_000);

const log = pino({ level: 'silent' });
let cp: ControlPlane;
let kube: ClientNodeKube;
const ac = new AbortController();
let run: Promise<void> | undefined;
const dir = mkdtempSync(join(tmpdir(), 'vio-tenancy-'));
let seq = 0;

const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);

/** Creates `obj` with server-side dry run: '' when admitted, else the error a user sees. */
async function tryCreate(obj: Record<string, unknown>): Promise<string> {
  const file = join(dir, `obj-${++seq}.json`);
  writeFileSync(file, JSON.stringify(obj));
  try {
    await kubectl(['create', '--dry-run=server', '-o', 'name', '-f', file]);
    return '';
  } catch (err) {
    return (err as Error).message;
  }
}

function pod(ns: string, resource: string, init = false): Record<string, unknown> {
  const container = { name: 'c', image: 'registry.example/vm:1', resources: { limits: { [resource]: '1' } } };
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm-abcde', namespace: ns },
    spec: init
      ? { initContainers: [container], containers: [{ name: 'compute', image: 'registry.example/vm:1' }] }
      : { containers: [container] },
  };
}

function claim(ns: string, className: string, firstAvailable = false): Record<string, unknown> {
  const request = firstAvailable
    ? { name: 'gpu', firstAvailable: [{ name: 'other', deviceClassName: 'gpu.example.com' }, { name: 'ours', deviceClassName: className }] }
    : { name: 'gpu', exactly: { deviceClassName: className } };
  return { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm-gpu', namespace: ns }, spec: { devices: { requests: [request] } } };
}

function claimTemplate(ns: string, className: string): Record<string, unknown> {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: 'vm-gpu', namespace: ns },
    spec: { spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: className } }] } } },
  };
}

/**
 * Stand-ins for KubeVirt's VirtualMachine and VirtualMachineInstance CRDs (group, version, names and
 * scope as KubeVirt's; schema left open). The policy reads spec.domain.devices.{hostDevices,gpus}[]
 * .deviceName, KubeVirt's documented fields; KubeVirt's own schema is not needed for that.
 */
function kubevirtCrd(kind: string, plural: string): Record<string, unknown> {
  return {
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition', metadata: { name: `${plural}.kubevirt.io` },
    spec: {
      group: 'kubevirt.io', scope: 'Namespaced', names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } } }],
    },
  };
}

function vmi(ns: string, devices: Record<string, unknown>): Record<string, unknown> {
  return { apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', metadata: { name: 'vm', namespace: ns }, spec: { domain: { devices } } };
}

function vm(ns: string, devices: Record<string, unknown>): Record<string, unknown> {
  return {
    apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', metadata: { name: 'vm', namespace: ns },
    spec: { runStrategy: 'Always', template: { spec: { domain: { devices } } } },
  };
}

function poolBody(name: string, spec: Partial<Pool['spec']>): Pool {
  return {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name },
    spec: { class: 'NIC', deviceSelector: { pciAddresses: ['0000:3b:00.0'] }, carving: { mode: 'SRIOV', count: 4 }, ...spec },
  } as Pool;
}

/** Waits until the API server enforces what the operator wrote (its policy cache lags the write). */
async function untilRefused(obj: Record<string, unknown>): Promise<string> {
  return waitUntil(`refusal of ${JSON.stringify(obj.metadata)}`, async () => (await tryCreate(obj)) || undefined, 30_000, 200);
}

async function untilAdmitted(obj: Record<string, unknown>): Promise<void> {
  await waitUntil(`admission of ${JSON.stringify(obj.metadata)}`, async () => {
    const err = await tryCreate(obj);
    if (err) throw new Error(err);
    return true;
  }, 30_000, 200);
}

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  const crdFiles = [kubevirtCrd('VirtualMachineInstance', 'virtualmachineinstances'), kubevirtCrd('VirtualMachine', 'virtualmachines')].map((crd, i) => {
    const file = join(dir, `kubevirt-crd-${i}.json`);
    writeFileSync(file, JSON.stringify(crd));
    return file;
  });
  await installCrdFiles(cp.binDir, cp.kubeconfig, crdFiles, ['virtualmachineinstances.kubevirt.io', 'virtualmachines.kubevirt.io']);
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  for (const ns of ['team-a', 'team-b', 'team-c']) await kubectl(['create', 'namespace', ns]);
  await kubectl(['label', 'namespace', 'team-a', 'virtualio.example.com/team=a']);
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  run = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 500, debounceMs: 50 },
  }).run(ac.signal);
  // Device plugin pool granted by label; DRA pool granted by name (team-c); a pool without tenancy.
  await kube.create(VirtualIODevices, poolBody('nics', { tenancy: { namespaceSelector: { matchLabels: { 'virtualio.example.com/team': 'a' } } } }));
  await kube.create(VirtualIODevices, poolBody('gpus', {
    class: 'GPU', frontEnd: 'DRA', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' },
    tenancy: { namespaces: ['team-c'] },
  }));
  await kube.create(VirtualIODevices, poolBody('open', { deviceSelector: { pciAddresses: ['0000:5e:00.0'] } }));
});

afterAll(async () => {
  ac.abort();
  await run;
  await cp?.stop();
});

test('the operator writes policy and binding under its field manager, owned by the pool, and reports TenancyEnforced', async () => {
  const policy = await waitUntil('policy', () => kube.get<KubeObject>(AdmissionPolicies, 'nics.tenancy.virtualio.dev'));
  await waitUntil('binding', () => kube.get<KubeObject>(AdmissionPolicyBindings, 'nics.tenancy.virtualio.dev'));
  const pool = await kube.get<Pool>(VirtualIODevices, 'nics');
  expect(policy.metadata.ownerReferences).toEqual([{ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', name: 'nics', uid: pool?.metadata.uid }]);
  const json = JSON.parse(await kubectl(['get', 'validatingadmissionpolicy', 'nics.tenancy.virtualio.dev', '--show-managed-fields', '-o', 'json']));
  expect(json.metadata.managedFields.map((m: { manager: string }) => m.manager)).toEqual([FIELD_MANAGER]);
  const cond = await waitUntil('TenancyEnforced', async () =>
    (await kube.get<Pool>(VirtualIODevices, 'nics'))?.status?.conditions?.find((c) => c.type === 'TenancyEnforced' && c.status === 'True'));
  expect(cond.reason).toBe('PolicyInForce');
});

test('device plugin front end: a pod requesting the pool is admitted in a granted namespace and refused elsewhere, naming pool and namespace', async () => {
  const refused = await untilRefused(pod('team-b', 'virtualio.dev/nics'));
  expect(refused).toContain("ValidatingAdmissionPolicy 'nics.tenancy.virtualio.dev' with binding 'nics.tenancy.virtualio.dev' denied request");
  expect(refused).toContain('pool nics (VirtualIODevice) is not granted to namespace team-b');
  expect(refused).toContain('extended resource virtualio.dev/nics');
  console.log(`A refused pod, as kubectl shows it:\n${refused}`);
  expect(await tryCreate(pod('team-b', 'virtualio.dev/nics', true))).toContain('not granted to namespace team-b');
  expect(await tryCreate(pod('team-a', 'virtualio.dev/nics'))).toBe('');
  // Pods that do not ask for the pool are untouched.
  expect(await tryCreate(pod('team-b', 'example.com/other'))).toBe('');
});

test('KubeVirt: a VM or VMI naming the pool as host device or GPU is refused outside the grant, before its pod', async () => {
  const refused = await untilRefused(vmi('team-b', { hostDevices: [{ name: 'nic1', deviceName: 'virtualio.dev/nics' }] }));
  expect(refused).toContain('virtualmachineinstances.kubevirt.io "vm" is forbidden');
  expect(refused).toContain('pool nics (VirtualIODevice) is not granted to namespace team-b');
  expect(await tryCreate(vm('team-b', { gpus: [{ name: 'g', deviceName: 'virtualio.dev/nics' }] }))).toContain('pool nics');
  expect(await tryCreate(vmi('team-a', { hostDevices: [{ name: 'nic1', deviceName: 'virtualio.dev/nics' }] }))).toBe('');
  expect(await tryCreate(vm('team-b', { hostDevices: [{ name: 'other', deviceName: 'example.com/other' }] }))).toBe('');
  expect(await tryCreate(vmi('team-b', {}))).toBe('');
});

test('DRA front end: claims and claim templates naming the pool class are refused outside the grant', async () => {
  const refused = await untilRefused(claim('team-b', 'gpus.virtualio.dev'));
  expect(refused).toContain("ValidatingAdmissionPolicy 'gpus.tenancy.virtualio.dev'");
  expect(refused).toContain('pool gpus (VirtualIODevice) is not granted to namespace team-b');
  expect(refused).toContain('DeviceClass gpus.virtualio.dev');
  console.log(`A refused claim, as kubectl shows it:\n${refused}`);
  expect(await tryCreate(claim('team-b', 'gpus.virtualio.dev', true))).toContain('not granted to namespace team-b');
  expect(await tryCreate(claimTemplate('team-a', 'gpus.virtualio.dev'))).toContain('not granted to namespace team-a');
  expect(await tryCreate(claim('team-c', 'gpus.virtualio.dev'))).toBe('');
  expect(await tryCreate(claimTemplate('team-c', 'gpus.virtualio.dev'))).toBe('');
  expect(await tryCreate(claim('team-b', 'gpu.example.com'))).toBe('');
  // The DRA pool's grant does not open the device plugin pool, and the other way round.
  expect(await tryCreate(pod('team-c', 'virtualio.dev/nics'))).toContain('pool nics');
});

test('relabelling a namespace takes effect at once, without the operator writing anything', async () => {
  const before = JSON.parse(await kubectl(['get', 'validatingadmissionpolicy', 'nics.tenancy.virtualio.dev', '-o', 'json'])).metadata.resourceVersion;
  await kubectl(['label', 'namespace', 'team-b', 'virtualio.example.com/team=a']);
  await untilAdmitted(pod('team-b', 'virtualio.dev/nics'));
  await kubectl(['label', 'namespace', 'team-b', 'virtualio.example.com/team-']);
  expect(await untilRefused(pod('team-b', 'virtualio.dev/nics'))).toContain('not granted to namespace team-b');
  const after = JSON.parse(await kubectl(['get', 'validatingadmissionpolicy', 'nics.tenancy.virtualio.dev', '-o', 'json'])).metadata.resourceVersion;
  expect(after).toBe(before);
});

test('a pool without spec.tenancy is unaffected: no policy, no condition, pods everywhere', async () => {
  expect(await tryCreate(pod('team-b', 'virtualio.dev/open'))).toBe('');
  expect(await kube.get(AdmissionPolicies, 'open.tenancy.virtualio.dev')).toBeUndefined();
  const status = await waitUntil('open status', async () => (await kube.get<Pool>(VirtualIODevices, 'open'))?.status?.conditions);
  expect(status.map((c) => c.type)).not.toContain('TenancyEnforced');
});

test('a policy deleted by someone is written again', async () => {
  const old = await kube.get<KubeObject>(AdmissionPolicies, 'nics.tenancy.virtualio.dev');
  await kubectl(['delete', 'validatingadmissionpolicy', 'nics.tenancy.virtualio.dev']);
  const back = await waitUntil('policy back', async () => {
    const p = await kube.get<KubeObject>(AdmissionPolicies, 'nics.tenancy.virtualio.dev');
    return p && p.metadata.uid !== old?.metadata.uid ? p : undefined;
  });
  expect(back.metadata.labels?.['virtualio.dev/pool']).toBe('nics');
  expect(await untilRefused(pod('team-b', 'virtualio.dev/nics'))).toContain('pool nics');
});

// No kube-controller-manager here, so no garbage collector: what removes them is the operator (the
// ownerReference does the same on a real cluster, and covers a pool deleted while the operator is down).
test('deleting a pool removes its policy and binding, and its pods are no longer refused', async () => {
  await kubectl(['delete', 'virtualiodevice', 'gpus', '--wait=false']);
  await waitUntil('policy gone', async () => ((await kube.get(AdmissionPolicies, 'gpus.tenancy.virtualio.dev')) === undefined ? true : undefined));
  await waitUntil('binding gone', async () => ((await kube.get(AdmissionPolicyBindings, 'gpus.tenancy.virtualio.dev')) === undefined ? true : undefined));
  await untilAdmitted(claim('team-b', 'gpus.virtualio.dev'));
  // The other pool's policy stays.
  expect(await tryCreate(pod('team-b', 'virtualio.dev/nics'))).toContain('pool nics');
});
