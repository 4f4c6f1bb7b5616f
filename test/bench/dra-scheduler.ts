// Scheduler throughput with our partitionable slices (issue 19), a figure, never pass/fail.
//
// A private real etcd + kube-apiserver + kube-scheduler (no kubelet, no agent, no controller manager).
// N Node objects are written straight to the API server, each carrying what an agent with two
// A16-like GPUs (the simulated kernel's mdevGpuMixed, scanned once) would publish:
//   * the on-demand pool `a16` as device-plugin/src/dra/ondemand.ts + counters.ts build it: one
//     counter-set ResourceSlice (a counter set per GPU) and one slice of 28 partitionable devices;
//   * the same 28 mdevs as a pre-carved pool `a16pc` publishes them (plain devices, no counters);
//   * extended-resource allocatable `virtualio.dev/a16-2q: 16` (the device-plugin front end).
// Then, in order, on the same cluster (every pod also sees the other modes' slices and pods):
//   dp         pods asking for `virtualio.dev/a16-2q: 1`;
//   precarved  pods, each with its own ResourceClaim for one 2Q of `a16pc`;
//   dra        pods, each with its own ResourceClaim for one 2Q of `a16` (CEL selector on mdevType);
//   match      pods, each claiming two 2Q of `a16` with matchAttribute virtualio.dev/parent (one GPU).
// Claims are created before the clock starts (no ResourceClaimTemplate: that would add the
// controller manager's claim creation, not scheduler work). The clock runs from the first pod create
// to the last pod seen bound. Pods never run.
//
// Binding conditions: the on-demand devices carry `bindingConditions: [virtualio.dev/Carved]`, which
// the agent satisfies after carving; with no agent the scheduler would wait in PreBind for ever. The
// bench strips them (and bindingFailureConditions) before writing: allocation work (counters, CEL,
// partitionable devices, the claim status write) is the same; what is left out is the PreBind wait for
// the carve, which is the on-demand carve time, not scheduler throughput.
//
// The scheduler runs with --kube-api-qps/burst 5000 (as upstream scheduler_perf does): at the default
// 50 QPS the client rate limit, not the scheduler, would cap the DRA figure (two writes per pod).
//
//   node --import ./test/sysfs/ts-hooks.mjs test/bench/dra-scheduler.ts [--nodes 100,500] [--pods 100,20]
//        [--dp-pods 500,1000] [--modes dp,precarved,dra,match] [--give-up-seconds 300] [--keep-logs] [--json]
//        [--scheduler-v 0] [--profile <dir>] [--pools ondemand,precarved]
// --pools: which DRA pools every node publishes (default both; modes whose pool is left out are skipped).
// It matters on 1.36: the scheduler's allocator examines every node's counter-set slice while filtering
// each node, so the on-demand pool's presence slows every DRA mode, pre-carved too (BENCHMARKS.md).
// VIO_BIN_DIR=<folder> runs another kube-scheduler build (the other binaries must be there too).
// --profile writes a CPU profile of kube-scheduler for each mode (`<dir>/<nodes>-<mode>.pprof`, the
// scheduler's /debug/pprof on its secure port, opened to anonymous reads of that path only); read it
// with `go tool pprof -top <file>`.
import { get } from 'node:https';
import { createWriteStream, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { learnCapacity, offeredParents } from '../../device-plugin/src/carving/ondemand.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import { onDemandContent } from '../../device-plugin/src/dra/counters.js';
import { deviceClassFor, resourcePoolName, resourceSlicesFor, type DraDevice } from '../../device-plugin/src/dra/devices.js';
import type { InventoryDevice, PoolPlan } from '../../device-plugin/src/model.js';
import { freePort, startControlPlane } from '../cluster/control-plane.js';
import { FakeKernel, mdevGpuMixed } from '../sysfs/kernel.js';
import { client, type Api } from './api.js';
import { machine, scratchDir, summarize } from './lib.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const sizes = flag('nodes', '100,500').split(',').map(Number);
const podCounts = flag('pods', '100,20').split(',').map(Number);
const dpPodCounts = flag('dp-pods', '500,1000').split(',').map(Number);
const modes = flag('modes', 'dp,precarved,dra,match').split(',') as Mode[];
// Which DRA pools every node publishes (the device-plugin allocatable is always there).
const published = new Set(flag('pools', 'ondemand,precarved').split(','));
const say = (m: string): void => void process.stderr.write(`[dra-scheduler] ${m}\n`);
type Mode = 'dp' | 'precarved' | 'dra' | 'match';

const GPUS = ['0000:3b:00.0', '0000:3c:00.0'];
const TYPE_2Q = 'nvidia-745';
const DP_RESOURCE = 'virtualio.dev/a16-2q';
const PRECARVED = 'a16pc';
const pool: PoolPlan = { name: 'a16', resourceName: 'virtualio.dev/a16', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: ['nvidia-745', 'nvidia-746', 'nvidia-747'] }, devices: GPUS.map((pciAddress) => ({ pciAddress })) };

