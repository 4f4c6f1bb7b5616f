// The REAL operator (in process) and the REAL agent process with --dra, in cluster mode on a fake
// sysfs kernel, with a REAL kubelet (fake CRI) and the real scheduler: a VirtualIODevice with
// frontEnd DRA selecting the node makes the operator write the plan and the pool's DeviceClass; the
// agent carves the pool (GPU and its audio companion to vfio-pci) but serves it through DRA only —
// no extended resource on the Node, one device in a ResourceSlice instead; a pod's claim for the
// pool's DeviceClass is allocated by the scheduler and prepared by the agent when the kubelet asks,
// and the container config the runtime records carries the agent's CDI device. The claim counts as
// an allocation in the VirtualIONode status and, through the operator, in the VirtualIODevice status
// and `kubectl get viod` (default and wide columns), exactly like a device-plugin allocation; it
// leaves both when the pod is deleted. Needs root (the kubelet's folders are fixed); without root the
// suite is reported as skipped, never as passed.
import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Pool } from '../../operator/src/api/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, FIELD_MANAGER, VirtualIODevices } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel, gpuWithAudio } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(240_000);

const NODE = '127.0.0.1';
const GPU_FN = '0000:3b:00.0';
const GPU_AUDIO = '0000:3b:00.1';
const suite = canRunKubelet() ? describe : describe.skip;

let cp: ControlPlane;
let kubelet: Kubelet;
let kernel: KernelHandle;
let agent: AgentProcess | undefined;
let base: string;
let stopOperator: (() => Promise<void>) | undefined;

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });

const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE_LABEL = 'virtualio.dev/dra-e2e';
// The pool an admin writes: the operator plans it on the labelled node and owns its DeviceClass.
const viod: Pool = {
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'gpu-dra' },
  spec: { class: 'GPU', frontEnd: 'DRA', nodeSelector: { matchLabels: { [NODE_LABEL]: 'yes' } }, deviceSelector: { pciAddresses: [GPU_FN] }, carving: { mode: 'Passthrough' } },
} as Pool;

/**
 * One `kubectl get viod gpu-dra` row as column → cell, cut at the header's column starts (kubectl
 * aligns cells under their headers and prints an empty cell for a printer column whose field is
 * absent, e.g. CARVED on a pool that carves nothing on demand; such a cell reads '').
 */
async function viodRow(wide: boolean): Promise<Record<string, string>> {
  const out = (await kubectl(['get', 'viod', 'gpu-dra', ...(wide ? ['-o', 'wide'] : [])])).trimEnd().split('\n');
  expect(out).toHaveLength(2);
  const starts = [...out[0]!.matchAll(/\S+/g)].map((m) => ({ name: m[0], at: m.index }));
  return Object.fromEntries(starts.map((h, i) => [h.name, out[1]!.slice(h.at, starts[i + 1]?.at).trim()]));
}

type ViodStatus = {
  nodes?: number; capacity?: number; allocatable?: number; allocated?: number;
  nodeStatuses?: { node: string; allocated: number; state: string }[];
  allocations?: { node: string; namespace: string; pod: string; slices: string[] }[];
  conditions?: { type: string; status: string }[];
};
const viodStatus = async (): Promise<ViodStatus> => (JSON.parse(await kubectl(['get', 'viod', 'gpu-dra', '-o', 'json'])) as { status?: ViodStatus }).status ?? {};

