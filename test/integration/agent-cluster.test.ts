// The real agent process in cluster mode against the real kube-apiserver of the integration global
// setup: it creates its VirtualIONode (owned by the Node), follows the spec the operator would
// apply, carves on a fake sysfs tree, registers with a fake kubelet, and writes its status with
// server-side apply (field manager virtualio-agent) — only when it changed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VirtualIONode } from '../../crds/generated/types.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { FakeKernel, connectX6 } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { clusterEnv, eventually, installCrds, kubectl, kubectlOk } from '../support/cluster.js';

const NIC = '0000:81:00.0';
const RES = 'virtualio.dev/it-net';
const node = `vio-agent-it-${process.pid}`;

let dir: string;
let kernel: KernelHandle;
let kubelet: FakeKubelet;
let podres: FakePodResources;
let agent: AgentProcess | undefined;

async function getVin(): Promise<VirtualIONode | undefined> {
  const r = await kubectl(['get', 'virtualionode', node, '-o', 'json', '--show-managed-fields']);
  return r.code === 0 ? (JSON.parse(r.stdout) as VirtualIONode) : undefined;
}

beforeAll(async () => {
  await installCrds();
  await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'kubernetes.io/hostname': node } } }) });
  dir = mkdtempSync(join(tmpdir(), 'vio-agent-it-'));
  const k = await FakeKernel.create(join(dir, 'sys'), join(dir, 'dev'));
  await k.addFunction(connectX6(NIC, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
  kernel = await startKernel(join(dir, 'sys'), join(dir, 'dev'));
  kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
}, 120_000);

afterAll(async () => {
  await agent?.stop('SIGKILL');
  await kubelet?.stop();
  await podres?.stop();
  await kernel?.stop();
  await kubectl(['delete', 'virtualionode', node, '--ignore-not-found', '--wait=false']);
  await kubectl(['delete', 'pod', '-n', 'default', 'virt-launcher-it-vm-abcde', '--ignore-not-found', '--wait=false', '--grace-period=0', '--force']);
  await kubectl(['delete', 'node', node, '--ignore-not-found', '--wait=false']);
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

test('cluster mode: creates its VirtualIONode, follows the spec, and writes status with server-side apply', async () => {
  const env = clusterEnv();
  const nodeUid = (await kubectlOk(['get', 'node', node, '-o', 'jsonpath={.metadata.uid}'])).trim();
  agent = await startAgent([
    '--kubeconfig', env.kubeconfig,
    '--node-name', node,
    '--sysfs-root', join(dir, 'sys'),
    '--dev-root', join(dir, 'dev'),
    '--plugin-dir', kubelet.pluginDir,
    '--pod-resources-socket', podres.socket,
    '--devinfo-dir', join(dir, 'devinfo'),
    '--rescan-interval', '5s',
    '--metrics-address', '127.0.0.1:0',
  ]);
  const a = agent;

  // 1. The agent creates its VirtualIONode, owned by the Node, and reports the inventory.
  const first = await eventually('VirtualIONode with status', async () => {
    const v = await getVin();
    return v?.status?.inventory?.devices?.some((d) => d.pciAddress === NIC) ? v : undefined;
  }, 60_000);
  expect(first.metadata.ownerReferences).toStrictEqual([{ apiVersion: 'v1', kind: 'Node', name: node, uid: nodeUid }]);
  expect(first.status?.agentVersion).toMatch(/^\d+\.\d+\.\d+/);
  expect(first.status?.conditions?.map((c) => c.type).sort()).toStrictEqual(['Degraded', 'Ready']);
  const managers = (first.metadata.managedFields ?? []).filter((m) => m.subresource === 'status').map((m) => [m.manager, m.operation]);
  expect(managers).toContainEqual(['virtualio-agent', 'Apply']);

  // 2. The operator's plan arrives (server-side apply of the spec as virtualio-operator).
  const plan = {
    apiVersion: 'virtualio.dev/v1alpha1',
    kind: 'VirtualIONode',
    metadata: { name: node },
    spec: { pools: [{ name: 'it-net', resourceName: RES, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 2, devices: [{ pciAddress: NIC }] }] },
  };
  await kubectlOk(['apply', '--server-side', '--field-manager', 'virtualio-operator', '-f', '-'], { input: JSON.stringify(plan) });
  const generation = (await getVin())?.metadata.generation;
  const ready = await eventually('status for the new generation', async () => {
    const v = await getVin();
    const p = v?.status?.pools?.[0];
    return v?.status?.observedGeneration === generation && p?.registered && p.allocatable === 2 ? v : undefined;
  }, 60_000);
  expect(ready.status?.pools).toStrictEqual([{ name: 'it-net', resourceName: RES, state: 'Ready', registered: true, registeredVia: 'KubeletSocket', capacity: 2, allocatable: 2, allocated: 0 }]);
  expect(ready.status?.summary).toMatchObject({ pools: 1, slices: 2, healthy: 2, allocated: 0 });
  expect(ready.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'True', observedGeneration: generation });
  expect(kubelet.lastList(RES)?.map((d) => d.ID)).toStrictEqual(['0000:81:00.2', '0000:81:00.3']);

  // 3. A virt-launcher pod holds a VF: the status names the pod and its VMI (from the pod's
  //    kubevirt.io/created-by label and VMI owner reference, read from the API).
  await kubectlOk(['apply', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'virt-launcher-it-vm-abcde',
        namespace: 'default',
        labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': '0b8a3f6e-1111-2222-3333-444455556666' },
        ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: 'it-vm', uid: '0b8a3f6e-1111-2222-3333-444455556666', controller: true }],
      },
      spec: { nodeName: node, containers: [{ name: 'compute', image: 'registry.invalid/virt-launcher:none' }] },
    }),
  });
  podres.setPods([{ name: 'virt-launcher-it-vm-abcde', namespace: 'default', containers: [{ name: 'compute', devices: [{ resourceName: RES, deviceIds: ['0000:81:00.3'] }] }] }]);
  await kubelet.allocate(RES, ['0000:81:00.3']);
  const held = await eventually('allocation in status', async () => {
    const v = await getVin();
    return v?.status?.slices?.find((s) => s.id === '0000:81:00.3')?.allocation ? v : undefined;
  }, 60_000);
  expect(held.status?.slices?.find((s) => s.id === '0000:81:00.3')?.allocation).toStrictEqual({ namespace: 'default', pod: 'virt-launcher-it-vm-abcde', container: 'compute', vmi: 'it-vm' });
  expect(held.status?.pools?.[0]?.allocated).toBe(1);

  // 4. Nothing changes → no more status writes (resourceVersion stays put across rescans).
  const rv = held.metadata.resourceVersion;
  await new Promise((r) => setTimeout(r, 6000)); // longer than the rescan interval: one full cycle
  expect((await getVin())?.metadata.resourceVersion).toBe(rv);

  // 5. Graceful shutdown (a restart or an upgrade): the devices are not withdrawn, so the node's
  //    capacity stays while the next agent starts.
  expect(await a.stop('SIGTERM')).toBe(0);
  expect(kubelet.lastList(RES)?.map((d) => d.ID)).toStrictEqual(['0000:81:00.2', '0000:81:00.3']);
}, 240_000);
