// DRA front end, pure part: the agent's slices of DRA pools as devices in ResourceSlices
// (resource.k8s.io/v1). One device per slice; one resource pool per (node, virtualio pool), split into
// as many ResourceSlice objects as the per-object device limit needs. No I/O except the optional
// sysfs look-up of PCIe roots, which callers inject.
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';

/** The DRA driver name: ResourceSlice spec.driver, DeviceClass selectors, CDI vendor, plugin name. */
export const DRA_DRIVER = 'virtualio.dev';
/** Standard attributes (k8s.io/dynamic-resource-allocation deviceattribute). */
export const ATTR_PCI_BUS_ID = 'resource.kubernetes.io/pciBusID';
export const ATTR_PCIE_ROOT = 'resource.kubernetes.io/pcieRoot';
/** Taint key of a device whose slice is Unhealthy (the scheduler does not allocate it). */
export const UNHEALTHY_TAINT = 'virtualio.dev/unhealthy';
/** API limits of one ResourceSlice: 128 devices, 64 when any device carries taints. */
export const MAX_DEVICES = 128;
export const MAX_DEVICES_WITH_TAINTS = 64;
/** Label on every ResourceSlice we write: the virtualio pool. */
export const POOL_LABEL = 'virtualio.dev/pool';
export const MANAGED_BY = 'virtualio-agent';

export type Attribute = { string: string } | { int: number } | { bool: boolean } | { version: string };

export interface DraDevice {
  name: string;
  attributes: Record<string, Attribute>;
  taints?: { key: string; value?: string; effect: 'NoSchedule' | 'NoExecute' }[];
  /** On-demand devices: what they take of their parent's counters (dra/counters.ts). */
  consumesCounters?: { counterSet: string; counters: Record<string, { value: string }> }[];
  /** On-demand devices: the scheduler binds the pod once these claim conditions are True. */
  bindingConditions?: string[];
  bindingFailureConditions?: string[];
}

/** A named set of counters a pool's devices draw from (ResourceSlice spec.sharedCounters). */
export interface SharedCounterSet {
  name: string;
  counters: Record<string, { value: string }>;
}

export interface ResourceSliceObject {
  apiVersion: 'resource.k8s.io/v1';
  kind: 'ResourceSlice';
  metadata: {
    /** Set by the API server from `generateName` when the object is created. */
    name?: string;
    generateName?: string;
    labels: Record<string, string>;
    resourceVersion?: string;
    ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
  };
  spec: {
    driver: string;
    nodeName: string;
    pool: { name: string; generation: number; resourceSliceCount: number };
    /** Absent in an object of counter sets: the API allows only one of the two per object. */
    devices?: DraDevice[];
    sharedCounters?: SharedCounterSet[];
  };
}

/** True for pools the DRA front end serves. */
export function isDraPool(p: Pick<PoolPlan, 'frontEnd'>): boolean {
  return p.frontEnd === 'DRA';
}

/** The DeviceClass a VM's claim names to get a slice of `pool`. */
export function deviceClassName(pool: string): string {
  return `${pool}.${DRA_DRIVER}`;
}

/** The resource pool of one virtualio pool on one node (ResourceSlice spec.pool.name). */
export function resourcePoolName(node: string, pool: string): string {
  return `${node}/${pool}`;
}

/**
 * The DRA device name of a slice: a DNS label (≤ 63 lower-case letters, digits and "-"). PCI
 * functions become `<kind>-dddd-bb-dd-f`, mdevs `mdev-<uuid>`.
 */
export function draDeviceName(s: Pick<Slice, 'kind' | 'id' | 'pciAddress' | 'mdevUuid' | 'vgpuType'>): string {
  if (s.kind === 'Mdev') return `mdev-${(s.mdevUuid ?? s.id).toLowerCase()}`;
  const addr = (s.pciAddress ?? s.id).toLowerCase().replace(/[:.]/g, '-');
  // On-demand vGPU profiles: one device per VF and type (carving/ondemand-vgpu.ts vgpuDeviceName).
  if (s.kind === 'VF' && s.vgpuType !== undefined) return `vgpu-${addr}-${s.vgpuType}`;
  return `${s.kind === 'VF' ? 'vf' : s.kind === 'Function' ? 'fn' : 'dev'}-${addr}`;
}

