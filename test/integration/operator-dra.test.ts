// The operator's DeviceClass controller against a real kube-apiserver (a private control plane: the
// operator is cluster-wide): a pool with frontEnd DRA gets "<pool>.virtualio.dev" through
// server-side apply under virtualio-operator, owned by the pool, with the CEL selector the agents'
// devices match; the plan carries frontEnd DRA; switching the pool to the device plugin deletes the
// class and switching back brings it again; a class of another owner with another name is left alone.
import { join } from 'node:path';
import { jest } from '@jest/globals';
import pino from 'pino';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import { DeviceClasses } from '../../operator/src/controllers/dra/deviceclass.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, FIELD_MANAGER, Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { gpu } from '../support/operator-fixtures.js';
import { installCrdFiles, kubectlAt, waitUntil, writeAgentStatus } from '../support/operator-integration.js';

jest.setTimeout(240_000);

const log = pino({ level: 'silent' });
let cp: ControlPlane;
let kube: ClientNodeKube;
const ac = new AbortController();
let run: Promise<void> | undefined;
type DeviceClass = KubeObject & { spec: { selectors: { cel: { expression: string } }[] } };

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrdFiles(cp.binDir, cp.kubeconfig,
    [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
  await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-0' } });
  await kube.create(DeviceClasses, { apiVersion: 'resource.k8s.io/v1', kind: 'DeviceClass', metadata: { name: 'gpu.example.com' }, spec: {} } as KubeObject);
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  run = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 500, debounceMs: 50 },
  }).run(ac.signal);
  await waitUntil('VirtualIONode node-0', () => kube.get<VioNode>(VirtualIONodes, 'node-0'));
  await writeAgentStatus(kube, 'node-0', { inventory: { devices: [gpu('0000:c1:00.0', { device: '25b6', mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q', availableInstances: 4 }] })] } });
});

afterAll(async () => {
  ac.abort();
  await run;
  await cp?.stop();
});

test('a DRA pool gets its DeviceClass (SSA, owned by the pool) and a plan entry with frontEnd DRA', async () => {
  const created = await kube.create<Pool>(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'a16' },
    spec: { class: 'GPU', frontEnd: 'DRA', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } },
  } as Pool);
  const dc = await waitUntil('DeviceClass a16.virtualio.dev', () => kube.get<DeviceClass>(DeviceClasses, 'a16.virtualio.dev'));
  expect(dc.spec.selectors).toEqual([{ cel: { expression: 'device.driver == "virtualio.dev" && device.attributes["virtualio.dev"].pool == "a16"' } }]);
  expect(dc.metadata.ownerReferences).toEqual([{ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', name: 'a16', uid: created.metadata.uid }]);
  const managers = JSON.parse(await kubectlAt(cp.binDir, cp.kubeconfig, ['get', 'deviceclass', 'a16.virtualio.dev', '--show-managed-fields', '-o', 'json'])).metadata.managedFields.map((m: { manager: string }) => m.manager);
  expect(managers).toContain(FIELD_MANAGER);
  const plan = await waitUntil('plan entry', async () => (await kube.get<VioNode>(VirtualIONodes, 'node-0'))?.spec?.pools?.find((p) => p.name === 'a16'));
  expect(plan.frontEnd).toBe('DRA');
});

test('switching to the device plugin deletes the class, switching back brings it again; other classes stay', async () => {
  await kubectlAt(cp.binDir, cp.kubeconfig, ['patch', 'virtualiodevice', 'a16', '--type=merge', '-p', '{"spec":{"frontEnd":"DevicePlugin"}}']);
  await waitUntil('DeviceClass gone', async () => ((await kube.get(DeviceClasses, 'a16.virtualio.dev')) === undefined ? true : undefined));
  const plan = await waitUntil('plan without frontEnd', async () => {
    const p = (await kube.get<VioNode>(VirtualIONodes, 'node-0'))?.spec?.pools?.find((x) => x.name === 'a16');
    return p && p.frontEnd === undefined ? p : undefined;
  });
  expect(plan.name).toBe('a16');
  await kubectlAt(cp.binDir, cp.kubeconfig, ['patch', 'virtualiodevice', 'a16', '--type=merge', '-p', '{"spec":{"frontEnd":"DRA"}}']);
  await waitUntil('DeviceClass back', () => kube.get(DeviceClasses, 'a16.virtualio.dev'));
  expect(await kube.get(DeviceClasses, 'gpu.example.com')).toBeDefined();
});