/** Runs `fn` over `items` with at most `width` in flight. */
async function parallel<T>(items: readonly T[], width: number, fn: (x: T, i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

/**
 * Records the first time each pod of `ns` is seen bound, polling the API server's cache every 100 ms
 * (a list from the watch cache; a figure is at most one poll late).
 */
function pollBinds(api: Api, ns: string): { binds: Map<string, number>; stop: () => void } {
  const binds = new Map<string, number>();
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const l = await api('GET', `/api/v1/namespaces/${ns}/pods?resourceVersion=0&fieldSelector=spec.nodeName!%3D`).catch(() => undefined) as { items?: { metadata: { name: string } }[] } | undefined;
      const now = performance.now();
      for (const p of l?.items ?? []) if (!binds.has(p.metadata.name)) binds.set(p.metadata.name, now);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return { binds, stop: () => void (stopped = true) };
}

/** The node's published on-demand objects, without binding conditions (see the header). */
async function sliceTemplate(): Promise<{ devices: Map<string, InventoryDevice>; build: (node: string) => unknown[] }> {
  const base = await scratchDir('vio-dra-sched-');
  const k = await FakeKernel.create(join(base, 'sys'), join(base, 'dev'));
  for (const [i, g] of GPUS.entries()) await k.addFunction(mdevGpuMixed(g, { numaNode: i }));
  const inv = await scan(join(base, 'sys'), { devRoot: join(base, 'dev') });
  rmSync(base, { recursive: true, force: true });
  const devices = new Map<string, InventoryDevice>(inv.devices.map((d) => [d.pciAddress, d]));
  const offered = offeredParents(pool, devices, learnCapacity({}, GPUS, devices));
  return {
    devices,
    build: (node) => {
      const c = onDemandContent(node, pool, offered, devices, new Set(), { devices });
      const chunks = c.chunks.map((ch) => ch.map((d): DraDevice => {
        const { bindingConditions: _b, bindingFailureConditions: _f, ...rest } = d as DraDevice & { bindingFailureConditions?: string[] };
        return rest;
      }));
      // The same 28 mdevs as a pre-carved pool publishes them: plain devices, no counters, no conditions.
      const plain = chunks.map((ch) => ch.map((d): DraDevice => {
        const { consumesCounters: _c, ...rest } = d;
        return { ...rest, attributes: { ...rest.attributes, pool: { string: PRECARVED } } };
      }));
      return [
        ...(published.has('ondemand') ? resourceSlicesFor(node, { pool: pool.name, poolName: resourcePoolName(node, pool.name), chunks, counterChunks: c.counterChunks }, 1) : []),
        ...(published.has('precarved') ? resourceSlicesFor(node, { pool: PRECARVED, poolName: resourcePoolName(node, PRECARVED), chunks: plain }, 1) : []),
      ];
    },
  };
}

function nodeObject(name: string): unknown {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const res = { cpu: '64', memory: '256Gi', pods: '110', [DP_RESOURCE]: '16' };
  return {
    apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name } },
    status: { capacity: res, allocatable: res, conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'bench node', lastHeartbeatTime: now, lastTransitionTime: now }] },
  };
}

