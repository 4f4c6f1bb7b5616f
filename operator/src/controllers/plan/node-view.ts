// The operator's view of a VirtualIONode: what planning, status and the KubeVirt lists read, and
// nothing else. Pure. The agent that plans locally builds the same view of its own status before it
// plans, so that the operator and the agent plan from identical inputs (device-plugin/src/agent/local-plan.ts).
import type { VioNode } from '../../api/types.js';
import { intern } from '../../util/intern.js';
import { jsonEqual } from '../../util/json.js';
import { isAgentPoolEntry, isConditionEntry, isReadablePlanEntry, isSliceEntry, listOf, readableInventory } from './shape.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Drops managedFields and annotations (often as large as the object itself). */
export function withoutManagedFields<T extends { metadata: object }>(o: T): T {
  const { managedFields: _m, annotations: _a, ...metadata } = o.metadata as Record<string, unknown>;
  return { ...o, metadata: metadata as T['metadata'] };
}

type Inventory = NonNullable<NonNullable<VioNode['status']>['inventory']>;
type InventoryDevice = NonNullable<Inventory['devices']>[number];

/** The inventory fields planning and KubeVirt entries read; the rest is not cached. Shared (intern.ts). */
export function pruneDevice(d: InventoryDevice): InventoryDevice {
  return intern({
    pciAddress: d.pciAddress, vendorID: d.vendorID, deviceID: d.deviceID, classCode: d.classCode, driver: d.driver,
    numaNode: d.numaNode, physfn: d.physfn,
    ...(d.iommuGroupMembers ? { iommuGroupMembers: d.iommuGroupMembers } : {}),
    ...(d.original ? { original: d.original } : {}),
    ...(d.sriov?.vfs ? { sriov: { vfs: d.sriov.vfs } } : {}),
    ...(d.mdevTypes ? { mdevTypes: d.mdevTypes.map((m) => ({ id: m.id, name: m.name })) } : {}),
    ...(d.netdevs ? { netdevs: d.netdevs.map((n) => ({ name: n.name })) } : {}),
  });
}

/**
 * The cached form of a VirtualIONode: no managedFields, a pruned inventory, slices reduced to what
 * status reads, and only the Degraded condition. An inventory equal to the cached one keeps the
 * cached object's identity, so memoized plans stay valid across status-only updates. Devices, plan
 * and pool entries and slices equal to another node's are that node's objects (frozen; intern.ts).
 */
export function vioNodeCacheForm(prev: VioNode | undefined, v: VioNode): VioNode {
  const o = withoutManagedFields(v);
  // Entries of another shape (an object kept from an older schema, a foreign writer) are dropped
  // here, once, so that nothing downstream throws on them (controllers/plan/shape.ts); an inventory
  // that lost devices this way counts as truncated, so their absence unplans nothing.
  const rawSpec: unknown = o.spec;
  const specIn = isObject(rawSpec) ? { ...rawSpec, ...(rawSpec.pools !== undefined ? { pools: listOf(rawSpec.pools, isReadablePlanEntry) } : {}) } as VioNode['spec'] : undefined;
  // Planning reads the plan and memoizes on its identity: an unchanged spec keeps the cached one.
  const spec = specIn && prev?.spec && jsonEqual(specIn, prev.spec) ? prev.spec : specIn;
  const { spec: _spec, status: rawStatus, ...rest } = o;
  if (!isObject(rawStatus)) return { ...rest, ...(spec ? { spec } : {}) } as VioNode;
  const st = rawStatus as NonNullable<VioNode['status']>;
  const src: unknown = st.inventory;
  const readable = isObject(src) ? readableInventory(src.devices ?? []) : undefined;
  const inv = isObject(src) && readable ? { devices: readable.devices.map(pruneDevice), ...(src.truncated === true || readable.partial ? { truncated: true } : {}) } : undefined;
  const prevInv = prev?.status?.inventory;
  const inventory = inv && prevInv && jsonEqual(inv, prevInv) ? prevInv : inv;
  const slices = st.slices === undefined ? undefined : listOf(st.slices, isSliceEntry).map((s) => intern({
    id: s.id, pool: s.pool, kind: s.kind, health: s.health, ...(s.allocation ? { allocation: s.allocation } : {}),
    // onDemand pools: which claim each mdev was carved for (rolled up into the pool's carvings).
    ...(s.carvedFor ? { carvedFor: s.carvedFor, ...(s.mdevType ? { mdevType: s.mdevType } : {}) } : {}),
  }));
  const pools = st.pools === undefined ? undefined : listOf(st.pools, isAgentPoolEntry).map((p) => intern(p));
  const observedGeneration = typeof st.observedGeneration === 'number' ? st.observedGeneration : undefined;
  // Deletion reads the agent's Degraded condition: it says when the agent cannot tell who holds what.
  const conditions = listOf(st.conditions, isConditionEntry).filter((c) => c.type === 'Degraded');
  // An agent that plans locally reports the plan it serves; an unchanged one keeps the cached identity (planning memoizes on it).
  const rawLocal: unknown = st.localPlan;
  const localIn = isObject(rawLocal) && Array.isArray(rawLocal.pools) ? { pools: listOf(rawLocal.pools, isReadablePlanEntry).map((p) => intern(p)) } : undefined;
  const prevLocal = prev?.status?.localPlan;
  const localPlan = localIn && prevLocal && jsonEqual(localIn, prevLocal) ? prevLocal : localIn;
  return {
    ...rest, ...(spec ? { spec } : {}),
    status: { observedGeneration, pools, ...(conditions?.length ? { conditions } : {}), ...(inventory ? { inventory } : {}), ...(slices ? { slices } : {}), ...(localPlan ? { localPlan } : {}) },
  };
}

