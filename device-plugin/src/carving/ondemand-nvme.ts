// On-demand NVMe VFs (pools with `onDemand.nvmeQueues`): an NVMe drive with flexible resources
// (NVMe 1.4 Virtualization Management) keeps each VF's secondary controller Offline, with no queues
// and no interrupts, until the primary controller assigns it some and sets it Online. Such a pool
// enables its VFs ahead (count) and leaves every secondary controller Offline; a claim picks a VF
// and a queue count, and the agent then sizes that VF's controller and sets it Online; once no
// claim wants it and nobody holds the VF, the agent sets it Offline, which gives its resources back
// to the primary (QEMU hw/nvme `nvme_virt_set_state`; the specification lets a drive keep them, so
// the VF's own records say what it holds). This file is the pure part: which queue counts a drive
// can give one controller, how many interrupts go with them, and the nvme-cli steps that make the
// controllers match the claims. carving/nvme.ts runs the steps; dra/nvme-counters.ts publishes.
import type { PoolPlan } from '../model.js';
import type { PrimaryCaps, SecondaryCtrl } from './nvme.js';
import type { OnDemandFailure, WantedMdev } from './ondemand.js';

/** True for pools whose claims size an NVMe VF's secondary controller at allocation. */
export function isOnDemandNvme(p: Pick<PoolPlan, 'onDemand' | 'mode'>): boolean {
  return p.mode === 'SRIOV' && (p.onDemand?.nvmeQueues?.length ?? 0) > 0;
}

/** What the last provisioning read from one primary controller, with its VFs' secondaries. */
export interface NvmePfState {
  pool: string;
  caps: PrimaryCaps;
  /** VF address → its secondary controller (those of the pool's VF range). */
  vfs: Record<string, SecondaryCtrl & { index: number }>;
}

/** Per PF address: the NVMe state of on-demand pools, as provisioning last read it. */
export type NvmeState = Record<string, NvmePfState>;

/** The secondary controller of `vf` in `state`, with its PF. */
export function nvmeVf(state: NvmeState | undefined, vf: string): { pf: string; sc: SecondaryCtrl & { index: number } } | undefined {
  for (const [pf, s] of Object.entries(state ?? {})) {
    const sc = s.vfs[vf];
    if (sc) return { pf, sc };
  }
  return undefined;
}

/**
 * Interrupts that go with `queues` queues: one per queue, capped at what the drive lets one
 * secondary controller have (VIFRSM), in its granules; at least one (a controller goes Online only
 * with one). Undefined when the drive cannot give one.
 */
export function interruptsFor(queues: number, caps: PrimaryCaps): number | undefined {
  const g = Math.max(1, caps.vigran);
  const max = Math.floor(caps.vifrsm / g) * g;
  const v = Math.min(Math.ceil(Math.min(queues, caps.vifrsm) / g) * g, max);
  return v >= 1 ? v : undefined;
}

/**
 * The pool's queue counts that one secondary controller of this drive can take: at least 2 (admin
 * and one I/O queue: the minimum to go Online), at most VQFRSM, in VQ granules, with an interrupt
 * count. Sorted ascending.
 */
export function offeredQueues(pool: Pick<PoolPlan, 'onDemand'>, caps: PrimaryCaps): number[] {
  const g = Math.max(1, caps.vqgran);
  const ok = (q: number): boolean => q >= 2 && q <= caps.vqfrsm && q % g === 0 && interruptsFor(q, caps) !== undefined;
  return [...new Set(pool.onDemand?.nvmeQueues ?? [])].filter(ok).sort((a, b) => a - b);
}

/** Flexible resources of the primary not assigned to anyone (QEMU: total − primary's − secondaries'). */
export function freeOf(caps: PrimaryCaps): { vq: number; vi: number } {
  return { vq: Math.max(0, caps.vqfrt - caps.vqrfap - caps.vqrfa), vi: Math.max(0, caps.vifrt - caps.virfap - caps.virfa) };
}

/** The DRA device name of queue count `queues` on VF `vf` (`nvme-0000-02-00-1-q4`). */
export function nvmeDeviceName(vf: string, queues: number): string {
  return `nvme-${vf.toLowerCase().replace(/[:.]/g, '-')}-q${queues}`;
}

/** The VF and queue count an on-demand NVMe device name stands for. */
export function parseNvmeDevice(name: string): { vf: string; queues: number } | undefined {
  const m = /^nvme-([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])-q(\d+)$/.exec(name);
  return m ? { vf: `${m[1]}:${m[2]}:${m[3]}.${m[4]}`, queues: Number(m[5]) } : undefined;
}

/** One nvme-cli step on a secondary controller. */
export interface NvmeStep {
  vf: string;
  scid: number;
  /** `size`: assign queues and interrupts, then Online (the claim is recorded first); `release`: Offline. */
  kind: 'size' | 'release';
  queues?: number;
  interrupts?: number;
  /** The claim a `size` step serves. */
  wanted?: WantedMdev;
  why: string;
}

