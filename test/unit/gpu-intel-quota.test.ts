// Intel SR-IOV GPU provisioning (spec.carving.gpuVf) against the simulated Flex 170's i915
// (test/sysfs/intel-iov.ts: the driver's rules for prelim_iov quotas), and the xe sriov_admin
// mapping: quotas go on before the VFs are enabled, a value the driver cannot take is refused with
// the reason, nothing is written on a VF a VM holds, and a released pool returns the quotas.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gate, victimsOf } from '../../device-plugin/src/agent/gate.js';
import { applyCarving } from '../../device-plugin/src/carving/apply.js';
import { planCarving, planUncarve } from '../../device-plugin/src/carving/plan.js';
import { scan } from '../../device-plugin/src/discovery/scan.js';
import type { Inventory, PoolPlan } from '../../device-plugin/src/model.js';
import { addIntelFlex170, FLEX170_FREE } from '../sysfs/intel-iov.js';
import { FakeKernel, readAttr } from '../sysfs/kernel.js';
import { tempTree } from '../sysfs/tmp.js';

const FLEX = '0000:4d:00.0';
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const iov = (n: number, attr: string): string => `bus/pci/devices/${FLEX}/drm/card1/prelim_iov/vf${n}/gt0/${attr}`;
const quotas = { lmemBytes: 3 * GiB, ggttBytes: 512 * MiB, contexts: 1024, doorbells: 32, execQuantumMs: 20, preemptTimeoutUs: 40000 };
const pool = (o: Partial<PoolPlan> = {}): PoolPlan => ({ name: 'flex', resourceName: 'virtualio.dev/flex', class: 'GPU', mode: 'SRIOV', consumption: 'HostDevice', count: 4, vfDriver: 'vfio-pci', devices: [{ pciAddress: FLEX }], ...o });

let k: FakeKernel;
let root: string;
let devRoot: string;
beforeEach(async () => {
  ({ root, devRoot } = await tempTree());
  k = await FakeKernel.create(root, devRoot);
  await addIntelFlex170(k, FLEX);
});
const look = (): Promise<Inventory> => scan(root, { devRoot });
const read = async (rel: string): Promise<number> => Number(((await readAttr(path.join(root, rel))) ?? '').trim());
/** Plans and applies until nothing is left to write (at most 4 passes); the last plan. */
async function converge(spec: { pools: PoolPlan[] }, allocated: ReadonlySet<string> = new Set()): Promise<ReturnType<typeof planCarving>> {
  let plan = planCarving({ spec, inventory: await look(), nodeName: 'n', allocated });
  for (let pass = 0; pass < 4 && plan.writes.length > 0; pass++) {
    await applyCarving(plan, k);
    plan = planCarving({ spec, inventory: await look(), nodeName: 'n', allocated });
  }
  return plan;
}

