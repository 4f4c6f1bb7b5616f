// Issue 10, points 2 and 8, with the real pieces in the loop: the operator (in process) plans from the
// status the real agent process writes to a real kube-apiserver, the agent carves on a fake-kernel
// host, and registers with a fake kubelet. Two passthrough pools select their devices by how they
// look before carving — `drivers: [nvidia]` for an RTX A5000 (its HDMI audio function shares the
// IOMMU group) and `interfaceNames: [ens1f0np0]` for a ConnectX-6 port. Once carved both look
// different (vfio-pci, no netdev); before this work that unplanned them, the agent uncarved, the
// operator planned again, for ever. Now: planned once, carved once, and the plan, the drivers and the
// kubelet's device lists stay put over several rescans; the status reports each function's original
// facts.
import { jest } from '@jest/globals';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import type { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { waitUntil } from '../support/operator-integration.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { connectX6, FakeKernel } from '../sysfs/kernel.js';
import { startOperatorCluster } from '../support/operator-cluster.js';

jest.setTimeout(300_000);

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE = 'member-0';
const GPU = '0000:41:00.0';
const AUDIO = '0000:41:00.1';
const NIC = '0000:81:00.0';

let cp: ControlPlane;
let kube: ClientNodeKube;
let dir: string;
let kernel: KernelHandle;
let kubelet: FakeKubelet;
let podres: FakePodResources;
let agent: AgentProcess | undefined;
let stopOperator: (() => Promise<void>) | undefined;

const vio = () => kube.get<VioNode>(VirtualIONodes, NODE);

beforeAll(async () => {
  ({ cp, kube } = await startOperatorCluster());
  await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'virtualio.dev/gpu': 'rtx' } } } as KubeObject);
  dir = mkdtempSync(join(tmpdir(), 'vio-membership-'));
  const k = await FakeKernel.create(join(dir, 'sys'), join(dir, 'dev'), { driverIds: { '10de:2231': 'nvidia', '10de:1aef': 'snd_hda_intel' } });
  await k.addFunction({ address: GPU, vendor: '10de', device: '2231', classCode: '030000', driver: 'nvidia', numaNode: 0, iommuGroup: 40 });
  await k.addFunction({ address: AUDIO, vendor: '10de', device: '1aef', classCode: '040300', driver: 'snd_hda_intel', numaNode: 0, iommuGroup: 40 });
  await k.addFunction(connectX6(NIC, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
  kernel = await startKernel(join(dir, 'sys'), join(dir, 'dev'));
  kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));

  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'it', clock: systemClock, log });
  const run = new Operator({
    kube, clock: systemClock, log, events,
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
    tuning: { kubevirtRecheckMs: 60_000, debounceMs: 50 },
  }).run(ac.signal);
  stopOperator = async () => {
    ac.abort();
    await run;
  };
  agent = await startAgent([
    '--kubeconfig', cp.kubeconfig, '--node-name', NODE,
    '--sysfs-root', join(dir, 'sys'), '--dev-root', join(dir, 'dev'),
    '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket,
    '--devinfo-dir', join(dir, 'devinfo'), '--rescan-interval', '2s', '--metrics-address', '127.0.0.1:0',
  ]);
}, 300_000);

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await stopOperator?.();
  await kubelet?.stop();
  await podres?.stop();
  await kernel?.stop();
  await cp?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

test('pools selected by drivers and interfaceNames are planned once, carved once, and stay', async () => {
  await waitUntil('the agent\'s inventory', async () => (await vio())?.status?.inventory?.devices?.some((d) => d.pciAddress === GPU), 60_000);
  for (const [name, spec] of [
    ['rtx', { class: 'GPU', nodeSelector: { matchLabels: { 'virtualio.dev/gpu': 'rtx' } }, deviceSelector: { drivers: ['nvidia'] }, carving: { mode: 'Passthrough' } }],
    ['cx6', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0np0'] }, carving: { mode: 'Passthrough' }, kubevirt: { consumption: 'HostDevice' } }],
  ] as [string, Pool['spec']][]) {
    await kube.create(VirtualIODevices, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec } as Pool);
  }
  // Carved and served: both slices Healthy in status, both lists at the kubelet.
  // (A group member between unbind and probe has no driver, which a group tolerates: wait for the drivers too.)
  const drivers = async () => [await kernel.kernel.driverOf(GPU), await kernel.kernel.driverOf(AUDIO), await kernel.kernel.driverOf(NIC)];
  const carved = await waitUntil('both pools carved and Healthy', async () => {
    const v = await vio();
    const slices = v?.status?.slices ?? [];
    const moved = (await drivers()).every((d) => d === 'vfio-pci');
    return moved && slices.length === 2 && slices.every((s) => s.health === 'Healthy') && v?.status?.inventory?.devices?.find((d) => d.pciAddress === AUDIO)?.driver === 'vfio-pci' && v;
  }, 90_000);
  expect(carved.spec?.pools?.map((p) => [p.name, p.devices])).toEqual([['cx6', [{ pciAddress: NIC }]], ['rtx', [{ pciAddress: GPU }]]]);
  const inv = new Map((carved.status?.inventory?.devices ?? []).map((d) => [d.pciAddress, d]));
  expect(inv.get(GPU)?.original).toEqual({ driver: 'nvidia' });
  expect(inv.get(NIC)?.original).toEqual({ driver: 'mlx5_core', interfaceNames: ['ens1f0np0'] });
  expect(inv.get(NIC)?.netdevs ?? []).toEqual([]);

  // Several rescans later nothing moved: same plan generation, no write after the carving, same lists.
  const generation = carved.metadata.generation;
  const writes = kernel.events.length;
  const lists = () => [kubelet.lastList('virtualio.dev/rtx')?.map((d) => d.ID), kubelet.lastList('virtualio.dev/cx6')?.map((d) => d.ID)];
  await waitUntil('both lists at the kubelet', () => lists().every((l) => (l?.length ?? 0) === 1), 30_000);
  expect(lists()).toEqual([[GPU], [NIC]]);
  await new Promise((r) => setTimeout(r, 8000));
  const later = await vio();
  expect(later?.metadata.generation).toBe(generation);
  expect(later?.spec?.pools?.map((p) => p.name)).toEqual(['cx6', 'rtx']);
  expect(kernel.events.slice(writes).map((e) => `${e.path}=${e.value}`)).toEqual([]);
  expect(await drivers()).toEqual(['vfio-pci', 'vfio-pci', 'vfio-pci']);
  expect(lists()).toEqual([[GPU], [NIC]]);
});