suite(`the agent with --dra serves a pool through DRA to a real kubelet${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    cp = await startControlPlane({ scheduler: true });
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev'], 60);
    kubelet = await startKubelet(cp);
    // TaintNodesByCondition taints the new Node not-ready and no node lifecycle controller runs here.
    // Verified, not fire-and-forget: a pod left Pending on this taint never reaches the kubelet.
    await untaintedNode(kubectl, NODE);
    // The driver's folder and checkpoint live under the machine's kubelet root: start from nothing.
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    base = mkdtempSync(join(tmpdir(), 'vio-dra-agent-'));
    const sys = join(base, 'sys');
    const dev = join(base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    for (const f of gpuWithAudio(GPU_FN, GPU_AUDIO, { group: 61, numaNode: 0 })) await k.addFunction(f);
    kernel = await startKernel(sys, dev);
    // The real operator, in process, on the admin kubeconfig: it makes the node's VirtualIONode, plans
    // the pool there from the inventory the agent reports, writes the DeviceClass and rolls the
    // pool's status up from the agent's report.
    await kubectl(['label', 'node', NODE, `${NODE_LABEL}=yes`]);
    await kubectl(['create', 'namespace', 'virtualio-system']).catch(() => '');
    const kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
    const ac = new AbortController();
    const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'dra-agent-e2e', clock: systemClock, log });
    const run = new Operator({
      kube, clock: systemClock, log, events,
      kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
      tuning: { kubevirtRecheckMs: 60_000, debounceMs: 50 },
    }).run(ac.signal);
    stopOperator = async () => {
      ac.abort();
      await run;
    };
    await kube.create(VirtualIODevices, viod);
    mkdirSync(join(base, 'devinfo'));
    agent = await startAgent([
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--pod-resources-socket', kubelet.podResourcesSocket,
      '--devinfo-dir', join(base, 'devinfo'), '--cdi-dir', join(base, 'cdi'), '--metrics-address', '127.0.0.1:0',
      '--rescan-interval', '2s', '--dra', '--kubelet-dir', kubelet.rootDir,
    ]);
  }, 20 * 60_000);

  afterAll(async () => {
    await agent?.stop();
    await stopOperator?.();
    await kubelet?.stop();
    await kernel?.stop();
    await cp?.stop();
    if (base) rmSync(base, { recursive: true, force: true });
    if (kubelet) rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
  });

  test('the carved GPU is published as one DRA device, and not as an extended resource', async () => {
    const items = await eventually('our ResourceSlice with the GPU', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json']));
      // Published at once, tainted Unhealthy until carving has bound the GPU (and its audio function) to vfio-pci.
      return l.items.length === 1 && l.items[0].spec.devices.length === 1 && !l.items[0].spec.devices[0].taints ? l.items : undefined;
    }, 90_000, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const d = items[0].spec.devices[0];
    expect(d.name).toBe('fn-0000-3b-00-0');
    expect(d.attributes['resource.kubernetes.io/pciBusID']).toEqual({ string: GPU_FN });
    expect(d.attributes.iommuGroup).toEqual({ int: 61 });
    const n = JSON.parse(await kubectl(['get', 'node', NODE, '-o', 'json']));
    expect(n.status.capacity['virtualio.dev/gpu-dra']).toBeUndefined();
    // The pool is Ready once the kubelet registered the DRA driver (no device plugin socket involved).
    const pool = await eventually('pool gpu-dra Ready in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as { status?: { pools?: { name: string; state: string; registered: boolean; capacity: number }[] } };
      const p = v.status?.pools?.find((x) => x.name === 'gpu-dra');
      return p?.state === 'Ready' ? p : undefined;
    }, 60_000, 250);
    expect(pool).toMatchObject({ registered: true, registeredVia: 'DRA', capacity: 1 });
  });

  test('the plan and the DeviceClass come from the operator; kubectl get viod shows the pool Ready with nothing allocated', async () => {
    type VN = { spec?: { pools?: Record<string, unknown>[] }; metadata: { managedFields?: { manager: string; fieldsV1?: { 'f:spec'?: unknown } }[] } };
    const vn = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '--show-managed-fields', '-o', 'json'])) as VN;
    expect(vn.spec?.pools).toEqual([expect.objectContaining({ name: 'gpu-dra', resourceName: 'virtualio.dev/gpu-dra', class: 'GPU', mode: 'Passthrough', frontEnd: 'DRA', devices: [{ pciAddress: GPU_FN }] })]);
    expect(vn.metadata.managedFields?.filter((m) => m.fieldsV1?.['f:spec']).map((m) => m.manager)).toEqual([FIELD_MANAGER]);
    const dc = JSON.parse(await kubectl(['get', 'deviceclass', 'gpu-dra.virtualio.dev', '-o', 'json'])) as { metadata: { ownerReferences?: { kind: string; name: string }[] } };
    expect(dc.metadata.ownerReferences).toEqual([expect.objectContaining({ kind: 'VirtualIODevice', name: 'gpu-dra' })]);
    const row = await eventually('viod gpu-dra Ready with capacity 1', async () => {
      const r = await viodRow(false);
      return r.READY === 'True' && r.CAPACITY === '1' ? r : undefined;
    }, 60_000, 250);
    expect(row).toMatchObject({ NAME: 'gpu-dra', CLASS: 'GPU', RESOURCE: 'virtualio.dev/gpu-dra', MODE: 'Passthrough', NODES: '1', CAPACITY: '1', ALLOCATED: '0' });
    expect(await viodRow(true)).toMatchObject({ FRONTEND: 'DRA', CAPACITY: '1', ALLOCATED: '0', CARVED: '' });
    const st = await viodStatus();
    expect(st).toMatchObject({ nodes: 1, capacity: 1, allocatable: 1, allocated: 0, nodeStatuses: [{ node: NODE, allocated: 0, state: 'Ready' }] });
    expect(st.allocations).toBeUndefined();
  });

  test('a pod with a claim runs; the agent prepared it and the runtime got its CDI device', async () => {
    const claim = { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm2-gpu', namespace: 'default' }, spec: { devices: { requests: [{ name: 'gpu', exactly: { deviceClassName: 'gpu-dra.virtualio.dev' } }] } } };
    const pod = {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm2-dra', namespace: 'default' },
      spec: { resourceClaims: [{ name: 'gpu', resourceClaimName: 'vm2-gpu' }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu' }] } }] },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [claim, pod] }));
    await eventually('the pod to run', async () => {
      const p = JSON.parse(await kubectl(['get', 'pod', 'virt-launcher-vm2-dra', '-o', 'json']));
      return p.status?.phase === 'Running' ? true : undefined;
    }, 90_000, 250).catch(async (err: unknown) => {
      const p = await kubectl(['get', 'pod', 'virt-launcher-vm2-dra', '-o', 'yaml']).catch(() => '');
      throw new Error(`${String(err)}\n--- pod ---\n${p}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm2-gpu', '-o', 'json'])).metadata.uid as string;
    const rec = kubelet.createdContainers().find((r) => r.podName === 'virt-launcher-vm2-dra' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${uid}-fn-0000-3b-00-0` }]);
    const spec = JSON.parse(readFileSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`), 'utf8'));
    const nodes = spec.devices[0].containerEdits.deviceNodes.map((x: { path: string }) => x.path) as string[];
    expect(nodes.slice(0, 2)).toEqual(['/dev/vfio/vfio', '/dev/vfio/61']);
    expect(nodes.slice(2)).toEqual([expect.stringMatching(/^\/dev\/vfio\/devices\/vfio\d+$/)]); // its vfio cdev (number: bind order)
    const ckpt = JSON.parse(readFileSync(join(kubelet.rootDir, 'plugins/virtualio.dev/checkpoint.json'), 'utf8'));
    expect(ckpt.claims.map((c: { uid: string; devices: { sliceId: string }[] }) => [c.uid, c.devices.map((x) => x.sliceId)])).toEqual([[uid, [GPU_FN]]]);
  });

  test('the VirtualIONode status counts the prepared claim as an allocation of the pool, like a device-plugin one', async () => {
    type VN = { status?: { slices?: { id: string; allocation?: { namespace: string; pod: string } }[]; pools?: { name: string; allocated?: number }[] } };
    const vn = await eventually('the claim in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as VN;
      return v.status?.pools?.find((p) => p.name === 'gpu-dra')?.allocated === 1 ? v : undefined;
    }, 60_000, 250);
    expect(vn.status?.slices?.find((x) => x.id === GPU_FN)?.allocation).toMatchObject({ namespace: 'default', pod: 'virt-launcher-vm2-dra' });
  });

  test('the operator counts the prepared claim in the VirtualIODevice status and kubectl get viod, like a device-plugin allocation', async () => {
    const st = await eventually('allocated 1 in the VirtualIODevice status', async () => {
      const s = await viodStatus();
      return s.allocated === 1 ? s : undefined;
    }, 60_000, 250);
    expect(st).toMatchObject({ nodes: 1, capacity: 1, allocatable: 1, allocated: 1, nodeStatuses: [{ node: NODE, allocated: 1, state: 'Ready' }] });
    expect(st.allocations).toEqual([{ node: NODE, namespace: 'default', pod: 'virt-launcher-vm2-dra', slices: [GPU_FN] }]);
    expect(await viodRow(false)).toMatchObject({ NAME: 'gpu-dra', NODES: '1', CAPACITY: '1', ALLOCATED: '1', READY: 'True' });
    expect(await viodRow(true)).toMatchObject({ FRONTEND: 'DRA', CAPACITY: '1', ALLOCATED: '1', READY: 'True' });
  });

  test('deleting the pod unprepares the claim, and the allocation leaves the status', async () => {
    const uid = JSON.parse(await kubectl(['get', 'resourceclaim', 'vm2-gpu', '-o', 'json'])).metadata.uid as string;
    await kubectl(['delete', 'pod', 'virt-launcher-vm2-dra', '--wait=false']);
    await eventually('the claim unprepared', async () => {
      const ckpt = JSON.parse(readFileSync(join(kubelet.rootDir, 'plugins/virtualio.dev/checkpoint.json'), 'utf8'));
      return ckpt.claims.length === 0 ? true : undefined;
    }, 90_000, 250);
    expect(() => readFileSync(join(base, 'cdi', `virtualio.dev-claim_${uid}.json`))).toThrow();
    await eventually('no allocation in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as { status?: { pools?: { name: string; allocated?: number }[] } };
      return v.status?.pools?.find((p) => p.name === 'gpu-dra')?.allocated === 0 ? true : undefined;
    }, 60_000, 250);
    // And through the operator: the count drops to 0 in the pool's status and in both table views.
    const st = await eventually('allocated 0 in the VirtualIODevice status', async () => {
      const s = await viodStatus();
      return s.allocated === 0 ? s : undefined;
    }, 60_000, 250);
    expect(st).toMatchObject({ capacity: 1, allocated: 0, nodeStatuses: [{ node: NODE, allocated: 0 }] });
    expect(st.allocations).toBeUndefined();
    expect(await viodRow(false)).toMatchObject({ CAPACITY: '1', ALLOCATED: '0' });
    expect(await viodRow(true)).toMatchObject({ FRONTEND: 'DRA', ALLOCATED: '0' });
  });
});
