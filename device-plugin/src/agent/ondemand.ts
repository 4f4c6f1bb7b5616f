// The agent's bookkeeping around on-demand carving (pools with `onDemand`, carving/ondemand.ts plans
// the writes): before a round it learns each parent's capacity from the scan and records, in the
// checkpoint and before any write, which claim every mdev about to be created is for; after the
// round it forgets the records of mdevs that are gone and no claim wants. The UUID follows from the
// device, so a restart neither loses a carve (the claim is still allocated) nor doubles it.
import { indexDevices } from '../carving/layout.js';
import { isOnDemand, learnCapacity, mdevParentsOf, type WantedMdev } from '../carving/ondemand.js';
import type { Inventory, VirtualIONodeSpec } from '../model.js';
import type { Checkpoint } from './checkpoint.js';
import { existingIds } from './gate.js';
import type { OnDemandInput } from './ports.js';

/** What on-demand pools carve this round, or undefined when the plan has none. Saves the checkpoint. */
export function beforeOnDemand(spec: VirtualIONodeSpec, inventory: Inventory, checkpoint: Checkpoint, wanted: ReadonlyMap<string, WantedMdev>, now: Date): OnDemandInput | undefined {
  const pools = (spec.pools ?? []).filter((p) => isOnDemand(p) && !p.deleting);
  if (pools.length === 0) return undefined;
  const devices = indexDevices(inventory);
  const capacity = learnCapacity(checkpoint.mdevCapacity(), pools.flatMap((p) => p.devices.flatMap((d) => mdevParentsOf(d, devices))), devices);
  checkpoint.setMdevCapacity(capacity);
  const exists = existingIds(inventory);
  // A released mdev the scheduler gave to another claim before it was removed serves that claim now.
  for (const w of wanted.values()) {
    if (!exists.has(w.uuid) || checkpoint.carvings().get(w.uuid)?.uid !== w.uid) {
      checkpoint.recordCarving(w.uuid, { pool: w.pool, namespace: w.namespace, claim: w.name, uid: w.uid, since: now.toISOString() });
    }
  }
  checkpoint.save();
  return { wanted, capacity };
}

/** After a round: records of mdevs that no longer exist and no claim wants are forgotten. */
export function afterOnDemand(inventory: Inventory, checkpoint: Checkpoint, wanted: ReadonlyMap<string, WantedMdev>): void {
  const exists = existingIds(inventory);
  for (const uuid of checkpoint.carvings().keys()) if (!exists.has(uuid) && !wanted.has(uuid)) checkpoint.forgetCarving(uuid);
  checkpoint.save();
}
