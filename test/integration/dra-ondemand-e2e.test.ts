// On-demand mediated devices (issue 19) on the REAL kube-scheduler, kube-controller-manager (the
// ResourceClaim controller makes each pod's claim from its template and removes it with the pod)
// and kubelet (fake CRI), with the REAL operator (in process) and the agent process with --dra on
// the simulated kernel, whose GPUs share 16 GB of framebuffer among their vGPU types
// (test/sysfs/builders.ts mdevGpuMixed). A pool with `carving.onDemand` carves nothing ahead; it
// publishes what each GPU could carve (counters + partitionable devices with binding conditions).
// Every assertion about carving reads the kernel's own record of writes (the witness), not the agent:
//  * two VM pods asking for different types on one GPU are both carved there and run;
//  * an agent restart neither removes nor re-creates them, and carving works after it;
//  * a third asking for a type that no longer fits stays Pending with the scheduler's reason;
//  * deleting a pod removes its mdev (after its claim is unprepared), and the third pod then runs;
//  * 20 claims racing for 2 GPUs end with exactly the 8 that fit running, each on an mdev the kernel
//    created once, no create refused (the counters never over-promised), and no orphan mdev once
//    the pods are gone.
// Needs root (the kubelet's folders are fixed); without root the suite is reported as skipped.
import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { Pool } from '../../operator/src/api/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, VirtualIODevices } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel, mdevGpuMixed } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(300_000);

const NODE = '127.0.0.1';
const GPU_A = '0000:3b:00.0';
const GPU_B = '0000:3c:00.0';
const TYPES = { '2Q': 'nvidia-745', '4Q': 'nvidia-746', '8Q': 'nvidia-747' } as const;
const UNITS: Record<string, number> = { 'nvidia-745': 2, 'nvidia-746': 4, 'nvidia-747': 8 };
const suite = canRunKubelet() ? describe : describe.skip;

let cp: ControlPlane;
let kubelet: Kubelet;
let kernel: KernelHandle;
let agent: AgentProcess | undefined;
let base: string;
let sys: string;
let stopOperator: (() => Promise<void>) | undefined;
let agentArgs: string[] = [];

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE_LABEL = 'virtualio.dev/ondemand-e2e';

const viod = (gpus: string[]): Pool => ({
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'a16' },
  spec: {
    class: 'GPU', frontEnd: 'DRA', nodeSelector: { matchLabels: { [NODE_LABEL]: 'yes' } }, deviceSelector: { pciAddresses: gpus },
    carving: { mode: 'Mediated', onDemand: { mdevTypes: Object.values(TYPES) } },
  },
} as unknown as Pool);

/** A claim template per vGPU type: what a VM's spec.resourceClaims names. */
function template(size: keyof typeof TYPES): unknown {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: `vgpu-${size.toLowerCase()}`, namespace: 'default' },
    spec: { spec: { devices: { requests: [{ name: 'vgpu', exactly: { deviceClassName: 'a16.virtualio.dev', selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${TYPES[size]}"` } }] } }] } } },
  };
}

/** A virt-launcher-shaped pod whose claim comes from the template of `size`. */
function vmPod(name: string, size: keyof typeof TYPES): unknown {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: 'ondemand-vm' } },
    spec: {
      resourceClaims: [{ name: 'gpu', resourceClaimTemplateName: `vgpu-${size.toLowerCase()}` }],
      containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'gpu' }] } }],
      terminationGracePeriodSeconds: 0,
    },
  };
}

type PodJson = { metadata: { name: string }; status?: { phase?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[]; resourceClaimStatuses?: { name: string; resourceClaimName?: string }[] } };
const getPod = async (name: string): Promise<PodJson> => JSON.parse(await kubectl(['get', 'pod', name, '-o', 'json'])) as PodJson;
type ClaimJson = { metadata: { name: string; uid: string }; status?: { allocation?: { devices?: { results?: { pool: string; device: string }[] } }; devices?: { device: string; conditions?: { type: string; status: string }[] }[] } };

