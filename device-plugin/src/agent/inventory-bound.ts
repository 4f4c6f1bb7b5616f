// The inventory as VirtualIONode.status can carry it: at most MAX_INVENTORY functions (the CRD's
// bound, which keeps the object far below etcd's size limit). A node with more (carved VFs add up
// fast: 4 PFs × 512 VFs) keeps what planning needs first, so carving VFs can never push a planned
// PF out of the list and unplan its pool. Pure.
import type { InventoryDevice, PoolPlan } from '../model.js';
import { compareText } from '../sysfs/pci.js';

/** `VirtualIONode.status.inventory.devices` maxItems. */
export const MAX_INVENTORY = 2048;

export interface BoundInventory {
  /** The functions listed, sorted by PCI address. */
  devices: InventoryDevice[];
  /** How many functions the node has. */
  total: number;
  truncated: boolean;
  /** What was left out, for the message: VFs and other functions. */
  omitted: { vfs: number; functions: number };
}

/**
 * Keeps at most `max` functions, in this order of need: the planned devices and the members of
 * their IOMMU groups (the operator plans companions with them); every other physical function
 * (what pools select from); the first VF of each PF (its VF device ID and mdev types name the
 * KubeVirt entries); the other VFs of planned devices; every other VF. Within a rank, by PCI address.
 */
export function boundInventory(devices: readonly InventoryDevice[], plan: readonly PoolPlan[], max = MAX_INVENTORY): BoundInventory {
  const total = devices.length;
  if (total <= max) return { devices: [...devices], total, truncated: false, omitted: { vfs: 0, functions: 0 } };
  const byAddr = new Map(devices.map((d) => [d.pciAddress, d]));
  const planned = new Set<string>();
  for (const p of plan) {
    for (const pd of p.devices ?? []) {
      planned.add(pd.pciAddress);
      for (const m of byAddr.get(pd.pciAddress)?.iommuGroupMembers ?? []) planned.add(m);
    }
  }
  const firstVf = new Set<string>();
  const seenPf = new Set<string>();
  for (const d of [...devices].sort((a, b) => compareText(a.pciAddress, b.pciAddress))) {
    if (d.physfn && !seenPf.has(d.physfn)) {
      seenPf.add(d.physfn);
      firstVf.add(d.pciAddress);
    }
  }
  const rank = (d: InventoryDevice): number => {
    if (planned.has(d.pciAddress)) return 0;
    if (!d.physfn) return 1;
    if (firstVf.has(d.pciAddress)) return 2;
    if (planned.has(d.physfn)) return 3;
    return 4;
  };
  const kept = [...devices]
    .map((d) => ({ d, r: rank(d) }))
    .sort((a, b) => a.r - b.r || compareText(a.d.pciAddress, b.d.pciAddress))
    .slice(0, max)
    .map((x) => x.d);
  const keptSet = new Set(kept.map((d) => d.pciAddress));
  const left = devices.filter((d) => !keptSet.has(d.pciAddress));
  const vfs = left.filter((d) => d.physfn).length;
  return {
    devices: kept.sort((a, b) => compareText(a.pciAddress, b.pciAddress)),
    total,
    truncated: true,
    omitted: { vfs, functions: left.length - vfs },
  };
}

/** The Degraded message part for a truncated inventory. */
export function truncationMessage(b: BoundInventory): string {
  const parts = [b.omitted.vfs > 0 ? `${b.omitted.vfs} VF(s)` : '', b.omitted.functions > 0 ? `${b.omitted.functions} other function(s)` : ''].filter(Boolean);
  return `status lists ${b.devices.length} of ${b.total} PCI functions (planned devices and physical functions first); left out: ${parts.join(' and ')}`;
}
