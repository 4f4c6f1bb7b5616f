// Shared pieces of the node-side benchmarks (test/bench/*.ts; figures, never pass/fail):
// percentiles, /proc sampling, fake sysfs trees of many ConnectX-6 PFs (cached, copied into memory),
// and the real agent process with an optional CPU profile.
// Run a benchmark with: node --import ./test/sysfs/ts-hooks.mjs test/bench/<name>.ts [--json]
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AgentProcess, ensureAgentBuilt, REPO } from '../fakes/agent-process.js';
import { FakeKernel, connectX6 } from '../sysfs/kernel.js';

const run = promisify(execFile);

/** Percentile (nearest rank) of `xs`. */
export function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] as number;
}

/** Distribution summary in the unit of `xs`, rounded to 0.1. */
export function summarize(xs: readonly number[]): { n: number; min: number; p50: number; p90: number; p99: number; max: number } {
  const r = (x: number): number => Math.round(x * 10) / 10;
  return { n: xs.length, min: r(Math.min(...xs)), p50: r(pct(xs, 50)), p90: r(pct(xs, 90)), p99: r(pct(xs, 99)), max: r(Math.max(...xs)) };
}

/** VmRSS and VmHWM of a process, in MiB. */
export function memoryOf(pid: number): { rssMiB: number; hwmMiB: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? Number.NaN);
  return { rssMiB: Math.round(kib('VmRSS') / 102.4) / 10, hwmMiB: Math.round(kib('VmHWM') / 102.4) / 10 };
}

/** CPU seconds (user + system) a process used so far. */
export function cpuSecondsOf(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** The machine, for BENCHMARKS.md. */
export function machine(): { cpuModel: string; nproc: number; memGiB: number; node: string; load1: number } {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const load1 = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  return { cpuModel: model.trim(), nproc: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), node: process.version, load1 };
}

/** Where scratch trees go: memory when possible (like the real sysfs). */
export async function scratchDir(prefix: string): Promise<string> {
  const parent = existsSync('/dev/shm') ? '/dev/shm' : (process.env.TMPDIR ?? '/tmp');
  return mkdtemp(join(parent, prefix));
}

/** PF addresses of {@link nicTree}: one per bus from 0x10 up, so VFs never collide. */
export function pfAddress(i: number): string {
  return `0000:${(0x10 + i).toString(16).padStart(2, '0')}:00.0`;
}

export interface NicTreeOptions {
  pfs: number;
  vfsPerPf: number;
  /** Enable every VF and bind it to vfio-pci before the agent starts (what a restarted agent finds). */
  preCarved: boolean;
}

/**
 * A fake sysfs tree (`<dir>/sys`, `<dir>/dev`) with `pfs` ConnectX-6 PFs of `vfsPerPf` VFs each,
 * half on NUMA node 0 and half on 1. Built once per shape into the cache (VIO_CACHE/bench) and
 * copied (`cp -a`, every link is relative) into `dir` on each call.
 */
