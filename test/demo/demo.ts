// The main job in one command (`make demo` → scripts/demo.sh → this file): a local cluster with
// virtualio running on simulated hardware, end to end with real components wherever they exist.
//
//   etcd + kube-apiserver + kube-scheduler (built from upstream, test/cluster/control-plane.ts)
//   a REAL kubelet on a fake container runtime, node "127.0.0.1" (test/cluster/kubelet.ts; root)
//   the fake kernel daemon over a sysfs tree built from a recorded A16 server + simulated devices
//   the virtualio operator (dist/operator/src/main.js) and agent in cluster mode (dist/device-plugin),
//   the agent deriving its node's plan itself (--local-plan, the chart's default)
//   pools (test/demo/pools.yaml) and one virt-launcher-shaped pod per pool
//   as root, an on-demand DRA pool: a VM's claim makes the agent create the vGPU it asked for, and
//   deleting the VM removes it, both checked in the simulated kernel's tree (test/demo/ondemand.ts)
//
// and then a summary: the node's inventory, each pool's capacity and allocations, which VM holds
// which slice and the env/devices each VM's container received (from the fake runtime's records).
//
// The agent's and the operator's metrics endpoints are printed with the summary, and a Prometheus
// scrape configuration for both (the chart's job names, the agent's target labelled with its node) is
// written to <run>/prometheus.yml, so a --keep run can be scraped and alerted on as a cluster is.
//
// Flags: --keep      leave everything running and print `export KUBECONFIG=...` (Ctrl-C stops it and
//                    exits with the demo's verdict: 0 when every check held)
//        --json      print a machine-readable summary on stdout (the readable one goes to stderr)
//        --timeout N seconds to wait for each stage (default 240)
//
// Node runs this file directly (type stripping): static imports are Node built-ins and `.ts` files
// that import only built-ins or `.ts` files; the fake kernel daemon runs as its own process.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT, freePort, startControlPlane, stopProcess, type ControlPlane } from '../cluster/control-plane.ts';
import { canRunKubelet, DEVICE_PLUGIN_DIR, KUBELET_NODE_NAME, startKubelet, type ContainerRecord, type Kubelet } from '../cluster/kubelet.ts';
import { buildDemoHost, type DemoHost } from './host.ts';
import { ONDEMAND, onDemandPool, runOnDemand, type OnDemandSummary } from './ondemand.ts';
import { debianPrometheus, prometheusConfig, removeStaleRuns, tail } from './run-files.ts';
import { renderSummary, verifyDemo, type DemoSummary, type InventoryRow, type VmSummary } from './summary.ts';
import { waitCrdsEstablished } from '../support/crd-wait.ts';

const argv = process.argv.slice(2);
const keep = argv.includes('--keep');
const json = argv.includes('--json');
const timeoutArg = argv.indexOf('--timeout');
const STAGE_TIMEOUT_MS = (timeoutArg >= 0 ? Number(argv[timeoutArg + 1]) : 240) * 1000;
const unknown = argv.filter((a, i) => !['--keep', '--json', '--timeout'].includes(a) && argv[i - 1] !== '--timeout');
if (unknown.length > 0 || !(STAGE_TIMEOUT_MS > 0)) {
  console.error(`usage: node test/demo/demo.ts [--keep] [--json] [--timeout <seconds>]\nunknown: ${unknown.join(' ')}`);
  process.exit(2);
}

const CACHE = process.env.VIO_CACHE ?? join(process.env.HOME ?? '/tmp', '.cache/virtualio');
const DEMO_DIR = join(CACHE, 'demo');
const RECORDING = join(REPO_ROOT, 'test/fixtures/real-sysfs/vgpu-node.umockdev');
const NODE = KUBELET_NODE_NAME;
const SHM = '/dev/shm';

/** One VM of the demo: a virt-launcher-shaped pod asking for `count` slices of `pool`. */
const VMS: { vm: string; pool: string; count: number }[] = [
  { vm: 'vm-vgpu', pool: 'a16-vgpu', count: 1 },
  { vm: 'vm-net', pool: 'cx6-vfs', count: 2 },
  { vm: 'vm-x520', pool: 'x520-vfs', count: 1 },
  { vm: 'vm-nvme', pool: 'pm1733-vfs', count: 1 },
  { vm: 'vm-evo', pool: 'evo-nvme', count: 1 },
];

// ---- progress --------------------------------------------------------------------------------

