// Churn soak on the REAL kubelet (issue 21 "Day two"): VM pods of every pool mode, on both front
// ends (device plugin extended resources; DRA claims from a ResourceClaimTemplate, prepared and
// unprepared by the kubelet), created and deleted continuously on the node of kubelet-cluster.ts,
// with agent restarts (SIGTERM and SIGKILL in turn) and operator fail-overs (the leader of two
// replicas SIGKILLed or SIGTERMed in turn, a new replica started in its place) mixed in.
// One cycle: once `concurrent` VMs run, the oldest VM stops (the VMM stand-in closes its groups) and
// its pod is deleted; a new pod asks for one slice of the next pool with room (the real scheduler
// places it, the kubelet admits it: Allocate or NodePrepareResources); once Running, the VMM stand-in
// opens what the runtime was given (the device nodes of the fake CRI's record, or of the claim's CDI
// spec). Every deleted pod must be gone from the API within GONE_MS.
// Allocate and prepare times are the agent's own (its histogram's sum and count across the cycle:
// one call per cycle, so the difference is that call's time). Everything else is sampled from
// outside: VmRSS and open fds of the agent and of each operator replica (/proc), the agent's
// allocations and ledger, the plan's generation, the witness kernel's violations.
import { openSync, readSync, closeSync, readFileSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ContainerRecord } from '../cluster/kubelet.js';
import { watch } from '../bench/api.js';
import { startVm, startVmFromAllocation, type Vm } from '../sysfs/vmm.js';
import { NS, POOLS, type NodeLeftovers, type SoakCluster, type SoakPool } from './kubelet-cluster.js';
import { fdsOf, metric, p99FirstLastTenth, pct, rssOf, sleep } from './sample.js';

export interface KubeletSoakOptions {
  cycles: number;
  sampleEvery?: number;
  /** VMs kept running at once (default 4). */
  concurrent?: number;
  restartEvery?: number;
  failoverEvery?: number;
  log?: (line: string) => void;
}

export interface ProcSample { pid: number; rssKiB: number; fds: number }
export interface KubeletSoakSample {
  cycle: number;
  ms: number;
  agent: ProcSample;
  operators: ProcSample[];
  allocated: number;
  runningVms: number;
  violations: number;
  /** The end-state readers while VMs run: what they show then proves they read the real records. */
  held: NodeLeftovers;
}

export interface KubeletSoakResult {
  cycles: number;
  seconds: number;
  /** Cycles per pool. */
  perPool: Record<string, number>;
  /** The agent's Allocate time per device-plugin cycle, and NodePrepareResources per DRA cycle, ms, in order. */
  allocateMs: number[];
  prepareMs: number[];
  /** Pod create → Running as the API server's watch shows it, ms. */
  runningMs: number[];
  /** Destructive writes the kernel held back because a VM had the device open (a VM that ignores the request keeps them blocked). */
  blockedWrites: string[];
  /** Pods seen Running, and pods deleted and seen gone. */
  running: number;
  gone: number;
  samples: KubeletSoakSample[];
  problems: string[];
  violations: string[];
  restarts: number;
  restartReadyMaxMs: number;
  failovers: { from: string; to: string; ms: number }[];
  leaseTransitions: number;
  /** The plan at the start and at the end (generation, pools): the fail-overs must not change it. */
  planStart: { generation: number; pools: string };
  planEnd: { generation: number; pools: string };
  planChanges: number;
  leftovers: NodeLeftovers;
  /** What was on record when a VM could not open what it was handed (pods' records, the agent's slices, the kubelet's checkpoint). */
  diagnostics: string[];
}

const RUNNING_MS = 90_000;
const GONE_MS = 60_000;