describe('the simulated i915 (prelim_iov rules)', () => {
  test('quotas read 0, round up, and refuse what is not a number, too big a count, or more than is free', async () => {
    expect(await read(iov(1, 'lmem_quota'))).toBe(0);
    await k.write(iov(1, 'lmem_quota'), '1');
    expect(await read(iov(1, 'lmem_quota'))).toBe(2 * MiB);
    await expect(k.write(iov(1, 'ggtt_quota'), 'lots')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(k.write(iov(1, 'contexts_quota'), '70000')).rejects.toMatchObject({ code: 'ERANGE' });
    await k.write(iov(1, 'lmem_quota'), String(10 * GiB));
    await expect(k.write(iov(2, 'lmem_quota'), String(6 * GiB))).rejects.toMatchObject({ code: 'EDQUOT' });
  });

  test('enabling: all empty → an even split, undone on disable; incomplete → ENOKEY; LMEM alone → EUCLEAN', async () => {
    const numvfs = `bus/pci/devices/${FLEX}/sriov_numvfs`;
    await k.write(numvfs, '4');
    expect(await read(iov(3, 'lmem_quota'))).toBe(Math.floor(FLEX170_FREE.lmem_quota / 4 / (2 * MiB)) * 2 * MiB);
    await k.write(numvfs, '0');
    expect(await read(iov(3, 'lmem_quota'))).toBe(0);
    await k.write(iov(1, 'ggtt_quota'), String(256 * MiB)); // no contexts quota
    await expect(k.write(numvfs, '2')).rejects.toMatchObject({ code: 'ENOKEY' });
    expect((await look()).devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? []).toEqual([]);
    await k.write(iov(1, 'ggtt_quota'), '0');
    await k.write(iov(1, 'lmem_quota'), String(GiB));
    await expect(k.write(numvfs, '2')).rejects.toMatchObject({ code: 'EUCLEAN' });
  });
});

test('a pool with gpuVf quotas: written before the VFs are enabled, VFs on vfio-pci, then nothing more to do', async () => {
  const spec = { pools: [pool({ gpuVf: quotas })] };
  const first = planCarving({ spec, inventory: await look(), nodeName: 'n', allocated: new Set() });
  const paths = first.writes.map((w) => w.path);
  expect(paths.indexOf(iov(4, 'contexts_quota'))).toBeLessThan(paths.indexOf(`bus/pci/devices/${FLEX}/sriov_numvfs`));
  expect(paths.filter((p) => p.includes('/prelim_iov/'))).toHaveLength(4 * 6);
  const last = await converge(spec);
  expect(last).toMatchObject({ writes: [], blocked: [] });
  const inv = await look();
  const vfs = inv.devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? [];
  expect(vfs).toHaveLength(4);
  for (const vf of vfs) expect(await k.driverOf(vf)).toBe('vfio-pci');
  for (let n = 1; n <= 4; n++) {
    expect(await read(iov(n, 'lmem_quota'))).toBe(3 * GiB);
    expect(await read(iov(n, 'contexts_quota'))).toBe(1024);
    expect(await read(iov(n, 'exec_quantum_ms'))).toBe(20);
  }
  expect(await read(iov(5, 'lmem_quota'))).toBe(0);
});

test('what the i915 driver cannot take is refused with the reason, and no VF is enabled', async () => {
  const inv = await look();
  const lmemOnly = planCarving({ spec: { pools: [pool({ gpuVf: { lmemBytes: GiB } })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(lmemOnly.writes).toEqual([]);
  expect(lmemOnly.blocked).toEqual([{ pool: 'flex', device: FLEX, reason: expect.stringContaining('i915 enables VFs with quotas only when each has ggtt_quota and contexts_quota') }]);
  const prio = planCarving({ spec: { pools: [pool({ gpuVf: { schedPriority: 'high' } })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(prio.blocked[0]?.reason).toContain('spec.carving.gpuVf.schedPriority cannot be set on 0000:4d:00.0: i915 shows sched_priority on the PF only');
  const mixed = planCarving({ spec: { pools: [pool({ gpuVf: quotas, vfLast: 1 } as Partial<PoolPlan>), pool({ name: 'plain', devices: [{ pciAddress: FLEX, vfFirst: 2, vfLast: 3 }] })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(mixed.writes).toEqual([]);
  expect(mixed.blocked.map((b) => b.reason)).toContainEqual(expect.stringContaining('pool(s) plain set no spec.carving.gpuVf quotas'));
  // More LMEM than the GPU has: the driver refuses the write (EDQUOT); the VFs stay off.
  const big = planCarving({ spec: { pools: [pool({ gpuVf: { ...quotas, lmemBytes: 8 * GiB } })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  const results = await applyCarving(big, k);
  expect(results.find((r) => !r.ok)).toMatchObject({ write: { path: iov(2, 'lmem_quota') }, code: 'EDQUOT' });
  expect((await look()).devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? []).toEqual([]);
});

test('changed values on enabled VFs: written on free VFs, never on one a VM holds (planner and gate)', async () => {
  await converge({ pools: [pool({ gpuVf: quotas })] });
  const inv = await look();
  const vfs = inv.devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? [];
  const held = new Set([vfs[1] as string]);
  const plan = planCarving({ spec: { pools: [pool({ gpuVf: { ...quotas, execQuantumMs: 50 } })] }, inventory: inv, nodeName: 'n', allocated: held });
  expect(plan.writes.map((w) => w.path)).toEqual([1, 3, 4].map((n) => iov(n, 'exec_quantum_ms')));
  expect(plan.blocked).toEqual([{ pool: 'flex', device: vfs[1], reason: expect.stringContaining('is allocated: exec_quantum_ms changes to 50 once it is released') }]);
  // The gate: a quota write names the enabled VF it changes, and is refused when that VF is held.
  const w = { path: iov(2, 'lmem_quota'), value: String(GiB), why: 't' };
  expect(victimsOf(w, inv)).toEqual([vfs[1]]);
  expect(gate([w], inv, (id) => (held.has(id) ? 'held by a VM' : undefined)).refused).toHaveLength(1);
  expect(victimsOf({ ...w, path: iov(9, 'lmem_quota') }, inv)).toEqual([]); // VF 9 is not enabled
});

test('releasing the pool disables the VFs and returns the quotas to unset', async () => {
  const p = pool({ gpuVf: quotas });
  await converge({ pools: [p] });
  for (let pass = 0; pass < 2; pass++) await applyCarving(planUncarve({ pool: { ...p, deleting: true }, spec: { pools: [] }, inventory: await look(), nodeName: 'n', allocated: new Set() }), k);
  expect((await look()).devices.find((d) => d.pciAddress === FLEX)?.sriov?.vfs ?? []).toEqual([]);
  for (const a of ['lmem_quota', 'ggtt_quota', 'contexts_quota', 'exec_quantum_ms']) expect(await read(iov(2, a))).toBe(0);
  expect(planUncarve({ pool: { ...p, deleting: true }, spec: { pools: [] }, inventory: await look(), nodeName: 'n', allocated: new Set() }).writes).toEqual([]);
});

test('xe sriov_admin: scheduling values and sched_priority are written; what xe has no attribute for is refused', async () => {
  const XE = '0000:03:00.0';
  const dir = await k.addFunction({ address: XE, vendor: '8086', device: 'e20b', classCode: '030000', driver: 'xe', numaNode: 0, sriov: { totalVFs: 2, vfDevice: 'e20b', offset: 1, stride: 1 } });
  for (const n of [1, 2]) {
    mkdirSync(path.join(dir, `sriov_admin/vf${n}/profile`), { recursive: true });
    writeFileSync(path.join(dir, `sriov_admin/vf${n}/profile/exec_quantum_ms`), '0\n');
    writeFileSync(path.join(dir, `sriov_admin/vf${n}/profile/sched_priority`), '[low] normal high\n');
  }
  const inv = await look();
  expect(inv.devices.find((d) => d.pciAddress === XE)?.gpuInterface).toBe('IntelXeSriov');
  const xePool = (g: PoolPlan['gpuVf']): PoolPlan => pool({ name: 'bmg', count: 2, devices: [{ pciAddress: XE }], gpuVf: g });
  const ok = planCarving({ spec: { pools: [xePool({ execQuantumMs: 25, schedPriority: 'low' })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(ok.writes.filter((w) => w.path.includes('sriov_admin')).map((w) => [w.path.split(`${XE}/`)[1], w.value])).toEqual([['sriov_admin/vf1/profile/exec_quantum_ms', '25'], ['sriov_admin/vf2/profile/exec_quantum_ms', '25']]);
  const vram = planCarving({ spec: { pools: [xePool({ lmemBytes: GiB })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(vram.blocked[0]?.reason).toContain('its driver shows no sriov_admin/vf1/profile/vram_quota (xe has it from Linux 7.0)');
  const ggtt = planCarving({ spec: { pools: [xePool({ ggttBytes: 64 * MiB, contexts: 64 })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(ggtt.blocked[0]?.reason).toContain('xe provisions the GGTT itself');
  const high = planCarving({ spec: { pools: [xePool({ schedPriority: 'high' })] }, inventory: inv, nodeName: 'n', allocated: new Set() });
  expect(high.writes.filter((w) => w.path.includes('sriov_admin')).map((w) => [w.path.split(`${XE}/`)[1], w.value])).toEqual([['sriov_admin/vf1/profile/sched_priority', 'high'], ['sriov_admin/vf2/profile/sched_priority', 'high']]);
  // Where "high" is not allowed for VFs, xe leaves it out of the choices.
  for (const n of [1, 2]) writeFileSync(path.join(dir, `sriov_admin/vf${n}/profile/sched_priority`), '[low] normal\n');
  const notOffered = planCarving({ spec: { pools: [xePool({ schedPriority: 'high' })] }, inventory: await look(), nodeName: 'n', allocated: new Set() });
  expect(notOffered.blocked[0]?.reason).toContain("spec.carving.gpuVf.schedPriority high is not offered on 0000:03:00.0: VF 1's sched_priority lists low, normal");
  // Where the GuC cannot change a VF's priority at all, xe shows sched_priority read-only (0444).
  for (const n of [1, 2]) chmodSync(path.join(dir, `sriov_admin/vf${n}/profile/sched_priority`), 0o444);
  const ro = planCarving({ spec: { pools: [xePool({ schedPriority: 'normal' })] }, inventory: await look(), nodeName: 'n', allocated: new Set() });
  expect(ro.writes.filter((w) => w.path.includes('sriov_admin'))).toEqual([]);
  expect(ro.blocked[0]?.reason).toContain('its driver shows sched_priority read-only on the VFs');
});

test('a pool without gpuVf plans exactly as before (no provisioning writes)', async () => {
  const plan = planCarving({ spec: { pools: [pool()] }, inventory: await look(), nodeName: 'n', allocated: new Set() });
  expect(plan.writes.map((w) => w.path)).toEqual([`bus/pci/devices/${FLEX}/sriov_drivers_autoprobe`, `bus/pci/devices/${FLEX}/sriov_numvfs`]);
});