const t0 = Date.now();
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const say = (m: string): void => void process.stderr.write(`[demo ${secs(Date.now() - t0).padStart(7)}] ${m}\n`);
const timings: Record<string, number> = {};

async function stage<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const s = Date.now();
  say(`${name} ...`);
  const v = await fn();
  timings[name] = Date.now() - s;
  say(`${name}: done in ${secs(timings[name])}`);
  return v;
}

// ---- processes and cleanup -------------------------------------------------------------------

const cleanups: { name: string; fn: () => Promise<void> }[] = [];
const children = new Map<string, { proc: ChildProcess; log: string }>();
let stopping: Promise<void> | undefined;

function onCleanup(name: string, fn: () => Promise<void>): void {
  cleanups.push({ name, fn });
}

/** Runs every cleanup in reverse order, once. */
function cleanup(): Promise<void> {
  stopping ??= (async () => {
    say('stopping every process the demo started');
    for (const c of cleanups.reverse()) {
      try {
        await c.fn();
      } catch (err) {
        say(`cleanup of ${c.name} failed: ${String(err)}`);
      }
    }
  })();
  return stopping;
}

async function exit(code: number): Promise<never> {
  await cleanup();
  process.exit(code);
}

/** The demo's verdict once the summary is out: what Ctrl-C in --keep mode exits with. */
let verdict: number | undefined;
process.on('SIGINT', () => void exit(verdict ?? 130));
process.on('SIGTERM', () => void exit(143));
process.on('SIGHUP', () => void exit(129));

/** Spawns a long-running process with its output in `log`; registers its stop. */
function launch(name: string, cmd: string, args: string[], log: string): ChildProcess {
  const out = createWriteStream(log, { flags: 'a' });
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
  proc.stdout?.pipe(out);
  proc.stderr?.pipe(out);
  children.set(name, { proc, log });
  onCleanup(name, () => stopProcess(proc, 10_000));
  return proc;
}

/** host:port of the two programs' HTTP endpoints (/metrics, /healthz, /readyz; the agent's /status). */
const metrics = { agent: '', operator: '' };

/** Throws with the log tail when a demo process died. */
function checkChildren(): void {
  if (stopping) throw new Error('stopping');
  for (const [name, { proc, log }] of children) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}); last lines of ${log}:\n${tail(log, 20)}`);
    }
  }
}

// ---- kubectl ---------------------------------------------------------------------------------

let cp: ControlPlane;

function kubectl(args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      err ? reject(new Error(`kubectl ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}

