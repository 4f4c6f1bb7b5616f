// DRA against the real kube-scheduler (structured parameters): ResourceSlices that our publisher
// writes from agent slices are allocated to ResourceClaims by the scheduler itself — a GPU, a
// GPU + NIC pair aligned under one PCIe root by a matchAttribute constraint, an mdev vGPU by its
// type — an Unhealthy (tainted) VF is never handed out, and a claim that cannot be met stays
// unallocated with the scheduler's reason on its pod.
import { loadKubeConfig } from '../../device-plugin/src/kube/adapter.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import type { PoolPlan, Slice } from '../../device-plugin/src/model.js';
import { ATTR_PCIE_ROOT, deviceClassFor, desiredPools, draDeviceName, type ResourceSliceObject } from '../../device-plugin/src/dra/devices.js';
import { KubeResourceSliceStore } from '../../device-plugin/src/dra/kube.js';
import { ResourceSlicePublisher } from '../../device-plugin/src/dra/publisher.js';
import { clusterEnv, eventually, kubectl, kubectlOk } from '../support/cluster.js';

const NODE = 'dra-node-1';
const NS = 'dra-sched';

const gpuPool: PoolPlan = { name: 'gpu-pt', resourceName: 'virtualio.dev/gpu-pt', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: '0000:17:00.0' }, { pciAddress: '0000:98:00.0' }] };
const nicPool: PoolPlan = { name: 'nic-vf', resourceName: 'virtualio.dev/nic-vf', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, devices: [{ pciAddress: '0000:99:00.0' }] };
const vgpuPool: PoolPlan = { name: 'a16-vgpu', resourceName: 'virtualio.dev/a16-vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', count: 2, mdevType: 'nvidia-754', devices: [{ pciAddress: '0000:c1:00.0' }] };

// Two passthrough GPUs under different PCIe roots; the NIC's VFs only under the second one.
const ROOTS: Record<string, string> = { '0000:17': 'pci0000:16', '0000:98': 'pci0000:97', '0000:99': 'pci0000:97', '0000:c1': 'pci0000:c0' };
const pcieRoot = (addr: string): string | undefined => ROOTS[addr.slice(0, 7)];

function fn(addr: string, numa: number): Slice {
  return { id: addr, pool: 'gpu-pt', resourceName: gpuPool.resourceName, kind: 'Function', parent: addr, pciAddress: addr, iommuGroup: Number.parseInt(addr.slice(5, 7), 16), numaNode: numa, deviceNodes: [], health: 'Healthy' };
}
function vf(i: number, health: Slice['health'] = 'Healthy'): Slice {
  const addr = `0000:99:02.${i}`;
  return { id: addr, pool: 'nic-vf', resourceName: nicPool.resourceName, kind: 'VF', parent: '0000:99:00.0', pciAddress: addr, index: i, iommuGroup: 200 + i, numaNode: 1, deviceNodes: [], health, ...(health === 'Unhealthy' ? { reason: 'not bound to vfio-pci' } : {}) };
}
function mdev(i: number): Slice {
  const uuid = `c22f6d4d-4ecc-5030-93a3-eb7f1a400ee${i}`;
  return { id: uuid, pool: 'a16-vgpu', resourceName: vgpuPool.resourceName, kind: 'Mdev', parent: '0000:c1:00.0', mdevUuid: uuid, index: i, iommuGroup: 300 + i, numaNode: 0, deviceNodes: [], health: 'Healthy' };
}
const slices: Slice[] = [fn('0000:17:00.0', 0), fn('0000:98:00.0', 1), vf(0, 'Unhealthy'), vf(1), vf(2), vf(3), mdev(0), mdev(1)];
const inventory = new Map([
  ['0000:17:00.0', { pciAddress: '0000:17:00.0', vendorID: '10de', deviceID: '2236' }],
  ['0000:98:00.0', { pciAddress: '0000:98:00.0', vendorID: '10de', deviceID: '2236' }],
  ['0000:99:00.0', { pciAddress: '0000:99:00.0', vendorID: '15b3', deviceID: '101b' }],
  ['0000:99:02.1', { pciAddress: '0000:99:02.1', vendorID: '15b3', deviceID: '101c' }],
  ['0000:c1:00.0', { pciAddress: '0000:c1:00.0', vendorID: '10de', deviceID: '25b6' }],
]);

