// Node-side benchmarks of the REAL agent process (figures, not a test; nothing here asserts):
//   start   agent start → every pool registered with the fake kubelet and all 1,024 slices listed
//           Healthy, on a tree whose VFs are already carved (what a restarted agent finds); repeated;
//   carve   the same from a bare tree (the agent enables 1,024 VFs and binds them to vfio-pci through
//           the fake kernel daemon, which runs in this process and is part of the figure);
//   rss     agent VmRSS idle with 1,024 slices, and VmRSS/VmHWM under Allocate load;
//   health  a VF unbound from vfio-pci through the fake kernel → the kubelet's ListAndWatch shows it
//           Unhealthy; re-bound → Healthy again; ≥ 30 changes each way.
// Layout: 4 pools × 4 ConnectX-6 PFs × 64 VFs = 1,024 slices (`--pfs`, `--vfs` change it); carve
// uses 4 PFs × 16 VFs (`--carve-pfs`, `--carve-vfs`): see CARVE_PFS.
// Run:  node --import ./test/sysfs/ts-hooks.mjs test/bench/agent-node.ts [--only start,carve,rss,health]
//       [--starts 5] [--changes 40] [--load-seconds 10] [--profile <dir>]
import { writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { AgentProcess } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { FakeKernel } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { cpuSecondsOf, machine, memoryOf, nicTree, out, printResult, scratchDir, spawnAgent, summarize, topFunctions, type BenchFigure } from './lib.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const ONLY = new Set(flag('only', 'start,carve,rss,health').split(','));
const STARTS = Number(flag('starts', '5'));
const CHANGES = Number(flag('changes', '40'));
const LOAD_S = Number(flag('load-seconds', '10'));
const PROFILE_DIR = flag('profile', '');
/** Node flags for the agent process, e.g. --agent-node-options "--max-semi-space-size=1". */
const AGENT_NODE_ARGS = flag('agent-node-options', '').split(' ').filter(Boolean);
const POOLS = 4;
const PFS = Number(flag('pfs', '16'));
const VFS = Number(flag('vfs', '64'));
const SLICES = PFS * VFS;
// Carving from scratch goes through the fake kernel daemon, whose cost grows with the square of the
// functions in the tree (it re-lists the tree after every write): a smaller tree by default.
const CARVE_PFS = Number(flag('carve-pfs', '4'));
const CARVE_VFS = Number(flag('carve-vfs', '16'));
const say = (m: string): void => void process.stderr.write(`[bench agent-node] ${m}\n`);
const resource = (p: number): string => `virtualio.dev/bench-${p}`;

interface Rig {
  dir: string;
  sys: string;
  dev: string;
  kubelet: FakeKubelet;
  podres: FakePodResources;
  planFile: string;
  starts: number;
  slices: number;
}

async function rig(preCarved: boolean, nPfs = PFS, nVfs = VFS): Promise<Rig> {
  const dir = await scratchDir('vio-bench-node-');
  const { sys, dev, pfs } = await nicTree(dir, { pfs: nPfs, vfsPerPf: nVfs, preCarved });
  const per = Math.ceil(nPfs / POOLS);
  const pools = Array.from({ length: POOLS }, (_, p) => ({
    name: `bench-${p}`, resourceName: resource(p), class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: nVfs,
    devices: pfs.slice(p * per, (p + 1) * per).map((pciAddress) => ({ pciAddress })),
  }));
  const planFile = join(dir, 'plan.json');
  writeFileSync(planFile, JSON.stringify({ pools }));
  const kubelet = await FakeKubelet.start(join(dir, 'device-plugins-0'));
  const podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
  return { dir, sys, dev, kubelet, podres, planFile, starts: 0, slices: nPfs * nVfs };
}

async function teardown(r: Rig): Promise<void> {
  await r.kubelet.stop();
  await r.podres.stop();
  await rm(r.dir, { recursive: true, force: true });
}

function agentArgs(r: Rig): string[] {
  return [
    '--plan-file', r.planFile, '--node-name', 'bench', '--sysfs-root', r.sys, '--dev-root', r.dev,
    '--plugin-dir', r.kubelet.pluginDir, '--pod-resources-socket', r.podres.socket, '--devinfo-dir', join(r.dir, 'devinfo'),
    '--rescan-interval', '30s', '--metrics-address', '127.0.0.1:0', '--log-level', 'info',
  ];
}

const allHealthy = (k: FakeKubelet, slices: number): boolean =>
  Array.from({ length: POOLS }, (_, p) => k.lastList(resource(p))?.filter((d) => d.health === 'Healthy').length ?? 0).reduce((a, b) => a + b, 0) === slices;

/** Spawns the agent and resolves when every pool is registered with all its slices Healthy. */
async function startToRegistered(r: Rig, profileDir?: string): Promise<{ agent: AgentProcess; ms: number; firstLogMs: number; registeredMs: number; carvingWrites: number }> {
  if (r.starts++ > 0) {
    // A fresh kubelet (new plugin folder) for every start, so nothing registered before counts.
    await r.kubelet.stop();
    r.kubelet = await FakeKubelet.start(join(r.dir, `device-plugins-${r.starts}`));
  }
  const wall = Date.now();
  const s = performance.now();
  const agent = await spawnAgent(agentArgs(r), { nodeArgs: AGENT_NODE_ARGS, ...(profileDir ? { cpuProfileDir: profileDir } : {}) });
  let registeredMs = Number.NaN;
  await r.kubelet.waitFor('every pool registered', () => {
    const ok = Array.from({ length: POOLS }, (_, p) => r.kubelet.endpoints.has(resource(p))).every(Boolean);
    if (ok && Number.isNaN(registeredMs)) registeredMs = performance.now() - s;
    return ok;
  }, 600_000).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${agent.tail()}`);
  });
  await r.kubelet.waitFor(`${r.slices} healthy slices`, () => allHealthy(r.kubelet, r.slices), 1_800_000).catch((err: unknown) => {
    throw new Error(`${String(err)}\n${agent.tail()}`);
  });
  const ms = performance.now() - s;
  const first = agent.logs[0];
  const carvingWrites = agent.logs.filter((l) => l.msg === 'carving').reduce((a, l) => a + ((l.writes as unknown[] | undefined)?.length ?? 0), 0);
  return { agent, ms, firstLogMs: first ? Date.parse(String(first.time)) - wall : Number.NaN, registeredMs, carvingWrites };
}

async function stopAgent(agent: AgentProcess): Promise<void> {
  await agent.stop('SIGTERM');
}

const figures: BenchFigure[] = [];
const details: Record<string, unknown> = {};

async function benchStart(): Promise<void> {
  say(`start → registered: ${STARTS} starts on a pre-carved tree of ${SLICES} slices`);
  const r = await rig(true);
  const runs: { ms: number; firstLogMs: number; registeredMs: number; carvingWrites: number }[] = [];
  try {
    for (let i = 0; i < STARTS; i++) {
      const res = await startToRegistered(r, i === 0 && PROFILE_DIR ? join(PROFILE_DIR, 'start') : undefined);
      await stopAgent(res.agent);
      runs.push({ ms: res.ms, firstLogMs: res.firstLogMs, registeredMs: res.registeredMs, carvingWrites: res.carvingWrites });
      say(`  start ${i + 1}: ${res.ms.toFixed(0)} ms (first log line ${res.firstLogMs} ms, all pools registered ${res.registeredMs.toFixed(0)} ms, carving writes ${res.carvingWrites})`);
      await new Promise((res2) => setTimeout(res2, 500));
    }
  } finally {
    await teardown(r);
  }
  const st = summarize(runs.map((x) => x.ms));
  details.start = { runs, summary: st, firstLog: summarize(runs.map((x) => x.firstLogMs)), registered: summarize(runs.map((x) => x.registeredMs)) };
  figures.push({ key: 'startToRegisteredMs', label: `agent start → ${POOLS} pools registered, ${SLICES} slices Healthy (pre-carved), median of ${STARTS}`, value: st.p50, unit: 'ms', max: 2000 });
  figures.push({ key: 'startToRegisteredMaxMs', label: 'same, slowest start', value: st.max, unit: 'ms', max: 2000 });
  figures.push({ key: 'startFirstLogMs', label: 'same, process spawn → first log line (Node boot + imports), median', value: summarize(runs.map((x) => x.firstLogMs)).p50, unit: 'ms' });
}

async function benchCarve(): Promise<void> {
  const n = CARVE_PFS * CARVE_VFS;
  say(`carve from scratch: ${n} VFs (${CARVE_PFS} PFs × ${CARVE_VFS}) enabled and bound by the agent through the fake kernel daemon`);
  const r = await rig(false, CARVE_PFS, CARVE_VFS);
  let kernel: KernelHandle | undefined;
  try {
    kernel = await startKernel(r.sys, r.dev, { pollMs: 1000 });
    const res = await startToRegistered(r, PROFILE_DIR ? join(PROFILE_DIR, 'carve') : undefined);
    const writes = kernel.events.length;
    await stopAgent(res.agent);
    const passes = res.agent.logs.filter((l) => l.msg === 'carving').length;
    details.carve = { slices: n, ms: res.ms, kernelWrites: writes, carvingPasses: passes, registeredMs: res.registeredMs };
    say(`  carve: ${res.ms.toFixed(0)} ms, ${writes} sysfs writes applied by the fake kernel in ${passes} carving passes`);
    figures.push({ key: 'carveFromScratchMs', label: `agent start → ${n} slices carved and Healthy (bare tree; includes the fake kernel daemon's work)`, value: Math.round(res.ms), unit: 'ms' });
  } finally {
    await kernel?.stop();
    await teardown(r);
  }
}

async function benchRssAndHealth(doRss: boolean, doHealth: boolean): Promise<void> {
  // No kernel daemon here: the benchmark changes the tree in-process through the fake kernel
  // (FakeKernel.write, kernel semantics, applied at once), so nothing queues in front of a change
  // and the agent's own futile re-bind writes (plain files without the daemon) change nothing.
  const r = await rig(true);
  const kernel = new FakeKernel(r.sys, r.dev);
  const { agent } = await startToRegistered(r, PROFILE_DIR ? join(PROFILE_DIR, 'health') : undefined);
  const pid = agent.proc.pid as number;
  try {
    if (doRss) {
      say('rss: idle 5 s, then Allocate load');
      await new Promise((res) => setTimeout(res, 5000));
      const idle = memoryOf(pid);
      const heap = async (): Promise<Record<string, number>> => {
        const text = (await agent.get('/metrics')).text;
        const mib = (re: RegExp): number => Math.round(Number(re.exec(text)?.[1] ?? Number.NaN) / 104857.6) / 10;
        return {
          heapUsedMiB: mib(/^\S*nodejs_heap_size_used_bytes(?:\{[^}]*\})? (\S+)/m),
          heapTotalMiB: mib(/^\S*nodejs_heap_size_total_bytes(?:\{[^}]*\})? (\S+)/m),
          externalMiB: mib(/^\S*nodejs_external_memory_bytes(?:\{[^}]*\})? (\S+)/m),
        };
      };
      const idleHeap = await heap().catch(() => ({}));
      const ids = Array.from({ length: POOLS }, (_, p) => (r.kubelet.lastList(resource(p)) ?? []).map((d) => d.ID));
      let calls = 0;
      let peak = idle.rssMiB;
      const cpu0 = cpuSecondsOf(pid);
      const end = performance.now() + LOAD_S * 1000;
      const sampler = setInterval(() => {
        peak = Math.max(peak, memoryOf(pid).rssMiB);
      }, 100);
      await Promise.all(Array.from({ length: 4 }, async (_, w) => {
        let i = w;
        while (performance.now() < end) {
          const p = i % POOLS;
          const list = ids[p] ?? [];
          const n = i % 3 === 0 ? 8 : 1;
          const chosen = Array.from({ length: n }, (_, j) => list[(i * 8 + j) % list.length] ?? '');
          await r.kubelet.allocate(resource(p), chosen);
          if (i % 4 === 0) await r.kubelet.preferred(resource(p), list, [], 2);
          calls++;
          i += 4;
        }
      }));
      clearInterval(sampler);
      const loaded = memoryOf(pid);
      const cpu = cpuSecondsOf(pid) - cpu0;
      const loadedHeap = await heap().catch(() => ({}));
      details.rss = { idle, idleHeap, loaded, loadedHeap, nodeArgs: AGENT_NODE_ARGS, peakRssMiB: peak, allocateCalls: calls, callsPerSecond: Math.round(calls / LOAD_S), agentCpuSeconds: cpu };
      say(`  heap idle ${JSON.stringify(idleHeap)}, after load ${JSON.stringify(loadedHeap)}`);
      say(`  idle RSS ${idle.rssMiB} MiB; under ${Math.round(calls / LOAD_S)} Allocate/s: peak RSS ${peak} MiB, VmHWM ${loaded.hwmMiB} MiB, agent CPU ${cpu.toFixed(1)} s`);
      figures.push({ key: 'agentRssIdleMiB', label: `agent VmRSS idle, ${SLICES} slices in ${POOLS} pools`, value: idle.rssMiB, unit: 'MiB', max: 80 });
      figures.push({ key: 'agentRssLoadMiB', label: `agent VmHWM (peak RSS) after ${LOAD_S} s of Allocate load (${Math.round(calls / LOAD_S)} calls/s)`, value: loaded.hwmMiB, unit: 'MiB', max: 80 });
      await new Promise((res) => setTimeout(res, 2000));
    }
    if (doHealth) {
      say(`health: ${CHANGES} VFs unbound from vfio-pci through the fake kernel, then re-bound`);
      const toUnhealthy: number[] = [];
      const toHealthy: number[] = [];
      for (let i = 0; i < CHANGES; i++) {
        const p = i % POOLS;
        const list = r.kubelet.lastList(resource(p)) ?? [];
        const vf = list[(i * 37) % list.length]?.ID as string;
        const health = (): string | undefined => r.kubelet.lastList(resource(p))?.find((d) => d.ID === vf)?.health;
        const s = performance.now();
        await kernel.write('bus/pci/drivers/vfio-pci/unbind', vf);
        await r.kubelet.waitFor(`${vf} Unhealthy`, () => health() === 'Unhealthy', 30_000);
        toUnhealthy.push(performance.now() - s);
        await new Promise((res) => setTimeout(res, 100 + ((i * 53) % 200)));
        const s2 = performance.now();
        await kernel.write('bus/pci/drivers_probe', vf); // driver_override is still vfio-pci
        await r.kubelet.waitFor(`${vf} Healthy again`, () => health() === 'Healthy', 30_000).catch(async (err: unknown) => {
          throw new Error(`${String(err).slice(0, 300)}\ndriver of ${vf}: ${await kernel.driverOf(vf)}\n${agent.tail()}`);
        });
        toHealthy.push(performance.now() - s2);
        await new Promise((res) => setTimeout(res, 100 + ((i * 71) % 200)));
      }
      const u = summarize(toUnhealthy);
      const h = summarize(toHealthy);
      const both = summarize([...toUnhealthy, ...toHealthy]);
      details.health = { toUnhealthy: u, toHealthy: h, both };
      say(`  unbind → Unhealthy in the kubelet's list: p50 ${u.p50} ms, p99 ${u.p99} ms, max ${u.max} ms`);
      say(`  re-bind → Healthy in the kubelet's list:  p50 ${h.p50} ms, p99 ${h.p99} ms, max ${h.max} ms`);
      figures.push({ key: 'healthPropagationP50Ms', label: `VF unbound → kubelet's ListAndWatch shows it Unhealthy, p50 of ${CHANGES}`, value: u.p50, unit: 'ms', max: 1000 });
      figures.push({ key: 'healthPropagationP99Ms', label: `same, p99 of ${CHANGES}`, value: u.p99, unit: 'ms', max: 1000 });
      figures.push({ key: 'healthRecoveryP99Ms', label: `VF re-bound → Healthy in the kubelet's list, p99 of ${CHANGES}`, value: h.p99, unit: 'ms', max: 1000 });
    }
  } finally {
    await stopAgent(agent);
    await teardown(r);
  }
}