/** The mdev UUID a running pod's claim was allocated (its device is `mdev-<uuid>`). */
async function mdevOfPod(name: string): Promise<{ uuid: string; claim: ClaimJson }> {
  const p = await getPod(name);
  const claimName = p.status?.resourceClaimStatuses?.[0]?.resourceClaimName;
  if (!claimName) throw new Error(`pod ${name} has no claim yet`);
  const claim = JSON.parse(await kubectl(['get', 'resourceclaim', claimName, '-o', 'json'])) as ClaimJson;
  const device = claim.status?.allocation?.devices?.results?.[0]?.device ?? '';
  return { uuid: device.replace(/^mdev-/, ''), claim };
}

/**
 * What the kernel recorded (paths as the kernel resolved them, under devices/): mdev creates that
 * were applied, creates refused for lack of room or any reason but one, and removes applied. The
 * one reason left out: the simulated kernel applies a write after the writer's write() returned
 * (a FIFO), so a rescan right after a create may not show the mdev yet and the agent's next pass
 * writes the same create again, which the kernel refuses with "exists" — a repeat, not a carve.
 */
function witness(): { created: { parent: string; type: string; uuid: string }[]; refused: string[]; removed: string[] } {
  const created: { parent: string; type: string; uuid: string }[] = [];
  const refused: string[] = [];
  const removed: string[] = [];
  for (const e of kernel.events) {
    const c = /([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\/mdev_supported_types\/([^/]+)\/create$/.exec(e.path);
    if (c && e.ok) created.push({ parent: c[1]!, type: c[2]!, uuid: e.value.trim() });
    if (c && !e.ok && !/ exists$/.test(e.error ?? '')) refused.push(`${e.value.trim()}: ${e.error ?? ''}`);
    const r = /([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\/remove$/.exec(e.path);
    if (r && e.ok) removed.push(r[1]!);
  }
  return { created, refused, removed };
}

/** The node's status as the agent reports it (for failure messages). */
async function nodeStatus(): Promise<string> {
  const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json']).catch(() => '{}')) as { status?: { slices?: unknown; pools?: unknown; conditions?: unknown } };
  return JSON.stringify({ slices: v.status?.slices, pools: v.status?.pools, conditions: v.status?.conditions }, null, 1);
}

/** mdevs that exist now, per parent, with their type (the kernel's tree). */
async function mdevsNow(): Promise<Map<string, { parent: string; type: string }>> {
  const inv = await scan(sys, { devRoot: join(base, 'dev') });
  const out = new Map<string, { parent: string; type: string }>();
  for (const d of inv.devices) for (const m of d.mdevs ?? []) out.set(m.uuid, { parent: d.pciAddress, type: m.type ?? '' });
  return out;
}

async function waitRunning(name: string): Promise<void> {
  await eventually(`pod ${name} Running`, async () => ((await getPod(name)).status?.phase === 'Running' ? true : undefined), 120_000, 250).catch(async (err: unknown) => {
    const p = await kubectl(['get', 'pod', name, '-o', 'yaml']).catch(() => '');
    throw new Error(`${String(err)}\n--- pod ---\n${p}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
  });
}

suite(`on-demand vGPUs: carved when the scheduler allocates a claim, removed when the VM is gone${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    cp = await startControlPlane({ scheduler: true, controllerManager: true });
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev', 'virtualiodevices.virtualio.dev'], 60);
    kubelet = await startKubelet(cp);
    await untaintedNode(kubectl, NODE, (k) => k.startsWith('node.kubernetes.io/'));
    await eventually('the default service account', async () => ((await kubectl(['get', 'serviceaccount', 'default', '-o', 'name']).catch(() => '')) ? true : undefined), 60_000, 250);
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    base = mkdtempSync(join(tmpdir(), 'vio-ondemand-'));
    sys = join(base, 'sys');
    const dev = join(base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(mdevGpuMixed(GPU_A, { numaNode: 0 }));
    await k.addFunction(mdevGpuMixed(GPU_B, { numaNode: 1 }));
    kernel = await startKernel(sys, dev);
    await kubectl(['label', 'node', NODE, `${NODE_LABEL}=yes`]);
    await kubectl(['create', 'namespace', 'virtualio-system']).catch(() => '');
    const kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
    const ac = new AbortController();
    const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'ondemand-e2e', clock: systemClock, log });
    const run = new Operator({
      kube, clock: systemClock, log, events,
      kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
      tuning: { kubevirtRecheckMs: 60_000, debounceMs: 50 },
    }).run(ac.signal);
    stopOperator = async () => {
      ac.abort();
      await run;
    };
    await kube.create(VirtualIODevices, viod([GPU_A]));
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [template('2Q'), template('4Q'), template('8Q')] }));
    mkdirSync(join(base, 'devinfo'));
    agentArgs = [
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--pod-resources-socket', kubelet.podResourcesSocket,
      '--devinfo-dir', join(base, 'devinfo'), '--cdi-dir', join(base, 'cdi'), '--metrics-address', '127.0.0.1:0',
      '--rescan-interval', '2s', '--dra', '--kubelet-dir', kubelet.rootDir, '--release-grace', '2s',
    ];
    agent = await startAgent(agentArgs);
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

  test('the pool publishes what GPU A could carve: one counter set, a device per creatable instance, nothing carved', async () => {
    type Slice = { spec: { pool: { name: string; resourceSliceCount: number }; sharedCounters?: { name: string; counters: Record<string, { value: string }> }[]; devices?: { name: string; bindingConditions?: string[] }[] } };
    const items = await eventually('the on-demand pool published', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json'])) as { items: Slice[] };
      return l.items.length === 2 && l.items.some((s) => s.spec.sharedCounters) ? l.items : undefined;
    }, 90_000, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const counters = items.find((s) => s.spec.sharedCounters)!.spec.sharedCounters!;
    expect(counters).toEqual([{ name: 'parent-0000-3b-00-0', counters: { units: { value: '8' }, 'type-0': { value: '8' }, 'type-1': { value: '4' }, 'type-2': { value: '2' } } }]);
    const devices = items.flatMap((s) => s.spec.devices ?? []);
    expect(devices).toHaveLength(8 + 4 + 2);
    expect(devices.every((d) => d.bindingConditions?.[0] === 'virtualio.dev/Carved')).toBe(true);
    expect(witness().created).toEqual([]);
  });

  test('two VM pods asking for different types on one GPU are both carved there, and run', async () => {
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [vmPod('vm-8q', '8Q'), vmPod('vm-4q', '4Q')] }));
    await waitRunning('vm-8q');
    await waitRunning('vm-4q');
    const a = await mdevOfPod('vm-8q');
    const b = await mdevOfPod('vm-4q');
    // The kernel created exactly these two mdevs, of the types asked, on GPU A.
    expect(witness().created.sort((x, y) => x.type.localeCompare(y.type))).toEqual([
      { parent: GPU_A, type: TYPES['4Q'], uuid: b.uuid },
      { parent: GPU_A, type: TYPES['8Q'], uuid: a.uuid },
    ]);
    expect([...(await mdevsNow()).keys()].sort()).toEqual([a.uuid, b.uuid].sort());
    // The scheduler bound each pod only once its claim said the device was carved.
    for (const c of [a.claim, b.claim]) {
      expect(c.status?.devices?.[0]?.conditions).toEqual([expect.objectContaining({ type: 'virtualio.dev/Carved', status: 'True' })]);
    }
    // The runtime got the claim's CDI device, as for any DRA device.
    const rec = kubelet.createdContainers().find((r) => r.podName === 'vm-8q' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${a.claim.metadata.uid}-mdev-${a.uuid}` }]);
    // The node's status says which claim caused which carving, also in kubectl get viod.
    type VN = { status?: { summary?: { carvedOnDemand?: number }; slices?: { id: string; mdevType?: string; carvedFor?: { claim: string } }[] } };
    const vn = await eventually('carvings in VirtualIONode status', async () => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as VN;
      return v.status?.summary?.carvedOnDemand === 2 ? v : undefined;
    }, 60_000, 250);
    expect(vn.status?.slices?.find((s) => s.id === a.uuid)).toMatchObject({ mdevType: TYPES['8Q'], carvedFor: { claim: a.claim.metadata.name } });
    const table = (await kubectl(['get', 'vion', NODE])).trim().split('\n');
    const row = Object.fromEntries(table[0]!.split(/\s+/).map((h, i) => [h, table[1]!.split(/\s+/)[i]]));
    expect(row).toMatchObject({ CARVED: '2' });
    // And through the operator, in the pool's status and `kubectl get viod -o wide`.
    const st = await eventually('carvings in the VirtualIODevice status', async () => {
      const v = JSON.parse(await kubectl(['get', 'viod', 'a16', '-o', 'json'])) as { status?: { carvedOnDemand?: number; carvings?: { slice: string; claim: string; mdevType?: string }[] } };
      return v.status?.carvedOnDemand === 2 ? v.status : undefined;
    }, 60_000, 250);
    expect(st.carvings).toEqual(expect.arrayContaining([expect.objectContaining({ node: NODE, slice: a.uuid, mdevType: TYPES['8Q'], namespace: 'default', claim: a.claim.metadata.name })]));
    const wide = (await kubectl(['get', 'viod', 'a16', '-o', 'wide'])).trim().split('\n');
    expect(Object.fromEntries(wide[0]!.split(/\s+/).map((h, i) => [h, wide[1]!.split(/\s+/)[i]]))).toMatchObject({ FRONTEND: 'DRA', CARVED: '2' });
  });

  test('an agent restart neither loses nor doubles a carving; the first carve after it works', async () => {
    const a = await mdevOfPod('vm-8q');
    const b = await mdevOfPod('vm-4q');
    const before = witness();
    type VN = { status?: { slices?: { id: string; carvedFor?: { since: string } }[] } };
    const since = async (): Promise<(string | undefined)[]> => {
      const v = JSON.parse(await kubectl(['get', 'virtualionode', NODE, '-o', 'json'])) as VN;
      return [a.uuid, b.uuid].map((u) => v.status?.slices?.find((x) => x.id === u)?.carvedFor?.since);
    };
    const recorded = await since();
    expect(recorded.every(Boolean)).toBe(true);
    await agent!.stop();
    agent = await startAgent(agentArgs);
    // A carve after the restart: by the time its pod runs, the restarted agent has listed the claims
    // and carved in a full cycle, with both earlier claims known.
    await kubectl(['apply', '-f', '-'], JSON.stringify(vmPod('vm-2q', '2Q')));
    await waitRunning('vm-2q');
    const c = await mdevOfPod('vm-2q');
    const after = witness();
    expect(after.created.slice(before.created.length)).toEqual([{ parent: GPU_A, type: TYPES['2Q'], uuid: c.uuid }]);
    expect(after.removed).toEqual(before.removed);
    expect((await getPod('vm-8q')).status?.phase).toBe('Running');
    expect((await getPod('vm-4q')).status?.phase).toBe('Running');
    expect(await since()).toEqual(recorded); // recorded before the create, kept across the restart
    // Removed again once its VM is gone, by the restarted agent.
    await kubectl(['delete', 'pod', 'vm-2q', '--wait=false']);
    await eventually('the 2Q mdev removed by the kernel', async () => (witness().removed.includes(c.uuid) ? true : undefined), 120_000, 250);
    expect(witness().refused).toEqual([]);
  });

  test('a third asking for a type that no longer fits waits, with the scheduler saying why', async () => {
    await kubectl(['apply', '-f', '-'], JSON.stringify(vmPod('vm-8q-late', '8Q')));
    const cond = await eventually('vm-8q-late unschedulable', async () => {
      const c = (await getPod('vm-8q-late')).status?.conditions?.find((x) => x.type === 'PodScheduled');
      return c?.status === 'False' && c.reason === 'Unschedulable' ? c : undefined;
    }, 90_000, 250);
    expect(cond.message).toMatch(/cannot allocate all claims/);
    expect(witness().created.filter((x) => x.type === TYPES['8Q'])).toHaveLength(1); // nothing carved for it
    expect(witness().refused).toEqual([]);
  });

  test('deleting a pod removes its mdev once its claim is unprepared; the waiting pod then gets the room', async () => {
    const a = await mdevOfPod('vm-8q');
    const b = await mdevOfPod('vm-4q');
    const failure = async (err: unknown): Promise<never> => {
      const claims = await kubectl(['get', 'resourceclaims', '-o', 'wide']).catch(() => '');
      throw new Error(`${String(err)}\n--- node status ---\n${await nodeStatus()}\n--- claims ---\n${claims}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    };
    // Nobody waits for a 4Q: its mdev goes once the VM is gone, and that frees the room the 8Q waits for.
    await kubectl(['delete', 'pod', 'vm-4q', '--wait=false']);
    await eventually('the 4Q mdev removed by the kernel', async () => (witness().removed.includes(b.uuid) ? true : undefined), 120_000, 250).catch(failure);
    await waitRunning('vm-8q-late');
    const late = await mdevOfPod('vm-8q-late');
    expect((await mdevsNow()).get(late.uuid)).toEqual({ parent: GPU_A, type: TYPES['8Q'] });
    // In the kernel's order: the 4Q was removed before the second 8Q was created.
    const at = (uuid: string, kind: 'create' | 'remove'): number => kernel.events.findIndex((e) => e.ok && e.path.endsWith(kind === 'create' ? '/create' : `${uuid}/remove`) && (kind === 'remove' || e.value.trim() === uuid));
    expect(at(b.uuid, 'remove')).toBeGreaterThanOrEqual(0);
    expect(at(late.uuid, 'create')).toBeGreaterThan(at(b.uuid, 'remove'));
    // The first 8Q's VM goes too; nobody waits for its room: its mdev is removed.
    await kubectl(['delete', 'pod', 'vm-8q', '--wait=false']);
    await eventually('the first 8Q mdev removed by the kernel', async () => (witness().removed.includes(a.uuid) ? true : undefined), 120_000, 250).catch(failure);
    expect([...(await mdevsNow()).keys()]).toEqual([late.uuid]);
    expect(witness().refused).toEqual([]);
    expect(kernel.violations).toEqual([]);
  });

  test('20 claims racing for 2 GPUs: the 8 that fit run, each on an mdev the kernel created once; no over-commit, no orphan', async () => {
    await kubectl(['delete', 'pod', '-l', 'app=ondemand-vm', '--wait=false']);
    await eventually('every mdev removed', async () => ((await mdevsNow()).size === 0 ? true : undefined), 120_000, 250);
    await kubectl(['patch', 'viod', 'a16', '--type=merge', '-p', JSON.stringify({ spec: { deviceSelector: { pciAddresses: [GPU_A, GPU_B] } } })]);
    await eventually('both GPUs published', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json'])) as { items: { spec: { sharedCounters?: unknown[] } }[] };
      return l.items.some((s) => s.spec.sharedCounters?.length === 2) ? true : undefined;
    }, 60_000, 250);
    const before = witness().created.length;
    const names = Array.from({ length: 20 }, (_, i) => `race-${i}`);
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: names.map((n) => vmPod(n, '4Q')) }));
    const running = await eventually('8 running, 12 unschedulable', async () => {
      const pods = (JSON.parse(await kubectl(['get', 'pods', '-l', 'app=ondemand-vm', '-o', 'json'])) as { items: PodJson[] }).items;
      const run = pods.filter((p) => p.status?.phase === 'Running');
      const waiting = pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable'));
      return run.length === 8 && waiting.length === 12 ? run.map((p) => p.metadata.name) : undefined;
    }, 240_000, 500).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    const created = witness().created.slice(before);
    // Each running VM has its own mdev, created once; nothing else was created, nothing refused.
    const mine = await Promise.all(running.map(async (n) => (await mdevOfPod(n)).uuid));
    expect(new Set(mine).size).toBe(8);
    expect(created.map((c) => c.uuid).sort()).toEqual([...mine].sort());
    expect(witness().refused).toEqual([]);
    const now = await mdevsNow();
    expect([...now.keys()].sort()).toEqual([...mine].sort());
    for (const gpu of [GPU_A, GPU_B]) {
      const units = [...now.values()].filter((m) => m.parent === gpu).reduce((s, m) => s + (UNITS[m.type] ?? 99), 0);
      expect(units).toBe(16); // full, and never more than the GPU holds
    }
    // Gone pods leave nothing behind.
    await kubectl(['delete', 'pod', '-l', 'app=ondemand-vm', '--wait=false']);
    await eventually('no mdev left', async () => ((await mdevsNow()).size === 0 ? true : undefined), 180_000, 500);
    expect(kernel.violations).toEqual([]);
  });
});