/** Polls `check` (every 500 ms) until it returns a value; prints what is pending every 5 s. */
async function until<T>(what: string, check: () => Promise<T | undefined | false>, pending?: () => string): Promise<T> {
  const deadline = Date.now() + STAGE_TIMEOUT_MS;
  let lastNote = Date.now();
  let lastErr = '';
  for (;;) {
    checkChildren();
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastErr = String(err);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${secs(STAGE_TIMEOUT_MS)} waiting for ${what}${pending ? `: ${pending()}` : ''}${lastErr ? ` (last error: ${lastErr})` : ''}`);
    if (Date.now() - lastNote > 5000 && pending) {
      lastNote = Date.now();
      say(`  waiting for ${what}: ${pending()}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---- Kubernetes object shapes the demo reads ---------------------------------------------------

interface Viod {
  metadata: { name: string };
  spec: { class: string; carving?: { mode?: string; count?: number; mdevType?: string } };
  status?: {
    resourceName?: string;
    capacity?: number;
    allocatable?: number;
    allocated?: number;
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    allocations?: { node: string; namespace: string; pod: string; vmi?: string; slices: string[] }[];
  };
}
type PlanPools = { name: string; devices: { pciAddress: string }[] }[];
interface VioNode {
  spec?: { pools?: PlanPools };
  status?: {
    localPlan?: { pools?: PlanPools };
    inventory?: { devices?: InventoryRow[] };
    slices?: { id: string; pool: string; kind: string; parent?: string; health: string; reason?: string; allocation?: { pod: string; vmi?: string } }[];
    pools?: { name: string; state: string; message?: string; registered?: boolean; capacity?: number; allocatable?: number; allocated?: number }[];
  };
}
interface Pod {
  metadata: { name: string; uid: string; labels?: Record<string, string> };
  status?: { phase?: string; conditions?: { type: string; status: string }[] };
}

const resourceOf = (pools: Viod[], pool: string): string => pools.find((p) => p.metadata.name === pool)?.status?.resourceName ?? `virtualio.dev/${pool}`;

// ---- the run ---------------------------------------------------------------------------------

async function main(): Promise<void> {
  mkdirSync(DEMO_DIR, { recursive: true });
  const staleRemoved = removeStaleRuns(DEMO_DIR, SHM).catch((err: unknown) => say(`could not remove an old run folder: ${String(err)}`));
  onCleanup('old run folders', () => staleRemoved);
  const root = canRunKubelet();
  if (!root) {
    say('NOTE: not root — the real kubelet needs root (its device plugin folder is /var/lib/kubelet/device-plugins).');
    say('      Running without it: the operator plans, the agent carves and reports, but no VM pod can start,');
    say('      so the demo cannot verify that VMs get their slices and will end NOT OK (exit 1).');
  }

  cp = await stage('control plane (etcd, kube-apiserver, kube-scheduler)', () =>
    startControlPlane({ verbose: false, scheduler: true, parentDir: DEMO_DIR }));
  onCleanup('control plane', () => cp.stop());
  const run = cp.dir;
  const demoPids = (): void => writeFileSync(join(run, 'demo-pids'), [process.pid, ...[...children.values()].map((c) => c.proc.pid)].join('\n'));
  demoPids();
  say(`  run folder (logs, kubeconfig): ${run}`);

  await stage('virtualio CRDs', async () => {
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev'], 60);
    await kubectl(['create', 'namespace', 'virtualio-system']);
  });

  // The tree lives in memory when it can (like the real sysfs): 32,000 small files copy in a second.
  const hostBase = existsSync(SHM) ? join(SHM, `virtualio-demo-${process.pid}`) : join(run, 'host');
  onCleanup('simulated host', () => rm(hostBase, { recursive: true, force: true }));
  const host: DemoHost = await stage('simulated host (recorded A16 server + ConnectX-6 + PM1733 NVMe + a second GPU)', () => buildDemoHost(hostBase, RECORDING, { cacheDir: DEMO_DIR }));
  say(`  ${host.pciFunctions} PCI functions; the recording's ${host.removedMdevs.length} vGPUs removed so the A16 starts free; sysfs at ${host.sys}`);

  await stage('fake kernel daemon', async () => {
    const proc = launch('fake kernel', process.execPath, [
      '--import', join(REPO_ROOT, 'test/sysfs/ts-hooks.mjs'), join(REPO_ROOT, 'test/sysfs/kernel-daemon.ts'), '--root', host.sys, '--dev-root', host.dev,
    ], join(run, 'kernel.log'));
    demoPids();
    await new Promise<void>((resolve, reject) => {
      const rl = createInterface({ input: proc.stdout! });
      rl.on('line', (l) => l.trim() === 'ready' && resolve());
      proc.once('exit', (c) => reject(new Error(`fake kernel daemon exited (${c}): ${tail(join(run, 'kernel.log'), 10)}`)));
    });
  });

  let kubelet: Kubelet | undefined;
  let pluginDir = DEVICE_PLUGIN_DIR;
  let podResourcesSocket = '/var/lib/kubelet/pod-resources/kubelet.sock';
  if (root) {
    kubelet = await stage(`kubelet on the fake container runtime (node ${NODE})`, () => startKubelet(cp));
    onCleanup('kubelet', async () => {
      await kubelet?.stop();
      // Our plugin sockets, in case the agent could not remove them itself.
      for (const f of readdirSync(DEVICE_PLUGIN_DIR)) if (/^virtualio-.*\.sock$/.test(f)) rmSync(join(DEVICE_PLUGIN_DIR, f), { force: true });
    });
    podResourcesSocket = kubelet.podResourcesSocket;
    // A DRA plugin folder an earlier run left behind would stand for a plugin that is gone.
    rmSync(join(kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
  } else {
    await stage(`Node object ${NODE} (no kubelet)`, async () => {
      await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } } }));
    });
    pluginDir = join(run, 'device-plugins');
    podResourcesSocket = join(run, 'pod-resources/kubelet.sock');
    mkdirSync(pluginDir, { recursive: true });
  }
  await kubectl(['label', 'node', NODE, '--overwrite', 'virtualio.dev/gpu=a16', 'virtualio.dev/nic=cx6']);
  say(`  node ${NODE} labelled virtualio.dev/gpu=a16 virtualio.dev/nic=cx6`);
  if (root) {
    // No kube-controller-manager runs here: do what its node lifecycle controller does for a Ready
    // node, so the scheduler may place the VM pods.
    await kubectl(['taint', 'node', NODE, 'node.kubernetes.io/not-ready:NoSchedule-']).catch(() => '');
  }

  await stage('virtualio operator and agent', async () => {
    for (const f of ['operator/src/main.js', 'device-plugin/src/main.js']) {
      if (!existsSync(join(REPO_ROOT, 'dist', f))) throw new Error(`dist/${f} is missing: run \`npm run build\` (scripts/demo.sh does)`);
    }
    metrics.operator = `127.0.0.1:${await freePort()}`;
    metrics.agent = `127.0.0.1:${await freePort()}`;
    launch('operator', process.execPath, [
      join(REPO_ROOT, 'dist/operator/src/main.js'), '--kubeconfig', cp.kubeconfig, '--leader-elect=false',
      '--identity', 'demo-operator', '--metrics-address', metrics.operator,
    ], join(run, 'operator.log'));
    launch('agent', process.execPath, [
      join(REPO_ROOT, 'dist/device-plugin/src/main.js'), '--node-name', NODE, '--kubeconfig', cp.kubeconfig,
      '--sysfs-root', host.sys, '--dev-root', host.dev, '--plugin-dir', pluginDir, '--pod-resources-socket', podResourcesSocket,
      '--devinfo-dir', join(run, 'devinfo'), '--state-dir', join(run, 'agent-state'), '--metrics-address', metrics.agent, '--rescan-interval', '10s',
      '--local-plan', // as the chart runs it (agent.localPlan)
      // The DRA front end (the on-demand step) needs the kubelet; a released slice is removed 3 s after the kubelet let go.
      ...(kubelet ? ['--dra', '--kubelet-dir', kubelet.rootDir, '--cdi-dir', join(run, 'cdi'), '--release-grace', '3s'] : []),
    ], join(run, 'agent.log'));
    demoPids();
    writeFileSync(join(run, 'prometheus.yml'), prometheusConfig(metrics, NODE));
    await until('the agent to report its inventory', async () => {
      const n = await getJson<VioNode>(['get', 'virtualionode', NODE]);
      return (n.status?.inventory?.devices?.length ?? 0) > 0;
    });
  });

  await stage(`pools (test/demo/pools.yaml${root ? `, and ${ONDEMAND.pool} on demand` : ''})`, async () => {
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'test/demo/pools.yaml')]);
    if (root) await kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(onDemandPool()));
  });

  await stage('carving and registration with the kubelet', async () => {
    const poolNames = [...new Set(VMS.map((v) => v.pool))];
    let note = '';
    await until('every pool to be ready', async () => {
      const pools = (await getJson<{ items: Viod[] }>(['get', 'virtualiodevices'])).items;
      const node = await getJson<VioNode>(['get', 'virtualionode', NODE]);
      const alloc = root ? ((await getJson<{ status?: { allocatable?: Record<string, string> } }>(['get', 'node', NODE])).status?.allocatable ?? {}) : {};
      const states = poolNames.map((p) => {
        const st = node.status?.pools?.find((x) => x.name === p);
        const need = VMS.filter((v) => v.pool === p).reduce((a, v) => a + v.count, 0);
        const onNode = Number(alloc[resourceOf(pools, p)] ?? 0);
        const ok = root ? onNode >= need && st?.registered === true : (st?.capacity ?? 0) > 0;
        return { p, ok, text: `${p} ${st?.state ?? 'unplanned'}${st?.message ? ` (${st.message})` : ''} ${root ? `kubelet allocatable ${onNode}` : `capacity ${st?.capacity ?? 0}`}` };
      });
      note = states.map((s) => s.text).join('; ');
      return states.every((s) => s.ok);
    }, () => note);
  });

  const vmUids = new Map<string, string>();
  if (root) {
    await stage(`one virt-launcher pod per pool (${VMS.length} VMs)`, async () => {
      const pools = (await getJson<{ items: Viod[] }>(['get', 'virtualiodevices'])).items;
      const items = VMS.map((v) => {
        const uid = randomUUID();
        vmUids.set(v.vm, uid);
        const resource = resourceOf(pools, v.pool);
        return {
          apiVersion: 'v1', kind: 'Pod',
          metadata: {
            name: `virt-launcher-${v.vm}-${uid.slice(0, 5)}`, namespace: 'default',
            labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': uid, 'vm.kubevirt.io/name': v.vm },
            annotations: { 'kubevirt.io/domain': v.vm },
            ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: v.vm, uid, controller: true, blockOwnerDeletion: true }],
          },
          spec: {
            restartPolicy: 'Never',
            automountServiceAccountToken: false,
            containers: [{
              name: 'compute', image: 'quay.io/kubevirt/virt-launcher:v1.8.0', command: ['/usr/bin/virt-launcher-monitor'],
              resources: { limits: { [resource]: String(v.count), memory: '64Mi', cpu: '100m' }, requests: { [resource]: String(v.count), memory: '64Mi', cpu: '100m' } },
            }],
          },
        };
      });
      await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
      let note = '';
      await until('every VM pod to run', async () => {
        const pods = (await getJson<{ items: Pod[] }>(['get', 'pods', '-n', 'default', '-l', 'kubevirt.io=virt-launcher'])).items;
        note = pods.map((p) => `${p.metadata.labels?.['vm.kubevirt.io/name']} ${p.status?.phase ?? '?'}`).join(', ');
        return pods.length === VMS.length && pods.every((p) => p.status?.phase === 'Running');
      }, () => note);
    });

    await stage('allocations reported back (PodResources → VirtualIONode → VirtualIODevice)', async () => {
      let note = '';
      await until('every VM in its pool\'s status', async () => {
        const pools = (await getJson<{ items: Viod[] }>(['get', 'virtualiodevices'])).items;
        const missing = VMS.filter((v) => !pools.find((p) => p.metadata.name === v.pool)?.status?.allocations?.some((a) => a.vmi === v.vm && a.slices.length === v.count));
        note = missing.length ? `not yet: ${missing.map((m) => m.vm).join(', ')}` : '';
        return missing.length === 0;
      }, () => note);
    });
  }

  // Carving and binding settle asynchronously (and the agent re-binds what it finds unbound), so the
  // summary waits until the node reports every slice Healthy; a slice that never gets there is named.
  await stage('every slice Healthy in the node status', async () => {
    let note = '';
    await until('every slice to be Healthy', async () => {
      const slices = (await getJson<VioNode>(['get', 'virtualionode', NODE])).status?.slices ?? [];
      const bad = slices.filter((x) => x.health !== 'Healthy');
      note = bad.map((x) => `${x.id}: ${x.reason ?? 'Unhealthy'}`).join('; ');
      return slices.length > 0 && bad.length === 0;
    }, () => note);
  });

  let ondemand: OnDemandSummary | undefined;
  if (root) {
    ondemand = await stage(`on demand: ${ONDEMAND.vm}'s claim for a ${ONDEMAND.type} makes the agent create it; deleting the VM removes it`, () =>
      runOnDemand({ sys: host.sys, kubectl, until, say }, randomUUID()));
    if (ondemand.error) say(`  on-demand step failed: ${ondemand.error}`);
  }

  // ---- the summary ---------------------------------------------------------------------------
  const pools = (await getJson<{ items: Viod[] }>(['get', 'virtualiodevices'])).items;
  const node = await getJson<VioNode>(['get', 'virtualionode', NODE]);
  const records: ContainerRecord[] = kubelet?.createdContainers() ?? [];
  const pods = root ? (await getJson<{ items: Pod[] }>(['get', 'pods', '-n', 'default', '-l', 'kubevirt.io=virt-launcher'])).items : [];
  const vms: VmSummary[] = VMS.map((v) => {
    const pod = pods.find((p) => p.metadata.labels?.['vm.kubevirt.io/name'] === v.vm);
    const rec = [...records].reverse().find((r) => r.podName === pod?.metadata.name && r.container === 'compute');
    const resource = resourceOf(pools, v.pool);
    const alloc = pools.find((p) => p.metadata.name === v.pool)?.status?.allocations?.find((a) => a.vmi === v.vm);
    return {
      vm: v.vm, vmiUid: vmUids.get(v.vm) ?? '', pool: v.pool, resource, requested: v.count,
      pod: pod?.metadata.name ?? '', phase: pod?.status?.phase ?? (root ? 'missing' : 'not started (no kubelet)'),
      slices: alloc?.slices ?? [],
      env: Object.fromEntries(Object.entries(rec?.envs ?? {}).filter(([k]) => /RESOURCE|NPIV|VIRTUALIO/.test(k))),
      devices: (rec?.devices ?? []).map((d) => d.host_path ?? d.container_path ?? ''),
    };
  });
  const facts: Omit<DemoSummary, 'ok' | 'checks'> = {
    kubelet: root,
    node: NODE,
    kubeconfig: cp.kubeconfig,
    kubectl: join(cp.binDir, 'kubectl'),
    runDir: run,
    metrics: {
      agent: `http://${metrics.agent}/metrics`, operator: `http://${metrics.operator}/metrics`, agentStatus: `http://${metrics.agent}/status`,
      prometheusConfig: join(run, 'prometheus.yml'),
    },
    seconds: Math.round((Date.now() - t0) / 100) / 10,
    timings: Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v / 100) / 10])),
    inventory: node.status?.inventory?.devices ?? [],
    // The plan the agent derived (local planning), or the operator's written one.
    plan: (node.status?.localPlan?.pools ?? node.spec?.pools ?? []).map((p) => ({ pool: p.name, devices: p.devices.map((d) => d.pciAddress) })),
    pools: pools.map((p) => {
      const st = node.status?.pools?.find((x) => x.name === p.metadata.name);
      return {
        name: p.metadata.name, class: p.spec.class, mode: p.spec.carving?.mode ?? '', resource: p.status?.resourceName ?? '',
        capacity: p.status?.capacity ?? 0, allocatable: p.status?.allocatable ?? 0, allocated: p.status?.allocated ?? 0,
        ready: p.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown',
        nodeState: st?.state ?? '', message: st?.message ?? p.status?.conditions?.find((c) => c.type === 'Ready' && c.status !== 'True')?.message ?? '',
        allocations: (p.status?.allocations ?? []).map((a) => ({ pod: a.pod, vmi: a.vmi ?? '', slices: a.slices })),
      };
    }),
    slices: (node.status?.slices ?? []).map((s) => ({ id: s.id, pool: s.pool, kind: s.kind, parent: s.parent ?? '', health: s.health, reason: s.reason ?? '', vmi: s.allocation?.vmi ?? '', pod: s.allocation?.pod ?? '' })),
    vms,
    ...(ondemand ? { ondemand } : {}),
  };
  // The result is what was checked, never assumed: without a kubelet the VM checks fail as "not verified".
  const checks = verifyDemo(facts, new Set(pools.filter((p) => p.spec.carving?.mode === 'Mediated').map((p) => p.metadata.name)));
  const summary: DemoSummary = { ok: checks.every((c) => c.ok), checks, ...facts };
  const text = renderSummary(summary);
  if (json) {
    process.stderr.write(`${text}\n`);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    process.stdout.write(`${text}\n`);
  }

  verdict = summary.ok ? 0 : 1;
  if (keep) {
    const prometheus = debianPrometheus(CACHE);
    process.stderr.write([
      '',
      'Everything keeps running. In another shell:',
      `  export KUBECONFIG=${cp.kubeconfig}`,
      `  alias kubectl=${join(cp.binDir, 'kubectl')}`,
      '  kubectl get viod,vionode; kubectl get pods -o wide; kubectl describe node 127.0.0.1',
      `Logs: ${run}/{agent,operator,kernel}.log, ${run}/kubelet/`,
      `Metrics: agent ${summary.metrics.agent} (and /status, /healthz, /readyz), operator ${summary.metrics.operator}`,
      `Prometheus: ${prometheus ?? 'prometheus'} --config.file=${summary.metrics.prometheusConfig} --storage.tsdb.path=${join(run, 'tsdb')}`,
      '  (jobs virtualio-agent-metrics and virtualio-operator-metrics, as the chart\'s ServiceMonitors name them; http://localhost:9090)',
      `Press Ctrl-C to stop it all (exits ${verdict}: the demo's verdict).`,
      '',
    ].join('\n'));
    await new Promise(() => undefined);
  }
  await exit(summary.ok ? 0 : 1);
}

main().catch(async (err: unknown) => {
  if (stopping) return;
  say(`FAILED: ${err instanceof Error ? err.message : String(err)}`);
  if (cp) say(`logs are in ${cp.dir} (agent.log, operator.log, kernel.log, kubelet/, kube-apiserver.log)`);
  if (cp && existsSync(join(cp.dir, 'agent.log')) && statSync(join(cp.dir, 'agent.log')).size > 0) say(`agent log tail:\n${tail(join(cp.dir, 'agent.log'), 15)}`);
  await exit(1);
});
