// The main job end to end: runs the demo exactly as `make demo` does (node --import test/sysfs/ts-hooks.mjs test/demo/demo.ts, after
// the build) with --json, and checks what it reports against what the VMs really received. As root
// (CI) the real kubelet runs and every VM must hold its slices with KubeVirt's env, and the demo must
// say OK; without root no VM can start, so the demo must say NOT OK and exit non-zero (it cannot
// verify its main claim), the VM test is skipped with that reason, and the rest (plan, carving,
// status) is still checked.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
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

beforeAll(async () => {
  await ensureBuilt();
  const child = spawn(process.execPath, ['--import', join(REPO_ROOT, 'test/sysfs/ts-hooks.mjs'), join(REPO_ROOT, 'test/demo/demo.ts'), '--json', '--timeout', '600'], {
    cwd: REPO_ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  exitCode = await new Promise((r) => child.on('exit', (code) => r(code)));
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
  expect(summary.checks.map((c) => c.name)).toEqual(['inventory', 'plan', 'capacity', 'health', 'kubelet', 'vms']);
  if (canRunKubelet()) {
    if (exitCode !== 0) throw new Error(`demo exit code ${exitCode}; failed checks: ${failed.join(' | ')}; stderr:\n${stderr.slice(-6000)}`);
    expect(failed).toEqual([]);
    expect(summary.ok).toBe(true);
    expect(stderr).toContain('OK: every VM holds its slices');
  } else {
    expect(exitCode).toBe(1);
    expect(summary.ok).toBe(false);
    expect(failed).toEqual([expect.stringMatching(/^kubelet: not verified: no kubelet ran/), expect.stringMatching(/^vms: not verified/)]);
    expect(stderr).toContain('NOT OK: kubelet, vms were not verified');
    expect(stderr).not.toContain('OK: every VM holds its slices');
  }
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
  expect(Object.keys(pools).sort()).toEqual(['a16-vgpu', 'cx6-vfs', 'evo-nvme', 'pm1733-vfs', 'x520-vfs']);
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

test('the demo stopped every process it started and removed its plugin sockets', () => {
  expect(processesMentioning(summary.runDir)).toEqual([]);
  const ours = new Set(summary.pools.map((p) => `virtualio-${p.name}.sock`));
  const left = existsSync(DEVICE_PLUGIN_DIR) ? readdirSync(DEVICE_PLUGIN_DIR).filter((f) => ours.has(f)) : [];
  expect(left).toEqual([]);
});
