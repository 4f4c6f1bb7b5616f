// The shape every pool spec must have before planning, KubeVirt entries or status read it. The
// CRD's schema and CEL rules enforce it when an object is written, but the API server keeps what
// it stored under an older schema (a field since renamed, retyped or made required), and planning
// must not throw on such an object: one malformed pool would stop every node's plan. A pool that
// fails here is not planned anew; nodes keep its current plan entry (planNode), so its slices stay
// where they are until the spec is fixed, and its status says why.
import type { InventoryDevice, SliceStatus } from '../../../../crds/generated/types.js';
import type { Pool, PoolPlan, VioNode } from '../../api/types.js';

type VioNodeStatus = VioNode['status'];

const CLASSES = ['NIC', 'Storage', 'GPU'];
const MODES = ['SRIOV', 'Mediated', 'Passthrough', 'NPIV'];
const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'];
const POLICIES = ['NUMAAligned', 'Pack', 'Spread'];
const CONSUMPTIONS = ['HostDevice', 'MediatedDevice', 'SRIOVNetwork'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
const strings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');
const optional = (v: unknown, ok: (x: unknown) => boolean): boolean => v === undefined || ok(v);
const oneOf = (list: readonly string[]) => (v: unknown): boolean => typeof v === 'string' && list.includes(v);

/** What is wrong with a pool's spec (the first field found, by path), or undefined when planning can read it. */
export function poolSpecProblem(pool: Pick<Pool, 'spec'>): string | undefined {
  const spec: unknown = pool.spec;
  if (!isObject(spec)) return 'spec: not an object';
  if (!oneOf(CLASSES)(spec.class)) return `spec.class: one of ${CLASSES.join(', ')}, got ${JSON.stringify(spec.class)}`;
  if (!optional(spec.resourceName, (v) => typeof v === 'string')) return 'spec.resourceName: not a string';
  const ns = spec.nodeSelector;
  if (ns !== undefined) {
    if (!isObject(ns)) return 'spec.nodeSelector: not an object';
    if (!optional(ns.matchLabels, (v) => isObject(v) && Object.values(v).every((x) => typeof x === 'string'))) return 'spec.nodeSelector.matchLabels: not a map of strings';
    const exprs = ns.matchExpressions;
    if (exprs !== undefined && !(Array.isArray(exprs) && exprs.every((e) => isObject(e) && typeof e.key === 'string' && oneOf(OPERATORS)(e.operator) && optional(e.values, strings)))) {
      return 'spec.nodeSelector.matchExpressions: not a list of {key, operator, values}';
    }
  }
  const ds = spec.deviceSelector;
  if (!isObject(ds)) return 'spec.deviceSelector: not an object';
  for (const f of ['vendorIDs', 'deviceIDs', 'pciAddresses', 'drivers', 'interfaceNames']) {
    if (!optional(ds[f], strings)) return `spec.deviceSelector.${f}: not a list of strings`;
  }
  if (!optional(ds.numaNodes, (v) => Array.isArray(v) && v.every((x) => Number.isInteger(x)))) return 'spec.deviceSelector.numaNodes: not a list of integers';
  const c = spec.carving;
  if (!isObject(c)) return 'spec.carving: not an object';
  if (!oneOf(MODES)(c.mode)) return `spec.carving.mode: one of ${MODES.join(', ')}, got ${JSON.stringify(c.mode)}`;
  if (!optional(c.count, (v) => Number.isSafeInteger(v) && (v as number) >= 0)) return `spec.carving.count: a non-negative integer, got ${JSON.stringify(c.count)}`;
  for (const f of ['mdevType', 'vfDriver', 'wwnPrefix']) if (!optional(c[f], (v) => typeof v === 'string')) return `spec.carving.${f}: not a string`;
  if (!optional(c.adoptExistingVFs, (v) => typeof v === 'boolean')) return 'spec.carving.adoptExistingVFs: not a boolean';
  const ints = (v: unknown): boolean => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x));
  const od = (v: unknown): boolean =>
    isObject(v) && (v.mdevTypes !== undefined || v.vgpuProfiles !== undefined || v.nvmeQueues !== undefined) && optional(v.mdevTypes, strings) && optional(v.vgpuProfiles, strings) && optional(v.nvmeQueues, ints) && optional(v.heterogeneous, (h) => typeof h === 'boolean');
  if (!optional(c.onDemand, od)) return 'spec.carving.onDemand: not {mdevTypes: [...]}, {vgpuProfiles: [...], heterogeneous} or {nvmeQueues: [...]}';
  if (!optional(c.vgpu, (v) => isObject(v) && typeof v.profile === 'string' && optional(v.heterogeneous, (h) => typeof h === 'boolean'))) return 'spec.carving.vgpu: not {profile, heterogeneous}';
  if (!optional(spec.allocation, (v) => isObject(v) && optional(v.policy, oneOf(POLICIES)))) return `spec.allocation.policy: one of ${POLICIES.join(', ')}`;
  if (!optional(spec.frontEnd, oneOf(['DevicePlugin', 'DRA']))) return `spec.frontEnd: DevicePlugin or DRA, got ${JSON.stringify(spec.frontEnd)}`;
  if (!optional(spec.kubevirt, (v) => isObject(v) && optional(v.consumption, oneOf(CONSUMPTIONS)) && optional(v.permit, (p) => typeof p === 'boolean'))) return 'spec.kubevirt: not {consumption, permit}';
  return undefined;
}

