// The agent's bookkeeping around on-demand carving (pools with `onDemand`, carving/ondemand.ts plans
// the writes): before a round it learns each parent's capacity from the scan and records, in the
// checkpoint and before any write, which claim every mdev about to be created is for; after the
// round it forgets the records of mdevs that are gone and no claim wants. The UUID follows from the
// device, so a restart neither loses a carve (the claim is still allocated) nor doubles it.
// vGPU profile pools (carving/ondemand-vgpu.ts) key their records by the VF's address: a record
// is what makes a typed VF ours (to be cleared once no claim wants it and nobody holds it). NVMe
// queue pools (carving/ondemand-nvme.ts) record a VF right before its controller is sized, and
// forget it once the drive shows that controller Offline with nothing assigned.
import { indexDevices } from '../carving/layout.js';
import { isOnDemand, learnCapacity, mdevParentsOf, type WantedMdev } from '../carving/ondemand.js';
import { isOnDemandNvme, nvmeVf, type NvmeState } from '../carving/ondemand-nvme.js';
import { isOnDemandVgpu, learnFramebuffer } from '../carving/ondemand-vgpu.js';
import { isVgpuPool } from '../carving/vgpu.js';
import type { Inventory, VirtualIONodeSpec } from '../model.js';
import type { Checkpoint } from './checkpoint.js';
import { existingIds } from './gate.js';
import type { OnDemandInput } from './ports.js';

/** What on-demand pools carve this round, or undefined when the plan has none. Saves the checkpoint. */
export function beforeOnDemand(spec: VirtualIONodeSpec, inventory: Inventory, checkpoint: Checkpoint, wanted: ReadonlyMap<string, WantedMdev>, now: Date): OnDemandInput | undefined {
  const pools = (spec.pools ?? []).filter((p) => isOnDemand(p) && !p.deleting);
  const vgpu = (spec.pools ?? []).filter((p) => isOnDemandVgpu(p) && !p.deleting);
  const nvme = (spec.pools ?? []).filter((p) => isOnDemandNvme(p) && !p.deleting);
  const devices = indexDevices(inventory);
  if (pools.length === 0 && vgpu.length === 0) {
    keepVgpuTables(spec, inventory, checkpoint, devices);
    if (nvme.length === 0) return undefined;
  }
  let capacity = learnCapacity(checkpoint.mdevCapacity(), pools.flatMap((p) => p.devices.flatMap((d) => mdevParentsOf(d, devices))), devices);
  // vGPU profile pools: each GPU's framebuffer, kept across restarts (a busy GPU lists less).
  if (vgpu.length > 0) capacity = learnFramebuffer(capacity, vgpu, devices, inventory);
  checkpoint.setMdevCapacity(capacity);
  keepVgpuTables(spec, inventory, checkpoint, devices);
  const exists = existingIds(inventory);
  // A released mdev the scheduler gave to another claim before it was removed serves that claim now.
  for (const w of wanted.values()) {
    if (w.queues !== undefined) continue; // NVMe: recorded right before the controller is sized (carving/nvme.ts)
    if (w.vgpuType !== undefined) {
      // A VF with a type we did not write (an admin's) is never recorded: recorded VFs get cleared.
      const cur = devices.get(w.uuid)?.nvidiaVgpu?.currentType;
      const prev = checkpoint.carvings().get(w.uuid);
      if (cur === undefined || (cur !== 0 && cur !== w.vgpuType && prev === undefined)) continue;
      if (prev?.uid !== w.uid) checkpoint.recordCarving(w.uuid, { pool: w.pool, namespace: w.namespace, claim: w.name, uid: w.uid, since: now.toISOString() });
      continue;
    }
    if (!exists.has(w.uuid) || checkpoint.carvings().get(w.uuid)?.uid !== w.uid) {
      checkpoint.recordCarving(w.uuid, { pool: w.pool, namespace: w.namespace, claim: w.name, uid: w.uid, since: now.toISOString() });
    }
  }
  checkpoint.save();
  // The VFs whose type we wrote (recorded before the write): only those are ever cleared.
  // NVMe queue pools: the VFs whose controller we sized (recorded before): only those are set Offline.
  const names = new Set([...vgpu, ...nvme].map((p) => p.name));
  const ours = new Set([...checkpoint.carvings()].filter(([, r]) => names.has(r.pool)).map(([id]) => id));
  return { wanted, capacity, ...(vgpu.length > 0 || nvme.length > 0 ? { ours } : {}) };
}

/**
 * Profile pools (`carving.vgpu`) keep their GPUs' type tables in the checkpoint too: deleting such a
 * pool after a restart on a busy GPU resolves its profile from the kept table (carving/plan.ts
 * planUncarve). Saves only when the record changed.
 */
function keepVgpuTables(spec: VirtualIONodeSpec, inventory: Inventory, checkpoint: Checkpoint, devices: ReturnType<typeof indexDevices>): void {
  const pools = (spec.pools ?? []).filter((p) => isVgpuPool(p) && !p.deleting);
  if (pools.length === 0) return;
  const prev = checkpoint.mdevCapacity();
  const next = learnFramebuffer(prev, pools, devices, inventory);
  if (JSON.stringify(next) === JSON.stringify(prev)) return;
  checkpoint.setMdevCapacity(next);
  checkpoint.save();
}

/** After a round: records of mdevs that no longer exist and no claim wants are forgotten. */
export function afterOnDemand(inventory: Inventory, checkpoint: Checkpoint, wanted: ReadonlyMap<string, WantedMdev>, nvme: NvmeState = {}): void {
  const exists = existingIds(inventory);
  const devices = indexDevices(inventory);
  // A vGPU record (a VF's address) goes once the VF has no type any more and no claim wants it.
  const untyped = (id: string): boolean => devices.get(id)?.nvidiaVgpu?.currentType === 0;
  // An NVMe record goes once the drive shows the VF's controller Offline with nothing assigned.
  const idle = (id: string): boolean => {
    const sc = nvmeVf(nvme, id)?.sc;
    return sc !== undefined && !sc.online && sc.nvq === 0 && sc.nvi === 0;
  };
  for (const uuid of checkpoint.carvings().keys()) if ((!exists.has(uuid) || untyped(uuid) || idle(uuid)) && !wanted.has(uuid)) checkpoint.forgetCarving(uuid);
  checkpoint.save();
}
