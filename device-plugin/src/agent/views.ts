// What the node's slices look like to the agent's decisions, from the inventory, the plans and the
// ledger: the slices to serve (active plan plus draining ones), the IDs the active plan serves, and
// the IDs that must not be destroyed now. Pure over its inputs (buildSlices may throw).
import type { MdevCapacity } from '../carving/ondemand.js';
import type { Inventory, Slice, VirtualIONodeSpec } from '../model.js';
import { existingIds } from './gate.js';
import type { HoldState } from './ledger.js';
import type { NodeOps } from './ports.js';
import type { Retired } from './retire.js';

export interface ViewInput {
  ops: Pick<NodeOps, 'buildSlices'>;
  inventory: Inventory;
  retired: ReadonlyMap<string, Retired>;
  /** The last round's slices (health carried over; fallback when building fails). */
  previous: readonly Slice[];
  holder: (id: string) => HoldState;
  /** Why nobody can tell who holds what now, or undefined. */
  unknown: string | undefined;
  /** On-demand pools: the parents' learned capacity. */
  capacity?: MdevCapacity;
}

function od(v: ViewInput): { capacity: MdevCapacity } | undefined {
  return v.capacity ? { capacity: v.capacity } : undefined;
}

/**
 * The plan without its deleting pools: their slices come from drainingSlices only (held ones, kept
 * draining), never also as ordinary slices.
 */
export function servingSpec(spec: VirtualIONodeSpec): VirtualIONodeSpec {
  return (spec.pools ?? []).some((p) => p.deleting) ? { ...spec, pools: (spec.pools ?? []).filter((p) => !p.deleting) } : spec;
}

/** Slice IDs the active (not deleting) plan serves. */
export function activeIds(v: ViewInput, spec: VirtualIONodeSpec, inv: Inventory = v.inventory): Set<string> {
  try {
    return new Set(v.ops.buildSlices(servingSpec(spec), inv, undefined, od(v)).map((s) => s.id));
  } catch {
    return new Set(v.previous.filter((s) => !s.draining).map((s) => s.id));
  }
}

/** IDs the planners must keep: held ones, or while nobody can tell, everything that exists. */
export function protectedIds(v: ViewInput, held: Set<string>, spec: VirtualIONodeSpec | undefined, inv: Inventory = v.inventory): Set<string> {
  if (!v.unknown) return held;
  for (const id of existingIds(inv)) held.add(id);
  for (const s of v.previous) held.add(s.id);
  try {
    const pools = [...(spec?.pools ?? []), ...[...v.retired.values()].map((r) => r.plan)];
    for (const s of v.ops.buildSlices({ pools }, inv, undefined, od(v))) held.add(s.id);
  } catch {
    /* the inventory and the last slices cover it */
  }
  return held;
}

/**
 * Slices of retired and deleting pools that still exist and are held (or, while nobody can tell
 * who holds what, every one that exists), minus what the active plan serves: listed, draining.
 * Undefined when building them failed (the caller keeps the last draining slices).
 */
export function drainingSlices(v: ViewInput, spec: VirtualIONodeSpec, active: ReadonlySet<string>): Slice[] | undefined {
  const leaving: Retired[] = [
    ...(spec.pools ?? []).filter((p) => p.deleting).map((p) => ({ plan: { ...p, deleting: false }, why: `pool ${p.name} is being deleted` })),
    ...v.retired.values(),
  ];
  const out = new Map<string, Slice>();
  for (const r of leaving) {
    let built: Slice[];
    try {
      built = v.ops.buildSlices({ pools: [r.plan] }, v.inventory, undefined, od(v));
    } catch {
      return undefined;
    }
    for (const s of built) {
      if (active.has(s.id) || out.has(s.id)) continue;
      if (s.health !== 'Healthy' && s.reason?.includes('not found')) continue; // gone: nothing to keep
      const h = v.holder(s.id);
      if (h.kind === 'free' && !v.unknown) continue;
      const who = h.kind === 'held' ? `held by ${h.by}` : `kept until the kubelet says who holds it (${v.unknown ?? ''})`;
      out.set(s.id, { ...s, draining: `${r.why}; ${who}; released once its pod is gone` });
    }
  }
  return [...out.values()];
}

/** The plan's slices (health carried over from the last round) plus the draining ones; may throw. */
export function allSlices(v: ViewInput, spec: VirtualIONodeSpec): Slice[] {
  const active = v.ops.buildSlices(servingSpec(spec), v.inventory, v.previous.filter((s) => !s.draining), od(v));
  return [...active, ...(drainingSlices(v, spec, new Set(active.map((s) => s.id))) ?? v.previous.filter((s) => s.draining))];
}
