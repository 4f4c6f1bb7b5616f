// Agent start-up and idle memory (issue 22; figures, not a test; nothing here asserts). The REAL agent
// process, standalone, on a small pre-carved tree of the size of the peer run in BENCHMARKS.md
// (2 pools × 1 ConnectX-6 PF × 8 VFs = 16 slices), a fresh fake kubelet for every start. Per start:
//   spawn → first stdout line   Node boot + the imports before the first log line;
//   spawn → registered          every pool registered with the kubelet;
//   spawn → ready               every slice listed Healthy in the kubelet's ListAndWatch;
//   CPU until ready             user + system time of the agent at that moment (10 ms ticks);
//   VmRSS idle                  `--idle-seconds` after ready; VmHWM then.
// Times are taken in this process (performance.now() when the line or the kubelet's message arrives).
// The first start of a run is reported apart (cold page cache, an empty compile cache); medians are of
// the others. Variants (repeat the flags to compare within one run):
//   --variant name=<label>[;node=<node flags>][;env=K=V,K=V][;main=<entry .js>][;cache=warm]
//   a `{tmp}` in env is replaced with a fresh folder for the variant (e.g. NODE_COMPILE_CACHE={tmp});
//   `cache=warm` fills a fresh compile cache before the first start the way the image's build does
//   (scripts/warm-compile-cache.mjs) and points NODE_COMPILE_CACHE at it. Default variants: the agent
//   without a compile cache and as the image runs it (warm cache), both with --agent-node-options.
// Run:  node --import ./test/sysfs/ts-hooks.mjs test/bench/agent-start.ts [--starts 7] [--idle-seconds 2]
//       [--agent-node-options "<flags>"] [--variant ...]... [--json]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ensureAgentBuilt, REPO } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { cpuSecondsOf, machine, memoryOf, nicTree, out, printResult, scratchDir, spawnAgent, summarize, type BenchFigure } from './lib.js';

const argv = process.argv.slice(2);
const flag = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? (argv[i + 1] ?? def) : def;
};
const flags = (name: string): string[] => argv.flatMap((a, i) => (a === `--${name}` && argv[i + 1] !== undefined ? [argv[i + 1] as string] : []));
const STARTS = Number(flag('starts', '7'));
const IDLE_S = Number(flag('idle-seconds', '2'));
const AGENT_NODE_OPTIONS = flag('agent-node-options', '');
const POOLS = 2;
const VFS = 8;
const say = (m: string): void => void process.stderr.write(`[bench agent-start] ${m}\n`);
const resource = (p: number): string => `virtualio.dev/start-${p}`;

interface Variant {
  name: string;
  nodeArgs: string[];
  env: Record<string, string>;
  main?: string;
}

const tmpDirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'vio-bench-cache-'));
  tmpDirs.push(d);
  return d;
};

async function parseVariant(spec: string): Promise<Variant> {
  const v: Variant = { name: spec, nodeArgs: [], env: {} };
  for (const part of spec.split(';')) {
    const eq = part.indexOf('=');
    const k = part.slice(0, eq);
    const val = part.slice(eq + 1);
    if (k === 'name') v.name = val;
    else if (k === 'node') v.nodeArgs = val.split(' ').filter(Boolean);
    else if (k === 'main') v.main = val;
    else if (k === 'env') {
      for (const kv of val.split(',').filter(Boolean)) {
        const i = kv.indexOf('=');
        v.env[kv.slice(0, i)] = kv.slice(i + 1).replaceAll('{tmp}', tmp);
      }
    } else if (k === 'cache' && val === 'warm') {
      const main = v.main ?? (await ensureAgentBuilt());
      const src = join(main, '..');
      v.env.NODE_COMPILE_CACHE = tmp();
      execFileSync(process.execPath, [join(REPO, 'scripts/warm-compile-cache.mjs'), src, join(src, '../../proto')], { env: { ...process.env, ...v.env }, stdio: 'ignore' });
    }
  }
  return v;
}

interface StartRun {
  firstLineMs: number;
  registeredMs: number;
  readyMs: number;
  /** CPU seconds (user + system) the agent used until ready, in ms: the start's cost, less sensitive than times to the machine's load. */
  cpuToReadyMs: number;
  rssIdleMiB: number;
  hwmMiB: number;
}

