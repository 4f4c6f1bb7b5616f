// Pure planning: which pools each node carries and which of its physical devices each pool carves.
// No I/O, no clock: the same inputs always give the same plan (STYLE P3).
import type { Pool, PoolPlan, VioNode } from '../../api/types.js';
import { claimLabel, claimsOverlap, labelSelectorMatches, selectDevices, type DeviceClaim } from './selectors.js';

/** The fields of a Node planning needs. */
export interface NodeLike {
  metadata: { name: string; uid?: string; labels?: Record<string, string> };
}

export type Consumption = PoolPlan['consumption'];

/** `spec.resourceName`, defaulting to `virtualio.dev/<name>`. */
export function effectiveResourceName(pool: Pick<Pool, 'metadata' | 'spec'>): string {
  return pool.spec.resourceName ?? `virtualio.dev/${pool.metadata.name}`;
}

/** `spec.kubevirt.consumption`, defaulting from class and mode (Mediated → MediatedDevice, NIC+SRIOV → SRIOVNetwork, else HostDevice). */
export function effectiveConsumption(spec: Pool['spec']): Consumption {
  if (spec.kubevirt?.consumption) return spec.kubevirt.consumption;
  if (spec.carving.mode === 'Mediated') return 'MediatedDevice';
  if (spec.class === 'NIC' && spec.carving.mode === 'SRIOV') return 'SRIOVNetwork';
  return 'HostDevice';
}

/** Older first: creationTimestamp, then name. */
export function comparePoolAge(a: Pick<Pool, 'metadata'>, b: Pick<Pool, 'metadata'>): number {
  const ta = a.metadata.creationTimestamp ? Date.parse(String(a.metadata.creationTimestamp)) : 0;
  const tb = b.metadata.creationTimestamp ? Date.parse(String(b.metadata.creationTimestamp)) : 0;
  if (ta !== tb) return ta - tb;
  return (a.metadata.name ?? '').localeCompare(b.metadata.name ?? '');
}

export interface PreparedPool {
  pool: Pool;
  name: string;
  resourceName: string;
  consumption: Consumption;
  deleting: boolean;
  /** Other pools with the same resource name (non-empty = neither is planned). */
  resourceNameConflicts: string[];
}

/** Pools sorted oldest first with their effective values; build once per change of the pool set. */
export interface PreparedPools {
  ordered: PreparedPool[];
  byName: Map<string, PreparedPool>;
  /** Some pool is being deleted (planning then also reads the node's current plan and report). */
  anyDeleting: boolean;
}

export function preparePools(pools: readonly Pool[]): PreparedPools {
  const byResource = new Map<string, string[]>();
  for (const p of pools) {
    const rn = effectiveResourceName(p);
    byResource.set(rn, [...(byResource.get(rn) ?? []), p.metadata.name]);
  }
  const ordered = [...pools].sort(comparePoolAge).map((pool): PreparedPool => {
    const name = pool.metadata.name;
    const resourceName = effectiveResourceName(pool);
    return {
      pool, name, resourceName,
      consumption: effectiveConsumption(pool.spec),
      deleting: !!pool.metadata.deletionTimestamp,
      resourceNameConflicts: (byResource.get(resourceName) ?? []).filter((n) => n !== name).sort(),
    };
  });
  return { ordered, byName: new Map(ordered.map((p) => [p.name, p])), anyDeleting: ordered.some((p) => p.deleting) };
}

/** A device a pool selected on a node but an older pool holds. */
export interface DeviceConflict {
  pool: string;
  node: string;
  device: string;
  heldBy: string;
}

export interface NodePlan {
  /** The node's `VirtualIONode.spec.pools`, sorted by pool name. */
  pools: PoolPlan[];
  conflicts: DeviceConflict[];
}

