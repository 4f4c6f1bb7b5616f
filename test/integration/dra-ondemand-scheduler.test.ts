// On-demand pools against the real kube-scheduler (1.36, default feature gates), without a kubelet:
// the counter objects and partitionable devices our publisher writes pass the API server's
// validation; the scheduler fits claims of different vGPU types into one GPU's counters and refuses
// the one that no longer fits, with its reason; a pod waits for the Carved binding condition before
// it is bound (set here with the agent's own condition writer), and a CarveFailed condition makes the
// scheduler drop the allocation and try again.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { learnCapacity, offeredParents } from '../../device-plugin/src/carving/ondemand.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { CARVED_CONDITION, CARVE_FAILED_CONDITION, onDemandContent } from '../../device-plugin/src/dra/counters.js';
import { deviceClassFor, resourcePoolName, type ResourceSliceObject } from '../../device-plugin/src/dra/devices.js';
import { deviceConditionWriter, KubeResourceSliceStore } from '../../device-plugin/src/dra/kube.js';
import { ResourceSlicePublisher } from '../../device-plugin/src/dra/publisher.js';
import { loadKubeConfig } from '../../device-plugin/src/kube/adapter.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import type { InventoryDevice, PoolPlan } from '../../device-plugin/src/model.js';
import { FakeKernel, mdevGpuMixed } from '../sysfs/kernel.js';
import { clusterEnv, eventually, kubectl, kubectlOk } from '../support/cluster.js';

const NODE = 'ondemand-node-1';
const NS = 'ondemand-sched';
const GPU = '0000:3b:00.0';
const pool: PoolPlan = { name: 'a16-od', resourceName: 'virtualio.dev/a16-od', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: ['nvidia-745', 'nvidia-746', 'nvidia-747'] }, devices: [{ pciAddress: GPU }] };

let publisher: ResourceSlicePublisher;
const ctl = new AbortController();
let running: Promise<void>;
let base: string;

type ClaimJson = { metadata: { name: string; uid: string }; status?: { allocation?: { devices?: { results?: { pool: string; device: string; bindingConditions?: string[] }[] } }; reservedFor?: unknown[] } };
const claim = async (name: string): Promise<ClaimJson> => JSON.parse(await kubectlOk(['get', 'resourceclaim', '-n', NS, name, '-o', 'json'])) as ClaimJson;
type PodJson = { spec: { nodeName?: string }; status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } };
const pod = async (name: string): Promise<PodJson> => JSON.parse(await kubectlOk(['get', 'pod', '-n', NS, name, '-o', 'json'])) as PodJson;

async function vm(name: string, type: string): Promise<void> {
  const c = {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: NS },
    spec: { devices: { requests: [{ name: 'vgpu', exactly: { deviceClassName: 'a16-od.virtualio.dev', selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${type}"` } }] } }] } },
  };
  const p = {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS },
    spec: { resourceClaims: [{ name: 'gpu', resourceClaimName: name }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu' }] } }] },
  };
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [c, p] }) });
}

const allocated = (name: string): Promise<{ pool: string; device: string; bindingConditions?: string[] }> =>
  eventually(`claim ${name} allocated`, async () => (await claim(name)).status?.allocation?.devices?.results?.[0], 60_000, 250);

beforeAll(async () => {
  await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } } }) });
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  await kubectlOk(['patch', 'node', NODE, '--subresource=status', '--type=merge', '-p', JSON.stringify({
    status: { capacity: { cpu: '8', memory: '32Gi', pods: '110' }, allocatable: { cpu: '8', memory: '32Gi', pods: '110' }, conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'test node', lastHeartbeatTime: now, lastTransitionTime: now }] },
  })]);
  await kubectl(['taint', 'node', NODE, 'node.kubernetes.io/not-ready-']);
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }) });
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify(deviceClassFor(pool.name)) });
  // The GPU as the agent scans it from the simulated kernel (16 GB shared by the types).
  base = mkdtempSync(join(tmpdir(), 'vio-od-sched-'));
  const k = await FakeKernel.create(join(base, 'sys'), join(base, 'dev'));
  await k.addFunction(mdevGpuMixed(GPU));
  const inv = await scan(join(base, 'sys'), { devRoot: join(base, 'dev') });
  const devices = new Map<string, InventoryDevice>(inv.devices.map((d) => [d.pciAddress, d]));
  const offered = offeredParents(pool, devices, learnCapacity({}, [GPU], devices));
  const kc = loadKubeConfig(clusterEnv().kubeconfig);
  publisher = new ResourceSlicePublisher({ store: new KubeResourceSliceStore(kc, NODE), node: NODE, logger: silentLogger(), resyncMs: 2000 });
  running = publisher.run(ctl.signal);
  publisher.setDesired([{ pool: pool.name, poolName: resourcePoolName(NODE, pool.name), ...onDemandContent(NODE, pool, offered, devices, new Set(), { devices }) }]);
  await eventually('the on-demand pool published', async () => {
    const l = JSON.parse(await kubectlOk(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE}`, '-o', 'json'])) as { items: ResourceSliceObject[] };
    if (l.items.length === 2) return true;
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
  if (base) rmSync(base, { recursive: true, force: true });
});

test('the counter object and the devices pass validation and read back as written (no rewrite)', async () => {
  const passes = publisher.passes;
  await eventually('two more publisher passes', async () => (publisher.passes >= passes + 2 ? true : undefined), 20_000, 100);
  const l = JSON.parse(await kubectlOk(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE}`, '-o', 'json'])) as { items: ResourceSliceObject[] };
  expect(l.items.map((o) => [o.spec.pool.generation, o.spec.pool.resourceSliceCount, o.spec.sharedCounters?.length ?? 0, o.spec.devices?.length ?? 0]).sort()).toEqual([[1, 2, 0, 14], [1, 2, 1, 0]]);
  expect(publisher.lastDropped).toBeUndefined();
});

