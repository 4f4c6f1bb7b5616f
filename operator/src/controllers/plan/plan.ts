// Pure planning: which pools each node carries and which of its physical devices each pool carves.
// No I/O, no clock: the same inputs always give the same plan (STYLE P3).
import type { Pool, PoolPlan, VioNode } from '../../api/types.js';
import type { InventoryDevice } from '../../../../crds/generated/types.js';
import { claimLabel, claimsOverlap, isBridgeClass, labelSelectorMatches, selectDevices, type DeviceClaim } from './selectors.js';
import { isNamedEntry, isSliceEntry, listOf, planOf, poolSpecProblem, readableInventory } from './shape.js';

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
  /**
   * Older pools (creationTimestamp, then name) with the same resource name. Non-empty = this pool is
   * not planned; the oldest pool keeps the name, so a second pool never unplans one in service.
   */
  resourceNameConflicts: string[];
}

/** Pools sorted oldest first with their effective values; build once per change of the pool set. */
export interface PreparedPools {
  ordered: PreparedPool[];
  byName: Map<string, PreparedPool>;
  /** Some pool is being deleted (planning then also reads the node's current plan and report). */
  anyDeleting: boolean;
  /**
   * Pools whose spec planning cannot read (see shape.ts), by name, with the problem. They are not in
   * `ordered`: they are not planned anew, and nodes keep their current plan entry.
   */
  malformed: Map<string, { pool: Pool; problem: string }>;
}