async function main(): Promise<void> {
  const m = machine();
  say(`machine: ${m.cpuModel}, ${m.nproc} CPUs, ${m.memGiB} GiB, Node ${m.node}, load ${m.load1}`);
  if (ONLY.has('start')) await benchStart();
  if (ONLY.has('carve')) await benchCarve();
  if (ONLY.has('rss') || ONLY.has('health')) await benchRssAndHealth(ONLY.has('rss'), ONLY.has('health'));
  if (PROFILE_DIR) {
    for (const sub of ['start', 'carve', 'health']) {
      const files = await readdir(join(PROFILE_DIR, sub)).catch(() => [] as string[]);
      const f = files.find((x) => x.endsWith('.cpuprofile'));
      if (!f) continue;
      out(`CPU profile of the agent (${sub}): ${join(PROFILE_DIR, sub, f)}; top functions by total time:`);
      for (const t of topFunctions(join(PROFILE_DIR, sub, f), 20)) out(`  ${String(t.totalMs).padStart(6)} ms total ${String(t.selfMs).padStart(6)} ms self  ${t.fn}  ${t.where}`);
    }
  }
  out(`virtualio agent, node side: ${SLICES} slices (${POOLS} pools × ${PFS / POOLS} PFs × ${VFS} VFs); machine ${m.nproc} CPUs, load ${m.load1}`);
  for (const f of figures) out(`  ${f.label}: ${f.value} ${f.unit}${f.max !== undefined ? `  (target ≤ ${f.max} ${f.unit}: ${f.value <= f.max ? 'met' : 'MISSED'})` : ''}`);
  printResult('agent-node', figures, { machine: m, details });
}

await main();
