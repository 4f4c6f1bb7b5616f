// On-demand mediated devices (pools with `onDemand`), as data: which parents and types a pool offers,
// how many instances of each type a parent holds when empty (its capacity, learned from the kernel),
// which mdev every possible device stands for, and the writes that make the node match the claims
// the scheduler allocated: create the mdev of every claimed device that does not exist yet, remove
// ours that no claim wants and nobody holds. Pure; the gate still checks every removal.
import type { CarvingPlan, InventoryDevice, PoolPlan, SysfsWrite } from '../model.js';
import { isPciAddress } from '../sysfs/pci.js';
import { mdevUuid, ourMdevIndex, resolveMdevType } from './layout.js';

/** Instances of each type a parent holds when it has no mdev at all: parent → type id → count. */
export type MdevCapacity = Record<string, Record<string, number>>;

/** True for pools that carve when a claim asks (never ahead). */
export function isOnDemand(p: Pick<PoolPlan, 'onDemand' | 'mode'>): boolean {
  return p.mode === 'Mediated' && (p.onDemand?.mdevTypes?.length ?? 0) > 0;
}

/** One type a parent offers on demand. */
export interface OfferedType {
  /** The type id on the parent (`mdev_supported_types/<id>`). */
  id: string;
  name?: string;
  /** Instances on the empty parent (learned capacity). */
  max: number;
  /** `available_instances` now. */
  available: number;
}

/** One parent of an on-demand pool with the types it offers (sorted by id). */
export interface OfferedParent {
  parent: string;
  types: OfferedType[];
}

/**
 * The mdev parents a pool device stands for: itself when it has mdev types, else its VFs that do
 * (SR-IOV vGPU: one parent per VF).
 */
export function mdevParentsOf(pd: { pciAddress: string }, devices: ReadonlyMap<string, InventoryDevice>): string[] {
  const d = devices.get(pd.pciAddress);
  if (!d) return [];
  if ((d.mdevTypes ?? []).length > 0) return [d.pciAddress];
  return (d.sriov?.vfs ?? []).filter((vf) => (devices.get(vf)?.mdevTypes ?? []).length > 0);
}

/**
 * Learns each parent's capacity from the kernel: a parent with no mdev shows, per type, how many
 * instances fit on it empty (`available_instances`), which is recorded. A parent seen only with mdevs
 * keeps what was recorded before; with nothing recorded its capacity is estimated as available +
 * instances of that same type (exact when its mdevs are all of one type, else lower than the truth:
 * a type then looks bigger than it is, which publishes less room, never more).
 */
export function learnCapacity(prev: MdevCapacity, parents: readonly string[], devices: ReadonlyMap<string, InventoryDevice>): MdevCapacity {
  const out: MdevCapacity = { ...prev };
  for (const addr of parents) {
    const d = devices.get(addr);
    if (!d?.mdevTypes?.length) continue;
    const mdevs = d.mdevs ?? [];
    const known = prev[addr] ?? {};
    const next: Record<string, number> = {};
    for (const t of d.mdevTypes) {
      const avail = t.availableInstances ?? 0;
      if (mdevs.length === 0) next[t.id] = avail;
      else next[t.id] = known[t.id] ?? avail + mdevs.filter((m) => m.type === t.id).length;
    }
    out[addr] = next;
  }
  return out;
}

/** The types an on-demand pool offers on each of its parents, with their learned capacity. */
export function offeredParents(pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, capacity: MdevCapacity): OfferedParent[] {
  const out: OfferedParent[] = [];
  const seen = new Set<string>();
  for (const pd of pool.devices) {
    for (const parent of mdevParentsOf(pd, devices)) {
      if (seen.has(parent)) continue;
      seen.add(parent);
      const d = devices.get(parent) as InventoryDevice;
      const types: OfferedType[] = [];
      for (const want of pool.onDemand?.mdevTypes ?? []) {
        const id = resolveMdevType(d, want);
        const t = (d.mdevTypes ?? []).find((x) => x.id === id);
        if (!id || !t || types.some((x) => x.id === id)) continue;
        const max = capacity[parent]?.[id] ?? t.availableInstances ?? 0;
        if (max <= 0) continue;
        types.push({ id, ...(t.name ? { name: t.name } : {}), max, available: t.availableInstances ?? 0 });
      }
      types.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      if (types.length) out.push({ parent, types });
    }
  }
  return out.sort((a, b) => (a.parent < b.parent ? -1 : 1));
}

/** One device an on-demand pool could carve: instance `index` of `type` on `parent`. */
export interface OnDemandSlot {
  parent: string;
  type: string;
  index: number;
  uuid: string;
}

/** Every possible device of the pool (index < capacity of the type on the parent). */
export function onDemandSlots(node: string, offered: readonly OfferedParent[]): OnDemandSlot[] {
  const out: OnDemandSlot[] = [];
  for (const p of offered) {
    for (const t of p.types) for (let i = 0; i < t.max; i++) out.push({ parent: p.parent, type: t.id, index: i, uuid: mdevUuid(node, p.parent, t.id, i) });
  }
  return out;
}

/** A device a claim was allocated, as the carver needs it. */
export interface WantedMdev {
  pool: string;
  /** The slice ID: the mdev UUID, or for vGPU profile pools (ondemand-vgpu.ts) the VF's address. */
  uuid: string;
  /** vGPU profile pools: the type id the claim's device asks to be written on the VF. */
  vgpuType?: number;
  /** NVMe queue pools (ondemand-nvme.ts): the queue count the claim's device asks for. */
  queues?: number;
  /** `<namespace>/<name>` of the claim (for logs and the write's purpose). */
  claim: string;
  namespace: string;
  name: string;
  uid: string;
}