/** The fake CRI's records, read as the file grows (never re-read from the start). */
class Records {
  private offset = 0;
  private rest = '';
  readonly byPod = new Map<string, ContainerRecord>();
  private readonly file: string;
  constructor(file: string) {
    this.file = file;
  }
  get(pod: string): ContainerRecord | undefined {
    const fd = openSync(this.file, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size > this.offset) {
        const buf = Buffer.alloc(size - this.offset);
        readSync(fd, buf, 0, buf.length, this.offset);
        this.offset = size;
        const lines = (this.rest + buf.toString('utf8')).split('\n');
        this.rest = lines.pop() ?? '';
        for (const l of lines) {
          if (!l) continue;
          const r = JSON.parse(l) as ContainerRecord;
          if (r.container === 'compute') this.byPod.set(r.podName, r);
        }
      }
    } finally {
      closeSync(fd);
    }
    return this.byPod.get(pod);
  }
}

function podObject(name: string, p: SoakPool): unknown {
  const dra = p.frontEnd === 'DRA';
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: NS, labels: { 'kubevirt.io': 'virt-launcher', soak: 'kubelet', pool: p.name } },
    spec: {
      automountServiceAccountToken: false, terminationGracePeriodSeconds: 1,
      ...(dra ? { resourceClaims: [{ name: 'dev', resourceClaimTemplateName: p.name }] } : {}),
      containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: dra ? { claims: [{ name: 'dev' }] } : { limits: { [p.resourceName]: '1' } } }],
    },
  };
}

/** Pool order of the cycles: every pool in every 8 cycles, the VF pools twice (the common case). */
const ORDER = ['net', 'net-dra', 'vgpu', 'fc', 'net', 'gpu', 'vgpu-dra', 'net-dra'];

