// Pure: the KubeVirt permittedHostDevices entries our pools need, the whole lists the operator owns,
// and the KubeVirtPermitted condition of a pool.
import type { InventoryDevice, VirtualIODeviceStatus } from '../../../../crds/generated/types.js';
import type { VioNode } from '../../api/types.js';
import { Reason, type ConditionInput } from '../../api/conditions.js';
import type { PreparedPool } from '../plan/plan.js';
import { isReadableDevice, planOf } from '../plan/shape.js';

export type PermittedEntry = NonNullable<VirtualIODeviceStatus['kubevirtEntries']>[number];

export interface PciHostDevice {
  pciVendorSelector: string;
  resourceName: string;
  externalResourceProvider?: boolean;
}
export interface MediatedHostDevice {
  mdevNameSelector: string;
  resourceName: string;
  externalResourceProvider?: boolean;
}

/** The two lists of `spec.configuration.permittedHostDevices` the operator owns. */
export interface PermittedLists {
  pciHostDevices: PciHostDevice[];
  mediatedDevices: MediatedHostDevice[];
}

/** Another field manager keeps changing the lists the operator applies (see kubevirt/reconciler.ts). */
export interface KubeVirtContest {
  /** Rounds lost: times the applied lists were changed back by someone else. */
  rounds: number;
  maxRounds: number;
  /** The other field managers that own the lists now. */
  managers: string[];
  /** The operator stopped re-applying. */
  gaveUp: boolean;
}

/** What the operator knows about KubeVirt right now. */
export interface KubeVirtView {
  /** The kubevirts.kubevirt.io CRD is served. */
  installed: boolean;
  /** The KubeVirt CR (namespace/name from flags) exists. */
  found: boolean;
  /** `namespace/name` of the KubeVirt CR, for messages. */
  ref: string;
  managed: boolean;
  current: PermittedLists;
  contest?: KubeVirtContest;
}

/** KubeVirt compares mdev type names with spaces replaced by "_". */
export function mdevSelectorName(name: string): string {
  return name.replace(/ /g, '_');
}

const hex4 = (s: string) => (s.startsWith('0x') || s.startsWith('0X') ? s.slice(2) : s).toLowerCase();

function pciId(d: InventoryDevice): string | undefined {
  if (!d.vendorID || !d.deviceID) return undefined;
  return `${hex4(d.vendorID)}:${hex4(d.deviceID)}`;
}

interface InventoryIndex {
  byAddr: Map<string, InventoryDevice>;
  /** PF address → its VFs (from `physfn` and from the PF's `sriov.vfs`). */
  vfsOf: Map<string, InventoryDevice[]>;
}

/** Indexes per inventory list, computed once per list object (the informer keeps unchanged ones). */
const inventoryIndexes = new WeakMap<readonly InventoryDevice[], InventoryIndex>();

function indexInventory(inv: readonly InventoryDevice[]): InventoryIndex {
  let idx = inventoryIndexes.get(inv);
  if (idx) return idx;
  const devs = inv.filter(isReadableDevice); // an agent's report of another shape is skipped, never a throw
  const byAddr = new Map(devs.map((d) => [d.pciAddress, d]));
  const vfsOf = new Map<string, InventoryDevice[]>();
  const add = (pf: string, vf: InventoryDevice) => {
    const xs = vfsOf.get(pf) ?? [];
    if (!xs.includes(vf)) xs.push(vf);
    vfsOf.set(pf, xs);
  };
  for (const d of devs) {
    if (d.physfn) add(d.physfn, d);
    for (const a of d.sriov?.vfs ?? []) {
      const vf = byAddr.get(a);
      if (vf) add(d.pciAddress, vf);
    }
  }
  idx = { byAddr, vfsOf };
  inventoryIndexes.set(inv, idx);
  return idx;
}

/** Whether a pool is rendered into KubeVirt's lists at all (and why not). */
export function kubevirtApplicability(p: PreparedPool): 'applies' | 'SRIOVNetwork' | 'PermitDisabled' | 'DRA' {
  // KubeVirt (1.9, DRA beta) does not check permittedHostDevices for devices a VM takes through a claim.
  if (p.pool.spec.frontEnd === 'DRA') return 'DRA';
  if (p.consumption === 'SRIOVNetwork') return 'SRIOVNetwork';
  if (p.pool.spec.kubevirt?.permit === false) return 'PermitDisabled';
  return 'applies';
}