/** Why a wanted mdev cannot be carved now (the claim's failure condition says it). */
export interface OnDemandFailure {
  pool: string;
  uuid: string;
  reason: string;
}

/**
 * The writes of one on-demand pool: create each wanted mdev that does not exist (when its type has an
 * available instance on the parent; otherwise a failure naming why), remove each of our on-demand
 * mdevs no claim wants and nobody holds. An mdev on the pool's parents that is not one of the pool's
 * slots is foreign and left alone (it occupies capacity, which the counters show).
 */
export function planOnDemand(
  node: string, pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, capacity: MdevCapacity,
  wanted: ReadonlyMap<string, WantedMdev>, held: ReadonlySet<string>, out: CarvingPlan & { failed?: OnDemandFailure[] },
): void {
  const offered = offeredParents(pool, devices, capacity);
  const slots = new Map(onDemandSlots(node, offered).map((s) => [s.uuid, s]));
  const existing = new Map<string, { parent: string; type?: string }>();
  for (const p of offered) for (const m of devices.get(p.parent)?.mdevs ?? []) existing.set(m.uuid, { parent: p.parent, ...(m.type ? { type: m.type } : {}) });
  for (const [uuid, m] of existing) {
    const t = offered.find((p) => p.parent === m.parent)?.types.find((x) => x.id === m.type);
    if (!t || !isOnDemandMdev(node, m.parent, t, uuid) || wanted.has(uuid) || held.has(uuid)) continue;
    out.writes.push({ path: `bus/mdev/devices/${uuid}/remove`, value: '1', why: `remove mdev ${uuid} of type ${t.id}: no claim of pool ${pool.name} wants it any more`, group: m.parent, pools: [pool.name] });
  }
  const creating = new Map<string, number>();
  for (const w of [...wanted.values()].filter((x) => x.pool === pool.name).sort((a, b) => (a.uuid < b.uuid ? -1 : 1))) {
    if (existing.has(w.uuid)) continue;
    const s = slots.get(w.uuid);
    if (!s) {
      (out.failed ??= []).push({ pool: pool.name, uuid: w.uuid, reason: `device mdev-${w.uuid} is not one this node's pool ${pool.name} can carve (parent or type gone)` });
      continue;
    }
    const t = offered.find((p) => p.parent === s.parent)?.types.find((x) => x.id === s.type);
    const key = `${s.parent}\n${s.type}`;
    const room = (t?.available ?? 0) - (creating.get(key) ?? 0);
    if (room <= 0) {
      (out.failed ??= []).push({ pool: pool.name, uuid: w.uuid, reason: `type ${s.type} no longer fits on ${s.parent}: the kernel shows 0 available instances (other mdevs on the parent use its capacity)` });
      continue;
    }
    creating.set(key, (creating.get(key) ?? 0) + 1);
    const base = isPciAddress(s.parent) ? `bus/pci/devices/${s.parent}` : `class/mdev_bus/${s.parent}`;
    // A group of its own: a refused removal on the parent must not hold up a claim's create.
    const write: SysfsWrite = { path: `${base}/mdev_supported_types/${s.type}/create`, value: w.uuid, why: `create mdev ${w.uuid} of type ${s.type} on ${s.parent} for claim ${w.claim}`, group: `${s.parent}/${w.uuid}`, pools: [pool.name] };
    out.writes.push(write);
  }
}

/**
 * Whether `uuid` is one of the on-demand mdevs of type `t` on `parent` (a deterministic UUID of an
 * index below its capacity, with a margin for a capacity that was estimated higher before).
 */
export function isOnDemandMdev(node: string, parent: string, t: Pick<OfferedType, 'id' | 'max'>, uuid: string): boolean {
  return ourMdevIndex(node, parent, t.id, uuid, t.max + 64) !== undefined;
}

/**
 * The writes that release a deleting or removed on-demand pool: each of its mdevs nobody holds is
 * removed; held ones stay (listed in `held` and `blocked`).
 */
export function planOnDemandUncarve(node: string, pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, allocated: ReadonlySet<string>, out: CarvingPlan & { held: string[] }): void {
  for (const p of offeredParents(pool, devices, {})) {
    for (const m of devices.get(p.parent)?.mdevs ?? []) {
      const t = p.types.find((x) => x.id === m.type);
      if (!t || !isOnDemandMdev(node, p.parent, { id: t.id, max: t.max + (devices.get(p.parent)?.mdevs ?? []).length }, m.uuid)) continue;
      if (allocated.has(m.uuid)) {
        out.held.push(m.uuid);
        out.blocked.push({ pool: pool.name, device: p.parent, reason: `mdev ${m.uuid} is allocated; removed once released` });
        continue;
      }
      out.writes.push({ path: `bus/mdev/devices/${m.uuid}/remove`, value: '1', why: `release mdev ${m.uuid} of pool ${pool.name}`, group: p.parent, pools: [pool.name] });
    }
  }
}

/** The slot an mdev UUID stands for in an on-demand pool, if any. */
export function slotOf(node: string, pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, capacity: MdevCapacity, uuid: string): OnDemandSlot | undefined {
  return onDemandSlots(node, offeredParents(pool, devices, capacity)).find((s) => s.uuid === uuid);
}
