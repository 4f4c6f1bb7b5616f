// Benchmark of the agent's kubelet-facing side (not a test: it prints figures, it asserts nothing).
// Runs the REAL agent process (dist/, built on demand) in standalone mode on a fake sysfs tree with
// 8 ConnectX-6 PFs × 128 VFs = one 1,024-slice pool, driven by the fake kubelet over unix sockets:
//   1. Allocate latency for 1 and 8 slices, and an empty gRPC call (GetDevicePluginOptions) on the
//      same socket, p50/p99 and the ratio;
//   2. kubelet restart (socket dir wiped, kubelet.sock recreated) → re-registration, over 50 restarts.
// Run: node --import ./test/sysfs/ts-hooks.mjs device-plugin/bench/bench-agent.ts [--iterations N] [--restarts N]
//        [--agent-node-options "<node flags>"] [--json]
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startAgent } from '../../test/fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../../test/fakes/kubelet.js';
import { FakeKernel, connectX6 } from '../../test/sysfs/kernel.js';
import { startKernel } from '../../test/sysfs/kernel-daemon.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const ITER = arg('iterations', 2000);
const nodeOptionsAt = process.argv.indexOf('--agent-node-options');
const AGENT_NODE_OPTIONS = nodeOptionsAt >= 0 ? (process.argv[nodeOptionsAt + 1] ?? '') : '';
const RESTARTS = arg('restarts', 50);
const PFS = 8;
const VFS = 128;
const RES = 'virtualio.dev/bench-net';

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? Number.NaN;
}
const ms = (x: number): string => `${x.toFixed(3)} ms`;
const out = (line: string): void => void process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vio-bench-'));
  const sys = join(dir, 'sys');
  const dev = join(dir, 'dev');
  const t0 = performance.now();
  const k = await FakeKernel.create(sys, dev);
  const pfs: string[] = [];
  for (let i = 0; i < PFS; i++) {
    const pf = `0000:${(0x81 + i).toString(16)}:00.0`;
    pfs.push(pf);
    await k.addFunction(connectX6(pf, { netdev: `ens${i}f0np0`, totalVFs: VFS, numaNode: i < PFS / 2 ? 0 : 1 }));
    // Pre-carve in-process (synchronous fake writes) so the benchmark measures serving, not carving.
    await k.write(`bus/pci/devices/${pf}/sriov_drivers_autoprobe`, '0');
    await k.write(`bus/pci/devices/${pf}/sriov_numvfs`, String(VFS));
  }
  const inv = await import('../src/discovery/scan.js').then((m) => m.scan(sys));
  const vfs = inv.devices.filter((d) => d.physfn).map((d) => d.pciAddress);
  for (const vf of vfs) {
    await k.write(`bus/pci/devices/${vf}/driver_override`, 'vfio-pci');
    await k.write('bus/pci/drivers_probe', vf);
  }
  const kernel = await startKernel(sys, dev);
  const kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  const podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
  const plan = { pools: [{ name: 'bench-net', resourceName: RES, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: VFS, devices: pfs.map((pciAddress) => ({ pciAddress })) }] };
  writeFileSync(join(dir, 'plan.json'), JSON.stringify(plan));
  const agent = await startAgent([
    '--plan-file', join(dir, 'plan.json'), '--node-name', 'bench', '--sysfs-root', sys, '--dev-root', dev,
    '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket, '--devinfo-dir', join(dir, 'devinfo'),
    '--rescan-interval', '30s', '--metrics-address', '127.0.0.1:0', '--log-level', 'warn',
  ], AGENT_NODE_OPTIONS ? { NODE_OPTIONS: AGENT_NODE_OPTIONS } : {});
  try {
    await kubelet.waitFor('1,024 healthy slices', () => kubelet.lastList(RES)?.filter((d) => d.health === 'Healthy').length === PFS * VFS, 300_000).catch((err: unknown) => {
      throw new Error(`${String(err)}\nthe agent (${agent.alive ? 'running' : `exited ${agent.exitCode}`}):\n${agent.tail()}`);
    });
    const setupS = (performance.now() - t0) / 1000;
    const ids = (kubelet.lastList(RES) ?? []).map((d) => d.ID);

    const time = async (fn: () => Promise<unknown>): Promise<number[]> => {
      for (let i = 0; i < Math.min(200, ITER); i++) await fn(); // warm-up
      const out: number[] = [];
      for (let i = 0; i < ITER; i++) {
        const s = performance.now();
        await fn();
        out.push(performance.now() - s);
      }
      return out;
    };
    let n = 0;
    const pickN = (count: number): string[] => Array.from({ length: count }, (_, j) => ids[(n * 8 + j) % ids.length] ?? '');
    const empty = await time(() => kubelet.options(RES));
    const a1 = await time(() => kubelet.allocate(RES, pickN(1)).finally(() => n++));
    const a8 = await time(() => kubelet.allocate(RES, pickN(8)).finally(() => n++));

    const rereg: number[] = [];
    const relist: number[] = [];
    for (let i = 0; i < RESTARTS; i++) {
      const gen = kubelet.generation;
      const s = performance.now();
      await kubelet.restart();
      await kubelet.waitFor('re-registration', () => (kubelet.endpoints.get(RES)?.generation ?? 0) > gen, 30_000);
      rereg.push(performance.now() - s);
      await kubelet.waitFor('first list', () => (kubelet.endpoints.get(RES)?.lists.length ?? 0) > 0, 30_000);
      relist.push(performance.now() - s);
    }
    const figures = {
      pool: { slices: ids.length, setupSeconds: Number(setupS.toFixed(1)) },
      iterations: ITER,
      emptyCallMs: { p50: pct(empty, 50), p99: pct(empty, 99) },
      allocate1Ms: { p50: pct(a1, 50), p99: pct(a1, 99) },
      allocate8Ms: { p50: pct(a8, 50), p99: pct(a8, 99) },
      ratioAllocate1ToEmptyP50: pct(a1, 50) / pct(empty, 50),
      ratioAllocate8ToEmptyP50: pct(a8, 50) / pct(empty, 50),
      restarts: RESTARTS,
      reRegistrationMs: { p50: pct(rereg, 50), p99: pct(rereg, 99), max: Math.max(...rereg) },
      reRegistrationToFirstListMs: { p50: pct(relist, 50), p99: pct(relist, 99), max: Math.max(...relist) },
    };
    if (process.argv.includes('--json')) out(JSON.stringify(figures));
    else {
      out(`virtualio agent benchmark: one pool of ${ids.length} slices (setup ${figures.pool.setupSeconds} s), ${ITER} calls each, ${RESTARTS} kubelet restarts`);
      out(`  empty gRPC call (GetDevicePluginOptions)  p50 ${ms(figures.emptyCallMs.p50)}  p99 ${ms(figures.emptyCallMs.p99)}`);
      out(`  Allocate 1 slice                          p50 ${ms(figures.allocate1Ms.p50)}  p99 ${ms(figures.allocate1Ms.p99)}  (×${figures.ratioAllocate1ToEmptyP50.toFixed(2)} empty p50)`);
      out(`  Allocate 8 slices                         p50 ${ms(figures.allocate8Ms.p50)}  p99 ${ms(figures.allocate8Ms.p99)}  (×${figures.ratioAllocate8ToEmptyP50.toFixed(2)} empty p50)`);
      out(`  socket wipe → re-registration             p50 ${ms(figures.reRegistrationMs.p50)}  p99 ${ms(figures.reRegistrationMs.p99)}  max ${ms(figures.reRegistrationMs.max)}`);
      out(`  socket wipe → first ListAndWatch list     p50 ${ms(figures.reRegistrationToFirstListMs.p50)}  p99 ${ms(figures.reRegistrationToFirstListMs.p99)}`);
    }
  } finally {
    await agent.stop('SIGTERM');
    await kubelet.stop();
    await podres.stop();
    await kernel.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