function claimObject(ns: string, name: string, mode: Mode): unknown {
  const cls = mode === 'precarved' ? `${PRECARVED}.virtualio.dev` : 'a16.virtualio.dev';
  const one = (n: string): unknown => ({ name: n, exactly: { deviceClassName: cls, selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${TYPE_2Q}"` } }] } });
  const devices = mode === 'match'
    ? { requests: [one('a'), one('b')], constraints: [{ requests: ['a', 'b'], matchAttribute: 'virtualio.dev/parent' }] }
    : { requests: [one('vgpu')] };
  return { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: ns }, spec: { devices } };
}

function podObject(ns: string, name: string, mode: Mode): unknown {
  const container = { name: 'compute', image: 'example.invalid/virt-launcher:1' };
  if (mode === 'dp') return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns }, spec: { containers: [{ ...container, resources: { limits: { [DP_RESOURCE]: '1' } } }] } };
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: ns },
    spec: { resourceClaims: [{ name: 'gpu', resourceClaimName: name }], containers: [{ ...container, resources: { claims: [{ name: 'gpu' }] } }] },
  };
}

interface RunFigure { nodes: number; pods: number; mode: Mode; bound: number; createSeconds: number; bindSeconds: number; podsPerSecond: number; createToBindMs: ReturnType<typeof summarize> }

/** Fetches a CPU profile of `seconds` from the scheduler's /debug/pprof into `file` (resolves when written). */
function captureProfile(port: number, seconds: number, file: string): Promise<void> {
  return new Promise((res) => {
    const req = get(`https://127.0.0.1:${port}/debug/pprof/profile?seconds=${seconds}`, { rejectUnauthorized: false, timeout: (seconds + 30) * 1000 }, (r) => {
      if (r.statusCode !== 200) {
        say(`profile: HTTP ${r.statusCode} from the scheduler`);
        r.resume();
        res();
        return;
      }
      r.pipe(createWriteStream(file)).on('finish', () => { say(`profile written: ${file}`); res(); });
    });
    req.on('error', (e) => { say(`profile: ${e.message}`); res(); });
  });
}

let profilePort: number | undefined;

