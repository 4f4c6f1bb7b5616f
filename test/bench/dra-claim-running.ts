// Claim → pod Running (issue 19), a figure, never pass/fail: the same VM-like pod asking for one
// A16-2Q vGPU three ways, on the REAL kube-scheduler, kube-controller-manager (the ResourceClaim
// controller makes each pod's claim from its template) and kubelet (fake CRI), with the operator
// process (dist/, as the image runs it) and the agent process (--dra) on the simulated kernel: the harness of
// test/integration/dra-ondemand-e2e.test.ts, with three simulated A16-like GPUs (mdevGpuMixed):
//   ondemand   pool `bench-od` on GPU A (`carving.onDemand`): nothing carved ahead; the scheduler
//              allocates a partitionable device, the agent creates the mdev and sets the claim's
//              `virtualio.dev/Carved` condition, the scheduler's PreBind wait ends, the pod binds,
//              the kubelet prepares the claim (the agent's DRA plugin) and the pod runs;
//   precarved  pool `bench-pc` on GPU B, 8 × 2Q carved ahead, published through DRA;
//   dp         pool `bench-dp` on GPU C, 8 × 2Q carved ahead, the device-plugin front end.
// DRA pods name a ResourceClaimTemplate (as a KubeVirt VM's spec.resourceClaims can), so the clock
// includes the controller manager making the claim. Rounds interleave the modes (one pod of each mode
// per round, each waited for until Running before the next is created), so machine load falls on all
// three alike; pods stay until the end (at most 8 per mode: a GPU holds 8 × 2Q). Times come from
// watch events on pods and claims (the API server's view), from just before the pod's create.
// The agent runs with the chart's defaults except --release-grace 2s (release is not measured).
//
//   node --import ./test/sysfs/ts-hooks.mjs test/bench/dra-claim-running.ts [--pods 5] [--json]
//        [--modes ondemand,precarved,dp] [--keep-logs]
// Needs root (the kubelet's folders are fixed) and takes the machine-wide kubelet lock.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { REPO_ROOT, startControlPlane, stopProcess } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, startKubelet } from '../cluster/kubelet.js';
import { ensureAgentBuilt, startAgent } from '../fakes/agent-process.js';
import { FakeKernel, mdevGpuMixed } from '../sysfs/kernel.js';
import { startKernel } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';
import { client, watch } from './api.js';
import { machine, summarize } from './lib.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const say = (m: string): void => void process.stderr.write(`[dra-claim-running] ${m}\n`);
type Mode = 'ondemand' | 'precarved' | 'dp';
const modes = flag('modes', 'ondemand,precarved,dp').split(',') as Mode[];
const pods = Math.min(8, Number(flag('pods', '5')));

const NODE = '127.0.0.1';
const NS = 'default';
const TYPE_2Q = 'nvidia-745';
const GPU: Record<Mode, string> = { ondemand: '0000:3b:00.0', precarved: '0000:3c:00.0', dp: '0000:3d:00.0' };
const POOL: Record<Mode, string> = { ondemand: 'bench-od', precarved: 'bench-pc', dp: 'bench-dp' };

function poolObject(mode: Mode): unknown {
  const carving = mode === 'ondemand'
    ? { mode: 'Mediated', onDemand: { mdevTypes: ['nvidia-745', 'nvidia-746', 'nvidia-747'] } }
    : { mode: 'Mediated', mdevType: TYPE_2Q, count: 8 };
  return {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: POOL[mode] },
    spec: { class: 'GPU', frontEnd: mode === 'dp' ? 'DevicePlugin' : 'DRA', deviceSelector: { pciAddresses: [GPU[mode]] }, carving, kubevirt: { consumption: 'MediatedDevice' } },
  };
}

