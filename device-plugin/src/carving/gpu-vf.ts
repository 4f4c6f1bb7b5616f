// Intel SR-IOV GPUs: the per-VF provisioning a pool asks for (`spec.carving.gpuVf`), written through
// the PF driver's sysfs before the VFs are enabled (i915 `drm/cardN/prelim_iov/vfN/gt*/`, xe
// `sriov_admin/vfN/profile/`). Which field maps to which attribute on which driver, what a driver
// cannot set, and i915's rule for enabling quota'd VFs. Pure: discovery/gpu-vf-iov.ts reads the
// attributes, carving/plan.ts places the writes, the agent's gate refuses any on a held VF.
import type { GpuVfProvisioning, InventoryDevice, PoolPlan, SysfsWrite } from '../model.js';

export type GpuVf = NonNullable<PoolPlan['gpuVf']>;

/** Each pool field and the attribute it sets per driver (below `vfN/gt*` on i915, `vfN/profile` on xe). */
const FIELDS: { key: keyof GpuVf; i915?: string; xe?: string; why?: { i915?: string; xe?: string } }[] = [
  { key: 'lmemBytes', i915: 'lmem_quota', xe: 'vram_quota' },
  { key: 'ggttBytes', i915: 'ggtt_quota', why: { xe: 'xe provisions the GGTT itself; sriov_admin has no attribute for it' } },
  { key: 'contexts', i915: 'contexts_quota', why: { xe: 'xe provisions GuC contexts itself; sriov_admin has no attribute for them' } },
  { key: 'doorbells', i915: 'doorbells_quota', why: { xe: 'xe provisions doorbells itself; sriov_admin has no attribute for them' } },
  { key: 'execQuantumMs', i915: 'exec_quantum_ms', xe: 'exec_quantum_ms' },
  { key: 'preemptTimeoutUs', i915: 'preempt_timeout_us', xe: 'preempt_timeout_us' },
  { key: 'schedPriority', xe: 'sched_priority', why: { i915: 'i915 shows sched_priority on the PF only, not on VFs' } },
];

/** The resource quotas of i915 (what makes a VF's configuration "manual"). */
const I915_RESOURCES: (keyof GpuVf)[] = ['lmemBytes', 'ggttBytes', 'contexts', 'doorbells'];

/** Whether a pool asks for i915 resource quotas (not only scheduling values). */
export function hasResourceQuotas(g: GpuVf | undefined): boolean {
  return g !== undefined && I915_RESOURCES.some((k) => g[k] !== undefined);
}

/**
 * i915 with some pools of a PF setting resource quotas and others not: the driver would enable the
 * others' VFs with nothing (it splits the GPU only when no VF has quotas). Why, or undefined.
 */
export function mixedQuotaProblem(pf: string, prov: GpuVfProvisioning | undefined, pools: readonly PoolPlan[]): string | undefined {
  const withRes = pools.filter((p) => hasResourceQuotas(p.gpuVf)).map((p) => p.name);
  if (prov?.driver !== 'i915' || withRes.length === 0 || withRes.length === pools.length) return undefined;
  const without = pools.filter((p) => !hasResourceQuotas(p.gpuVf)).map((p) => p.name);
  return `i915 splits ${pf} evenly only when no VF has quotas: pool(s) ${without.join(', ')} set no spec.carving.gpuVf quotas while ${withRes.join(', ')} do; give every pool on ${pf} quotas (or none)`;
}

/** What an attribute holds: xe's sched_priority reads its choices with the current one in brackets. */
function held(text: string | undefined): string | undefined {
  const m = /\[([^\]]+)\]/.exec(text ?? '');
  return m ? m[1] : text?.trim();
}

/** Writes for VF numbers `numbers` (1-based), or why the pool's gpuVf cannot be written on this PF. */
export interface GpuVfPlan {
  writes: SysfsWrite[];
  problem?: string;
}

/**
 * The writes that give VFs `numbers` (1-based, as the driver's folders name them) of `pf` the pool's
 * gpuVf values, leaving values already in place. Nothing at all when one field cannot be set here:
 * `problem` says why (no provisioning folder, a field the driver has no attribute for, i915's rule
 * that quota'd VFs need both a GGTT and a contexts quota).
 */
