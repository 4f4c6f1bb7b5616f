// Switching a node's agent between written plans and local planning while a VM holds a slice (what a
// `helm upgrade --set agent.localPlan=true`, and its rollback, do to a running node): the REAL agent
// process restarted with and without --local-plan, the operator in process on a private real
// kube-apiserver, the fake kernel daemon as the witness (the VM keeps its VFIO group open), the fake
// kubelet, and PodResources answering what it allocated. Across both switches: the held VF is never
// written to, nothing is destroyed, no VF count is written at all (both plans carve the same), the VM
// keeps its group, the kubelet keeps listing both slices, and the pool ends Ready each time.
import { jest } from '@jest/globals';
import pino from 'pino';
import type { NodeObject, Pool, VioNode } from '../../operator/src/api/types.js';
import type { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import type { ControlPlane } from '../cluster/control-plane.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { startVmFromAllocation, type Vm } from '../sysfs/vmm.js';
import { startNicNode, type NicNode } from '../support/nic-node.js';
import { runOperatorInProcess, startOperatorCluster } from '../support/operator-cluster.js';
import { waitUntil } from '../support/operator-integration.js';

jest.setTimeout(300_000);

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE = 'switch-0';
const NIC = '0000:81:00.0';
const POOL = 'sw-net';
const RES = `virtualio.dev/${POOL}`;

let cp: ControlPlane;
let kube: ClientNodeKube;
let n: NicNode | undefined;
let agent: AgentProcess | undefined;
let vm: Vm | undefined;
let stopOperator: (() => Promise<void>) | undefined;

const vio = () => kube.get<VioNode>(VirtualIONodes, NODE);

beforeAll(async () => {
  ({ cp, kube } = await startOperatorCluster());
  n = await startNicNode('vio-plan-switch-it-', { pciAddress: NIC, netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 });
  stopOperator = runOperatorInProcess(kube, log);
}, 180_000);

afterAll(async () => {
  await vm?.stop();
  await stopOperator?.();
  await agent?.stop('SIGKILL');
  await n?.stop();
  await cp?.stop();
}, 60_000);

async function restartAgent(localPlan: boolean): Promise<void> {
  await agent?.stop('SIGTERM');
  agent = await startAgent([
    '--kubeconfig', cp.kubeconfig, '--node-name', NODE, ...(localPlan ? ['--local-plan'] : []),
    ...n!.agentArgs(), '--rescan-interval', '2s', '--metrics-address', '127.0.0.1:0',
  ]);
}

/** The pool Ready on the node with both slices, the held one reported with its pod, through the plan source asked for. */
async function servedVia(localPlan: boolean, holder: string, held: string): Promise<VioNode> {
  return waitUntil(`the pool served with ${localPlan ? 'a local plan' : 'the written plan'}`, async () => {
    const v = await vio();
    const p = v?.status?.pools?.find((x) => x.name === POOL);
    const planSource = localPlan ? v?.spec?.pools === undefined && (v?.status?.localPlan?.pools ?? []).some((x: { name?: string }) => x.name === POOL) : (v?.spec?.pools ?? []).some((x) => x.name === POOL) && v?.status?.localPlan === undefined;
    const listed = n!.kubelet.lastList(RES) ?? [];
    const heldReported = (v?.status?.slices ?? []).some((s) => s.id === held && s.allocation?.pod === holder);
    if (planSource && p?.state === 'Ready' && p.allocatable === 2 && listed.filter((d) => d.health === 'Healthy').length === 2 && heldReported) return v;
    throw new Error(`not yet: spec.pools ${JSON.stringify(v?.spec?.pools?.map((x) => x.name))}, localPlan ${JSON.stringify(v?.status?.localPlan?.pools?.map((x: { name?: string }) => x.name))}, pool ${JSON.stringify(p)}, slices ${JSON.stringify(v?.status?.slices)}, kubelet ${JSON.stringify(listed)}`);
  }, 120_000);
}

/** What the kernel saw since `from`: writes that touch the held VF or the PF's VF count, and destroyed devices. */
function since(from: number, destroyedFrom: number, held: string): { touching: string[]; destroyed: number } {
  const touching = n!.kernel.events.slice(from).filter((e) => e.path.includes(held) || e.value.includes(held) || e.path.endsWith('/sriov_numvfs')).map((e) => `${e.path}=${e.value}`);
  return { touching, destroyed: n!.kernel.destroyed.length - destroyedFrom };
}

test('written plans → local planning → written plans while a VM holds a VF: nothing the VM holds is written to, the pool stays served', async () => {
  const node = await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'virtualio.dev/nics': 'yes' } } } as NodeObject);
  expect(node.metadata.uid).toBeTruthy();
  await kube.create(VirtualIODevices, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: POOL },
    spec: { class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/nics': 'yes' } }, deviceSelector: { interfaceNames: ['ens1f0np0'] }, carving: { mode: 'SRIOV', count: 2 }, kubevirt: { consumption: 'HostDevice' } },
  } as Pool);

  // 1. Written plans (the chart's default): the operator writes spec.pools, the agent carves 2 VFs.
  await restartAgent(false);
  await waitUntil('2 VFs listed to the kubelet', async () => ((n!.kubelet.lastList(RES) ?? []).filter((d) => d.health === 'Healthy').length === 2 ? true : undefined), 120_000);
  const ids = (n!.kubelet.lastList(RES) ?? []).map((d) => d.ID).sort();
  const held = ids[0] as string;
  const res = await n!.kubelet.allocate(RES, [held], { uid: 'uid-vm1', name: 'virt-launcher-vm1', namespace: 'vms', container: 'compute' });
  n!.podres.setPods(n!.kubelet.podResources()); // PodResources answers what the kubelet allocated
  vm = await startVmFromAllocation(n!.kernel, res, { name: 'virt-launcher-vm1' });
  const groups = vm.openGroups();
  expect(groups).toHaveLength(1);
  await servedVia(false, 'virt-launcher-vm1', held);
  await n!.kernel.idle();
  const before = { events: n!.kernel.events.length, destroyed: n!.kernel.destroyed.length };

  // 2. The upgrade: the agent restarts planning locally; the operator removes the written plan.
  await restartAgent(true);
  const local = await servedVia(true, 'virt-launcher-vm1', held);
  expect(local.status?.localPlan?.pools).toEqual([expect.objectContaining({ name: POOL, count: 2, devices: [{ pciAddress: NIC }] })]);
  await n!.kernel.idle();
  expect(since(before.events, before.destroyed, held)).toEqual({ touching: [], destroyed: 0 });
  expect(n!.kernel.violations).toEqual([]);
  expect(vm.openGroups()).toEqual(groups);
  const mid = { events: n!.kernel.events.length, destroyed: n!.kernel.destroyed.length };

  // 3. The rollback: written plans again; the operator writes spec.pools back.
  await restartAgent(false);
  await servedVia(false, 'virt-launcher-vm1', held);
  await n!.kernel.idle();
  expect(since(mid.events, mid.destroyed, held)).toEqual({ touching: [], destroyed: 0 });
  expect(n!.kernel.violations).toEqual([]);
  expect(vm.openGroups()).toEqual(groups);
  expect((n!.kubelet.lastList(RES) ?? []).map((d) => [d.ID, d.health]).sort()).toEqual(ids.map((id) => [id, 'Healthy']));
});