/** Digits of the index at the start of a ResourceSlice name (at least 5, more when a pool needs more). */
export function sliceIndexDigits(count: number): number {
  return Math.max(5, Math.max(0, count - 1).toString(16).length);
}

/**
 * `metadata.generateName` of the `index`-th ResourceSlice object of a pool of `count` objects on a
 * node, as the Go resourceslice controller names them: `<index, hex>-<driver>-<node>-`. The API
 * server appends a random suffix, so objects of different nodes can never collide (a fixed
 * `<node>-<pool>-…` name did: node `a-b`, pool `c` and node `a`, pool `b-c`); the publisher finds
 * its objects by node, driver and pool, and tells them apart by the index at the front.
 */
export function resourceSliceGenerateName(node: string, index: number, count: number): string {
  return `${index.toString(16).padStart(sliceIndexDigits(count), '0')}-${DRA_DRIVER}-${node}-`;
}

/** The index at the front of a ResourceSlice name written for a pool of `count` objects, or undefined. */
export function resourceSliceIndex(name: string, count: number): number | undefined {
  const dash = name.indexOf('-');
  if (dash !== sliceIndexDigits(count)) return undefined;
  const hex = name.slice(0, dash);
  return /^[0-9a-f]+$/.test(hex) ? parseInt(hex, 16) : undefined;
}

export interface DeviceFacts {
  /** Inventory of the node by PCI address. */
  devices: ReadonlyMap<string, InventoryDevice>;
  /** PCIe root (e.g. `pci0000:00`) of a PCI address, when known. */
  pcieRoot?: (pciAddress: string) => string | undefined;
}

/** The device a slice becomes: standard attributes first, then what an admin selects on. */
export function draDevice(pool: PoolPlan, s: Slice, facts: DeviceFacts): DraDevice {
  const a: Record<string, Attribute> = {};
  const fn = s.pciAddress ?? (s.kind === 'Mdev' ? undefined : s.parent);
  if (fn) a[ATTR_PCI_BUS_ID] = { string: fn };
  const root = facts.pcieRoot?.(fn ?? s.parent);
  if (root) a[ATTR_PCIE_ROOT] = { string: root };
  a.pool = { string: pool.name };
  a.class = { string: pool.class };
  a.mode = { string: pool.mode };
  a.kind = { string: s.kind };
  a.parent = { string: s.parent };
  const own = fn ? facts.devices.get(fn) : undefined;
  const parent = facts.devices.get(s.parent);
  const ids = own ?? parent;
  if (ids?.vendorID) a.vendorID = { string: ids.vendorID };
  if (ids?.deviceID) a.deviceID = { string: ids.deviceID };
  if (parent?.vendorID) a.parentVendorID = { string: parent.vendorID };
  if (parent?.deviceID) a.parentDeviceID = { string: parent.deviceID };
  if (s.numaNode !== undefined) a.numaNode = { int: s.numaNode };
  if (s.iommuGroup !== undefined) a.iommuGroup = { int: s.iommuGroup };
  if (s.kind === 'VF' && s.index !== undefined) a.vfIndex = { int: s.index };
  if (s.pfNetdev) a.pfNetdev = { string: s.pfNetdev };
  if (s.kind === 'Mdev') {
    if (s.mdevUuid) a.mdevUUID = { string: s.mdevUuid };
    const type = s.mdevType ?? pool.mdevType;
    if (type) a.mdevType = { string: type };
  }
  const d: DraDevice = { name: draDeviceName(s), attributes: a };
  if (s.health !== 'Healthy') d.taints = [{ key: UNHEALTHY_TAINT, value: taintValue(s.reason), effect: 'NoSchedule' }];
  return d;
}

