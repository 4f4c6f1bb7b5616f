// What a plan change leaves behind. Whatever a pool's devices carried under the last plan and no
// longer carry under the new one is "retired": released where nobody holds it, kept (draining) where
// someone does. That covers a pool leaving the node, a device leaving a pool, and an edit that changes
// what a device carves: a lower `count`, another `mdevType` or `wwnPrefix`, another mode or resource
// name. Pure functions over plans; the manager keeps the result in its checkpoint.
import type { PoolPlan } from '../model.js';

/** A pool's devices as an earlier plan carved them, with why they left. */
export interface Retired {
  plan: PoolPlan;
  why: string;
}

type Device = PoolPlan['devices'][number];

/** Same device (and VF range) in two plans of a pool. */
export function sameDevice(a: Device, b: Device): boolean {
  return a.pciAddress === b.pciAddress && a.vfFirst === b.vfFirst && a.vfLast === b.vfLast;
}

/** The carving parameters that decide which slices a device of the pool has. */
function carvingKey(p: PoolPlan): string {
  const key: unknown[] = [p.mode, p.resourceName, p.mdevType ?? '', p.wwnPrefix ?? '', p.count ?? null];
  if (p.onDemand?.mdevTypes) key.push([...p.onDemand.mdevTypes].sort()); // only then: keys of other pools stay as they were
  return JSON.stringify(key);
}

/** Key of a retired entry: pool name plus what it carved (two edits of one pool can both drain). */
export function retiredKey(p: PoolPlan): string {
  return `${p.name}\u0000${carvingKey(p)}`;
}

/** Why the new plan of a pool no longer has the slices the old one carved, or undefined. */
export function carvingChange(old: PoolPlan, cur: PoolPlan): string | undefined {
  if (cur.mode !== old.mode || cur.resourceName !== old.resourceName) return `pool ${old.name} changed its mode or resource name`;
  if ((cur.mdevType ?? '') !== (old.mdevType ?? '')) return `pool ${old.name} changed its mdev type from ${old.mdevType ?? '(none)'} to ${cur.mdevType ?? '(none)'}`;
  if ((cur.wwnPrefix ?? '') !== (old.wwnPrefix ?? '')) return `pool ${old.name} changed its WWN prefix`;
  const types = (p: PoolPlan): string => JSON.stringify([...(p.onDemand?.mdevTypes ?? [])].sort());
  if (types(cur) !== types(old)) return `pool ${old.name} changed its on-demand mdev types from ${types(old)} to ${types(cur)}`;
  if ((cur.count ?? 1) < (old.count ?? 1)) return `pool ${old.name} lowered its count from ${old.count ?? 1} to ${cur.count ?? 1}`;
  return undefined;
}

/** Adds `devices` of `plan` to the retired set (merging with what already drains under the same carving). */
export function retire(retired: Map<string, Retired>, plan: PoolPlan, devices: readonly Device[], why: string): void {
  const key = retiredKey(plan);
  const merged = [...(retired.get(key)?.plan.devices ?? [])];
  for (const d of devices) if (!merged.some((m) => sameDevice(m, d))) merged.push(d);
  retired.set(key, { plan: { ...plan, devices: merged, deleting: false }, why });
}

/**
 * Diffs the last known plans against the next ones: returns the devices to retire (with why) and
 * drops from `retired` whatever the next plan carves again exactly as before.
 */
export function diffPlans(known: ReadonlyMap<string, PoolPlan>, next: ReadonlyMap<string, PoolPlan>, retired: Map<string, Retired>): { plan: PoolPlan; devices: Device[]; why: string }[] {
  const out: { plan: PoolPlan; devices: Device[]; why: string }[] = [];
  for (const [name, old] of known) {
    const cur = next.get(name);
    if (!cur) {
      out.push({ plan: old, devices: old.devices, why: `pool ${name} is no longer in this node's plan` });
      continue;
    }
    const change = carvingChange(old, cur);
    if (change) {
      out.push({ plan: old, devices: old.devices, why: change });
      continue;
    }
    const gone = old.devices.filter((d) => !cur.devices.some((c) => sameDevice(c, d)));
    if (gone.length > 0) out.push({ plan: old, devices: gone, why: `device no longer selected by pool ${name}` });
  }
  // Devices back in the plan of their pool, carved as before, are no longer retired.
  for (const [key, r] of [...retired]) {
    const cur = next.get(r.plan.name);
    if (!cur || carvingKey(cur) !== carvingKey(r.plan)) continue;
    const left = r.plan.devices.filter((d) => !cur.devices.some((c) => sameDevice(c, d)));
    if (left.length === 0) retired.delete(key);
    else retired.set(key, { ...r, plan: { ...r.plan, devices: left } });
  }
  return out;
}