export async function runKubeletChurn(c: SoakCluster, o: KubeletSoakOptions): Promise<KubeletSoakResult> {
  const log = o.log ?? ((): void => {});
  const concurrent = o.concurrent ?? 4;
  const sampleEvery = Math.max(1, o.sampleEvery ?? Math.floor(o.cycles / 20));
  const problems: string[] = [];
  const samples: KubeletSoakSample[] = [];
  const allocateMs: number[] = [];
  const prepareMs: number[] = [];
  const runningMs: number[] = [];
  const perPool: Record<string, number> = {};
  const failovers: KubeletSoakResult['failovers'] = [];
  const diagnostics: string[] = [];
  const records = new Records(c.kubelet.records);
  /** Pods by name: seen Running, seen gone (watch). */
  const pods = new Map<string, { pool: string; created: number; running?: number; gone?: number; deleted?: number; failed?: boolean }>();
  /** Times the pod watch had to start over (its resourceVersion compacted): deletions in the gap are unseen. */
  let watchRestarts = 0;
  const podWatch = watch<{ metadata: { name: string }; status?: { phase?: string } }>(c.cp, `/api/v1/namespaces/${NS}/pods`, (type, p, at) => {
    if (type === 'RESTART') {
      watchRestarts++;
      log('the pod watch started over (410): a deletion in the gap is checked with a GET');
      return;
    }
    const m = pods.get(p.metadata.name);
    if (!m) return;
    if (type === 'DELETED') m.gone ??= at;
    else if (p.status?.phase === 'Running') m.running ??= at;
    else if (p.status?.phase === 'Failed' && !m.failed) {
      m.failed = true;
      problems.push(`pod ${p.metadata.name} Failed: ${JSON.stringify(p.status).slice(0, 300)}`);
    }
  });
  const running: { name: string; pool: string; vm: Vm }[] = [];
  /** When each pool's last slices were freed: a slice stays the agent's for --release-grace after its pod. */
  const freedAt: Record<string, number[]> = {};
  const graceMs = 1_500;
  let restarts = 0;
  let restartReadyMaxMs = 0;
  let failover: Promise<void> | undefined;
  let planChanges = 0;
  const t0 = performance.now();
  const planStart = await c.plan();
  const leaseStart = await c.lease();
  let seq = 0;

  const agentMetrics = async (): Promise<string> => (await c.agent.get('/metrics')).text;
  const sumCount = (text: string, p: SoakPool): { sum: number; count: number } => {
    const [name, labels] = p.frontEnd === 'DRA'
      ? ['virtualio_agent_dra_operation_duration_seconds', { operation: 'prepare', result: 'ok' }]
      : ['virtualio_agent_allocate_duration_seconds', { pool: p.name, result: 'ok' }];
    const v = (x: number): number => (Number.isNaN(x) ? 0 : x);
    return { sum: v(metric(text, `${name}_sum`, labels)), count: v(metric(text, `${name}_count`, labels)) };
  };

  const proc = (pid: number): ProcSample => ({ pid, rssKiB: rssOf(pid).rssKiB, fds: fdsOf(pid).fds });
  const sample = async (cycle: number): Promise<void> => {
    await c.kernel.idle();
    const st = JSON.parse((await c.agent.get('/status')).text) as { slices?: { allocation?: unknown }[] };
    const plan = await c.plan();
    if (plan.generation !== planStart.generation || plan.pools !== planStart.pools) {
      planChanges++;
      problems.push(`cycle ${cycle}: the plan changed: generation ${planStart.generation} → ${plan.generation}`);
    }
    const s: KubeletSoakSample = {
      cycle, ms: Math.round(performance.now() - t0), held: await c.leftovers(),
      agent: proc(c.agent.proc.pid as number),
      operators: c.replicas.map((r) => proc(r.proc.child.pid as number)),
      allocated: st.slices?.filter((x) => x.allocation).length ?? Number.NaN,
      runningVms: running.length,
      violations: c.kernel.violations.length,
    };
    samples.push(s);
    log(`cycle ${cycle}: agent RSS ${(s.agent.rssKiB / 1024).toFixed(1)} MiB fds ${s.agent.fds}; operators ${s.operators.map((x) => `${(x.rssKiB / 1024).toFixed(1)} MiB/${x.fds} fds`).join(', ')}; allocated ${s.allocated}/${s.runningVms} VMs; held ${JSON.stringify(s.held)}; violations ${s.violations}`);
  };

  const waitGone = async (names: string[], ms: number): Promise<void> => {
    const deadline = performance.now() + ms;
    for (;;) {
      const left = names.filter((n) => pods.get(n)?.gone === undefined);
      if (left.length === 0) return;
      if (performance.now() > deadline) {
        // Only a watch that started over can have missed a deletion: then the API server decides.
        if (watchRestarts > 0) {
          for (const n of left) {
            const absent = await c.api('GET', `/api/v1/namespaces/${NS}/pods/${n}`).then(() => false, (e: unknown) => / 404 /.test(String(e)));
            if (absent) pods.get(n)!.gone = Number.NaN;
          }
          if (names.every((n) => pods.get(n)?.gone !== undefined)) return;
        }
        for (const n of names.filter((x) => pods.get(x)?.gone === undefined)) problems.push(`pod ${n} not gone ${Math.round(performance.now() - (pods.get(n)?.deleted ?? 0))} ms after its delete`);
        for (const n of left) pods.get(n)!.gone = Number.NaN;
        return;
      }
      await sleep(50);
    }
  };

  const stopOldest = async (): Promise<void> => {
    const v = running.shift();
    if (!v) return;
    await v.vm.stop();
    pods.get(v.name)!.deleted = performance.now();
    await c.api('DELETE', `/api/v1/namespaces/${NS}/pods/${v.name}`);
    // Freed for the scheduler once gone; for the agent once its release grace has passed too.
    void waitGone([v.name], GONE_MS).then(() => (freedAt[v.pool] ??= []).push(performance.now()));
  };

  /** A pool has room when its running VMs, pods on their way out and slices still in grace leave a slice. */
  const room = (p: SoakPool): boolean => {
    const now = performance.now();
    freedAt[p.name] = (freedAt[p.name] ?? []).filter((t) => now - t < graceMs);
    const leaving = [...pods.entries()].filter(([, m]) => m.pool === p.name && m.deleted !== undefined && m.gone === undefined).length;
    return running.filter((v) => v.pool === p.name).length + leaving + freedAt[p.name]!.length < p.slices;
  };

  /** The VMM stand-in opens what the runtime was handed: device nodes and env (device plugin) or the claim's CDI spec. */
  const vmFor = async (name: string, p: SoakPool): Promise<Vm> => {
    const rec = records.get(name);
    if (!rec) throw new Error(`no CreateContainer record of ${name}`);
    if (p.frontEnd === 'DevicePlugin') {
      return startVmFromAllocation(c.kernel, { containerResponses: [{ envs: rec.envs, devices: (rec.devices ?? []).map((d) => ({ hostPath: d.host_path ?? null })) }] }, { name });
    }
    const nodes: string[] = [];
    for (const d of rec.cdiDevices ?? []) {
      const id = (d.name ?? '').split('=')[1] ?? '';
      const spec = JSON.parse(readFileSync(join(c.cdiDir, `virtualio.dev-claim_${id.slice(0, 36)}.json`), 'utf8')) as { devices: { name: string; containerEdits?: { deviceNodes?: { path: string }[] } }[] };
      const dev = spec.devices.find((x) => x.name === id);
      if (!dev) throw new Error(`${name}: CDI device ${d.name} is not in its claim's spec`);
      nodes.push(...(dev.containerEdits?.deviceNodes ?? []).map((x) => x.path));
    }
    if (nodes.length === 0) throw new Error(`${name}: the runtime got no CDI device node (${JSON.stringify(rec.cdiDevices)})`);
    return startVm(c.kernel, { name, deviceNodes: nodes });
  };
  const vmHolding = async (name: string, p: SoakPool): Promise<Vm> => {
    const vm = await vmFor(name, p);
    if (vm.groups.length + vm.vports.length === 0) problems.push(`VM ${name} was handed nothing it could hold`);
    return vm;
  };

  /** A VM that could not open what it was handed: both pods' records, the pool's slices, the kubelet's device checkpoint. */
  const explain = async (name: string, p: SoakPool, err: unknown): Promise<string> => {
    const holder = /by vm\/(\S+?)\)/.exec(String(err))?.[1];
    const rec = (n: string | undefined): unknown => {
      const r = n ? records.get(n) : undefined;
      return r && { pod: r.podName, uid: r.podUid, env: Object.fromEntries(Object.entries(r.envs).filter(([k]) => /RESOURCE|NPIV/.test(k))), devices: (r.devices ?? []).map((d) => d.host_path), cdi: r.cdiDevices };
    };
    const st = await c.agent.get('/status').then((r) => (JSON.parse(r.text) as { slices?: { pool: string }[] }).slices?.filter((x) => x.pool === p.name), (e: unknown) => String(e));
    let checkpoint: unknown;
    try {
      checkpoint = (JSON.parse(readFileSync(join(c.kubelet.rootDir, 'device-plugins/kubelet_internal_checkpoint'), 'utf8')) as { Data?: { PodDeviceEntries?: { ResourceName: string }[] } }).Data?.PodDeviceEntries?.filter((e) => e.ResourceName === p.resourceName);
    } catch (e) {
      checkpoint = String(e);
    }
    const agentLines = c.agent.logs.filter((l) => JSON.stringify(l).includes(p.name)).slice(-15);
    const kernelEvents = c.kernel.events.slice(-30).map((e) => `${e.path}=${e.value}${e.ok ? '' : ` (${e.error ?? 'refused'})`}${e.blocked ? ' BLOCKED' : ''}`);
    return JSON.stringify({ name, holder, error: String(err), records: [rec(name), rec(holder)], slices: st, kubeletCheckpoint: checkpoint, agentLog: agentLines, kernelEvents, running: running.map((v) => v.name) });
  };

  const startOne = async (p: SoakPool): Promise<void> => {
    const name = `vm-${p.name}-${++seq}`;
    const before = sumCount(await agentMetrics(), p);
    const created = performance.now();
    pods.set(name, { pool: p.name, created });
    await c.api('POST', `/api/v1/namespaces/${NS}/pods`, podObject(name, p));
    const m = pods.get(name)!;
    while (m.running === undefined && !m.failed && performance.now() - created < RUNNING_MS) await sleep(20);
    if (m.running === undefined) {
      const pod = await c.api('GET', `/api/v1/namespaces/${NS}/pods/${name}`).catch((e: unknown) => String(e));
      throw new Error(`${name} not Running after ${RUNNING_MS} ms: ${JSON.stringify((pod as { status?: unknown }).status ?? pod).slice(0, 1500)}\n--- agent ---\n${c.agent.tail()}`);
    }
    runningMs.push(m.running - created);
    const after = sumCount(await agentMetrics(), p);
    const calls = after.count - before.count;
    if (calls >= 1) (p.frontEnd === 'DRA' ? prepareMs : allocateMs).push(((after.sum - before.sum) * 1000) / calls);
    else problems.push(`${name}: the agent counted ${calls} ${p.frontEnd === 'DRA' ? 'prepare' : 'Allocate'} calls for it`);
    try {
      running.push({ name, pool: p.name, vm: await vmHolding(name, p) });
    } catch (err) {
      problems.push(`VM ${name}: ${String(err).slice(0, 300)}`);
      diagnostics.push(await explain(name, p, err));
      await c.api('DELETE', `/api/v1/namespaces/${NS}/pods/${name}`);
      pods.get(name)!.deleted = performance.now();
    }
    perPool[p.name] = (perPool[p.name] ?? 0) + 1;
  };

  try {
    await sample(0);
    let cycle = 0;
    let turn = 0;
    while (cycle < o.cycles && problems.length <= 20) {
      if (!c.agent.alive) {
        problems.push(`the agent exited (${c.agent.exitCode}) at cycle ${cycle}\n${c.agent.tail()}`);
        break;
      }
      while (running.length >= concurrent) await stopOldest();
      let pool: SoakPool | undefined;
      for (let k = 0; k < ORDER.length && !pool; k++) {
        const p = POOLS.find((x) => x.name === ORDER[(turn + k) % ORDER.length])!;
        if (room(p)) pool = p;
      }
      turn++;
      if (!pool) {
        await sleep(100); // every pool full or in its grace: wait rather than spin
        continue;
      }
      await startOne(pool);
      cycle++;
      if (cycle % sampleEvery === 0 || cycle === o.cycles) await sample(cycle);
      if (o.restartEvery && cycle % o.restartEvery === 0 && cycle < o.cycles) {
        const how: NodeJS.Signals = restarts % 2 === 0 ? 'SIGTERM' : 'SIGKILL';
        const ms = await c.restartAgent(how);
        restarts++;
        restartReadyMaxMs = Math.max(restartReadyMaxMs, ms);
        log(`agent restart ${restarts} (${how}) with ${running.length} VMs running: serving again in ${ms} ms`);
      }
      if (o.failoverEvery && cycle % o.failoverEvery === 0 && cycle < o.cycles) {
        // The churn goes on while the Lease changes hands; the previous fail-over must have ended.
        await failover;
        const how = failovers.length % 2 === 0 ? 'SIGKILL' : 'SIGTERM';
        failover = c.failOver(how).then((f) => {
          failovers.push(f);
          log(`operator fail-over ${failovers.length} (${how}): ${f.from} → ${f.to} in ${f.ms} ms`);
        }, (err: unknown) => void problems.push(`fail-over: ${String(err).slice(0, 300)}`));
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    await failover;

    // The end: every VM stops and every pod goes; every slice must come back, on every record.
    while (running.length > 0) await stopOldest();
    await waitGone([...pods.entries()].filter(([, m]) => m.deleted !== undefined).map(([n]) => n), GONE_MS);
    await sleep(graceMs);
    let leftovers = await c.leftovers();
    const deadline = performance.now() + 30_000;
    while (Object.values(leftovers).some((x) => x !== 0) && performance.now() < deadline) {
      await sleep(250);
      leftovers = await c.leftovers();
    }
    await sample(cycle + 1);
    const planEnd = await c.plan();
    const lease = await c.lease();
    const all = [...pods.values()];
    return {
      cycles: cycle, seconds, perPool, allocateMs, prepareMs, runningMs,
      running: all.filter((m) => m.running !== undefined).length,
      gone: all.filter((m) => m.gone !== undefined && !Number.isNaN(m.gone)).length,
      samples, problems,
      violations: c.kernel.violations.map((v) => `${v.path}=${JSON.stringify(v.value)} reached ${v.device} held by ${v.holder}`),
      restarts, restartReadyMaxMs, failovers, leaseTransitions: lease.transitions - leaseStart.transitions,
      planStart, planEnd, planChanges, leftovers, diagnostics,
      blockedWrites: c.kernel.events.filter((e) => e.blocked).map((e) => `${e.path}=${e.value}`),
    };
  } finally {
    podWatch.stop();
    for (const v of running) await v.vm.stop().catch(() => undefined);
  }
}

/** The figures of a run (the issue's list): cycles, Allocate p99 first/last tenth, RSS and fds first/last, leaks. */
export function kubeletSoakFigures(r: KubeletSoakResult): Record<string, number | string> {
  const first = r.samples[0];
  const during = r.samples.filter((s) => s.cycle <= r.cycles);
  const last = during[during.length - 1];
  const end = r.samples[r.samples.length - 1];
  const a = p99FirstLastTenth(r.allocateMs);
  const p = p99FirstLastTenth(r.prepareMs);
  const mib = (k: number): number => Math.round(k / 102.4) / 10;
  const ops = (s: KubeletSoakSample | undefined, f: (x: ProcSample) => number): string => (s ? s.operators.map(f).join('/') : '-');
  return {
    cycles: r.cycles,
    seconds: Math.round(r.seconds),
    cyclesPerMinute: Math.round((r.cycles / r.seconds) * 600) / 10,
    perPool: JSON.stringify(r.perPool),
    allocateCalls: r.allocateMs.length,
    allocateP50Ms: Math.round(pct(r.allocateMs, 50) * 100) / 100,
    allocateP99FirstTenthMs: a.first,
    allocateP99LastTenthMs: a.last,
    prepareCalls: r.prepareMs.length,
    prepareP99FirstTenthMs: p.first,
    prepareP99LastTenthMs: p.last,
    createToRunningP50Ms: Math.round(pct(r.runningMs, 50)),
    createToRunningP99Ms: Math.round(pct(r.runningMs, 99)),
    agentRssFirstMiB: mib(first?.agent.rssKiB ?? Number.NaN),
    agentRssLastMiB: mib(last?.agent.rssKiB ?? Number.NaN),
    agentFdsFirst: first?.agent.fds ?? Number.NaN,
    agentFdsLast: last?.agent.fds ?? Number.NaN,
    agentFdsEnd: end?.agent.fds ?? Number.NaN,
    operatorRssFirstMiB: ops(first, (x) => mib(x.rssKiB)),
    operatorRssLastMiB: ops(last, (x) => mib(x.rssKiB)),
    operatorFdsFirst: ops(first, (x) => x.fds),
    operatorFdsLast: ops(last, (x) => x.fds),
    operatorRssFirstMaxMiB: mib(Math.max(...(first?.operators ?? []).map((x) => x.rssKiB))),
    operatorRssLastMaxMiB: mib(Math.max(...(last?.operators ?? []).map((x) => x.rssKiB))),
    operatorFdsFirstMax: Math.max(...(first?.operators ?? []).map((x) => x.fds)),
    operatorFdsLastMax: Math.max(...(last?.operators ?? []).map((x) => x.fds)),
    restarts: r.restarts,
    restartReadyMaxMs: r.restartReadyMaxMs,
    failovers: r.failovers.length,
    failoverMaxMs: Math.max(0, ...r.failovers.map((f) => f.ms)),
    planChanges: r.planChanges,
    violations: r.violations.length,
    blockedWrites: r.blockedWrites.length,
    problems: r.problems.length,
    podsRunning: r.running,
    podsGone: r.gone,
    leakedSysfs: r.leftovers.sysfs,
    leakedLedger: r.leftovers.ledger + r.leftovers.agentAllocated,
    leakedPodResources: r.leftovers.podResources,
    leakedDra: r.leftovers.draCheckpoint + r.leftovers.cdiClaimSpecs + r.leftovers.resourceClaims,
  };
}