export async function nicTree(dir: string, o: NicTreeOptions): Promise<{ sys: string; dev: string; pfs: string[] }> {
  const pfs = Array.from({ length: o.pfs }, (_, i) => pfAddress(i));
  const cacheRoot = join(process.env.VIO_CACHE ?? join(process.env.HOME ?? '/tmp', '.cache/virtualio'), 'bench');
  const key = join(cacheRoot, `nic-v1-${o.pfs}x${o.vfsPerPf}-${o.preCarved ? 'carved' : 'bare'}`);
  if (!existsSync(join(key, 'done'))) {
    const tmp = `${key}.tmp-${process.pid}`;
    await rm(tmp, { recursive: true, force: true });
    const k = await FakeKernel.create(join(tmp, 'sys'), join(tmp, 'dev'));
    for (const [i, pf] of pfs.entries()) {
      await k.addFunction(connectX6(pf, { netdev: `ens${i}f0np0`, totalVFs: o.vfsPerPf, numaNode: i < o.pfs / 2 ? 0 : 1 }));
      if (!o.preCarved) continue;
      await k.write(`bus/pci/devices/${pf}/sriov_drivers_autoprobe`, '0');
      await k.write(`bus/pci/devices/${pf}/sriov_numvfs`, String(o.vfsPerPf));
      for (let v = 0; v < o.vfsPerPf; v++) {
        const vf = await vfAddress(join(tmp, 'sys'), pf, v);
        await k.write(`bus/pci/devices/${vf}/driver_override`, 'vfio-pci');
        await k.write('bus/pci/drivers_probe', vf);
      }
    }
    await run('touch', [join(tmp, 'done')]);
    await mkdir(cacheRoot, { recursive: true });
    await rm(key, { recursive: true, force: true });
    await rename(tmp, key);
  }
  await rm(join(dir, 'sys'), { recursive: true, force: true });
  await rm(join(dir, 'dev'), { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await run('cp', ['-a', join(key, 'sys'), join(key, 'dev'), dir]);
  return { sys: join(dir, 'sys'), dev: join(dir, 'dev'), pfs };
}

/** The PCI address of VF `n` of `pf` (from its virtfn link). */
export async function vfAddress(sys: string, pf: string, n: number): Promise<string> {
  const { readlink } = await import('node:fs/promises');
  const target = await readlink(join(sys, 'bus/pci/devices', pf, `virtfn${n}`));
  return target.split('/').pop() as string;
}

/**
 * Starts the REAL agent (dist/, built when stale). With `cpuProfileDir`, Node writes a .cpuprofile
 * there when the agent exits (open it in Chrome DevTools or summarize it with {@link topFunctions});
 * `nodeArgs` go to Node before the script (e.g. heap limits); `env` is added to the agent's environment,
 * `main` replaces the built entrypoint.
 */
export async function spawnAgent(args: string[], opts: { cpuProfileDir?: string; nodeArgs?: string[]; env?: Record<string, string>; main?: string } = {}): Promise<AgentProcess> {
  const main = opts.main ?? (await ensureAgentBuilt());
  const nodeArgs = [...(opts.nodeArgs ?? []), ...(opts.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfileDir}`] : [])];
  const proc = spawn(process.execPath, [...nodeArgs, main, ...args], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new AgentProcess(proc);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/**
 * Self and total time per function of a V8 .cpuprofile, top `n` by total time (excluding idle,
 * program and garbage collector roots), with the file relative to the repository.
 */
export function topFunctions(file: string, n = 15): { fn: string; where: string; selfMs: number; totalMs: number }[] {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const parent = new Map<number, number>();
  for (const x of prof.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  const self = new Map<number, number>();
  prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0) / 1000));
  const key = (x: ProfileNode): string => `${x.callFrame.functionName || '(anonymous)'}|${x.callFrame.url.replace(`file://${REPO}/`, '')}:${x.callFrame.lineNumber + 1}`;
  const selfBy = new Map<string, number>();
  const totalBy = new Map<string, number>();
  for (const [id, ms] of self) {
    const leaf = byId.get(id);
    if (!leaf || ['(idle)', '(program)', '(garbage collector)'].includes(leaf.callFrame.functionName)) continue;
    selfBy.set(key(leaf), (selfBy.get(key(leaf)) ?? 0) + ms);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = key(byId.get(cur) as ProfileNode);
      if (seen.has(k)) continue; // recursion counts once
      seen.add(k);
      totalBy.set(k, (totalBy.get(k) ?? 0) + ms);
    }
  }
  return [...totalBy]
    .filter(([k]) => !k.startsWith('(root)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, ms]) => {
      const [fn, where] = k.split('|') as [string, string];
      return { fn, where, selfMs: Math.round(selfBy.get(k) ?? 0), totalMs: Math.round(ms) };
    });
}

/** Writes one line to stdout. */
export const out = (line: string): void => void process.stdout.write(`${line}\n`);

/** `BENCH_RESULT <json>`: the line scripts/bench.mjs collects (name, figures with targets). */
export interface BenchFigure {
  key: string;
  label: string;
  value: number;
  unit: string;
  /** Target: value must be ≤ this. */
  max?: number;
}

export function printResult(name: string, figures: BenchFigure[], extra: Record<string, unknown> = {}): void {
  out(`BENCH_RESULT ${JSON.stringify({ name, figures, ...extra })}`);
}
