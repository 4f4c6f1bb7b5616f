// The main job end to end: runs the demo exactly as `make demo` does (node --import test/sysfs/ts-hooks.mjs test/demo/demo.ts, after
// the build) with --json, and checks what it reports against what the VMs really received. As root
// (CI) the real kubelet runs and every VM must hold its slices with KubeVirt's env, and the demo must
// say OK; without root no VM can start, so the demo must say NOT OK and exit non-zero (it cannot
// verify its main claim), the VM test is skipped with that reason, and the rest (plan, carving,
// status) is still checked. It runs in --keep mode, as a user exploring it would: while everything
// still runs, both printed metrics endpoints answer, and a real Prometheus (Debian's, when the
// observability suites could cache it) scrapes both with the demo's prometheus.yml; then Ctrl-C
// (SIGINT) ends it with the demo's verdict as exit code.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../cluster/control-plane.js';
import { prometheusTools } from '../observability/tools.js';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { canRunKubelet, DEVICE_PLUGIN_DIR, kubeletSkipReason } from '../cluster/kubelet.js';
import { ensureAgentBuilt } from '../fakes/agent-process.js';
import type { DemoSummary } from '../demo/summary.js';
import { jest } from '@jest/globals';

jest.setTimeout(20 * 60_000);

const OPERATOR_MAIN = join(REPO_ROOT, 'dist/operator/src/main.js');

function newest(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n = Math.max(n, newest(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) n = Math.max(n, statSync(p).mtimeMs);
  }
  return n;
}

/** Builds dist/ when the agent or the operator is missing or older than its sources. */
async function ensureBuilt(): Promise<void> {
  await ensureAgentBuilt();
  if (existsSync(OPERATOR_MAIN) && statSync(OPERATOR_MAIN).mtimeMs >= newest(join(REPO_ROOT, 'operator/src'))) return;
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(REPO_ROOT, 'tsconfig.build.json')], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (!existsSync(OPERATOR_MAIN)) throw new Error(`operator build failed (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
}

/** KubeVirt's env name for a resource: upper case, `.` and `/` as `_`. */
const envName = (prefix: string, resource: string): string => `${prefix}${resource.toUpperCase().replace(/[./]/g, '_')}`;

/** PIDs of live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle)) out.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return out;
}

let summary: DemoSummary;
let exitCode: number | null;
let stderr = '';
/** What was seen while the --keep demo ran. */
const kept: { agentMetrics?: string; operatorMetrics?: string; up?: Record<string, string>; prometheus?: string } = {};

/** Scrapes the kept demo: both endpoints directly, then a real Prometheus with the demo's configuration. */
async function scrapeKeptDemo(s: DemoSummary): Promise<void> {
  kept.agentMetrics = await (await fetch(s.metrics.agent)).text();
  kept.operatorMetrics = await (await fetch(s.metrics.operator)).text();
  const tools = prometheusTools();
  if ('skip' in tools) {
    kept.prometheus = tools.skip;
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'vio-demo-prom-'));
  const port = await freePort();
  let prom: ChildProcess | undefined;
  try {
    prom = spawn(join(tools.bin, 'prometheus'), [`--config.file=${s.metrics.prometheusConfig}`, `--storage.tsdb.path=${dir}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { stdio: 'ignore' });
    for (let i = 0; i < 120; i++) {
      await new Promise((r) => setTimeout(r, 500));
      const body = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent('up')}`)
        .then((r) => r.json() as Promise<{ data?: { result: { metric: Record<string, string>; value: [number, string] }[] } }>).catch(() => undefined);
      const got = Object.fromEntries((body?.data?.result ?? []).map((r) => [`${r.metric.job}${r.metric.node ? ` node=${r.metric.node}` : ''}`, r.value[1]]));
      if (Object.keys(got).length === 2) {
        kept.up = got;
        break;
      }
    }
  } finally {
    prom?.kill('SIGTERM');
    await new Promise((r) => (prom && prom.exitCode === null ? prom.once('exit', r) : r(undefined)));
    rmSync(dir, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  await ensureBuilt();
  const child = spawn(process.execPath, ['--import', join(REPO_ROOT, 'test/sysfs/ts-hooks.mjs'), join(REPO_ROOT, 'test/demo/demo.ts'), '--keep', '--json', '--timeout', '600'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let scraped: Promise<void> | undefined;
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
    // The summary is out and --keep holds everything running: look where it says, then Ctrl-C.
    if (!scraped && stdout.endsWith('\n')) {
      let s: DemoSummary | undefined;
      try {
        s = JSON.parse(stdout.trim().split('\n').pop() ?? '') as DemoSummary;
      } catch {
        return; // not the whole line yet
      }
      scraped = scrapeKeptDemo(s).finally(() => child.kill('SIGINT'));
    }
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  exitCode = await new Promise((r) => child.on('exit', (code) => r(code)));
  await scraped?.catch((err: unknown) => {
    kept.prometheus = `scraping failed: ${String(err)}`;
  });
  const line = stdout.trim().split('\n').pop() ?? '';
  try {
    summary = JSON.parse(line) as DemoSummary;
  } catch {
    throw new Error(`the demo printed no JSON summary (exit ${exitCode}); stderr:\n${stderr.slice(-6000)}`);
  }
});

test(canRunKubelet() ? 'the demo verified every check (VMs included), exits 0 and says OK' : 'without a kubelet the demo says NOT OK and exits 1: it could not verify the VMs', () => {
  expect(summary.kubelet).toBe(canRunKubelet());
  const failed = summary.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.detail}`);
  expect(summary.checks.map((c) => c.name)).toEqual(['inventory', 'plan', 'capacity', 'health', 'kubelet', 'vms', 'ondemand']);
  if (canRunKubelet()) {
    if (exitCode !== 0) throw new Error(`demo exit code ${exitCode}; failed checks: ${failed.join(' | ')}; stderr:\n${stderr.slice(-6000)}`);
    expect(failed).toEqual([]);
    expect(summary.ok).toBe(true);
    expect(stderr).toContain('OK: every VM holds its slices');
  } else {
    expect(exitCode).toBe(1);
    expect(summary.ok).toBe(false);
    expect(failed).toEqual([expect.stringMatching(/^kubelet: not verified: no kubelet ran/), expect.stringMatching(/^vms: not verified/), expect.stringMatching(/^ondemand: not verified/)]);
    expect(stderr).toContain('NOT OK: kubelet, vms, ondemand were not verified');
    expect(stderr).not.toContain('OK: every VM holds its slices');
  }
});

