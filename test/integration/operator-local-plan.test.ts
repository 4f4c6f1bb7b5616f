// Local planning end to end on a private real kube-apiserver: the REAL agent process with
// --local-plan (fake sysfs, fake kubelet) derives its plan from the VirtualIODevices and its Node's
// labels, the operator (in process) writes no spec.pools for that node (and removes one an older
// operator had written), a pool edit reaches the agent without any VirtualIONode write by the
// operator, and the pool's status rolls up from the agent's report.
import { jest } from '@jest/globals';
import pino from 'pino';
import type { NodeObject, Pool, VioNode } from '../../operator/src/api/types.js';
import type { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { planEntryDigest, type NodeAck } from '../../operator/src/controllers/plan/ack.js';
import { FIELD_MANAGER, Nodes, VirtualIODevices, VirtualIONodeAcks, VirtualIONodes } from '../../operator/src/kube/resources.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { startNicNode, type NicNode } from '../support/nic-node.js';
import { runOperatorInProcess, startOperatorCluster } from '../support/operator-cluster.js';
import { editObject, kubectlAt, waitUntil } from '../support/operator-integration.js';

jest.setTimeout(240_000);

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE = 'local-0';
const NIC = '0000:81:00.0';
const POOL = 'lp-net';

let cp: ControlPlane;
let kube: ClientNodeKube;
let n: NicNode | undefined;
let agent: AgentProcess | undefined;
let stopOperator: (() => Promise<void>) | undefined;

const vio = () => kube.get<VioNode>(VirtualIONodes, NODE);
const pool = () => kube.get<Pool>(VirtualIODevices, POOL);

beforeAll(async () => {
  ({ cp, kube } = await startOperatorCluster());
  n = await startNicNode('vio-local-plan-it-', { pciAddress: NIC, netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 });
}, 180_000);

afterAll(async () => {
  await stopOperator?.();
  await agent?.stop('SIGKILL');
  await n?.stop();
  await cp?.stop();
}, 60_000);

function startOperator(): void {
  const stop = runOperatorInProcess(kube, log);
  stopOperator = async () => {
    await stop();
    stopOperator = undefined;
  };
}

test('an agent that plans locally gets no spec.pools, follows a pool edit through its watch, and the pool status rolls up', async () => {
  const node = await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'virtualio.dev/nics': 'yes' } } } as NodeObject);
  // An older operator planned this node already (the upgrade case): spec.pools is there before the agent plans locally.
  await kube.create(VirtualIONodes, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode',
    metadata: { name: NODE, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: NODE, uid: node.metadata.uid ?? '' }] },
    spec: { pools: [{ name: POOL, resourceName: `virtualio.dev/${POOL}`, class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', policy: 'NUMAAligned', count: 2, vfDriver: 'vfio-pci', devices: [{ pciAddress: NIC }] }] },
  } as VioNode);
  await kube.create(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: POOL },
    spec: { class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/nics': 'yes' } }, deviceSelector: { interfaceNames: ['ens1f0np0'] }, carving: { mode: 'SRIOV', count: 2 }, kubevirt: { consumption: 'HostDevice' } },
  } as Pool);
  agent = await startAgent([
    '--kubeconfig', cp.kubeconfig, '--node-name', NODE, '--local-plan', ...n!.agentArgs(),
    '--rescan-interval', '5s', '--metrics-address', '127.0.0.1:0',
  ]);
  startOperator();

  // 1. The agent derives the plan itself, carves, and reports both; the operator removes the old spec.pools and writes nothing else.
  const ready = await waitUntil('the agent plans locally and serves the pool', async () => {
    const v = await vio();
    const p = v?.status?.pools?.find((x) => x.name === POOL);
    return v?.spec?.pools === undefined && p?.state === 'Ready' && p.allocatable === 2 ? v : undefined;
  }, 90_000);
  expect(ready.status?.localPlan?.pools).toEqual([expect.objectContaining({ name: POOL, count: 2, devices: [{ pciAddress: NIC }] })]);
  expect(n!.kubelet.lastList(`virtualio.dev/${POOL}`)).toHaveLength(2);
  const generation = ready.metadata.generation;
  const rolledUp = await waitUntil('pool status rolled up from the agent', async () => {
    const p = await pool();
    return p?.status?.nodes === 1 && p.status.allocatable === 2 && p.status.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? p : undefined;
  });
  expect(rolledUp.status?.observedGeneration).toBe(1);
  // The agent acknowledged what it carried out in its own small object, owned by its Node: the
  // digest of the very entry it serves (the operator's function), and the pool's state.
  const ack = await waitUntil('the agent\'s ack', async () => {
    const a = await kube.get<NodeAck>(VirtualIONodeAcks, NODE);
    return a?.status?.pools?.[0]?.state === 'Ready' ? a : undefined;
  });
  expect(ack.status?.pools).toEqual([{ name: POOL, digest: planEntryDigest(ready.status!.localPlan!.pools[0]!), state: 'Ready' }]);
  expect(ack.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'Node', name: NODE, uid: node.metadata.uid })]);

  // 2. A pool edit (count 2 → 3) reaches the agent through its watch; the VirtualIONode's spec is never written.
  await editObject<Pool>(kube, VirtualIODevices, POOL, (cur) => ({ ...cur, spec: { ...cur.spec, carving: { mode: 'SRIOV', count: 3 } } }));
  const edited = await waitUntil('the edit carried out by the agent', async () => {
    const v = await vio();
    const p = v?.status?.pools?.find((x) => x.name === POOL);
    return p?.state === 'Ready' && p.allocatable === 3 ? v : undefined;
  }, 90_000);
  expect(edited.status?.localPlan?.pools).toEqual([expect.objectContaining({ name: POOL, count: 3 })]);
  expect(edited.spec?.pools).toBeUndefined();
  expect(edited.metadata.generation).toBe(generation);
  // No write by the operator touched the object's spec (only the one removal of the old plan, a merge patch).
  const managed = (edited.metadata as { managedFields?: { manager?: string; operation?: string }[] }).managedFields ?? [];
  const operatorWrites = managed.filter((m) => m.manager === FIELD_MANAGER && m.operation === 'Apply');
  expect(operatorWrites).toEqual([]);
  const after = await waitUntil('pool status of the edit', async () => {
    const p = await pool();
    return p?.status?.observedGeneration === 2 && p.status.allocatable === 3 && p.status.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? p : undefined;
  });
  expect(after.status?.nodes).toBe(1);
  await waitUntil('the ack of the edit', async () => {
    const a = await kube.get<NodeAck>(VirtualIONodeAcks, NODE);
    return a?.status?.pools?.[0]?.digest === planEntryDigest(edited.status!.localPlan!.pools[0]!) && a.status.pools[0].state === 'Ready' ? true : undefined;
  });

  // 3. The node loses its label: a change of intent, so the agent unplans the pool itself.
  await kubectlAt(cp.binDir, cp.kubeconfig, ['label', 'node', NODE, 'virtualio.dev/nics-']);
  await waitUntil('the pool unplanned by the agent', async () => ((await vio())?.status?.localPlan?.pools.length === 0 ? true : undefined), 90_000);
  expect((await vio())?.spec?.pools).toBeUndefined();
}, 240_000);