function templateObject(mode: Mode): unknown {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: `vgpu-${mode}`, namespace: NS },
    spec: { spec: { devices: { requests: [{ name: 'vgpu', exactly: { deviceClassName: `${POOL[mode]}.virtualio.dev`, selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${TYPE_2Q}"` } }] } }] } } },
  };
}

/** A virt-launcher-shaped pod asking for one 2Q the way `mode` offers it. */
function podObject(name: string, mode: Mode): unknown {
  const compute = { name: 'compute', image: 'example.invalid/virt-launcher:1', command: ['/usr/bin/virt-launcher-monitor'] };
  const spec = mode === 'dp'
    ? { containers: [{ ...compute, resources: { limits: { [`virtualio.dev/${POOL.dp}`]: '1' } } }] }
    : { resourceClaims: [{ name: 'gpu', resourceClaimTemplateName: `vgpu-${mode}` }], containers: [{ ...compute, resources: { claims: [{ name: 'gpu' }] } }] };
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: 'claim-bench', mode } }, spec: { ...spec, automountServiceAccountToken: false, terminationGracePeriodSeconds: 0 } };
}

interface PodJson { metadata: { name: string }; spec?: { nodeName?: string }; status?: { phase?: string } }
interface ClaimJson { metadata: { ownerReferences?: { kind: string; name: string }[] }; status?: { allocation?: unknown; devices?: { conditions?: { type: string; status: string }[] }[] } }
/** When each step of a pod was first seen (performance.now()). */
interface Marks { created: number; claim?: number; allocated?: number; carved?: number; bound?: number; running?: number }

async function main(): Promise<void> {
  if (!canRunKubelet()) throw new Error('this benchmark runs a real kubelet: it needs root on Linux');
  const cp = await startControlPlane({ scheduler: true, controllerManager: true });
  const cleanups: (() => Promise<unknown>)[] = [];
  const base = mkdtempSync(join(tmpdir(), 'vio-claim-bench-'));
  const marks = new Map<string, Marks>();
  const figures: { mode: Mode; pods: number; ms: Record<string, ReturnType<typeof summarize>> }[] = [];
  const load: string[] = [];
  try {
    const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev', 'virtualiodevices.virtualio.dev'], 60);
    const kubelet = await startKubelet(cp);
    cleanups.unshift(async () => {
      await kubelet.stop();
      rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    });
    await untaintedNode(kubectl, NODE, (k) => k.startsWith('node.kubernetes.io/'));
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    const sys = join(base, 'sys');
    const dev = join(base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    for (const [i, g] of Object.values(GPU).entries()) await k.addFunction(mdevGpuMixed(g, { numaNode: i % 2 }));
    const kernel = await startKernel(sys, dev);
    cleanups.unshift(() => kernel.stop());
    await kubectl(['create', 'namespace', 'virtualio-system']).catch(() => '');
    await ensureAgentBuilt(); // dist/: the agent and the operator
    const operator = spawn(process.execPath, [join(REPO_ROOT, 'dist/operator/src/main.js'), '--kubeconfig', cp.kubeconfig, '--identity', 'claim-bench', '--namespace', 'virtualio-system', '--metrics-address', '127.0.0.1:0', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const opLog = createWriteStream(join(cp.dir, 'operator.log'));
    operator.stdout.pipe(opLog);
    operator.stderr.pipe(opLog);
    cleanups.unshift(() => stopProcess(operator));
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [...modes.map(poolObject), ...modes.filter((m) => m !== 'dp').map(templateObject)] }));
    mkdirSync(join(base, 'devinfo'));
    const agent = await startAgent([
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--pod-resources-socket', kubelet.podResourcesSocket,
      '--devinfo-dir', join(base, 'devinfo'), '--cdi-dir', join(base, 'cdi'), '--metrics-address', '127.0.0.1:0',
      '--dra', '--kubelet-dir', kubelet.rootDir, '--release-grace', '2s',
    ]);
    cleanups.unshift(() => agent.stop());
    const api = client(cp);
    // Ready: each DRA pool published, the device-plugin pool's 8 slices allocatable on the Node.
    await eventually('every pool ready', async () => {
      const slices = await api('GET', `/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D${NODE}`) as { items: { spec: { pool: { name: string }; devices?: unknown[] } }[] };
      const node = await api('GET', `/api/v1/nodes/${NODE}`) as { status: { allocatable: Record<string, string> } };
      const published = (m: Mode): boolean => slices.items.some((s) => s.spec.pool.name.endsWith(POOL[m]) && (s.spec.devices?.length ?? 0) > 0);
      const ok = modes.every((m) => (m === 'dp' ? Number(node.status.allocatable[`virtualio.dev/${POOL.dp}`] ?? 0) >= 8 : published(m)));
      return ok ? true : undefined;
    }, 180_000, 500).catch((err: unknown) => { throw new Error(`${String(err)}\n--- agent ---\n${agent.tail()}`, { cause: err }); });
    // The pre-carved pools' 8 mdevs exist: give the agent one more breath to publish them all.
    await new Promise((r) => setTimeout(r, 2000));

    const podWatch = watch<PodJson>(cp, `/api/v1/namespaces/${NS}/pods`, (t, p, at) => {
      if (t === 'RESTART') return;
      const m = marks.get(p.metadata.name);
      if (!m) return;
      if (p.spec?.nodeName && m.bound === undefined) m.bound = at;
      if (p.status?.phase === 'Running' && m.running === undefined) m.running = at;
    });
    const claimWatch = watch<ClaimJson>(cp, `/apis/resource.k8s.io/v1/namespaces/${NS}/resourceclaims`, (t, c, at) => {
      if (t === 'RESTART') return;
      const owner = c.metadata.ownerReferences?.find((o) => o.kind === 'Pod')?.name;
      const m = owner ? marks.get(owner) : undefined;
      if (!m) return;
      m.claim ??= at;
      if (c.status?.allocation && m.allocated === undefined) m.allocated = at;
      if (m.carved === undefined && c.status?.devices?.some((d) => d.conditions?.some((x) => x.type === 'virtualio.dev/Carved' && x.status === 'True'))) m.carved = at;
    });
    cleanups.unshift(async () => { podWatch.stop(); claimWatch.stop(); });
    await new Promise((r) => setTimeout(r, 500));

    for (let i = 0; i < pods; i++) {
      for (const mode of modes) {
        load.push(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!);
        const name = `vm-${mode}-${i}`;
        marks.set(name, { created: performance.now() });
        await api('POST', `/api/v1/namespaces/${NS}/pods`, podObject(name, mode));
        const deadline = performance.now() + 180_000;
        while (marks.get(name)!.running === undefined && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
        const m = marks.get(name)!;
        const rel = (x?: number): string => (x === undefined ? '-' : `${Math.round(x - m.created)} ms`);
        say(`${name}: claim ${rel(m.claim)}, allocated ${rel(m.allocated)}, carved ${rel(m.carved)}, bound ${rel(m.bound)}, Running ${rel(m.running)}`);
        if (m.running === undefined) {
          const p = await api('GET', `/api/v1/namespaces/${NS}/pods/${name}`).catch(() => undefined);
          throw new Error(`${name} not Running after 180 s: ${JSON.stringify((p as { status?: unknown } | undefined)?.status)}\n--- agent ---\n${agent.tail()}`);
        }
      }
    }
    for (const mode of modes) {
      const ms = [...marks.entries()].filter(([n]) => n.startsWith(`vm-${mode}-`)).map(([, m]) => m);
      const step = (k: keyof Marks): ReturnType<typeof summarize> | undefined => {
        const xs = ms.filter((m) => m[k] !== undefined).map((m) => m[k]! - m.created);
        return xs.length ? summarize(xs) : undefined;
      };
      const out: Record<string, ReturnType<typeof summarize>> = {};
      for (const k of ['claim', 'allocated', 'carved', 'bound', 'running'] as const) {
        const s = step(k);
        if (s) out[`createTo${k[0]!.toUpperCase()}${k.slice(1)}`] = s;
      }
      figures.push({ mode, pods: ms.length, ms: out });
      say(`${mode}: create → Running p50 ${out.createToRunning?.p50} ms, max ${out.createToRunning?.max} ms over ${ms.length} pods`);
    }
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
    await cp.stop();
    rmSync(base, { recursive: true, force: true });
    if (argv.includes('--keep-logs')) say(`control plane logs kept in ${cp.dir}`);
    else rmSync(cp.dir, { recursive: true, force: true });
  }
  const result = { machine: machine(), loadAverageAtEachPod: load, pods, figures };
  if (argv.includes('--json')) process.stdout.write(`BENCH_RESULT ${JSON.stringify(result)}\n`);
  else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

await main();