/**
 * The entries a pool needs, from the devices planned for it on every node and those nodes'
 * inventory: Mediated → one mdevNameSelector per distinct mdev type name (the configured mdevType
 * until an inventory names it); SRIOV → "vendor:device" of the VFs of planned PFs (the VF device ID
 * differs from the PF's); Passthrough and NPIV → "vendor:device" of the planned functions.
 * All with externalResourceProvider: true. Sorted and de-duplicated. Empty for pools consumed as
 * SR-IOV networks, pools with permit: false, pools being deleted or in a resource-name conflict.
 */
export function poolEntries(p: PreparedPool, nodes: readonly VioNode[]): PermittedEntry[] {
  if (kubevirtApplicability(p) !== 'applies' || p.deleting || p.resourceNameConflicts.length > 0) return [];
  const mode = p.pool.spec.carving.mode;
  const selectors = new Set<string>();
  const mdevType = p.pool.spec.carving.mdevType ?? '';
  for (const vio of nodes) {
    const plan = planOf(vio)?.find((x) => x.name === p.name);
    if (!plan || plan.deleting) continue;
    const inv = vio.status?.inventory?.devices;
    if (!Array.isArray(inv)) continue;
    const { byAddr, vfsOf } = indexInventory(inv);
    for (const dev of plan.devices) {
      const pf = byAddr.get(dev.pciAddress);
      if (!pf) continue;
      if (mode === 'Mediated') {
        const t = (pf.mdevTypes ?? []).find((m) => m.id === mdevType || (m.name && mdevSelectorName(m.name) === mdevType));
        if (t) selectors.add(t.name ? mdevSelectorName(t.name) : t.id);
      } else if (mode === 'SRIOV') {
        for (const vf of vfsOf.get(pf.pciAddress) ?? []) {
          const id = pciId(vf);
          if (id) selectors.add(id);
        }
      } else {
        const id = pciId(pf);
        if (id) selectors.add(id);
      }
    }
  }
  if (mode === 'Mediated') {
    // Before any inventory names the type, the configured id or name already keeps virt-handler
    // from removing our mdevs (it falls back to the type id).
    if (selectors.size === 0 && mdevType) selectors.add(mdevType);
    return [...selectors].sort().map((s) => ({
      list: 'mediatedDevices' as const, resourceName: p.resourceName, mdevNameSelector: s, externalResourceProvider: true,
    }));
  }
  return [...selectors].sort().map((s) => ({
    list: 'pciHostDevices' as const, resourceName: p.resourceName, pciVendorSelector: s, externalResourceProvider: true,
  }));
}

const pciKey = (e: PciHostDevice) => `${e.resourceName}|${e.pciVendorSelector.toLowerCase()}|${!!e.externalResourceProvider}`;
const mdevKey = (e: MediatedHostDevice) => `${e.resourceName}|${mdevSelectorName(e.mdevNameSelector)}|${!!e.externalResourceProvider}`;

/**
 * The whole lists the operator applies: the admin's extra entries first (in their order), then our
 * pools' entries sorted by resource name and selector; exact duplicates dropped.
 */
export function desiredLists(entries: readonly PermittedEntry[], extra: PermittedLists): PermittedLists {
  const pci: PciHostDevice[] = [];
  const mdev: MediatedHostDevice[] = [];
  const seenPci = new Set<string>();
  const seenMdev = new Set<string>();
  const addPci = (e: PciHostDevice) => {
    if (!seenPci.has(pciKey(e))) {
      seenPci.add(pciKey(e));
      pci.push(e);
    }
  };
  const addMdev = (e: MediatedHostDevice) => {
    if (!seenMdev.has(mdevKey(e))) {
      seenMdev.add(mdevKey(e));
      mdev.push(e);
    }
  };
  extra.pciHostDevices.forEach(addPci);
  extra.mediatedDevices.forEach(addMdev);
  const ours = [...entries].sort((a, b) =>
    a.resourceName.localeCompare(b.resourceName) ||
    (a.pciVendorSelector ?? a.mdevNameSelector ?? '').localeCompare(b.pciVendorSelector ?? b.mdevNameSelector ?? ''));
  for (const e of ours) {
    if (e.list === 'pciHostDevices' && e.pciVendorSelector) {
      addPci({ pciVendorSelector: e.pciVendorSelector, resourceName: e.resourceName, externalResourceProvider: true });
    } else if (e.list === 'mediatedDevices' && e.mdevNameSelector) {
      addMdev({ mdevNameSelector: e.mdevNameSelector, resourceName: e.resourceName, externalResourceProvider: true });
    }
  }
  return { pciHostDevices: pci, mediatedDevices: mdev };
}