test('--keep: the printed metrics endpoints answer, and a real Prometheus scrapes both with the demo\'s prometheus.yml', () => {
  expect(stderr).toContain(`Metrics: agent ${summary.metrics.agent}`);
  expect(kept.agentMetrics).toMatch(/^virtualio_agent_pool_capacity_slices\{[^}]*pool="cx6-vfs"[^}]*\} 8$/m);
  expect(kept.operatorMetrics).toMatch(/^virtualio_operator_leader 1$/m);
  if (kept.up === undefined && kept.prometheus && !kept.prometheus.startsWith('scraping failed')) {
    console.log(`demo: Prometheus part not run: ${kept.prometheus}`);
    return;
  }
  // Both jobs up, named as the chart's ServiceMonitors name them, the agent's target labelled with its node.
  expect(kept.up).toEqual({ [`virtualio-agent-metrics node=${summary.node}`]: '1', 'virtualio-operator-metrics': '1' });
});

test('the inventory holds the recorded A16 server and the simulated ConnectX-6 and PM1733', () => {
  const by = new Map(summary.inventory.map((d) => [d.pciAddress, d]));
  expect(by.get('0000:08:00.0')).toMatchObject({ vendorID: '10de', deviceID: '25b6', driver: 'nvidia' });
  expect(by.get('0000:04:00.0')).toMatchObject({ vendorID: '8086', deviceID: '10fb', netdevs: [{ name: 'eno49' }] });
  expect(by.get('0000:86:00.0')).toMatchObject({ vendorID: '15b3', deviceID: '101d', numaNode: 1 });
  expect(by.get('0000:86:00.1')).toMatchObject({ vendorID: '15b3', deviceID: '101d' });
  expect(by.get('0000:87:00.0')).toMatchObject({ vendorID: '144d', deviceID: 'a824' });
  // Recorded A16 VFs carry the vGPU types; four of them now hold the pool's mdevs.
  const a16Vfs = summary.inventory.filter((d) => d.physfn === '0000:08:00.0');
  expect(a16Vfs).toHaveLength(16);
  expect(a16Vfs.flatMap((v) => v.mdevs ?? []).filter((m) => m.type === 'nvidia-746')).toHaveLength(4);
});