/** A taint value is a label value: ≤ 63 characters of [A-Za-z0-9_.-], alphanumeric at both ends. */
function taintValue(reason: string | undefined): string {
  const v = (reason ?? 'unhealthy').replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
  return v || 'unhealthy';
}

/** Desired content of one pool on one node: its devices in stable order, split into chunks. */
export interface PoolContent {
  pool: string;
  poolName: string;
  chunks: DraDevice[][];
  /** Objects of counter sets, published before the device objects (on-demand pools). */
  counterChunks?: SharedCounterSet[][];
}

/** The objects of a pool in order: counter sets first, then devices. */
export function poolObjects(c: PoolContent): ({ sharedCounters: SharedCounterSet[] } | { devices: DraDevice[] })[] {
  return [...(c.counterChunks ?? []).map((sharedCounters) => ({ sharedCounters })), ...c.chunks.map((devices) => ({ devices }))];
}

/** The devices of every DRA pool (sorted by pool, then device name), chunked within the API limits. */
export function desiredPools(
  node: string, pools: readonly PoolPlan[], slices: readonly Slice[], facts: DeviceFacts,
  onDemand?: (pool: PoolPlan) => Pick<PoolContent, 'chunks' | 'counterChunks'> | undefined,
): PoolContent[] {
  const out: PoolContent[] = [];
  for (const p of [...pools].filter((x) => isDraPool(x) && !x.deleting).sort((x, y) => x.name.localeCompare(y.name))) {
    const od = onDemand?.(p);
    if (od) {
      out.push({ pool: p.name, poolName: resourcePoolName(node, p.name), ...od });
      continue;
    }
    // VPorts have no PCI function to hand over (and the CRD refuses NPIV with DRA): never published.
    const devs = slices
      // Draining slices (left the plan, still held) stay prepared but are not offered again.
      .filter((s) => s.pool === p.name && s.kind !== 'VPort' && !(s as { draining?: string }).draining)
      .map((s) => draDevice(p, s, facts))
      .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    const size = devs.some((d) => d.taints) ? MAX_DEVICES_WITH_TAINTS : MAX_DEVICES;
    const chunks: DraDevice[][] = [];
    for (let i = 0; i < devs.length; i += size) chunks.push(devs.slice(i, i + size));
    if (chunks.length === 0) chunks.push([]); // an empty pool is still published: "no devices", not "unknown"
    out.push({ pool: p.name, poolName: resourcePoolName(node, p.name), chunks });
  }
  return out;
}

/** The ResourceSlice objects of one pool at a generation. */
export function resourceSlicesFor(node: string, content: PoolContent, generation: number, nodeUid?: string): ResourceSliceObject[] {
  const objects = poolObjects(content);
  return objects.map((body, i) => ({
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceSlice',
    metadata: {
      generateName: resourceSliceGenerateName(node, i, objects.length),
      labels: { [POOL_LABEL]: content.pool, 'app.kubernetes.io/managed-by': MANAGED_BY },
      // Owned by the Node: when the Node object goes, its slices go with it.
      ...(nodeUid ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node, uid: nodeUid, controller: true }] } : {}),
    },
    spec: {
      driver: DRA_DRIVER,
      nodeName: node,
      pool: { name: content.poolName, generation, resourceSliceCount: objects.length },
      ...body,
    },
  }));
}

/** The DeviceClass of a DRA pool: every device of our driver whose `pool` attribute names it. */
export function deviceClassFor(pool: string): {
  apiVersion: 'resource.k8s.io/v1';
  kind: 'DeviceClass';
  metadata: { name: string; labels: Record<string, string> };
  spec: { selectors: { cel: { expression: string } }[] };
} {
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'DeviceClass',
    metadata: { name: deviceClassName(pool), labels: { [POOL_LABEL]: pool, 'app.kubernetes.io/part-of': 'virtualio' } },
    spec: { selectors: [{ cel: { expression: `device.driver == "${DRA_DRIVER}" && device.attributes["${DRA_DRIVER}"].pool == "${pool}"` } }] },
  };
}