const optString = (v: unknown): boolean => v === undefined || typeof v === 'string';

/** Whether planning and KubeVirt entries can read an inventory device reported by an agent. */
export function isReadableDevice(d: unknown): d is InventoryDevice {
  if (!isObject(d) || typeof d.pciAddress !== 'string') return false;
  if (![d.vendorID, d.deviceID, d.classCode, d.driver, d.physfn].every(optString)) return false;
  if (!optional(d.numaNode, (v) => Number.isInteger(v)) || !optional(d.iommuGroupMembers, strings)) return false;
  if (!optional(d.netdevs, (v) => Array.isArray(v) && v.every((n) => isObject(n) && typeof n.name === 'string'))) return false;
  if (!optional(d.original, (v) => isObject(v) && optString(v.driver) && optional(v.interfaceNames, strings))) return false;
  if (!optional(d.mdevTypes, (v) => Array.isArray(v) && v.every((t) => isObject(t) && typeof t.id === 'string' && optString(t.name)))) return false;
  return optional(d.sriov, (v) => isObject(v) && optional(v.vfs, strings));
}

/**
 * The devices of a reported inventory that planning can read, and whether some were left out (the
 * inventory then counts as truncated: a device missing from it does not unplan anything).
 */
export function readableInventory(devices: unknown): { devices: InventoryDevice[]; partial: boolean } {
  if (!Array.isArray(devices)) return { devices: [], partial: devices !== undefined };
  const ok = devices.filter(isReadableDevice);
  return { devices: ok, partial: ok.length !== devices.length };
}

/** The items of `v` that pass `ok`; [] when `v` is not a list (a VirtualIONode field of another shape). */
export function listOf<T>(v: unknown, ok: (x: unknown) => x is T): T[] {
  return Array.isArray(v) ? v.filter(ok) : [];
}

/** A plan entry planning can read back from a VirtualIONode's spec. */
export function isReadablePlanEntry(p: unknown): p is PoolPlan {
  return isObject(p) && typeof p.name === 'string' && typeof p.mode === 'string' &&
    Array.isArray(p.devices) && p.devices.every((d) => isObject(d) && typeof d.pciAddress === 'string' && optional(d.vfFirst, Number.isInteger) && optional(d.vfLast, Number.isInteger));
}

/** An agent's pool status or slice entry: at least its pool's name. */
export function isNamedEntry(p: unknown): p is { name: string } {
  return isObject(p) && typeof p.name === 'string';
}
export function isSliceEntry(s: unknown): s is SliceStatus {
  return isObject(s) && typeof s.pool === 'string' && typeof s.id === 'string' && optional(s.allocation, (a) => isObject(a) && typeof a.namespace === 'string' && typeof a.pod === 'string' && optString(a.vmi));
}

/** An agent's per-pool status entry as status reads it (strings where it prints them). */
export function isAgentPoolEntry(p: unknown): p is NonNullable<NonNullable<VioNodeStatus>['pools']>[number] {
  return isObject(p) && typeof p.name === 'string' && typeof p.state === 'string' && optString(p.message) &&
    ['capacity', 'allocatable', 'allocated'].every((k) => optional(p[k], (v) => typeof v === 'number'));
}

/** A status condition with the fields deletion reads. */
export function isConditionEntry(c: unknown): c is NonNullable<NonNullable<VioNodeStatus>['conditions']>[number] {
  return isObject(c) && typeof c.type === 'string' && typeof c.status === 'string' && typeof c.reason === 'string' && typeof c.message === 'string';
}

/** Whether the node's agent derives its own plan (it reports `status.localPlan`): the operator writes it no spec.pools. */
export function plansLocally(vio: VioNode | undefined): boolean {
  const lp: unknown = vio?.status?.localPlan;
  return isObject(lp) && Array.isArray(lp.pools);
}

/**
 * The plan a node carries out: the one its agent reports deriving itself (`status.localPlan.pools`),
 * or else the one the operator wrote (`spec.pools`; undefined when none is written). Every reader of
 * "the node's current plan" goes through here, so that both contracts read alike.
 */
export function planOf(vio: VioNode | undefined): PoolPlan[] | undefined {
  const pools: unknown = plansLocally(vio) ? vio?.status?.localPlan?.pools : vio?.spec?.pools;
  if (!Array.isArray(pools)) return undefined;
  // Read per node and pool on every status pass: the readable entries of one list are computed once.
  let readable = readablePlans.get(pools);
  if (!readable) {
    readable = listOf(pools, isReadablePlanEntry);
    readablePlans.set(pools, readable);
  }
  return readable;
}
const readablePlans = new WeakMap<unknown[], PoolPlan[]>();
