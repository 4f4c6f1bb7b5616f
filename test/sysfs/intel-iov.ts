// Intel's out-of-tree i915 SR-IOV provisioning (Flex/Max, `drm/cardN/prelim_iov/`) for the fake
// kernel: the per-VF quota attributes and what the driver does with them. State lives in the tree
// (the quota files) plus `<root>/.fake-kernel/i915-iov.json` (which PFs are auto-provisioned).
//
// Behaviours modelled, each with where it was checked. Source: intel-gpu/intel-gpu-i915-backports
// drivers/gpu/drm/i915/gt/iov/intel_iov_sysfs.c (attributes) and intel_iov_provisioning.c (rules):
//  1. `prelim_iov/vfN/gt0/{ggtt_quota,lmem_quota,contexts_quota,doorbells_quota,exec_quantum_ms,
//     preempt_timeout_us}` exist for every VF the PF can have, enabled or not, and read 0 until set
//     (vf_attrs + iov_attrs; sched_priority is hidden on VFs: iov_attr_is_visible). The PF's
//     `pf/gt0/available/*_max_quota` are read-only.
//  2. Values are parsed as unsigned integers (kstrtou64 lmem/ggtt, kstrtou32 exec_quantum/preempt,
//     kstrtou16 contexts/doorbells): anything else is EINVAL, a u16 overflow ERANGE.
//  3. lmem_quota is rounded up to 2 MiB, ggtt_quota to the GGTT alignment (64 KiB, HAS_64K_PAGES),
//     and read back rounded; more than is free is EDQUOT (pf_provision_lmem, pf_provision_ggtt;
//     for contexts and doorbells the errno is not checked: EDQUOT here too). 0 unprovisions.
//  4. Enabling N VFs (sriov_numvfs) verifies VF1..N (intel_iov_provisioning_verify,
//     pf_validate_config): a VF is complete with a GGTT and a contexts quota, empty with neither
//     (nor doorbells); all empty → the driver auto-provisions a fair share of each resource into
//     every VF (pf_auto_provision), refused with EUCLEAN when an "empty" VF already has an LMEM
//     quota; some complete, the rest empty → enabled as set; any other mix → refused (ENOKEY), no VF
//     created.
//  5. Disabling (sriov_numvfs 0) unprovisions auto-provisioned VFs (pf_auto_unprovision); quotas an
//     admin wrote stay.
//  6. A quota written on an enabled VF is pushed to the GuC at once (pf_push_config_*; LMEM is
//     released and allocated anew): the driver accepts it, so a write under a VM that holds the VF is
//     applied and recorded as a violation, not refused.
// Assumed, not read from a Flex 170 (no public dump found): what is free for VFs (15 GiB LMEM,
// 3968 MiB GGTT, 64512 contexts, 240 doorbells); the fair share ignores LMTT/page-table overhead.
// Not modelled: multi-tile (gt1) Max parts, the `iov/` folder of newer builds, PF spare attributes,
// the kernel daemon (a process writing the files directly gets no rules).
import { mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { intelFlex170 } from './builders.js';
import { KernelError } from './kernel-error.js';
import { exists, list } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';

const MiB = 1024 * 1024;
/** What the simulated Flex 170 has free for VFs (assumed, see the header). */
export const FLEX170_FREE = { lmem_quota: 15 * 1024 * MiB, ggtt_quota: 3968 * MiB, contexts_quota: 64512, doorbells_quota: 240 } as const;
const RESOURCES = ['lmem_quota', 'ggtt_quota', 'contexts_quota', 'doorbells_quota'] as const;
const SCHED = ['exec_quantum_ms', 'preempt_timeout_us'] as const;
const ATTRS = [...RESOURCES, ...SCHED];
const ROUND: Record<string, number> = { lmem_quota: 2 * MiB, ggtt_quota: 64 * 1024 };
const U16 = new Set(['contexts_quota', 'doorbells_quota']);
const STATE = '.fake-kernel/i915-iov.json';

/** Adds a Flex 170 on i915 with its prelim_iov folder and quota files; returns the PF's folder. */
export async function addIntelFlex170(k: FakeKernel, address: string, o: { card?: number } = {}): Promise<string> {
  const flex = intelFlex170(address, o);
  const dir = await k.addFunction(flex.spec);
  for (const d of flex.dirs) await mkdir(path.join(dir, d), { recursive: true });
  const iov = path.join(dir, `drm/card${o.card ?? 1}/prelim_iov`);
  await mkdir(path.join(iov, 'pf/gt0/available'), { recursive: true });
  for (const a of RESOURCES) await writeFile(path.join(iov, 'pf/gt0/available', a.replace('_quota', '_max_quota')), `${FLEX170_FREE[a]}\n`);
  for (const vf of await vfFolders(iov)) for (const a of ATTRS) await writeFile(path.join(iov, vf, 'gt0', a), '0\n');
  return dir;
}

async function vfFolders(iov: string): Promise<string[]> {
  return (await list(iov)).filter((e) => /^vf\d+$/.test(e)).sort((a, b) => Number(a.slice(2)) - Number(b.slice(2)));
}

/** The prelim_iov (or iov) folder of a PF's folder, if its i915 shows one. */
export async function iovOf(pfDir: string): Promise<string | undefined> {
  for (const card of await list(path.join(pfDir, 'drm'))) {
    for (const f of ['prelim_iov', 'iov']) if (await exists(path.join(pfDir, 'drm', card, f))) return path.join(pfDir, 'drm', card, f);
  }
  return undefined;
}

/** Is `file` (a real path) a VF quota attribute of an i915 provisioning folder? */
export function isI915Quota(file: string): boolean {
  const parts = file.split(path.sep);
  const n = parts.length;
  return n >= 4 && ATTRS.includes(parts[n - 1] as never) && /^gt\d*$/.test(parts[n - 2] as string) && /^vf\d+$/.test(parts[n - 3] as string) && ['prelim_iov', 'iov'].includes(parts[n - 4] as string);
}

async function num(file: string): Promise<number> {
  return Number((await readFile(file, 'utf8')).trim()) || 0;
}

async function autoPfs(k: FakeKernel): Promise<Record<string, boolean>> {
  try {
    return JSON.parse(await readFile(path.join(k.root, STATE), 'utf8')) as Record<string, boolean>;
  } catch {
    return {};
  }
}

async function setAuto(k: FakeKernel, pfDir: string, on: boolean): Promise<void> {
  const s = await autoPfs(k);
  if (on) s[path.basename(pfDir)] = true;
  else delete s[path.basename(pfDir)];
  await mkdir(path.join(k.root, '.fake-kernel'), { recursive: true });
  await writeFile(path.join(k.root, STATE), JSON.stringify(s));
}

/** What VFs other than `except` hold of resource `attr` (bytes or count). */
async function used(iov: string, attr: string, except?: string): Promise<number> {
  let sum = 0;
  for (const vf of await vfFolders(iov)) if (vf !== except) sum += await num(path.join(iov, vf, 'gt0', attr));
  return sum;
}

/** A write to `prelim_iov/vfN/gt*\/<attr>` (behaviours 2, 3, 6). */
export async function writeI915Quota(k: FakeKernel, file: string, rel: string, value: string): Promise<void> {
  const attr = path.basename(file);
  const vfName = path.basename(path.dirname(path.dirname(file)));
  const iov = path.dirname(path.dirname(path.dirname(file)));
  const v = value.trim();
  if (!/^\d+$/.test(v)) throw new KernelError('EINVAL', `${attr} takes an unsigned integer, got ${JSON.stringify(value)}`);
  let n = Number(v);
  if (U16.has(attr) && n > 0xffff) throw new KernelError('ERANGE', `${attr}: ${n} does not fit 16 bits`);
  const round = ROUND[attr];
  if (round) n = Math.ceil(n / round) * round;
  if ((RESOURCES as readonly string[]).includes(attr) && n > 0) {
    const free = FLEX170_FREE[attr as (typeof RESOURCES)[number]] - (await used(iov, attr, vfName));
    if (n > free) throw new KernelError('EDQUOT', `${vfName}: ${attr} ${n} exceeds what is free (${free})`);
  }
  // Behaviour 6: an enabled VF takes the new value at once, under whoever holds it.
  const pfDir = path.dirname(path.dirname(path.dirname(iov)));
  const index = Number(vfName.slice(2)) - 1;
  let vf: string | undefined;
  try {
    vf = path.basename(await readlink(path.join(pfDir, `virtfn${index}`)));
  } catch {
    vf = undefined;
  }
  if (vf) {
    const hits = await k.ownership.holdersOf([vf]);
    if (hits.length > 0) await k.ownership.recordViolations({ path: rel, value: v }, hits);
  }
  await writeFile(file, `${n}\n`);
}

/** Before `n` VFs are enabled on a PF (behaviour 4); a refusal leaves the tree unchanged. */
export async function i915BeforeEnable(k: FakeKernel, pfDir: string, n: number): Promise<void> {
  const iov = await iovOf(pfDir);
  if (!iov || n === 0) return;
  const states: ('complete' | 'empty' | 'partial')[] = [];
  for (let i = 1; i <= n; i++) {
    const q = async (a: string): Promise<number> => num(path.join(iov, `vf${i}`, 'gt0', a));
    const ggtt = await q('ggtt_quota');
    const ctxs = await q('contexts_quota');
    const dbs = await q('doorbells_quota');
    states.push(ggtt > 0 && ctxs > 0 ? 'complete' : ggtt === 0 && ctxs === 0 && dbs === 0 ? 'empty' : 'partial');
  }
  if (states.includes('partial')) throw new KernelError('ENOKEY', `${path.basename(pfDir)}: VF configs are incomplete (a VF needs both ggtt_quota and contexts_quota)`);
  if (states.includes('complete')) return;
  for (let i = 1; i <= n; i++) {
    if ((await num(path.join(iov, `vf${i}`, 'gt0', 'lmem_quota'))) > 0) throw new KernelError('EUCLEAN', `${path.basename(pfDir)}: auto provisioning found VF${i} with an LMEM quota already`);
  }
  for (const a of RESOURCES) {
    const round = ROUND[a] ?? 1;
    const fair = Math.floor(FLEX170_FREE[a] / n / round) * round;
    for (let i = 1; i <= n; i++) await writeFile(path.join(iov, `vf${i}`, 'gt0', a), `${fair}\n`);
  }
  await setAuto(k, pfDir, true);
}

/** After a PF's VFs are disabled (behaviour 5). */
export async function i915AfterDisable(k: FakeKernel, pfDir: string): Promise<void> {
  const iov = await iovOf(pfDir);
  if (!iov || !(await autoPfs(k))[path.basename(pfDir)]) return;
  for (const vf of await vfFolders(iov)) for (const a of ATTRS) await writeFile(path.join(iov, vf, 'gt0', a), '0\n');
  await setAuto(k, pfDir, false);
}