export function gpuVfWrites(pool: PoolPlan, pf: InventoryDevice, prov: GpuVfProvisioning | undefined, numbers: readonly number[], why: string): GpuVfPlan {
  const g = pool.gpuVf;
  if (!g) return { writes: [] };
  const at = pf.pciAddress;
  if (!prov) {
    return { writes: [], problem: `spec.carving.gpuVf needs an Intel SR-IOV GPU whose driver shows per-VF provisioning (i915 drm/cardN/prelim_iov or iov, xe sriov_admin); ${at} shows none (${pf.gpuInterface ?? 'not a GPU PF'}); nothing written` };
  }
  if (prov.driver === 'i915' && hasResourceQuotas(g) && (g.ggttBytes === undefined || g.contexts === undefined)) {
    return { writes: [], problem: `i915 enables VFs with quotas only when each has ggtt_quota and contexts_quota (otherwise it refuses the sriov_numvfs write): set spec.carving.gpuVf.ggttBytes and contexts too, or no resource quota at all (the driver then splits the GPU evenly); nothing written on ${at}` };
  }
  const writes: SysfsWrite[] = [];
  for (const f of FIELDS) {
    const want = g[f.key];
    if (want === undefined) continue;
    const attr = f[prov.driver];
    if (!attr) return { writes: [], problem: `spec.carving.gpuVf.${f.key} cannot be set on ${at}: ${f.why?.[prov.driver] ?? `${prov.driver} has no attribute for it`}; nothing written` };
    if (prov.readOnly?.includes(attr)) return { writes: [], problem: `spec.carving.gpuVf.${f.key} cannot be set on ${at}: its driver shows ${attr} read-only on the VFs (xe lets the GuC's VF priorities change only where it supports that); nothing written` };
    for (const n of numbers) {
      const values = prov.vfs[String(n)] ?? {};
      const leaves = Object.keys(values).filter((k) => k.endsWith(`/${attr}`)).sort();
      if (leaves.length === 0) {
        const where = `${prov.base.replace(/^bus\/pci\/devices\/[^/]+\//, '')}/vf${n}/${prov.driver === 'xe' ? 'profile' : 'gt*'}/${attr}`;
        const hint = attr === 'vram_quota' ? ' (xe has it from Linux 7.0)' : '';
        return { writes: [], problem: `spec.carving.gpuVf.${f.key} cannot be set on ${at}: its driver shows no ${where}${hint}; nothing written` };
      }
      for (const leaf of leaves) {
        if (held(values[leaf]) === String(want)) continue;
        // xe lists the priorities a VF may take (without "high" where it is not allowed).
        const choices = /\[/.test(values[leaf] ?? '') ? (values[leaf] ?? '').replace(/[[\]]/g, '').split(/\s+/) : undefined;
        if (choices && !choices.includes(String(want))) return { writes: [], problem: `spec.carving.gpuVf.${f.key} ${String(want)} is not offered on ${at}: VF ${n}'s ${attr} lists ${choices.join(', ')}; nothing written` };
        writes.push({ path: `${prov.base}/vf${n}/${leaf}`, value: String(want), why: `${f.key} of VF ${n} of ${at}: ${String(want)} (${why})`, group: at, pools: [pool.name] });
      }
    }
  }
  return { writes };
}

/**
 * Writes that return VFs `numbers` of a released pool to the driver's automatic provisioning: every
 * i915 resource quota and scheduling value the pool set goes back to 0 (the driver's "unset"). Only
 * while the VFs are disabled (carving/plan.ts orders them after `sriov_numvfs` = 0). xe keeps its
 * profile values: they are not resources and apply to whatever VF comes next.
 */
export function gpuVfResetWrites(pool: PoolPlan, prov: GpuVfProvisioning | undefined, numbers: readonly number[]): SysfsWrite[] {
  const g = pool.gpuVf;
  if (!g || prov?.driver !== 'i915') return [];
  const out: SysfsWrite[] = [];
  const at = /^bus\/pci\/devices\/([^/]+)\//.exec(prov.base)?.[1] ?? prov.base;
  for (const f of FIELDS) {
    if (g[f.key] === undefined || !f.i915) continue;
    for (const n of numbers) {
      for (const leaf of Object.keys(prov.vfs[String(n)] ?? {}).filter((k) => k.endsWith(`/${f.i915 as string}`)).sort()) {
        if (held(prov.vfs[String(n)]?.[leaf]) === '0') continue;
        out.push({ path: `${prov.base}/vf${n}/${leaf}`, value: '0', why: `unset ${f.key} of VF ${n} of ${at} (pool ${pool.name} released)`, group: at, pools: [pool.name] });
      }
    }
  }
  return out;
}

/** The VF a provisioning path is about: PF address and VF number, or undefined (for the gate). */
export function gpuVfPathTarget(p: string): { pf: string; vf: number } | undefined {
  const m = /^bus\/pci\/devices\/([^/]+)\/(?:drm\/card\d+\/(?:prelim_iov|iov)\/vf(\d+)\/gt\d*|sriov_admin\/vf(\d+)\/profile)\/[a-z_]+$/.exec(p);
  if (!m) return undefined;
  return { pf: m[1] as string, vf: Number(m[2] ?? m[3]) };
}
