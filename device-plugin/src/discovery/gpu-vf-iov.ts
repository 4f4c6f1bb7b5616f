// Intel SR-IOV GPUs: the per-VF provisioning attributes a PF's driver shows, and what they read now.
//  - i915 (Intel's out-of-tree build for Flex/Max): `drm/cardN/prelim_iov/` (or `iov/` in newer builds)
//    with `vfN/gt*/{lmem_quota,ggtt_quota,contexts_quota,doorbells_quota,exec_quantum_ms,preempt_timeout_us}`
//    for every VF the PF can have, enabled or not (intel_iov_sysfs.c creates them at PF probe).
//  - upstream xe: `sriov_admin/vfN/profile/{exec_quantum_ms,preempt_timeout_us,sched_priority}` (6.19+),
//    `vram_quota` (7.0+).
// Only attributes that exist are listed: the planner refuses a pool field the driver has no file for.
import { statSync } from 'node:fs';
import path from 'node:path';
import type { GpuVfProvisioning } from '../model.js';
import type { AttrReader } from '../sysfs/read.js';

/** The attributes read under each VF's leaf folders. */
const I915_ATTRS = ['lmem_quota', 'ggtt_quota', 'contexts_quota', 'doorbells_quota', 'exec_quantum_ms', 'preempt_timeout_us', 'sched_priority'];
const XE_ATTRS = ['exec_quantum_ms', 'preempt_timeout_us', 'sched_priority', 'vram_quota'];

/** By the mode bits, not access(2): kernfs refuses a write to a file without w bits even to root. */
function writable(file: string): boolean {
  try {
    return (statSync(file).mode & 0o222) !== 0;
  } catch {
    return true; // unreadable: let the write say why
  }
}

function vfNumbers(names: readonly string[]): number[] {
  return names.flatMap((n) => (/^vf([1-9]\d*)$/.exec(n) ? [Number(n.slice(2))] : [])).sort((a, b) => a - b);
}

/**
 * Reads the provisioning folder of one PF (`r` reads the PF's folder, `pf` is its address), or
 * undefined when its driver shows none. Values are the attribute texts, trimmed.
 */
export function readGpuVfProvisioning(r: AttrReader, pf: string, entries: readonly string[], dir?: string): GpuVfProvisioning | undefined {
  if (entries.includes('sriov_admin')) {
    const vfs: GpuVfProvisioning['vfs'] = {};
    const readOnly = new Set<string>();
    for (const n of vfNumbers(r.list('sriov_admin'))) {
      const values: Record<string, string> = {};
      const names = r.list(`sriov_admin/vf${n}/profile`);
      for (const a of XE_ATTRS) {
        if (!names.includes(a)) continue;
        values[`profile/${a}`] = r.text(`sriov_admin/vf${n}/profile/${a}`)?.trim() ?? '';
        // xe makes a VF's sched_priority read-only (0444) where the GuC does not let it change.
        if (dir && !writable(path.join(dir, `sriov_admin/vf${n}/profile/${a}`))) readOnly.add(a);
      }
      vfs[String(n)] = values;
    }
    return { driver: 'xe', base: `bus/pci/devices/${pf}/sriov_admin`, vfs, ...(readOnly.size ? { readOnly: [...readOnly].sort() } : {}) };
  }
  if (!entries.includes('drm')) return undefined;
  for (const card of r.list('drm').filter((c) => /^card\d+$/.test(c)).sort()) {
    const folder = r.list(`drm/${card}`).find((e) => e === 'prelim_iov' || e === 'iov');
    if (!folder) continue;
    const at = `drm/${card}/${folder}`;
    const vfs: GpuVfProvisioning['vfs'] = {};
    for (const n of vfNumbers(r.list(at))) {
      const values: Record<string, string> = {};
      for (const gt of r.list(`${at}/vf${n}`).filter((g) => /^gt\d*$/.test(g)).sort()) {
        const names = r.list(`${at}/vf${n}/${gt}`);
        for (const a of I915_ATTRS) if (names.includes(a)) values[`${gt}/${a}`] = r.text(`${at}/vf${n}/${gt}/${a}`)?.trim() ?? '';
      }
      vfs[String(n)] = values;
    }
    return { driver: 'i915', base: `bus/pci/devices/${pf}/${at}`, vfs };
  }
  return undefined;
}