async function oneStart(v: Variant, dir: string, sys: string, dev: string, planFile: string, n: number): Promise<StartRun> {
  const kubelet = await FakeKubelet.start(join(dir, `device-plugins-${n}`));
  const podres = await FakePodResources.start(join(dir, `pod-resources-${n}`, 'kubelet.sock'));
  const args = [
    '--plan-file', planFile, '--node-name', 'bench', '--sysfs-root', sys, '--dev-root', dev,
    '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket, '--devinfo-dir', join(dir, 'devinfo'),
    '--state-dir', join(dir, 'state'), '--rescan-interval', '30s', '--metrics-address', '127.0.0.1:0', '--log-level', 'info',
  ];
  const s = performance.now();
  const agent = await spawnAgent(args, { nodeArgs: v.nodeArgs, env: v.env, ...(v.main ? { main: v.main } : {}) });
  let firstLineMs = Number.NaN;
  agent.proc.stdout?.once('data', () => (firstLineMs = performance.now() - s));
  // An agent that exits (a bad Node flag, a crash) fails the run at once instead of at the timeout.
  const died = new Promise<never>((_, reject) => agent.proc.once('exit', (code) => reject(new Error(`the agent exited (${code}) before it was ready`))));
  died.catch(() => undefined);
  try {
    let registeredMs = Number.NaN;
    await Promise.race([died, kubelet.waitFor('every pool registered', () => {
      const ok = Array.from({ length: POOLS }, (_, p) => kubelet.endpoints.has(resource(p))).every(Boolean);
      if (ok && Number.isNaN(registeredMs)) registeredMs = performance.now() - s;
      return ok;
    }, 120_000)]);
    await Promise.race([died, kubelet.waitFor('every slice Healthy', () =>
      Array.from({ length: POOLS }, (_, p) => kubelet.lastList(resource(p))?.filter((d) => d.health === 'Healthy').length ?? 0).reduce((a, b) => a + b, 0) === POOLS * VFS, 120_000)]);
    const readyMs = performance.now() - s;
    const cpuToReadyMs = cpuSecondsOf(agent.proc.pid as number) * 1000;
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const mem = memoryOf(agent.proc.pid as number);
    return { firstLineMs, registeredMs, readyMs, cpuToReadyMs, rssIdleMiB: mem.rssMiB, hwmMiB: mem.hwmMiB };
  } catch (err) {
    throw new Error(`${String(err)}\n${agent.tail()}`, { cause: err });
  } finally {
    await agent.stop('SIGTERM');
    await kubelet.stop();
    await podres.stop();
  }
}

const defaults = [`name=no compile cache;node=${AGENT_NODE_OPTIONS}`, `name=as in the image (warm compile cache);cache=warm;node=${AGENT_NODE_OPTIONS}`];
const variants: Variant[] = [];
for (const spec of flags('variant').length > 0 ? flags('variant') : defaults) variants.push(await parseVariant(spec));
const figures: BenchFigure[] = [];
const details: Record<string, unknown> = { machine: machine(), starts: STARTS, idleSeconds: IDLE_S };
const dir = await scratchDir('vio-bench-start-');
try {
  const { sys, dev, pfs } = await nicTree(dir, { pfs: POOLS, vfsPerPf: VFS, preCarved: true });
  const planFile = join(dir, 'plan.json');
  writeFileSync(planFile, JSON.stringify({
    pools: pfs.map((pciAddress, p) => ({ name: `start-${p}`, resourceName: resource(p), class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: VFS, devices: [{ pciAddress }] })),
  }));
  const runs = new Map<string, StartRun[]>(variants.map((v) => [v.name, []]));
  // Variants interleaved start by start, so that all see the same machine load.
  for (let i = 0; i < STARTS; i++) {
    for (const v of variants) {
      const r = await oneStart(v, dir, sys, dev, planFile, i * variants.length + variants.indexOf(v));
      runs.get(v.name)?.push(r);
      say(`${v.name} start ${i + 1}: first line ${r.firstLineMs.toFixed(0)} ms, registered ${r.registeredMs.toFixed(0)} ms, ready ${r.readyMs.toFixed(0)} ms (CPU ${r.cpuToReadyMs.toFixed(0)} ms), VmRSS ${r.rssIdleMiB} MiB, VmHWM ${r.hwmMiB} MiB`);
    }
  }
  for (const v of variants) {
    const all = runs.get(v.name) ?? [];
    const warm = all.length > 1 ? all.slice(1) : all;
    const med = (k: keyof StartRun): number => summarize(warm.map((x) => x[k])).p50;
    const first = all[0] as StartRun;
    details[v.name] = { variant: v, runs: all };
    const key = (k: string): string => `${v.name}.${k}`;
    figures.push(
      { key: key('firstStartRegisteredMs'), label: `[${v.name}] first start: spawn → registered`, value: Math.round(first.registeredMs), unit: 'ms' },
      { key: key('firstLineMs'), label: `[${v.name}] spawn → first log line, median of ${warm.length}`, value: med('firstLineMs'), unit: 'ms' },
      { key: key('registeredMs'), label: `[${v.name}] spawn → every pool registered, median`, value: med('registeredMs'), unit: 'ms' },
      { key: key('readyMs'), label: `[${v.name}] spawn → every slice Healthy, median`, value: med('readyMs'), unit: 'ms' },
      { key: key('cpuToReadyMs'), label: `[${v.name}] CPU time (user + system) until every slice Healthy, median`, value: med('cpuToReadyMs'), unit: 'ms' },
      { key: key('rssIdleMiB'), label: `[${v.name}] VmRSS ${IDLE_S} s after ready, median`, value: med('rssIdleMiB'), unit: 'MiB' },
      { key: key('hwmMiB'), label: `[${v.name}] VmHWM then, median`, value: med('hwmMiB'), unit: 'MiB' },
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
}
for (const f of figures) out(`${f.label}: ${f.value} ${f.unit}`);
if (argv.includes('--json')) printResult('agent-start', figures, details);
