// NVIDIA vendor-VFIO vGPU profiles chosen per claim through DRA (issues 19 and 20) on the REAL
// kube-scheduler, kube-controller-manager and kubelet (fake CRI), with the REAL operator (in process)
// and the agent process with --dra on the simulated L40S (test/sysfs/nvidia.ts: 48 GB, 32 VFs on
// `nvidia`, sriov-manage and nvidia-smi stand-ins). A pool with `carving.onDemand.vgpuProfiles`
// types nothing ahead; it publishes, per free VF, one device per profile, drawing on the GPU's
// framebuffer counter. Every assertion about carving reads the kernel's own record of writes:
//  * two VM pods asking for profiles of different sizes (mixed-size mode) get their types on the
//    VFs the scheduler chose, the VFs stay on nvidia, and the runtime gets the VF's /dev/vfio nodes;
//  * an agent restart neither clears nor rewrites a type, and typing works after it;
//  * a third profile that no longer fits stays Pending with the scheduler's reason;
//  * deleting a pod clears its VF's type (after its claim is unprepared), and the waiting pod then runs.
// Needs root (the kubelet's folders are fixed); without root the suite is reported as skipped.
import { jest } from '@jest/globals';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import pino from 'pino';
import type { Pool } from '../../operator/src/api/types.js';
import { ClientNodeKube } from '../../operator/src/kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, VirtualIODevices } from '../../operator/src/kube/resources.js';
import { Operator } from '../../operator/src/operator.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { EventRecorder } from '../../operator/src/runtime/events.js';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { addNvidiaVfioGpu, L40S } from '../sysfs/nvidia.js';
import { writeToolScript } from '../sysfs/nvidia-tool.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(300_000);

const NODE = '127.0.0.1';
const PF = '0000:3b:00.0';
const PROFILES = { '12Q': 1153, '24Q': 1155 } as const;
const suite = canRunKubelet() ? describe : describe.skip;

let cp: ControlPlane;
let kubelet: Kubelet;
let kernel: KernelHandle;
let agent: AgentProcess | undefined;
let base: string;
let sys: string;
let stopOperator: (() => Promise<void>) | undefined;
let agentArgs: string[] = [];
let agentEnv: Record<string, string> = {};

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
const log = pino({ level: process.env.VIO_TEST_LOG_LEVEL ?? 'silent' }, pino.destination({ dest: process.env.VIO_TEST_LOG_FILE ?? 1, sync: true }));
const NODE_LABEL = 'virtualio.dev/vgpu-od-e2e';

const viod: Pool = {
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'l40s' },
  spec: {
    class: 'GPU', frontEnd: 'DRA', nodeSelector: { matchLabels: { [NODE_LABEL]: 'yes' } }, deviceSelector: { pciAddresses: [PF] },
    carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q', 'NVIDIA L40S-24Q'], heterogeneous: true } },
  },
} as unknown as Pool;