test('an 8Q and a 4Q fit one GPU; a second 8Q no longer does and waits with the scheduler reason', async () => {
  await vm('vm-8q', 'nvidia-747');
  const a = await allocated('vm-8q');
  expect(a.bindingConditions).toEqual([CARVED_CONDITION]);
  await vm('vm-4q', 'nvidia-746');
  await allocated('vm-4q');
  await vm('vm-8q-late', 'nvidia-747');
  const cond = await eventually('vm-8q-late unschedulable', async () => {
    const c = (await pod('vm-8q-late')).status?.conditions?.find((x) => x.type === 'PodScheduled');
    return c?.status === 'False' && c.reason === 'Unschedulable' ? c : undefined;
  }, 60_000, 250);
  expect(cond.message).toMatch(/cannot allocate all claims/);
  expect((await claim('vm-8q-late')).status?.allocation).toBeUndefined();
});

test('a pod is bound only once its device is Carved', async () => {
  expect((await pod('vm-8q')).spec.nodeName).toBeUndefined(); // the scheduler waits in PreBind
  const c = await claim('vm-8q');
  const r = c.status!.allocation!.devices!.results![0]!;
  const set = deviceConditionWriter(loadKubeConfig(clusterEnv().kubeconfig));
  await set({ namespace: NS, name: 'vm-8q', uid: c.metadata.uid }, { driver: 'virtualio.dev', pool: r.pool, device: r.device }, { type: CARVED_CONDITION, status: 'True', reason: 'Carved', message: 'test' });
  await eventually('vm-8q bound', async () => ((await pod('vm-8q')).spec.nodeName === NODE ? true : undefined), 60_000, 250);
});

test('CarveFailed makes the scheduler drop the allocation and try again', async () => {
  const c = await claim('vm-4q');
  const r = c.status!.allocation!.devices!.results![0]!;
  const set = deviceConditionWriter(loadKubeConfig(clusterEnv().kubeconfig));
  await set({ namespace: NS, name: 'vm-4q', uid: c.metadata.uid }, { driver: 'virtualio.dev', pool: r.pool, device: r.device }, { type: CARVE_FAILED_CONDITION, status: 'True', reason: 'CarveFailed', message: 'type no longer fits' });
  // The scheduler deallocates it (status.devices cleared with it) and allocates it again.
  await eventually('vm-4q deallocated or re-allocated without the failure', async () => {
    const now = await claim('vm-4q');
    const failed = (now as unknown as { status?: { devices?: { conditions?: { type: string }[] }[] } }).status?.devices?.some((d) => d.conditions?.some((x) => x.type === CARVE_FAILED_CONDITION));
    return failed ? undefined : true;
  }, 90_000, 250);
  expect((await pod('vm-4q')).spec.nodeName).toBeUndefined();
});
