// The operator never unplans a pool because of what a node's report lacks, only because the admin's
// intent changed (issue 10 from the operator's side), against a real kube-apiserver with the operator
// in process: carving changes how a device looks (driver, netdev), the agent's status is wiped, the
// inventory is truncated, the VirtualIONode is deleted (and re-created by the agent with an empty
// plan), a second pool takes the same resource name, and the operator restarts while status is
// missing. Each step asserts the node's plan did not change (same spec generation), and a last step
// shows that a real change of intent (the node label removed) still unplans.
import { jest } from '@jest/globals';
import pino from 'pino';
import type { InventoryDevice } from '../../crds/generated/types.js';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import type { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { gpu, nicPF } from '../support/operator-fixtures.js';
import { waitUntil, writeAgentStatus } from '../support/operator-integration.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { runOperatorInProcess, startOperatorCluster } from '../support/operator-cluster.js';

jest.setTimeout(240_000);

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE = 'stable-0';
/** How long "nothing happens" is watched: many times the operator's 50 ms debounce and a plan round trip. */
const SETTLE_MS = 2500;

let cp: ControlPlane;
let kube: ClientNodeKube;
let stopOperator: (() => Promise<void>) | undefined;

function startOperator(): void {
  const stop = runOperatorInProcess(kube, log);
  stopOperator = async () => {
    await stop();
    stopOperator = undefined;
  };
}

const vio = () => kube.get<VioNode>(VirtualIONodes, NODE);
const pool = (name: string) => kube.get<Pool>(VirtualIODevices, name);
const plan = async () => (await vio())?.spec?.pools ?? [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const GPU = '0000:41:00.0';
const PF = '0000:81:00.0';
const host = (): InventoryDevice[] => [
  { ...gpu(GPU, { device: '2231', driver: 'nvidia' }), iommuGroup: 40, iommuGroupMembers: [GPU, '0000:41:00.1'] },
  { pciAddress: '0000:41:00.1', vendorID: '10de', deviceID: '1aef', classCode: '040300', driver: 'snd_hda_intel', iommuGroup: 40, iommuGroupMembers: [GPU, '0000:41:00.1'] },
  ...nicPF(PF, { netdev: 'ens1f0', vfs: 4 }),
];
/** The host as the agent reports it once it carved: the GPU and its audio function on vfio-pci, with their original facts. */
const carvedHost = (withOriginal = true): InventoryDevice[] => host().map((d) => (d.pciAddress.startsWith('0000:41:')
  ? { ...d, driver: 'vfio-pci', ...(withOriginal ? { original: { driver: d.driver } } : {}) }
  : d));

/** A status without inventory, as the agent writes it before its first successful scan (the field goes away with server-side apply). */
const WIPED = { agentVersion: 'test' };

let planned: NonNullable<NonNullable<VioNode['spec']>['pools']> = [];
let generation: number | undefined;

/** The node's plan is still the one recorded in `planned`, unchanged (same generation), after SETTLE_MS. */
async function expectPlanKept(): Promise<void> {
  await sleep(SETTLE_MS);
  const v = await vio();
  expect(v?.spec?.pools).toEqual(planned);
  expect(v?.metadata.generation).toBe(generation);
}

beforeAll(async () => {
  ({ cp, kube } = await startOperatorCluster());
  await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'virtualio.dev/gpu': 'rtx' } } } as KubeObject);
  startOperator();
  await waitUntil(`VirtualIONode ${NODE}`, () => vio());
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: host() } });
  for (const [name, spec] of [
    ['rtx', { class: 'GPU', nodeSelector: { matchLabels: { 'virtualio.dev/gpu': 'rtx' } }, deviceSelector: { drivers: ['nvidia'] }, carving: { mode: 'Passthrough' } }],
    ['vfs', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1f0#0-1'] }, carving: { mode: 'SRIOV', count: 4 } }],
  ] as [string, Pool['spec']][]) {
    await kube.create(VirtualIODevices, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec } as Pool);
  }
  await waitUntil('both pools planned', async () => (await plan()).map((p) => p.name).join() === 'rtx,vfs');
  planned = await plan();
  generation = (await vio())?.metadata.generation;
});