/** A claim template per profile: what a VM's spec.resourceClaims names. */
function template(size: keyof typeof PROFILES): unknown {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: `vgpu-${size.toLowerCase()}`, namespace: 'default' },
    spec: { spec: { devices: { requests: [{ name: 'vgpu', exactly: { deviceClassName: 'l40s.virtualio.dev', selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].vgpuProfile == "L40S-${size}"` } }] } }] } } },
  };
}

function vmPod(name: string, size: keyof typeof PROFILES): unknown {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: 'vgpu-od-vm' } },
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

/** The VF and type a running pod's claim was allocated (its device is `vgpu-<VF>-<type>`). */
async function vfOfPod(name: string): Promise<{ vf: string; type: number; device: string; claim: ClaimJson }> {
  const p = await getPod(name);
  const claimName = p.status?.resourceClaimStatuses?.[0]?.resourceClaimName;
  if (!claimName) throw new Error(`pod ${name} has no claim yet`);
  const claim = JSON.parse(await kubectl(['get', 'resourceclaim', claimName, '-o', 'json'])) as ClaimJson;
  const device = claim.status?.allocation?.devices?.results?.[0]?.device ?? '';
  const m = /^vgpu-([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])-(\d+)$/.exec(device);
  if (!m) throw new Error(`claim ${claimName} has device ${device}`);
  return { vf: `${m[1]}:${m[2]}:${m[3]}.${m[4]}`, type: Number(m[5]), device, claim };
}

/** The kernel's record of vGPU type writes (applied and refused) and of any write that rebinds a VF. */
function witness(): { typed: { vf: string; value: string }[]; refused: string[]; rebinds: string[] } {
  const typed: { vf: string; value: string }[] = [];
  const refused: string[] = [];
  const rebinds: string[] = [];
  for (const e of kernel.events) {
    const t = /([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\/nvidia\/current_vgpu_type$/.exec(e.path);
    if (t && e.ok) typed.push({ vf: t[1]!, value: e.value.trim() });
    if (t && !e.ok) refused.push(`${t[1]!}=${e.value.trim()}: ${e.error ?? ''}`);
    if (/(driver_override|drivers_probe|\/bind|\/unbind)$/.test(e.path) && /0000:3b:0[0-4]\.[0-7]/.test(`${e.path} ${e.value}`) && !e.path.includes(PF) && e.value.trim() !== PF) rebinds.push(`${e.path}=${e.value.trim()}`);
  }
  return { typed, refused, rebinds };
}

const typeNow = (vf: string): number => Number(readFileSync(join(sys, 'bus/pci/devices', vf, 'nvidia/current_vgpu_type'), 'utf8').trim());

async function waitRunning(name: string): Promise<void> {
  await eventually(`pod ${name} Running`, async () => ((await getPod(name)).status?.phase === 'Running' ? true : undefined), 120_000, 250).catch(async (err: unknown) => {
    const p = await kubectl(['get', 'pod', name, '-o', 'yaml']).catch(() => '');
    throw new Error(`${String(err)}\n--- pod ---\n${p}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
  });
}

suite(`on-demand vGPU profiles: the VF's type written when the scheduler allocates a claim, cleared when the VM is gone${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    cp = await startControlPlane({ scheduler: true, controllerManager: true });
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev', 'virtualiodevices.virtualio.dev'], 60);
    kubelet = await startKubelet(cp);
    await untaintedNode(kubectl, NODE, (k) => k.startsWith('node.kubernetes.io/'));
    await eventually('the default service account', async () => ((await kubectl(['get', 'serviceaccount', 'default', '-o', 'name']).catch(() => '')) ? true : undefined), 60_000, 250);
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    base = mkdtempSync(join(tmpdir(), 'vio-vgpu-od-'));
    sys = join(base, 'sys');
    const dev = join(base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    await addNvidiaVfioGpu(k, PF, L40S, { numaNode: 0 });
    kernel = await startKernel(sys, dev, { control: true });
    mkdirSync(join(base, 'tools'));
    mkdirSync(join(base, 'devinfo'));
    agentEnv = { VIO_NVIDIA_SRIOV_MANAGE: writeToolScript(join(base, 'tools'), 'sriov-manage', sys), VIO_NVIDIA_SMI: writeToolScript(join(base, 'tools'), 'nvidia-smi', sys) };
    await kubectl(['label', 'node', NODE, `${NODE_LABEL}=yes`]);
    await kubectl(['create', 'namespace', 'virtualio-system']).catch(() => '');
    const kube = ClientNodeKube.fromOptions({ kubeconfig: cp.kubeconfig });
    const ac = new AbortController();
    const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: 'vgpu-od-e2e', clock: systemClock, log });
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
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [template('12Q'), template('24Q')] }));
    agentArgs = [
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--pod-resources-socket', kubelet.podResourcesSocket,
      '--devinfo-dir', join(base, 'devinfo'), '--cdi-dir', join(base, 'cdi'), '--metrics-address', '127.0.0.1:0',
      '--rescan-interval', '2s', '--dra', '--kubelet-dir', kubelet.rootDir, '--release-grace', '2s',
    ];
    agent = await startAgent(agentArgs, agentEnv);
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

  test('the pool publishes what the GPU could type: a framebuffer counter, a device per VF and profile, nothing typed', async () => {
    type Slice = { spec: { sharedCounters?: { name: string; counters: Record<string, { value: string }> }[]; devices?: { name: string; bindingConditions?: string[]; consumesCounters?: unknown[] }[] } };
    const items = await eventually('the on-demand vGPU pool published', async () => {
      const l = JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE},spec.driver=virtualio.dev`, '-o', 'json'])) as { items: Slice[] };
      return l.items.some((s) => s.spec.sharedCounters) && l.items.some((s) => (s.spec.devices ?? []).length > 0) ? l.items : undefined;
    }, 120_000, 250).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    });
    // 12 GB is the smallest profile: 4 VFs can ever be used, so 4 are published, each with both profiles.
    expect(items.find((s) => s.spec.sharedCounters)!.spec.sharedCounters).toEqual([{ name: 'gpu-0000-3b-00-0', counters: { framebuffer: { value: '48' }, 'vf-0': { value: '1' }, 'vf-1': { value: '1' }, 'vf-2': { value: '1' }, 'vf-3': { value: '1' } } }]);
    const devices = items.flatMap((s) => s.spec.devices ?? []);
    expect(devices.map((d) => d.name).sort()).toEqual(['4', '5', '6', '7'].flatMap((f) => [`vgpu-0000-3b-00-${f}-1153`, `vgpu-0000-3b-00-${f}-1155`]));
    expect(devices.every((d) => d.bindingConditions?.[0] === 'virtualio.dev/Carved')).toBe(true);
    expect(witness().typed).toEqual([]);
  });

  test('two VM pods asking for a 24Q and a 12Q get those types on the VFs the scheduler chose; the VFs stay on nvidia', async () => {
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [vmPod('vm-24q', '24Q'), vmPod('vm-12q', '12Q')] }));
    await waitRunning('vm-24q');
    await waitRunning('vm-12q');
    const a = await vfOfPod('vm-24q');
    const b = await vfOfPod('vm-12q');
    expect([a.type, b.type]).toEqual([PROFILES['24Q'], PROFILES['12Q']]);
    expect(a.vf).not.toBe(b.vf);
    expect(witness().typed.sort((x, y) => x.value.localeCompare(y.value))).toEqual([{ vf: b.vf, value: '1153' }, { vf: a.vf, value: '1155' }]);
    expect([typeNow(a.vf), typeNow(b.vf)]).toEqual([PROFILES['24Q'], PROFILES['12Q']]);
    expect(witness().rebinds).toEqual([]);
    for (const c of [a.claim, b.claim]) expect(c.status?.devices?.[0]?.conditions).toEqual([expect.objectContaining({ type: 'virtualio.dev/Carved', status: 'True' })]);
    // The runtime got the claim's CDI device; it carries the VF's group node and its cdev.
    const rec = kubelet.createdContainers().find((r) => r.podName === 'vm-24q' && r.container === 'compute');
    expect(rec?.cdiDevices).toEqual([{ name: `virtualio.dev/claim=${a.claim.metadata.uid}-${a.device}` }]);
    const spec = readdirSync(join(base, 'cdi')).map((f) => readFileSync(join(base, 'cdi', f), 'utf8')).find((t) => t.includes(`${a.claim.metadata.uid}-${a.device}`)) ?? '';
    const group = basename(readlinkSync(join(sys, 'bus/pci/devices', a.vf, 'iommu_group')));
    expect(spec).toContain(`/dev/vfio/${group}`);
    expect(spec).toMatch(/\/dev\/vfio\/devices\/vfio\d+/);
    // KubeVirt reads the VF's address from the device metadata file (a PCI host device).
    const meta = readdirSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true }).map(String).filter((f) => f.endsWith('virtualio.dev-metadata.json'))
      .map((f) => readFileSync(join(kubelet.rootDir, 'plugins/virtualio.dev', f), 'utf8')).find((t) => t.includes(a.device));
    expect(meta).toContain(`"resource.kubernetes.io/pciBusID"`);
    expect(meta).toContain(a.vf);
  });

  test('an agent restart neither clears nor rewrites a type; typing works after it', async () => {
    const before = witness().typed.length;
    await agent!.stop();
    agent = await startAgent(agentArgs, agentEnv);
    // A claim after the restart: by the time its pod runs, the restarted agent has listed the claims
    // and carved in a full cycle, with both earlier claims known.
    await kubectl(['apply', '-f', '-'], JSON.stringify(vmPod('vm-12q-b', '12Q')));
    await waitRunning('vm-12q-b');
    const c = await vfOfPod('vm-12q-b');
    expect(witness().typed.slice(before)).toEqual([{ vf: c.vf, value: '1153' }]);
    expect((await getPod('vm-24q')).status?.phase).toBe('Running');
    expect((await getPod('vm-12q')).status?.phase).toBe('Running');
    expect(witness().refused).toEqual([]);
  });

  test('a third profile that no longer fits waits, with the scheduler saying why', async () => {
    await kubectl(['apply', '-f', '-'], JSON.stringify(vmPod('vm-24q-late', '24Q')));
    const cond = await eventually('vm-24q-late unschedulable', async () => {
      const c = (await getPod('vm-24q-late')).status?.conditions?.find((x) => x.type === 'PodScheduled');
      return c?.status === 'False' && c.reason === 'Unschedulable' ? c : undefined;
    }, 90_000, 250);
    expect(cond.message).toMatch(/cannot allocate all claims/);
    expect(witness().typed.filter((x) => x.value === '1155')).toHaveLength(1); // nothing typed for it
    expect(witness().refused).toEqual([]);
  });

  test('deleting pods clears their VFs\' types once their claims are unprepared; the waiting pod then gets the room', async () => {
    const b = await vfOfPod('vm-12q');
    const c = await vfOfPod('vm-12q-b');
    const failure = async (err: unknown): Promise<never> => {
      const claims = await kubectl(['get', 'resourceclaims', '-o', 'wide']).catch(() => '');
      throw new Error(`${String(err)}\n--- claims ---\n${claims}\n--- agent ---\n${agent?.tail() ?? ''}`, { cause: err });
    };
    await kubectl(['delete', 'pod', 'vm-12q-b', '--wait=false']);
    await eventually('the 12Q of vm-12q-b cleared by the kernel', async () => (witness().typed.some((x) => x.vf === c.vf && x.value === '0') ? true : undefined), 120_000, 250).catch(failure);
    expect(typeNow(c.vf)).toBe(0);
    expect((await getPod('vm-24q-late')).status?.phase).not.toBe('Running'); // 24 + 12 + 24 > 48 still
    await kubectl(['delete', 'pod', 'vm-12q', '--wait=false']);
    await eventually('the 12Q of vm-12q cleared by the kernel', async () => (witness().typed.some((x) => x.vf === b.vf && x.value === '0') ? true : undefined), 120_000, 250).catch(failure);
    await waitRunning('vm-24q-late');
    const late = await vfOfPod('vm-24q-late');
    expect(typeNow(late.vf)).toBe(PROFILES['24Q']);
    // In the kernel's order: the second 24Q was typed after both clears.
    const at = (vf: string, value: string): number => kernel.events.findIndex((e) => e.ok && e.path.endsWith(`${vf}/nvidia/current_vgpu_type`) && e.value.trim() === value);
    expect(at(late.vf, '1155')).toBeGreaterThan(Math.max(at(b.vf, '0'), at(c.vf, '0')));
    expect(witness().refused).toEqual([]);
    expect(witness().rebinds).toEqual([]);
    expect(kernel.violations).toEqual([]);
  });
});