/** Whether KubeVirt's current lists already contain `e` (as an external resource provider). */
export function entryPresent(e: PermittedEntry, cur: PermittedLists): boolean {
  if (e.list === 'pciHostDevices') {
    return cur.pciHostDevices.some((x) => x.resourceName === e.resourceName && !!x.externalResourceProvider &&
      x.pciVendorSelector.toLowerCase() === (e.pciVendorSelector ?? '').toLowerCase());
  }
  return cur.mediatedDevices.some((x) => x.resourceName === e.resourceName && !!x.externalResourceProvider &&
    mdevSelectorName(x.mdevNameSelector) === mdevSelectorName(e.mdevNameSelector ?? ''));
}

/** The entries as YAML-ish text an admin can paste under permittedHostDevices. */
export function describeEntries(entries: readonly PermittedEntry[]): string {
  const render = (e: PermittedEntry) => e.list === 'pciHostDevices'
    ? `{pciVendorSelector: "${e.pciVendorSelector}", resourceName: "${e.resourceName}", externalResourceProvider: true}`
    : `{mdevNameSelector: "${e.mdevNameSelector}", resourceName: "${e.resourceName}", externalResourceProvider: true}`;
  const parts: string[] = [];
  for (const list of ['pciHostDevices', 'mediatedDevices'] as const) {
    const xs = entries.filter((e) => e.list === list);
    if (xs.length > 0) parts.push(`${list}: [${xs.map(render).join(', ')}]`);
  }
  return parts.join('; ');
}

const contenders = (c: KubeVirtContest) => (c.managers.length > 0 ? `field manager ${c.managers.join(', ')}` : 'unknown field manager');

/** The KubeVirtPermitted condition of a pool. */
export function kubevirtCondition(p: PreparedPool, entries: readonly PermittedEntry[], kv: KubeVirtView): ConditionInput {
  const base = { type: 'KubeVirtPermitted' as const, observedGeneration: p.pool.metadata.generation };
  if (!kv.installed) {
    return { ...base, status: 'False', reason: Reason.KubeVirtNotInstalled, message: 'KubeVirt is not installed (no kubevirts.kubevirt.io CRD); nothing to permit' };
  }
  const why = kubevirtApplicability(p);
  if (why === 'DRA') {
    return { ...base, status: 'True', reason: Reason.NotRequired, message: 'DRA pools are consumed through ResourceClaims, which KubeVirt does not check against permittedHostDevices' };
  }
  if (why === 'SRIOVNetwork') {
    return { ...base, status: 'True', reason: Reason.NotRequired, message: 'SR-IOV network pools are consumed through Multus networks and need no permittedHostDevices entry' };
  }
  if (why === 'PermitDisabled') {
    return { ...base, status: 'False', reason: Reason.PermitDisabled, message: 'spec.kubevirt.permit is false; VMs cannot request this resource while KubeVirt enforces permittedHostDevices' };
  }
  if (entries.length === 0) {
    return { ...base, status: 'False', reason: Reason.WaitingForInventory, message: 'Waiting for node inventory to name the device IDs to permit' };
  }
  const text = describeEntries(entries);
  if (!kv.found) {
    return { ...base, status: 'False', reason: Reason.KubeVirtNotFound, message: `KubeVirt CR ${kv.ref} not found; it needs permittedHostDevices entries ${text}` };
  }
  const missing = entries.filter((e) => !entryPresent(e, kv.current));
  if (missing.length === 0) {
    return { ...base, status: 'True', reason: Reason.Permitted, message: `KubeVirt ${kv.ref} permits the pool: ${text}` };
  }
  if (kv.managed && kv.contest?.gaveUp) {
    return {
      ...base, status: 'False', reason: Reason.Contested,
      message: `Another controller (${contenders(kv.contest)}) keeps changing spec.configuration.permittedHostDevices of KubeVirt ${kv.ref}: ` +
        `it changed the operator's lists back ${kv.contest.rounds} times, so the operator stopped re-applying them until the pools change. ` +
        `Let that controller leave the lists alone (Argo CD: ignoreDifferences; HyperConverged: set the entries there) or add: ${describeEntries(missing)}`,
    };
  }
  if (kv.managed) {
    const fight = kv.contest && kv.contest.rounds > 0
      ? ` (changed back by ${contenders(kv.contest)} ${kv.contest.rounds} time(s); re-applying with backoff, giving up after ${kv.contest.maxRounds})`
      : '';
    return { ...base, status: 'False', reason: Reason.ApplyPending, message: `Applying permittedHostDevices entries to KubeVirt ${kv.ref}${fight}: ${describeEntries(missing)}` };
  }
  return {
    ...base, status: 'False', reason: Reason.NotManaged,
    message: `Add to spec.configuration.permittedHostDevices of KubeVirt ${kv.ref} (or run the operator with --manage-permitted-host-devices): ${describeEntries(missing)}`,
  };
}