afterAll(async () => {
  await stopOperator?.();
  await cp?.stop();
});

test('the baseline plan: the GPU (its audio function goes along) and the PF\'s VFs 0-1', () => {
  expect(planned.map((p) => [p.name, p.devices])).toEqual([
    ['rtx', [{ pciAddress: GPU }]],
    ['vfs', [{ pciAddress: PF, vfFirst: 0, vfLast: 1 }]],
  ]);
});

test('carving moves the GPU to vfio-pci: drivers: [nvidia] keeps matching through the original facts', async () => {
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: carvedHost() } });
  await expectPlanKept();
});

test('an agent without original facts (older version, lost record): the current plan keeps the carved GPU', async () => {
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: carvedHost(false) } });
  await expectPlanKept();
});

test('status wiped (no inventory at all): the plan stays', async () => {
  await writeAgentStatus(kube, NODE, WIPED);
  await waitUntil('status without inventory', async () => !(await vio())?.status?.inventory);
  await expectPlanKept();
});

test('a truncated inventory that lists neither planned device: the plan stays', async () => {
  await writeAgentStatus(kube, NODE, { inventory: { total: 5000, truncated: true, devices: [{ pciAddress: '0000:00:00.0', classCode: '060000' }] } });
  await expectPlanKept();
});

test('the VirtualIONode deleted, and re-created by the agent with an empty plan: the operator restores the plan', async () => {
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: carvedHost() } });
  await sleep(500);
  await kube.delete(VirtualIONodes, NODE);
  // The agent re-creates its object as soon as it sees it gone (before the operator can).
  await kube.create(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: NODE }, spec: { pools: [] } } as VioNode).catch(() => undefined);
  await waitUntil('plan restored', async () => JSON.stringify(await plan()) === JSON.stringify(planned));
  const v = (await vio())!;
  const node = (await kube.get<KubeObject>(Nodes, NODE))!;
  expect(v.metadata.ownerReferences).toEqual([{ apiVersion: 'v1', kind: 'Node', name: NODE, uid: node.metadata.uid }]);
  generation = v.metadata.generation;
  // The same without the agent's help: deleted, the operator re-creates it with the plan.
  await kube.delete(VirtualIONodes, NODE);
  await waitUntil('re-created with the plan', async () => JSON.stringify(await plan()) === JSON.stringify(planned));
  generation = (await vio())?.metadata.generation;
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: carvedHost() } });
  await expectPlanKept();
});

test('a second pool with the same resource name does not unplan the first', async () => {
  await kube.create(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'rtx-copy' },
    spec: { class: 'GPU', resourceName: 'virtualio.dev/rtx', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } },
  } as Pool);
  await waitUntil('rtx-copy in Conflict', async () => (await pool('rtx-copy'))?.status?.conditions?.find((c) => c.type === 'Conflict')?.reason === 'ResourceNameConflict');
  await expectPlanKept();
  await kube.delete(VirtualIODevices, 'rtx-copy');
  await waitUntil('rtx-copy gone', async () => !(await pool('rtx-copy')));
});

test('the operator restarts while the node has no status: the plan stays', async () => {
  await stopOperator?.();
  await writeAgentStatus(kube, NODE, WIPED);
  startOperator();
  await expectPlanKept();
});

test('a change of intent still unplans: the node label removed takes the GPU pool away', async () => {
  await writeAgentStatus(kube, NODE, { inventory: { total: host().length, devices: carvedHost() } });
  const n = (await kube.get<KubeObject>(Nodes, NODE))!;
  await kube.replace(Nodes, { ...n, metadata: { ...n.metadata, labels: {} } });
  await waitUntil('rtx unplanned', async () => (await plan()).map((p) => p.name).join() === 'vfs');
});
