// GetPreferredAllocation as a pure, deterministic function of the request, the pool policy and the
// slice snapshot. The kubelet intersects the answer with its candidates and falls back to its own
// choice when the answer is too short, so returning fewer IDs than asked is safe.
import type { Slice } from '../model.js';
import type { PoolSpec } from './allocate.js';

export interface PreferredRequest {
  availableDeviceIDs: readonly string[];
  mustIncludeDeviceIDs: readonly string[];
  allocationSize: number;
}

/** Slices that must be handed out together: all pool slices sharing one IOMMU group. */
interface Unit {
  ids: string[];
  parent: string;
  numa: number | undefined;
}

function unitKey(s: Slice): string {
  return s.iommuGroup === undefined ? `id:${s.id}` : `group:${s.iommuGroup}`;
}

function byString(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Picks units in `order` summing to exactly `need` slices, never splitting a unit: greedy first
 * (the common case, all units of size 1), then an exact subset-sum that prefers earlier units. When
 * no exact combination exists, returns the greedy (shorter) pick.
 */
function pick(order: readonly Unit[], need: number): string[] {
  const greedy: string[] = [];
  for (const u of order) {
    if (greedy.length >= need) break;
    if (u.ids.length <= need - greedy.length) greedy.push(...u.ids);
  }
  if (greedy.length === need) return greedy;
  // No combination can reach more than every unit together; the search below costs units × need
  // steps, so a request for more (allocationSize is whatever the caller sent: 2^31-1 kept the agent's
  // event loop busy for minutes) gets the greedy pick at once.
  if (need > order.reduce((n, u) => n + u.ids.length, 0)) return greedy;
  // combos[sum] = indices of the first-found units reaching `sum` (earlier units win).
  const combos: (number[] | undefined)[] = [[]];
  order.forEach((u, i) => {
    for (let sum = need - u.ids.length; sum >= 0; sum--) {
      const base = combos[sum];
      const target = sum + u.ids.length;
      if (base && !combos[target]) combos[target] = [...base, i];
    }
  });
  const exact = combos[need];
  return exact ? exact.flatMap((i) => order[i]?.ids ?? []) : greedy;
}

/** Orders units by the pool policy: Spread round-robins parents, everything else packs parents. */
function orderUnits(units: readonly Unit[], policy: PoolSpec['policy'], preferredParents: ReadonlySet<string>): Unit[] {
  const byParent = new Map<string, Unit[]>();
  for (const u of [...units].sort((a, b) => byString(a.ids[0] ?? '', b.ids[0] ?? ''))) {
    const list = byParent.get(u.parent) ?? [];
    list.push(u);
    byParent.set(u.parent, list);
  }
  const free = (p: string): number => (byParent.get(p) ?? []).reduce((n, u) => n + u.ids.length, 0);
  const parents = [...byParent.keys()];
  if (policy === 'Spread') {
    parents.sort((a, b) => free(b) - free(a) || byString(a, b));
    const out: Unit[] = [];
    for (let round = 0; out.length < units.length; round++) {
      for (const p of parents) {
        const u = byParent.get(p)?.[round];
        if (u) out.push(u);
      }
    }
    return out;
  }
  // Pack (and NUMAAligned): the parent of already-chosen slices first, then the fullest parent
  // (fewest free slices), so whole parents stay free for later requests.
  parents.sort((a, b) => Number(preferredParents.has(b)) - Number(preferredParents.has(a)) || free(a) - free(b) || byString(a, b));
  return parents.flatMap((p) => byParent.get(p) ?? []);
}

/**
 * The preferred device IDs for one container request of a pool: every `must_include` ID first (with
 * the rest of its IOMMU group when available), then `allocation_size` in total from the available
 * IDs, on one NUMA node when one node can hold the whole request (the node of the must-include IDs
 * first), ordered by the pool policy (Pack fills one parent first, Spread takes one slice from each
 * parent in turn), never splitting an IOMMU group: slices sharing a group are taken together or not
 * at all. Unknown IDs are never added (must-include IDs are kept as given). Deterministic.
 */
export function preferredAllocation(req: PreferredRequest, pool: Pick<PoolSpec, 'policy'>, slices: ReadonlyMap<string, Slice>): string[] {
  const available = new Set(req.availableDeviceIDs);
  for (const id of req.mustIncludeDeviceIDs) available.add(id);
  const result: string[] = [];
  const taken = new Set<string>();
  const take = (id: string): void => {
    if (!taken.has(id)) {
      taken.add(id);
      result.push(id);
    }
  };
  // Units over the whole pool snapshot, so a group is complete even when the kubelet omits a member.
  const unitMembers = new Map<string, Slice[]>();
  for (const s of [...slices.values()].sort((a, b) => byString(a.id, b.id))) {
    const k = unitKey(s);
    const list = unitMembers.get(k) ?? [];
    list.push(s);
    unitMembers.set(k, list);
  }
  const mustParents = new Set<string>();
  const mustNuma = new Set<number>();
  for (const id of req.mustIncludeDeviceIDs) {
    take(id);
    const s = slices.get(id);
    if (!s) continue;
    mustParents.add(s.parent);
    if (s.numaNode !== undefined) mustNuma.add(s.numaNode);
    for (const m of unitMembers.get(unitKey(s)) ?? []) if (available.has(m.id)) take(m.id);
  }
  const need = req.allocationSize - result.length;
  if (need <= 0) return result;

  const units: Unit[] = [];
  for (const members of unitMembers.values()) {
    if (members.some((m) => taken.has(m.id))) continue;
    if (!members.every((m) => available.has(m.id) && m.health === 'Healthy')) continue;
    const head = members[0];
    if (!head) continue;
    units.push({ ids: members.map((m) => m.id), parent: head.parent, numa: head.numaNode });
  }

  const byNuma = new Map<number, Unit[]>();
  for (const u of units) {
    if (u.numa === undefined) continue;
    const list = byNuma.get(u.numa) ?? [];
    list.push(u);
    byNuma.set(u.numa, list);
  }
  const size = (list: readonly Unit[]): number => list.reduce((n, u) => n + u.ids.length, 0);
  // Per node: the smallest parent that holds the whole request alone (best fit for Pack).
  const bestParentFit = (list: readonly Unit[]): number => {
    const perParent = new Map<string, number>();
    for (const u of list) perParent.set(u.parent, (perParent.get(u.parent) ?? 0) + u.ids.length);
    const fits = [...perParent.values()].filter((n) => n >= need);
    return fits.length ? Math.min(...fits) : Number.POSITIVE_INFINITY;
  };
  const numas = [...byNuma.keys()].sort((a, b) => {
    const pa = Number(mustNuma.has(b)) - Number(mustNuma.has(a));
    if (pa) return pa;
    const la = byNuma.get(a) ?? [];
    const lb = byNuma.get(b) ?? [];
    // Spread prefers the emptiest node; Pack/NUMAAligned the node with the best-fitting parent, then
    // the fullest node.
    if (pool.policy === 'Spread') return size(lb) - size(la) || a - b;
    const fa = bestParentFit(la);
    const fb = bestParentFit(lb);
    return (fa === fb ? 0 : fa < fb ? -1 : 1) || size(la) - size(lb) || a - b;
  });
  if (mustNuma.size <= 1) {
    for (const n of numas) {
      const chosen = pick(orderUnits(byNuma.get(n) ?? [], pool.policy, mustParents), need);
      if (chosen.length === need) {
        chosen.forEach(take);
        return result;
      }
    }
  }
  // No single node fits: Spread round-robins every parent; Pack goes node by node (the order
  // above), NUMA-unknown slices last.
  const all =
    pool.policy === 'Spread'
      ? orderUnits(units, pool.policy, mustParents)
      : [
          ...numas.flatMap((n) => orderUnits(byNuma.get(n) ?? [], pool.policy, mustParents)),
          ...orderUnits(
            units.filter((u) => u.numa === undefined),
            pool.policy,
            mustParents,
          ),
        ];
  pick(all, need).forEach(take);
  return result;
}
