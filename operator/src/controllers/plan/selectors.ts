// Pure selector logic: label selectors over Node labels, device selectors over a node's inventory.
import type { InventoryDevice, VirtualIODeviceSpec } from '../../../../crds/generated/types.js';

export type LabelSelector = NonNullable<VirtualIODeviceSpec['nodeSelector']>;
export type DeviceSelector = VirtualIODeviceSpec['deviceSelector'];
export type PoolClass = VirtualIODeviceSpec['class'];
export type CarvingMode = VirtualIODeviceSpec['carving']['mode'];

/**
 * Kubernetes LabelSelector semantics: every matchLabels pair and every expression must hold; an
 * empty or absent selector matches everything.
 */
export function labelSelectorMatches(sel: LabelSelector | undefined, labels: Readonly<Record<string, string>> | undefined): boolean {
  const l = labels ?? {};
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) {
    if (l[k] !== v) return false;
  }
  for (const e of sel?.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(l, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(l[e.key] ?? '')) return false;
        break;
      case 'NotIn':
        if (has && values.includes(l[e.key] ?? '')) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        // An operator the schema does not allow: match nothing rather than everything.
        return false;
    }
  }
  return true;
}

/** "ens1f0", "ens1f0#3" or "ens1f0#0-7" → name and optional inclusive VF index range. */
export function parseInterfaceName(s: string): { name: string; first?: number; last?: number } {
  const [name = '', range] = s.split('#', 2);
  if (range === undefined || range === '') return { name };
  const [a = '', b] = range.split('-', 2);
  const first = Number.parseInt(a, 10);
  const last = b === undefined ? first : Number.parseInt(b, 10);
  if (!Number.isFinite(first) || !Number.isFinite(last) || last < first) return { name };
  return { name, first, last };
}

/** One physical device a pool wants, whole or a VF index range of it. */
export interface DeviceClaim {
  pciAddress: string;
  vfFirst?: number;
  vfLast?: number;
}

/**
 * PCI class prefixes a pool class may take (only checked when the inventory knows the class code),
 * so that a broad selector such as `vendorIDs: [8086]` can never hand the host's chipset, USB or
 * bridges to a VM: NIC → 02 network; GPU → 03 display, 12 processing accelerators;
 * Storage → 01 mass storage (SAS, RAID, NVMe), 0c04 Fibre Channel.
 */
export const CLASS_CODE_PREFIXES: Readonly<Record<PoolClass, readonly string[]>> = {
  NIC: ['02'],
  GPU: ['03', '12'],
  Storage: ['01', '0c04'],
};

function classFits(cls: PoolClass, classCode: string | undefined): boolean {
  if (!classCode) return true;
  const c = classCode.toLowerCase().replace(/^0x/, '');
  return CLASS_CODE_PREFIXES[cls].some((p) => c.startsWith(p));
}

const nonEmpty = <T>(a: readonly T[] | undefined): a is readonly T[] => !!a && a.length > 0;

/** PCI bridges (0604) and host bridges (0600): never handed to a VM, never an IOMMU-group companion. */
export function isBridgeClass(classCode: string | undefined): boolean {
  const c = (classCode ?? '').toLowerCase().replace(/^0x/, '');
  return c.startsWith('0604') || c.startsWith('0600');
}

/**
 * The drivers a `drivers` selector may match: the current one and, for a function the agent moved
 * off its driver (`original`), the one it had before. Carving a device therefore never changes
 * whether its pool selects it; only an edit of the selector does.
 */
export function driversOf(d: InventoryDevice): string[] {
  const out = [d.driver ?? ''];
  if (d.original) out.push(d.original.driver ?? '');
  return out;
}

/** The interface names an `interfaceNames` selector may match: current netdevs and, after carving, the ones it had before. */
export function interfaceNamesOf(d: InventoryDevice): Set<string> {
  return new Set([...(d.netdevs ?? []).map((n) => n.name), ...(d.original?.interfaceNames ?? [])]);
}

/**
 * The claims a device selector makes on a node's inventory. Only physical functions (devices
 * without `physfn`) are candidates. Fields are ANDed, values within a field ORed; empty fields are
 * ignored. interfaceNames with a VF range yield range claims for SRIOV pools (one claim per distinct
 * range); a plain name, or any other mode, claims the whole device. `drivers` and `interfaceNames`
 * match the device's current facts or the ones it had before the agent carved it (`original`).
 * Sorted by PCI address.
 */
export function selectDevices(sel: DeviceSelector, cls: PoolClass, mode: CarvingMode, inventory: readonly InventoryDevice[]): DeviceClaim[] {
  const lower = (xs: readonly string[] | undefined) => xs?.map((x) => x.toLowerCase());
  const vendors = lower(sel.vendorIDs);
  const devices = lower(sel.deviceIDs);
  const addrs = lower(sel.pciAddresses);
  const ifaces = (sel.interfaceNames ?? []).map(parseInterfaceName);
  const out: DeviceClaim[] = [];
  for (const d of inventory) {
    if (d.physfn) continue;
    if (!classFits(cls, d.classCode)) continue;
    if (nonEmpty(vendors) && !vendors.includes((d.vendorID ?? '').toLowerCase())) continue;
    if (nonEmpty(devices) && !devices.includes((d.deviceID ?? '').toLowerCase())) continue;
    if (nonEmpty(addrs) && !addrs.includes(d.pciAddress.toLowerCase())) continue;
    if (nonEmpty(sel.drivers) && !driversOf(d).some((x) => sel.drivers?.includes(x))) continue;
    if (nonEmpty(sel.numaNodes) && (d.numaNode === undefined || !sel.numaNodes.includes(d.numaNode))) continue;
    if (ifaces.length > 0) {
      const names = interfaceNamesOf(d);
      const hits = ifaces.filter((i) => names.has(i.name));
      if (hits.length === 0) continue;
      if (mode !== 'SRIOV' || hits.some((h) => h.first === undefined)) {
        out.push({ pciAddress: d.pciAddress });
      } else {
        const seen = new Set<string>();
        for (const h of [...hits].sort((a, b) => (a.first ?? 0) - (b.first ?? 0) || (a.last ?? 0) - (b.last ?? 0))) {
          const k = `${h.first}-${h.last}`;
          if (seen.has(k)) continue;
          seen.add(k);
          out.push({ pciAddress: d.pciAddress, vfFirst: h.first, vfLast: h.last });
        }
      }
      continue;
    }
    out.push({ pciAddress: d.pciAddress });
  }
  return out.sort((a, b) => a.pciAddress.localeCompare(b.pciAddress) || (a.vfFirst ?? -1) - (b.vfFirst ?? -1));
}

/** Whether two claims on the same device overlap (a whole-device claim overlaps everything). */
export function claimsOverlap(a: DeviceClaim, b: DeviceClaim): boolean {
  if (a.pciAddress !== b.pciAddress) return false;
  if (a.vfFirst === undefined || b.vfFirst === undefined) return true;
  const aLast = a.vfLast ?? a.vfFirst;
  const bLast = b.vfLast ?? b.vfFirst;
  return a.vfFirst <= bLast && b.vfFirst <= aLast;
}

/** "0000:81:00.0" or "0000:81:00.0#0-7" for messages and status. */
export function claimLabel(c: DeviceClaim): string {
  if (c.vfFirst === undefined) return c.pciAddress;
  return c.vfFirst === c.vfLast || c.vfLast === undefined ? `${c.pciAddress}#${c.vfFirst}` : `${c.pciAddress}#${c.vfFirst}-${c.vfLast}`;
}