/** The steps of one on-demand NVMe PF, and the claims that cannot be served now. */
export interface NvmePlan {
  steps: NvmeStep[];
  failed: OnDemandFailure[];
  /** Controllers left as they are, with why (held, or not ours). */
  blocked: { device: string; reason: string }[];
}

/**
 * The steps that make the secondaries of one PF match the claims. `wanted` is keyed by VF address
 * (its `queues` says the size); `ours` holds the VFs the checkpoint says we sized for a claim (only
 * those are ever set Offline); `held` the VFs a VM may still use (never touched). Releases come
 * first, so their resources serve the sizes after them; a size that does not fit what is free is a
 * failure the claim's condition shows (the scheduler then tries elsewhere).
 */
export function planNvmeOnDemand(poolName: string, st: NvmePfState, wanted: ReadonlyMap<string, WantedMdev>, ours: ReadonlySet<string>, held: ReadonlySet<string>): NvmePlan {
  const out: NvmePlan = { steps: [], failed: [], blocked: [] };
  const free = freeOf(st.caps);
  const busy = (sc: SecondaryCtrl): boolean => sc.online || sc.nvq > 0 || sc.nvi > 0;
  const entries = Object.entries(st.vfs).sort((a, b) => a[1].index - b[1].index);
  const releasing = new Set<string>();
  for (const [vf, sc] of entries) {
    const w = wanted.get(vf);
    if (!busy(sc) || !ours.has(vf)) continue;
    if (w?.queues !== undefined && sc.online && sc.nvq === w.queues) continue; // the claim's size: carved
    if (held.has(vf)) {
      if (w) out.failed.push({ pool: poolName, uuid: vf, reason: `VF ${vf}: secondary controller ${sc.scid} is still Online with ${sc.nvq} queues for a VM that holds it; it is resized once released` });
      else out.blocked.push({ device: vf, reason: `VF ${vf} (secondary controller ${sc.scid}, ${sc.nvq} queues) is held; set Offline once released` });
      continue;
    }
    out.steps.push({ vf, scid: sc.scid, kind: 'release', why: `VF ${vf}: secondary controller ${sc.scid} Offline, its ${sc.nvq} VQ and ${sc.nvi} VI back to the primary: no claim of pool ${poolName} wants it${w ? ' at this size' : ''}` });
    releasing.add(vf);
    free.vq += sc.nvq;
    free.vi += sc.nvi;
  }
  for (const [vf, sc] of entries) {
    const w = wanted.get(vf);
    if (w?.queues === undefined) continue;
    const q = w.queues;
    if (busy(sc) && !releasing.has(vf)) {
      // Ours: carved at this size, or held (its failure is above). Not ours: never changed.
      if (!ours.has(vf)) out.failed.push({ pool: poolName, uuid: vf, reason: `VF ${vf}: secondary controller ${sc.scid} is ${sc.online ? 'Online' : 'Offline'} with ${sc.nvq} queues, set by someone else (left alone)` });
      continue;
    }
    const vi = interruptsFor(q, st.caps);
    if (!offeredQueues({ onDemand: { nvmeQueues: [q] } }, st.caps).includes(q) || vi === undefined) {
      out.failed.push({ pool: poolName, uuid: vf, reason: `VF ${vf}: the drive cannot give one secondary controller ${q} queues (at most ${st.caps.vqfrsm}, in granules of ${st.caps.vqgran})` });
      continue;
    }
    // Idle, or set Offline just before (a half-sized controller after a restart is reset first).
    if (q > free.vq || vi > free.vi) {
      out.failed.push({ pool: poolName, uuid: vf, reason: `${q} queues no longer fit on the NVMe drive of VF ${vf}: ${free.vq} VQ and ${free.vi} VI flexible resources are free, ${q} VQ and ${vi} VI needed` });
      continue;
    }
    free.vq -= q;
    free.vi -= vi;
    out.steps.push({ vf, scid: sc.scid, kind: 'size', queues: q, interrupts: vi, wanted: w, why: `VF ${vf}: secondary controller ${sc.scid} Online with ${q} VQ and ${vi} VI for claim ${w.claim}` });
  }
  return out;
}

/** The nvme-cli arguments of a step on controller device `dev` (virt-mgmt actions: 7 Offline, 8 assign, 9 Online). */
export function stepArgs(dev: string, s: NvmeStep): string[][] {
  const c = String(s.scid);
  // Offline, then nothing assigned: QEMU returns the resources at Offline already; a drive that
  // keeps them gives them back with the assignments of 0.
  if (s.kind === 'release') return [['virt-mgmt', dev, '-c', c, '-a', '7', '-n', '0'], ['virt-mgmt', dev, '-c', c, '-r', '0', '-a', '8', '-n', '0'], ['virt-mgmt', dev, '-c', c, '-r', '1', '-a', '8', '-n', '0']];
  return [
    ['virt-mgmt', dev, '-c', c, '-r', '0', '-a', '8', '-n', String(s.queues)],
    ['virt-mgmt', dev, '-c', c, '-r', '1', '-a', '8', '-n', String(s.interrupts)],
    ['virt-mgmt', dev, '-c', c, '-a', '9', '-n', '0'],
  ];
}