/** The plan entry of a pool for the given devices. */
export function poolPlanFor(p: PreparedPool, devices: readonly DeviceClaim[]): PoolPlan {
  const { spec } = p.pool;
  const mode = spec.carving.mode;
  return {
    name: p.name,
    resourceName: p.resourceName,
    class: spec.class,
    mode,
    consumption: p.consumption,
    policy: spec.allocation?.policy ?? 'NUMAAligned',
    ...(mode !== 'Passthrough' && spec.carving.count !== undefined ? { count: spec.carving.count } : {}),
    ...(mode === 'Mediated' && spec.carving.mdevType ? { mdevType: spec.carving.mdevType } : {}),
    ...(mode === 'SRIOV' ? { vfDriver: spec.carving.vfDriver ?? 'vfio-pci' } : {}),
    ...(mode === 'NPIV' && spec.carving.wwnPrefix ? { wwnPrefix: spec.carving.wwnPrefix } : {}),
    // Only DRA is carried: an absent frontEnd means DevicePlugin, so existing plans stay byte-identical.
    ...(spec.frontEnd === 'DRA' ? { frontEnd: 'DRA' as const } : {}),
    devices: devices.map((d) => ({
      pciAddress: d.pciAddress,
      ...(d.vfFirst !== undefined ? { vfFirst: d.vfFirst, vfLast: d.vfLast ?? d.vfFirst } : {}),
    })),
  };
}

/** Names of pools the node's agent still reports (pool status or slices). */
function reportedPools(vio: VioNode | undefined): Set<string> {
  const s = new Set<string>();
  for (const p of vio?.status?.pools ?? []) s.add(p.name);
  for (const sl of vio?.status?.slices ?? []) s.add(sl.pool);
  return s;
}

/**
 * Plans one node. `node` undefined means the Node is gone (nothing is planned). Rules:
 * - a pool whose resource name another pool also uses is not planned anywhere;
 * - a pool being deleted keeps its current entry (marked `deleting: true`) while the node still has
 *   it planned or still reports it, and keeps holding those devices;
 * - otherwise a pool is planned when its nodeSelector matches the node's labels and its
 *   deviceSelector matches at least one physical device that no older pool holds; overlapping
 *   claims go to the older pool (creationTimestamp, then name) and the younger records a conflict.
 */
export function planNode(node: NodeLike | undefined, vio: VioNode | undefined, prepared: PreparedPools): NodePlan {
  const nodeName = node?.metadata.name ?? vio?.metadata.name ?? '';
  const inventory = vio?.status?.inventory?.devices ?? [];
  const current = new Map((vio?.spec?.pools ?? []).map((p) => [p.name, p]));
  const reported = reportedPools(vio);
  const held = new Map<string, { claim: DeviceClaim; pool: string }[]>();
  const plans: PoolPlan[] = [];
  const conflicts: DeviceConflict[] = [];
  const hold = (pool: string, c: DeviceClaim) => held.set(c.pciAddress, [...(held.get(c.pciAddress) ?? []), { claim: c, pool }]);

  for (const p of prepared.ordered) {
    if (p.resourceNameConflicts.length > 0) continue;
    if (p.deleting) {
      const cur = current.get(p.name);
      if (cur) {
        for (const d of cur.devices) hold(p.name, d);
        plans.push({ ...structuredClone(cur), deleting: true });
      } else if (reported.has(p.name)) {
        plans.push({ ...poolPlanFor(p, []), deleting: true });
      }
      continue;
    }
    if (!node || !labelSelectorMatches(p.pool.spec.nodeSelector, node.metadata.labels)) continue;
    const claims = selectDevices(p.pool.spec.deviceSelector, p.pool.spec.class, p.pool.spec.carving.mode, inventory);
    const accepted: DeviceClaim[] = [];
    for (const c of claims) {
      const holder = (held.get(c.pciAddress) ?? []).find((h) => claimsOverlap(h.claim, c));
      if (holder) {
        conflicts.push({ pool: p.name, node: nodeName, device: claimLabel(c), heldBy: holder.pool });
        continue;
      }
      accepted.push(c);
    }
    for (const c of accepted) hold(p.name, c);
    if (accepted.length > 0) plans.push(poolPlanFor(p, accepted));
  }
  plans.sort((a, b) => a.name.localeCompare(b.name));
  return { pools: plans, conflicts };
}
