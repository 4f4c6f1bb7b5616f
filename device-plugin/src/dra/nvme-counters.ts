// On-demand NVMe queue pools through DRA: what each NVMe drive with flexible resources could still
// give its VFs, as partitionable devices (resource.k8s.io/v1 sharedCounters + consumesCounters).
// Pure.
//
// The counter model (one counter set per PF, `nvme-<pf>`):
//   vq      = the primary's flexible queue (VQ) resources a claim may take; a device of q queues
//             takes q (an NVMe "virtual queue" resource is one queue pair; the admin queue is one).
//   vi      = the flexible interrupt (VI) resources; a device takes interruptsFor(q) of them (one
//             per queue, capped at the drive's per-controller maximum, carving/ondemand-nvme.ts).
//   vf-<i>  = 1 per published VF; each of its devices (one per queue count) takes 1, so a VF is
//             given to one claim with one size.
// The scheduler subtracts the allocated claims' devices itself, so the values published are the
// drive's free room plus what live claims (allocated here and not released, or prepared) hold:
//   vq = VQFRT − VQRFAP − VQRFA  (free: neither the primary's nor any secondary's)
//        + Σ nvq over secondaries of live claims' VFs (sized or partly sized for them)
// and the same for vi, never above what the secondaries may have in all (VQFRT − VQRFAP). A VF
// whose controller is Online or holds resources with no live claim (an admin's, or a released
// claim's until it is set Offline) is not published, and what it holds is not free: nobody is
// promised it. A claim allocated but not sized yet is counted by the scheduler and not by the
// drive: nothing to add. At most 30 VFs are published per PF (32 counters per set).
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import { freeOf, interruptsFor, nvmeDeviceName, offeredQueues, type NvmePfState } from '../carving/ondemand-nvme.js';
import { CARVED_CONDITION, CARVE_FAILED_CONDITION, chunkOffers, counterSetName, type CounterSet } from './counters.js';
import { draDevice, type DeviceFacts, type DraDevice } from './devices.js';

/** Counters per set allowed by the API minus `vq` and `vi`: VFs published per PF. */
export const MAX_VFS_PER_NVME = 30;

/** Live devices (allocated or prepared) by VF: the queue count each was given. */
export type LiveNvme = ReadonlyMap<string, number>;

/** One PF's counters and devices. */
export interface NvmeOffer {
  counters: CounterSet;
  devices: DraDevice[];
}

/** The counters and devices of one PF of an on-demand NVMe pool. */
export function nvmeOffer(pool: PoolPlan, pf: string, st: NvmePfState, devices: ReadonlyMap<string, InventoryDevice>, live: LiveNvme, facts: DeviceFacts): NvmeOffer {
  const { caps } = st;
  const sizes = offeredQueues(pool, caps);
  const free = freeOf(caps);
  let vq = free.vq;
  let vi = free.vi;
  const vfs = Object.entries(st.vfs).sort((a, b) => a[1].index - b[1].index);
  const published: [string, number][] = [];
  for (const [vf, sc] of vfs) {
    if (live.has(vf)) {
      vq += sc.nvq;
      vi += sc.nvi;
      published.push([vf, sc.index]);
    }
  }
  for (const [vf, sc] of vfs) {
    if (published.length >= MAX_VFS_PER_NVME) break;
    if (!live.has(vf) && !sc.online && sc.nvq === 0 && sc.nvi === 0) published.push([vf, sc.index]);
  }
  published.sort((a, b) => a[1] - b[1]);
  const setName = counterSetName(pf).replace(/^parent-/, 'nvme-');
  const counters: Record<string, { value: string }> = {
    vq: { value: String(Math.min(vq, Math.max(0, caps.vqfrt - caps.vqrfap))) },
    vi: { value: String(Math.min(vi, Math.max(0, caps.vifrt - caps.virfap))) },
  };
  const out: DraDevice[] = [];
  for (const [vf, index] of published.slice(0, MAX_VFS_PER_NVME)) {
    counters[`vf-${index}`] = { value: '1' };
    const dev = devices.get(vf);
    for (const q of sizes) {
      const ints = interruptsFor(q, caps) as number;
      const slice: Slice = {
        id: vf, pool: pool.name, resourceName: pool.resourceName, kind: 'VF', parent: pf, pciAddress: vf, index,
        deviceNodes: [], health: 'Healthy', ...(dev?.numaNode !== undefined ? { numaNode: dev.numaNode } : {}), ...(dev?.iommuGroup !== undefined ? { iommuGroup: dev.iommuGroup } : {}),
      };
      const d = draDevice(pool, slice, facts);
      d.name = nvmeDeviceName(vf, q);
      d.attributes.nvmeQueues = { int: q };
      d.attributes.nvmeInterrupts = { int: ints };
      d.consumesCounters = [{ counterSet: setName, counters: { vq: { value: String(q) }, vi: { value: String(ints) }, [`vf-${index}`]: { value: '1' } } }];
      d.bindingConditions = [CARVED_CONDITION];
      d.bindingFailureConditions = [CARVE_FAILED_CONDITION];
      out.push(d);
    }
  }
  return { counters: { name: setName, counters }, devices: out };
}

/** The slices' content of an on-demand NVMe pool: counter sets (≤ 8 per object) and devices (≤ 64 per object). */
export function nvmeContent(pool: PoolPlan, state: Readonly<Record<string, NvmePfState>>, devices: ReadonlyMap<string, InventoryDevice>, live: LiveNvme, facts: DeviceFacts): { counterChunks: CounterSet[][]; chunks: DraDevice[][] } {
  const sets: CounterSet[] = [];
  const all: DraDevice[] = [];
  for (const d of pool.devices) {
    const st = state[d.pciAddress];
    if (!st || st.pool !== pool.name) continue;
    const o = nvmeOffer(pool, d.pciAddress, st, devices, live, facts);
    sets.push(o.counters);
    all.push(...o.devices);
  }
  return chunkOffers(sets, all);
}
