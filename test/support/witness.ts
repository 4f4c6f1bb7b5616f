// The kernel's side of "a VM never loses its device" for end-to-end suites that run the fake kernel
// daemon in-process (test/sysfs/kernel-daemon.ts): a VMM stand-in (test/sysfs/vmm.ts) holds the
// devices the kubelet gave a VM-shaped pod for as long as the pod runs, and `kernelFindings` lists
// what the witness saw go wrong:
//  * any violation (a destructive write reached a device a VMM had open: test/sysfs/vfio.ts), except
//    the ones a test expects on purpose;
//  * any destructive write applied while a pod's VM held a device it destroyed (`destroyed` within the
//    VM's hold window), which also catches a destroy-and-recreate that leaves the same IDs behind;
//  * any request to let go the kernel sent a pod's VM (a write waited on its device), or a group it
//    no longer has open;
//  * optionally, anything destroyed at all since a given time (where the fault must move nothing).
// IDs that come back identical after a re-carve (VF addresses, deterministic mdev UUIDs, WWPNs) make
// snapshots of IDs blind to a re-carve; the kernel's record is not.
import { readdirSync, realpathSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { KernelHandle } from '../sysfs/kernel-daemon.js';
import { normalizeWwn, type Destroyed, type Violation } from '../sysfs/vfio.js';
import { startVm, type Vm } from '../sysfs/vmm.js';

/** A VM started for a pod: what it holds and when. */
export interface PodVm {
  readonly vm: Vm;
  readonly pod: string;
  /** Every device its groups cover (functions and mdevs by address/UUID) and its vports' WWPNs. */
  readonly devices: ReadonlySet<string>;
  /** When it had everything open (ms since the epoch). */
  readonly since: number;
  /** When it let go (absent while it runs). */
  until?: number;
}

/** The IOMMU group of a PCI function (address) or an mdev (UUID) in the sysfs tree `sys`. */
export function iommuGroupOf(sys: string, id: string): number {
  const dir = id.includes(':') ? join(sys, 'bus/pci/devices', id) : join(sys, 'bus/mdev/devices', id);
  return Number(basename(realpathSync(join(dir, 'iommu_group'))));
}

function groupMembers(sys: string, group: number): string[] {
  try {
    return readdirSync(join(sys, 'kernel/iommu_groups', String(group), 'devices'));
  } catch {
    return [];
  }
}

/**
 * Starts the VMM of a pod: opens `<dev>/vfio/<N>` of every function and mdev in `vfio` (their IOMMU
 * groups, once each) and uses the LUNs of the `vports` (WWPNs). It ignores requests to let go (a
 * guest that does not answer the hot-unplug), so a destructive write on its devices blocks for as
 * long as it runs, as in Linux. Throws (holding nothing) when a group cannot be opened (EBUSY: held
 * by someone else).
 */
export async function startPodVm(kernel: KernelHandle, sys: string, dev: string, o: { name: string; pod: string; vfio: string[]; vports?: string[] }): Promise<PodVm> {
  const groups = [...new Set(o.vfio.map((id) => iommuGroupOf(sys, id)))].sort((a, b) => a - b);
  const vports = (o.vports ?? []).map((w) => normalizeWwn(w) ?? w);
  const vm = await startVm(kernel, { name: o.name, deviceNodes: groups.map((g) => join(dev, 'vfio', String(g))), vports, onRequest: 'ignore' });
  const devices = new Set<string>([...o.vfio.map((id) => id.toLowerCase()), ...vports]);
  for (const g of groups) for (const m of groupMembers(sys, g)) devices.add(m.toLowerCase());
  return { vm, pod: o.pod, devices, since: Date.now() };
}

/** The VMM exits (the pod is being deleted): lets go of everything. Idempotent. */
export async function stopPodVm(p: PodVm): Promise<void> {
  if (p.until !== undefined) return;
  await p.vm.stop();
  p.until = Date.now();
}

/** What the witness must not have seen; see the file header. */
export interface FindingsOptions {
  /** Only violations and destroyed entries at or after this index are looked at (a row's start). */
  from?: { violations: number; destroyed: number };
  /** Violations the caller provoked on purpose (e.g. a VMM the kubelet does not know). */
  expected?: (v: Violation) => boolean;
  /** Nothing at all may have been destroyed at or after this time. */
  nothingDestroyedSince?: number;
}

const fmtDestroyed = (d: Destroyed): string => `${new Date(d.at).toISOString()} ${d.path}=${JSON.stringify(d.value)} destroyed [${d.devices.join(', ')}]`;

/** Problems the kernel's record shows (empty: the VMs never lost anything). */
export function kernelFindings(kernel: KernelHandle, vms: readonly PodVm[], o: FindingsOptions = {}): string[] {
  const out: string[] = [];
  for (const v of kernel.violations.slice(o.from?.violations ?? 0)) {
    if (o.expected?.(v)) continue;
    out.push(`violation: ${v.path}=${JSON.stringify(v.value)} reached ${v.device}${v.group === undefined ? '' : ` (group ${v.group})`} held by ${v.holder} at ${new Date(v.at).toISOString()}`);
  }
  const destroyed = kernel.destroyed.slice(o.from?.destroyed ?? 0);
  for (const p of vms) {
    const until = p.until ?? Infinity;
    for (const d of destroyed) {
      if (d.at < p.since || d.at > until) continue;
      const hit = d.devices.filter((x) => p.devices.has(x.toLowerCase()));
      if (hit.length) out.push(`destroyed while ${p.vm.holder} (pod ${p.pod}) held ${hit.join(', ')}: ${fmtDestroyed(d)}`);
    }
    if (p.until === undefined) {
      for (const r of p.vm.requests) out.push(`the kernel asked ${p.vm.holder} to let go of group ${r.group} (write ${r.path}=${JSON.stringify(r.value)}, request ${r.count})`);
      const open = p.vm.openGroups();
      if (open.length !== p.vm.groups.length) out.push(`${p.vm.holder} has groups [${open.join(', ')}] open, expected [${p.vm.groups.join(', ')}]`);
    }
  }
  if (o.nothingDestroyedSince !== undefined) {
    for (const d of destroyed) if (d.at >= o.nothingDestroyedSince) out.push(`destroyed although nothing may move: ${fmtDestroyed(d)}`);
  }
  return out;
}