async function runMode(api: Api, nodes: number, pods: number, mode: Mode): Promise<RunFigure> {
  const ns = `bench-${mode}`;
  await api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  const names = Array.from({ length: pods }, (_, i) => `p-${i}`);
  if (mode !== 'dp') await parallel(names, 16, (n) => api('POST', `/apis/resource.k8s.io/v1/namespaces/${ns}/resourceclaims`, claimObject(ns, n, mode)));
  const w = pollBinds(api, ns);
  const created = new Map<string, number>();
  const t0 = performance.now();
  const profileDir = flag('profile', '');
  const profiled = profilePort === undefined || !profileDir ? Promise.resolve() : captureProfile(profilePort, Number(flag('profile-seconds', '20')), join(profileDir, `${nodes}-${mode}.pprof`));
  await parallel(names, 16, async (n) => {
    created.set(n, performance.now());
    await api('POST', `/api/v1/namespaces/${ns}/pods`, podObject(ns, n, mode));
  });
  const createSeconds = (performance.now() - t0) / 1000;
  // Bounded: a pod the scheduler cannot place would stall here; give up after --give-up-seconds (300).
  const deadline = performance.now() + Number(flag('give-up-seconds', '300')) * 1000;
  while (w.binds.size < pods && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  w.stop();
  if (w.binds.size < pods) {
    const left = names.find((n) => !w.binds.has(n))!;
    const p = await api('GET', `/api/v1/namespaces/${ns}/pods/${left}`) as { spec?: { nodeName?: string }; status?: unknown };
    say(`${mode}: only ${w.binds.size}/${pods} seen bound; e.g. ${left}: nodeName ${p.spec?.nodeName ?? '-'}, status ${JSON.stringify(p.status)}`);
    // Pods still queued would take the scheduler's time from the next mode: delete them.
    await parallel(names.filter((n) => !w.binds.has(n)), 8, (n) => api('DELETE', `/api/v1/namespaces/${ns}/pods/${n}?gracePeriodSeconds=0`).catch(() => undefined));
  }
  const last = Math.max(...w.binds.values());
  const bindSeconds = (last - t0) / 1000;
  const lat = names.filter((n) => w.binds.has(n)).map((n) => w.binds.get(n)! - created.get(n)!);
  await profiled;
  const f: RunFigure = { nodes, pods, mode, bound: w.binds.size, createSeconds: r2(createSeconds), bindSeconds: r2(bindSeconds), podsPerSecond: r2(w.binds.size / bindSeconds), createToBindMs: summarize(lat) };
  say(`${nodes} nodes, ${mode}: ${f.bound}/${pods} bound in ${f.bindSeconds} s (${f.podsPerSecond} pods/s; creates took ${f.createSeconds} s), create → bound p50 ${f.createToBindMs.p50} ms, p90 ${f.createToBindMs.p90} ms`);
  return f;
}

const r2 = (x: number): number => Math.round(x * 100) / 100;

async function main(): Promise<void> {
  const tpl = await sliceTemplate();
  const figures: RunFigure[] = [];
  const load: string[] = [];
  for (const [i, nodes] of sizes.entries()) {
    const pods = podCounts[i] ?? podCounts[podCounts.length - 1]!;
    const dpPods = dpPodCounts[i] ?? dpPodCounts[dpPodCounts.length - 1]!;
    say(`starting a control plane for ${nodes} nodes`);
    const profiling: string[] = [];
    if (flag('profile', '')) {
      mkdirSync(flag('profile', ''), { recursive: true });
      profilePort = await freePort();
      // The scheduler has no delegated authentication/authorization here: open only these paths.
      profiling.push(`--secure-port=${profilePort}`, '--profiling=true', '--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics,/debug/pprof,/debug/pprof/*');
    }
    const cp = await startControlPlane({ scheduler: true, schedulerArgs: ['--kube-api-qps=5000', '--kube-api-burst=5000', `--v=${flag('scheduler-v', '0')}`, ...profiling] });
    try {
      const api = client(cp);
      for (const p of [pool.name, PRECARVED]) await api('POST', '/apis/resource.k8s.io/v1/deviceclasses', deviceClassFor(p));
      const ns = Array.from({ length: nodes }, (_, k) => `bench-node-${String(k).padStart(4, '0')}`);
      const t = performance.now();
      await parallel(ns, 16, async (n) => {
        await api('POST', '/api/v1/nodes', nodeObject(n));
        // The TaintNodesByCondition admission plugin adds the not-ready taint on create; no node
        // lifecycle controller runs here to lift it.
        await api('PATCH', `/api/v1/nodes/${n}`, { spec: { taints: null } });
        for (const s of tpl.build(n)) await api('POST', '/apis/resource.k8s.io/v1/resourceslices', s);
      });
      say(`${nodes} nodes and their ResourceSlices (${[...published].join(', ')}) written in ${((performance.now() - t) / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, 3000)); // the scheduler's informers catch up
      for (const m of modes) {
        if ((m === 'dra' || m === 'match') && !published.has('ondemand')) continue;
        if (m === 'precarved' && !published.has('precarved')) continue;
        load.push(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]!);
        figures.push(await runMode(api, nodes, m === 'dp' ? dpPods : pods, m));
      }
    } finally {
      await cp.stop();
      if (argv.includes('--keep-logs')) say(`control plane logs kept in ${cp.dir}`);
      else rmSync(cp.dir, { recursive: true, force: true });
    }
  }
  const out = { machine: machine(), loadAverageAtEachRun: load, pools: [...published], schedulerBinary: process.env.VIO_BIN_DIR ?? 'build-bins.sh', schedulerArgs: ['--kube-api-qps=5000', '--kube-api-burst=5000'], bindingConditions: 'stripped (no agent)', figures };
  if (argv.includes('--json')) process.stdout.write(`BENCH_RESULT ${JSON.stringify(out)}\n`);
  else process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
}

await main();