let publisher: ResourceSlicePublisher;
const ctl = new AbortController();
let running: Promise<void>;

interface Result { request: string; driver: string; pool: string; device: string }

async function createClaimAndPod(name: string, devices: Record<string, unknown>): Promise<void> {
  const claim = { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: NS }, spec: { devices } };
  const pod = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS },
    spec: {
      resourceClaims: [{ name: 'devs', resourceClaimName: name }],
      containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'devs' }] } }],
    },
  };
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }) });
}

async function allocation(name: string): Promise<Result[]> {
  return eventually(`claim ${name} allocated`, async () => {
    const c = JSON.parse(await kubectlOk(['get', 'resourceclaim', '-n', NS, name, '-o', 'json']));
    return c.status?.allocation?.devices?.results as Result[] | undefined;
  }, 60_000, 300);
}

async function published(): Promise<ResourceSliceObject[]> {
  const l = JSON.parse(await kubectlOk(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE}`, '-o', 'json']));
  return l.items;
}

function attr(objs: ResourceSliceObject[], device: string, name: string): unknown {
  for (const o of objs) for (const d of o.spec.devices ?? []) if (d.name === device) return d.attributes[name];
  return undefined;
}

beforeAll(async () => {
  await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } } }) });
  await kubectlOk(['patch', 'node', NODE, '--subresource=status', '--type=merge', '-p', JSON.stringify({
    status: {
      capacity: { cpu: '8', memory: '32Gi', pods: '110' }, allocatable: { cpu: '8', memory: '32Gi', pods: '110' },
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'test node', lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }],
    },
  })]);
  // The API server's TaintNodesByCondition admission taints every new Node not-ready; without a node
  // lifecycle controller nothing lifts it, so this test does (the node is "Ready" above).
  await kubectl(['taint', 'node', NODE, 'node.kubernetes.io/not-ready-']);
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }) });
  // Pods here name no service account: the global control plane runs without that admission plugin.
  for (const p of [gpuPool, nicPool, vgpuPool]) await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify(deviceClassFor(p.name)) });
  const kc = loadKubeConfig(clusterEnv().kubeconfig);
  publisher = new ResourceSlicePublisher({ store: new KubeResourceSliceStore(kc, NODE), node: NODE, logger: silentLogger(), resyncMs: 2000 });
  running = publisher.run(ctl.signal);
  publisher.setDesired(desiredPools(NODE, [gpuPool, nicPool, vgpuPool], slices, { devices: inventory, pcieRoot }));
  await eventually('three pools published', async () => {
    if ((await published()).length === 3) return true;
    if (publisher.lastError) throw new Error(publisher.lastError);
    return undefined;
  });
});

afterAll(async () => {
  ctl.abort();
  await running;
  await kubectl(['delete', 'pods,resourceclaims', '--all', '-n', NS, '--wait=false']);
  await kubectl(['delete', 'resourceslices', '--field-selector', `spec.nodeName=${NODE}`]);
  await kubectl(['delete', 'node', NODE]);
});

test('the published slices pass API validation with our attributes, pool bookkeeping and the taint', async () => {
  // Re-lists read back what was written as "the same": no rewrite, the generation stays 1.
  const passes = publisher.passes;
  await eventually('two more publisher passes', async () => (publisher.passes >= passes + 2 ? true : undefined), 20_000, 100);
  const objs = await published();
  expect(objs.map((o) => [o.spec.pool.name, o.spec.pool.generation, o.spec.pool.resourceSliceCount, (o.spec.devices ?? []).length]).sort()).toEqual([
    [`${NODE}/a16-vgpu`, 1, 1, 2], [`${NODE}/gpu-pt`, 1, 1, 2], [`${NODE}/nic-vf`, 1, 1, 4],
  ]);
  expect(attr(objs, 'fn-0000-98-00-0', ATTR_PCIE_ROOT)).toEqual({ string: 'pci0000:97' });
  expect(attr(objs, 'vf-0000-99-02-1', 'resource.kubernetes.io/pciBusID')).toEqual({ string: '0000:99:02.1' });
  expect(attr(objs, draDeviceName(mdev(0)), 'mdevUUID')).toEqual({ string: mdev(0).mdevUuid });
  const tainted = objs.flatMap((o) => o.spec.devices ?? []).find((d) => d.name === 'vf-0000-99-02-0');
  expect(tainted?.taints?.[0]).toMatchObject({ key: 'virtualio.dev/unhealthy', effect: 'NoSchedule' });
});

test('the scheduler allocates a GPU and a NIC VF under one PCIe root (matchAttribute)', async () => {
  await createClaimAndPod('gpu-and-nic', {
    requests: [
      { name: 'gpu', exactly: { deviceClassName: 'gpu-pt.virtualio.dev' } },
      { name: 'nic', exactly: { deviceClassName: 'nic-vf.virtualio.dev' } },
    ],
    constraints: [{ requests: ['gpu', 'nic'], matchAttribute: ATTR_PCIE_ROOT }],
  });
  const results = await allocation('gpu-and-nic');
  const gpu = results.find((r) => r.request === 'gpu');
  const nic = results.find((r) => r.request === 'nic');
  // Only the GPU at 0000:98:00.0 shares a root (pci0000:97) with the NIC; 0000:17:00.0 would not do.
  expect(gpu).toEqual({ request: 'gpu', driver: 'virtualio.dev', pool: `${NODE}/gpu-pt`, device: 'fn-0000-98-00-0' });
  expect(nic?.pool).toBe(`${NODE}/nic-vf`);
  expect(nic?.device).not.toBe('vf-0000-99-02-0'); // tainted: Unhealthy
  const pod = JSON.parse(await kubectlOk(['get', 'pod', '-n', NS, 'gpu-and-nic', '-o', 'json']));
  expect(pod.spec.nodeName).toBe(NODE);
});

test('an mdev vGPU claim selecting on the mdev type gets an mdev device', async () => {
  await createClaimAndPod('vgpu', {
    requests: [{ name: 'gpu', exactly: { deviceClassName: 'a16-vgpu.virtualio.dev', selectors: [{ cel: { expression: 'device.attributes["virtualio.dev"].mdevType == "nvidia-754"' } }] } }],
  });
  const [r] = await allocation('vgpu');
  expect(r?.device).toMatch(/^mdev-c22f6d4d-4ecc-5030-93a3-eb7f1a400ee[01]$/);
});

test('a claim that cannot be met stays unallocated and the pod carries the scheduler\'s reason', async () => {
  // Four VFs exist but one is tainted and one is taken by the aligned claim: three cannot be had.
  await createClaimAndPod('three-vfs', { requests: [{ name: 'nics', exactly: { deviceClassName: 'nic-vf.virtualio.dev', allocationMode: 'ExactCount', count: 3 } }] });
  const cond = await eventually('pod three-vfs unschedulable', async () => {
    const pod = JSON.parse(await kubectlOk(['get', 'pod', '-n', NS, 'three-vfs', '-o', 'json']));
    const c = (pod.status?.conditions ?? []).find((x: { type: string }) => x.type === 'PodScheduled');
    return c?.status === 'False' && c.reason === 'Unschedulable' ? (c as { message: string }) : undefined;
  }, 60_000, 300);
  expect(cond.message).toMatch(/cannot allocate all claims/);
  const claim = JSON.parse(await kubectlOk(['get', 'resourceclaim', '-n', NS, 'three-vfs', '-o', 'json']));
  expect(claim.status?.allocation).toBeUndefined();
});

test('once the VF is healthy again (taint gone, generation + 1) the waiting claim is allocated', async () => {
  publisher.setDesired(desiredPools(NODE, [gpuPool, nicPool, vgpuPool], slices.map((s) => (s.id === '0000:99:02.0' ? vf(0) : s)), { devices: inventory, pcieRoot }));
  const results = await allocation('three-vfs');
  expect(results).toHaveLength(3);
  expect(results.map((r) => r.device)).toContain('vf-0000-99-02-0');
  const nic = (await published()).find((o) => o.spec.pool.name === `${NODE}/nic-vf`);
  expect(nic?.spec.pool.generation).toBe(2);
});