export function preparePools(pools: readonly Pool[]): PreparedPools {
  const byResource = new Map<string, string[]>();
  const malformed = new Map<string, { pool: Pool; problem: string }>();
  const wellFormed = pools.filter((pool) => {
    const problem = poolSpecProblem(pool);
    if (problem !== undefined) malformed.set(pool.metadata.name, { pool, problem });
    return problem === undefined;
  });
  const ordered = wellFormed.sort(comparePoolAge).map((pool): PreparedPool => {
    const name = pool.metadata.name;
    const resourceName = effectiveResourceName(pool);
    const older = byResource.get(resourceName) ?? [];
    byResource.set(resourceName, [...older, name]);
    return {
      pool, name, resourceName,
      consumption: effectiveConsumption(pool.spec),
      deleting: !!pool.metadata.deletionTimestamp,
      resourceNameConflicts: [...older],
    };
  });
  return { ordered, byName: new Map(ordered.map((p) => [p.name, p])), anyDeleting: ordered.some((p) => p.deleting), malformed };
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
    // Only when set: existing plans stay byte-identical.
    ...(mode === 'Mediated' && spec.carving.onDemand?.mdevTypes ? { onDemand: { mdevTypes: [...spec.carving.onDemand.mdevTypes] } } : {}),
    ...(mode === 'SRIOV' && spec.carving.onDemand?.vgpuProfiles ? { onDemand: { vgpuProfiles: [...spec.carving.onDemand.vgpuProfiles] } } : {}),
    ...(mode === 'SRIOV' && spec.carving.onDemand?.nvmeQueues ? { onDemand: { nvmeQueues: [...spec.carving.onDemand.nvmeQueues] } } : {}),
    ...(mode === 'SRIOV' ? { vfDriver: spec.carving.vfDriver ?? (spec.carving.vgpu || spec.carving.onDemand?.vgpuProfiles ? 'nvidia' : 'vfio-pci') } : {}),
    ...(mode === 'SRIOV' && spec.carving.vgpu ? { vgpuProfile: spec.carving.vgpu.profile } : {}),
    ...(mode === 'SRIOV' && (spec.carving.vgpu?.heterogeneous || (spec.carving.onDemand?.vgpuProfiles && spec.carving.onDemand.heterogeneous)) ? { vgpuHeterogeneous: true } : {}),
    ...(mode === 'SRIOV' && spec.carving.adoptExistingVFs ? { adoptExistingVFs: true } : {}),
    ...(mode === 'SRIOV' && spec.carving.gpuVf ? { gpuVf: { ...spec.carving.gpuVf } } : {}),
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
function reportedPools(...vios: (VioNode | undefined)[]): Set<string> {
  const s = new Set<string>();
  for (const vio of vios) {
    for (const p of listOf(vio?.status?.pools, isNamedEntry)) s.add(p.name);
    for (const sl of listOf(vio?.status?.slices, isSliceEntry)) s.add(sl.pool);
  }
  return s;
}

/** How much planning can trust the absence of a device from the inventory. */
export type InventoryState = 'known' | 'truncated' | 'unknown';

const VFIO_PCI = 'vfio-pci';

/**
 * The claims of a pool's current plan entry that stay although its selector does not (or cannot)
 * select them now, because what changed is the node's report, not the admin's intent:
 * - a device missing from an inventory that is unknown (no status yet, status lost) or truncated;
 * - a device that carving changed (now on vfio-pci, or without its netdev) whose agent reports no
 *   `original` facts (an older agent, a lost record), when the selector matches it on everything but
 *   `drivers` and `interfaceNames`.
 * A device reported with `original` facts is decided by the selector alone (it matches current ∪
 * original facts), so an edited selector does unplan it.
 */
export function keptFromCurrentPlan(p: PreparedPool, cur: PoolPlan | undefined, byAddr: ReadonlyMap<string, InventoryDevice>, state: InventoryState): DeviceClaim[] {
  if (!cur || cur.deleting) return [];
  const { deviceSelector, class: cls, carving } = p.pool.spec;
  const relaxed = { ...deviceSelector, drivers: undefined, interfaceNames: undefined };
  const byDriver = (deviceSelector.drivers?.length ?? 0) > 0;
  const lookFields = byDriver || (deviceSelector.interfaceNames?.length ?? 0) > 0;
  const out: DeviceClaim[] = [];
  for (const d of cur.devices) {
    const claim: DeviceClaim = { pciAddress: d.pciAddress, ...(d.vfFirst !== undefined ? { vfFirst: d.vfFirst, vfLast: d.vfLast ?? d.vfFirst } : {}) };
    const dev = byAddr.get(d.pciAddress);
    if (!dev) {
      if (state !== 'known') out.push(claim);
      continue;
    }
    if (!lookFields || dev.original) continue;
    // Only what carving does explains the mismatch: the move to vfio-pci, or (when the selector does
    // not name drivers) the netdev that went with the old driver.
    const carved = dev.driver === VFIO_PCI || (!byDriver && (dev.netdevs ?? []).length === 0);
    if (carved && selectDevices(relaxed, cls, carving.mode, [dev]).length > 0) out.push(claim);
  }
  return out;
}

/** The non-bridge members of a function's IOMMU group other than itself: they go to vfio-pci (and the VM) with it. */
export function companionsOf(dev: InventoryDevice | undefined, byAddr: ReadonlyMap<string, InventoryDevice>): string[] {
  if (!dev) return [];
  return [...new Set(dev.iommuGroupMembers ?? [])]
    .filter((m) => m !== dev.pciAddress && !isBridgeClass(byAddr.get(m)?.classCode))
    .sort();
}

function mergeClaims(a: readonly DeviceClaim[], b: readonly DeviceClaim[]): DeviceClaim[] {
  const seen = new Map<string, DeviceClaim>();
  for (const c of [...a, ...b]) if (!seen.has(claimLabel(c))) seen.set(claimLabel(c), c);
  return [...seen.values()].sort((x, y) => x.pciAddress.localeCompare(y.pciAddress) || (x.vfFirst ?? -1) - (y.vfFirst ?? -1));
}

/**
 * Plans one node. `node` undefined means the Node is gone (nothing is planned). `lastKnown` is the
 * node's last VirtualIONode that carried an inventory; it stands in when `vio` carries none (deleted
 * and re-created by the agent, status lost), so that a missing report never empties a plan. Rules:
 * - a pool whose resource name an older pool already uses is not planned anywhere (the older one is);
 * - a pool being deleted keeps its current entry (marked `deleting: true`) while the node still has
 *   it planned or still reports it, and keeps holding those devices;
 * - otherwise a pool is planned when its nodeSelector matches the node's labels and its
 *   deviceSelector matches at least one physical device that no older pool holds, or its current
 *   entry keeps one ({@link keptFromCurrentPlan}); overlapping claims go to the older pool
 *   (creationTimestamp, then name) and the younger records a conflict;
 * - a Passthrough claim takes the non-bridge members of the device's IOMMU group with it (an audio
 *   function next to a GPU): they count as held by the pool, a member held by an older pool is a
 *   conflict, and a pool gets one device (one slice) per IOMMU group.
 */
export function planNode(node: NodeLike | undefined, vio: VioNode | undefined, prepared: PreparedPools, lastKnown?: VioNode): NodePlan {
  const nodeName = node?.metadata.name ?? vio?.metadata.name ?? '';
  const own = vio?.status?.inventory;
  const fallback = !own && lastKnown?.status?.inventory ? lastKnown : undefined;
  const inv = own ?? fallback?.status?.inventory;
  const readable = readableInventory(inv?.devices);
  const inventory = readable.devices;
  const state: InventoryState = !inv ? 'unknown' : inv.truncated || readable.partial ? 'truncated' : 'known';
  const byAddr = new Map(inventory.map((d) => [d.pciAddress, d]));
  const current = new Map([...planOf(fallback) ?? [], ...planOf(vio) ?? []].map((p) => [p.name, p]));
  const reported = reportedPools(vio, fallback);
  const held = new Map<string, { claim: DeviceClaim; pool: string }[]>();
  const plans: PoolPlan[] = [];
  const conflicts: DeviceConflict[] = [];
  const hold = (pool: string, c: DeviceClaim) => held.set(c.pciAddress, [...(held.get(c.pciAddress) ?? []), { claim: c, pool }]);
  // vGPU pools share a GPU: each types its own VFs (the agent lays them out), so they never conflict.
  const vgpuPools = new Set(prepared.ordered.filter((p) => p.pool.spec.carving.vgpu).map((p) => p.name));
  const holderOf = (c: DeviceClaim, pool?: string) =>
    (held.get(c.pciAddress) ?? []).find((h) => claimsOverlap(h.claim, c) && !(pool !== undefined && vgpuPools.has(pool) && vgpuPools.has(h.pool)));

  // A pool whose spec cannot be read keeps what the node has (its slices are not taken away because
  // of an object the API server kept from an older schema), and holds those devices.
  for (const [name, { pool }] of prepared.malformed) {
    const cur = current.get(name);
    if (!cur) continue;
    for (const d of cur.devices) {
      hold(name, d);
      if (cur.mode === 'Passthrough') for (const m of companionsOf(byAddr.get(d.pciAddress), byAddr)) hold(name, { pciAddress: m });
    }
    plans.push({ ...structuredClone(cur), ...(pool.metadata.deletionTimestamp ? { deleting: true } : {}) });
  }
  for (const p of prepared.ordered) {
    if (p.resourceNameConflicts.length > 0) continue;
    if (p.deleting) {
      const cur = current.get(p.name);
      if (cur) {
        for (const d of cur.devices) {
          hold(p.name, d);
          if (cur.mode === 'Passthrough') for (const m of companionsOf(byAddr.get(d.pciAddress), byAddr)) hold(p.name, { pciAddress: m });
        }
        plans.push({ ...structuredClone(cur), deleting: true });
      } else if (reported.has(p.name)) {
        plans.push({ ...poolPlanFor(p, []), deleting: true });
      }
      continue;
    }
    if (!node || !labelSelectorMatches(p.pool.spec.nodeSelector, node.metadata.labels)) continue;
    const passthrough = p.pool.spec.carving.mode === 'Passthrough';
    const claims = mergeClaims(
      selectDevices(p.pool.spec.deviceSelector, p.pool.spec.class, p.pool.spec.carving.mode, inventory),
      keptFromCurrentPlan(p, current.get(p.name), byAddr, state),
    );
    const accepted: DeviceClaim[] = [];
    const companions: DeviceClaim[] = [];
    const inGroups = new Set<string>();
    for (const c of claims) {
      // Another function of an IOMMU group this pool already takes: it goes with that device.
      if (passthrough && inGroups.has(c.pciAddress)) continue;
      const members = passthrough ? companionsOf(byAddr.get(c.pciAddress), byAddr) : [];
      const holder = holderOf(c, p.name);
      if (holder) {
        conflicts.push({ pool: p.name, node: nodeName, device: claimLabel(c), heldBy: holder.pool });
        continue;
      }
      const memberHeld = members.map((m) => ({ m, h: holderOf({ pciAddress: m }) })).find((x) => x.h);
      if (memberHeld?.h) {
        conflicts.push({ pool: p.name, node: nodeName, device: `${claimLabel(c)} (IOMMU group member ${memberHeld.m})`, heldBy: memberHeld.h.pool });
        continue;
      }
      accepted.push(c);
      inGroups.add(c.pciAddress);
      for (const m of members) {
        inGroups.add(m);
        companions.push({ pciAddress: m });
      }
    }
    for (const c of [...accepted, ...companions]) hold(p.name, c);
    if (accepted.length > 0) plans.push(poolPlanFor(p, accepted));
  }
  plans.sort((a, b) => a.name.localeCompare(b.name));
  return { pools: plans, conflicts };
}
