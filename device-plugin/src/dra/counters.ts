// On-demand pools through DRA: what each parent could still carve, as partitionable devices
// (resource.k8s.io/v1 sharedCounters + consumesCounters). Pure.
//
// The counter model. A parent offers types t with capacity m_t (instances on the empty parent,
// learned from the kernel, carving/ondemand.ts). The kernel shares one budget among types in
// proportion (mtty ports, mbochs memory, vGPU framebuffer), so the parent gets a counter `units` of
// L = lcm(m_t), and an instance of t takes w_t = L / m_t of it; plus, per type, a counter `type-<i>`
// that an instance takes 1 of, bounded by what the kernel shows (`available_instances`), which also
// carries what the proportional model cannot say (a type the kernel stops offering once another
// exists, NVIDIA's one type per GPU).
//
// The scheduler subtracts every allocated claim's devices from the counters itself. So the values
// published are the kernel's free room plus what claims the scheduler already counts hold there:
//   units    = max over t of (available_t · w_t)       (the kernel's free units, never more)
//            + Σ w over existing mdevs of live claims
//   type-<i> = available_t + existing mdevs of type t of live claims
// An mdev no live claim owns (foreign, pre-carved, or a released claim's until its removal) is thus
// taken from the room, and its device is not published (nobody may be allocated it). A claim
// allocated but not carved yet is counted by the scheduler and not by the kernel: nothing to add.
// Any counter that would exceed what the empty parent holds is capped there.
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import { mdevUuid } from '../carving/layout.js';
import { isOnDemandMdev, type OfferedParent } from '../carving/ondemand.js';
import { draDevice, type DeviceFacts, type DraDevice } from './devices.js';

/** Condition our driver sets True on a claim's device once its mdev exists (the scheduler then binds). */
export const CARVED_CONDITION = 'virtualio.dev/Carved';
/** Condition set True when the mdev cannot be carved (the scheduler then tries another device or node). */
export const CARVE_FAILED_CONDITION = 'virtualio.dev/CarveFailed';
/** API limits: counter sets per ResourceSlice, devices per slice when devices consume counters. */
export const MAX_COUNTER_SETS = 8;
export const MAX_DEVICES_WITH_COUNTERS = 64;
/** Above this the proportional `units` counter is left out (the per-type counters still bound). */
const MAX_UNITS = 1_000_000;

export interface CounterSet {
  name: string;
  counters: Record<string, { value: string }>;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** L = lcm of the types' capacities, or undefined when it is too large to be useful. */
export function unitsOf(maxes: readonly number[]): number | undefined {
  let l = 1;
  for (const m of maxes) {
    l = (l / gcd(l, m)) * m;
    if (l > MAX_UNITS) return undefined;
  }
  return l;
}

/** The counter set name of a parent: a DNS label. */
export function counterSetName(parent: string): string {
  return `parent-${parent.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '')}`.slice(0, 63).replace(/-+$/, '');
}

/** One parent's counters and devices. */
export interface ParentOffer {
  counters: CounterSet;
  devices: DraDevice[];
}

/**
 * The counters and devices of one parent. `live` holds the UUIDs of mdevs claims the scheduler
 * counts (allocated here and not released).
 */
export function parentOffer(node: string, pool: PoolPlan, p: OfferedParent, dev: InventoryDevice, live: ReadonlySet<string>, facts: DeviceFacts): ParentOffer {
  const L = unitsOf(p.types.map((t) => t.max));
  const mdevs = dev.mdevs ?? [];
  const setName = counterSetName(p.parent);
  const counters: Record<string, { value: string }> = {};
  let liveUnits = 0;
  let kernelUnits = 0;
  const devices: DraDevice[] = [];
  p.types.forEach((t, i) => {
    const w = L === undefined ? 0 : L / t.max;
    const ours = mdevs.filter((m) => m.type === t.id && isOnDemandMdev(node, p.parent, t, m.uuid));
    const liveHere = ours.filter((m) => live.has(m.uuid)).length;
    liveUnits += liveHere * w;
    kernelUnits = Math.max(kernelUnits, t.available * w);
    counters[`type-${i}`] = { value: String(Math.min(t.max, t.available + liveHere)) };
    const exists = new Set(mdevs.map((m) => m.uuid));
    for (let k = 0; k < t.max; k++) {
      const uuid = mdevUuid(node, p.parent, t.id, k);
      if (exists.has(uuid) && !live.has(uuid)) continue; // someone else's now: nobody may be allocated it
      const slice: Slice = {
        id: uuid, pool: pool.name, resourceName: pool.resourceName, kind: 'Mdev', parent: p.parent, mdevUuid: uuid, mdevType: t.id,
        index: k, deviceNodes: [], health: 'Healthy', ...(dev.numaNode !== undefined ? { numaNode: dev.numaNode } : {}),
      };
      const d = draDevice(pool, slice, facts);
      if (t.name) d.attributes.mdevTypeName = { string: t.name };
      d.consumesCounters = [{ counterSet: setName, counters: { ...(L !== undefined ? { units: { value: String(w) } } : {}), [`type-${i}`]: { value: '1' } } }];
      d.bindingConditions = [CARVED_CONDITION];
      d.bindingFailureConditions = [CARVE_FAILED_CONDITION];
      devices.push(d);
    }
  });
  if (L !== undefined) counters.units = { value: String(Math.min(L, kernelUnits + liveUnits)) };
  return { counters: { name: setName, counters }, devices };
}

/** The slices' content of an on-demand pool: counter sets (≤ 8 per object) and devices (≤ 64 per object). */
export function onDemandContent(node: string, pool: PoolPlan, offered: readonly OfferedParent[], devices: ReadonlyMap<string, InventoryDevice>, live: ReadonlySet<string>, facts: DeviceFacts): { counterChunks: CounterSet[][]; chunks: DraDevice[][] } {
  const sets: CounterSet[] = [];
  const all: DraDevice[] = [];
  for (const p of offered) {
    const dev = devices.get(p.parent);
    if (!dev) continue;
    const o = parentOffer(node, pool, p, dev, live, facts);
    sets.push(o.counters);
    all.push(...o.devices);
  }
  return chunkOffers(sets, all);
}

/**
 * Counter sets and devices cut into ResourceSlice-sized chunks (≤ 8 counter sets, ≤ 64 devices that
 * consume counters per object; devices sorted by name so the chunks are stable). One empty device
 * chunk when there is nothing, so the pool is still published (empty).
 */
export function chunkOffers(sets: readonly CounterSet[], devices: readonly DraDevice[]): { counterChunks: CounterSet[][]; chunks: DraDevice[][] } {
  const all = [...devices].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const counterChunks: CounterSet[][] = [];
  for (let i = 0; i < sets.length; i += MAX_COUNTER_SETS) counterChunks.push(sets.slice(i, i + MAX_COUNTER_SETS));
  const chunks: DraDevice[][] = [];
  for (let i = 0; i < all.length; i += MAX_DEVICES_WITH_COUNTERS) chunks.push(all.slice(i, i + MAX_DEVICES_WITH_COUNTERS));
  if (chunks.length === 0 && counterChunks.length === 0) chunks.push([]);
  return { counterChunks, chunks };
}