test('every pool has the capacity its hardware gives, and is Ready once the kubelet took it', () => {
  const pools = Object.fromEntries(summary.pools.map((p) => [p.name, p]));
  // The on-demand pool (DRA) needs the kubelet: the demo applies it only when one runs.
  expect(Object.keys(pools).sort()).toEqual(['a16-vgpu', 'cx6-vfs', 'evo-nvme', ...(summary.kubelet ? ['gpu-ondemand'] : []), 'pm1733-vfs', 'x520-vfs']);
  expect(pools['a16-vgpu']).toMatchObject({ capacity: 4, resource: 'virtualio.dev/a16-vgpu' });
  expect(pools['cx6-vfs']).toMatchObject({ capacity: 8 });
  expect(pools['x520-vfs']).toMatchObject({ capacity: 4 });
  expect(pools['pm1733-vfs']).toMatchObject({ capacity: 4 });
  expect(pools['evo-nvme']).toMatchObject({ capacity: 1 });
  // Ready needs the kubelet to have accepted the pool's plugin.
  if (summary.kubelet) for (const p of summary.pools) expect(`${p.name} ${p.ready}`).toBe(`${p.name} True`);
  for (const s of summary.slices) expect(`${s.id} ${s.health}`).toBe(`${s.id} Healthy`);
});

(canRunKubelet() ? test : test.skip)(`each VM holds its slices, and its container got exactly those in KubeVirt's env with their VFIO nodes${kubeletSkipReason()}`, () => {
  expect(summary.kubelet).toBe(true);
  expect(summary.vms.map((v) => v.vm).sort()).toEqual(['vm-evo', 'vm-net', 'vm-nvme', 'vm-vgpu', 'vm-x520']);
  for (const v of summary.vms) {
    expect(v.phase).toBe('Running');
    expect(v.slices).toHaveLength(v.requested);
    const mdev = v.pool === 'a16-vgpu';
    const key = envName(mdev ? 'MDEV_PCI_RESOURCE_' : 'PCI_RESOURCE_', v.resource);
    expect(Object.keys(v.env)).toEqual([key]);
    expect((v.env[key] ?? '').split(',').sort()).toEqual([...v.slices].sort());
    expect(v.devices[0]).toBe('/dev/vfio/vfio');
    expect(v.devices.filter((d) => /^\/dev\/vfio\/\d+$/.test(d))).toHaveLength(v.requested);
    // The node's slice list agrees on who holds what.
    for (const id of v.slices) expect(summary.slices.find((s) => s.id === id)).toMatchObject({ pool: v.pool, vmi: v.vm, pod: v.pod });
  }
  // No slice is held twice.
  const held = summary.vms.flatMap((v) => v.slices);
  expect(new Set(held).size).toBe(held.length);
});

(canRunKubelet() ? test : test.skip)(`on demand: the VM's claim made the agent create the vGPU type it asked for on the simulated GPU, and deleting the VM removed it, both seen in the kernel's tree${kubeletSkipReason()}`, () => {
  const od = summary.ondemand;
  expect(od).toMatchObject({ pool: 'gpu-ondemand', gpu: '0000:0a:00.0', mdevType: 'nvidia-747', carved: 'True', phase: 'Running' });
  expect(od?.error).toBeUndefined();
  expect(od?.device).toBe(`mdev-${od?.uuid}`);
  expect(od?.whileRunning).toEqual({ onBus: true, parent: '0000:0a:00.0', type: 'nvidia-747', listed: true, problems: [] });
  expect(od?.afterDelete).toEqual({ onBus: false, listed: false, problems: [] });
});

test('the demo stopped every process it started and removed its plugin sockets', () => {
  expect(processesMentioning(summary.runDir)).toEqual([]);
  const ours = new Set(summary.pools.map((p) => `virtualio-${p.name}.sock`));
  const left = existsSync(DEVICE_PLUGIN_DIR) ? readdirSync(DEVICE_PLUGIN_DIR).filter((f) => ours.has(f)) : [];
  expect(left).toEqual([]);
});
