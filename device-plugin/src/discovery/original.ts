// What a function looked like before the agent moved it off its driver ("original facts"), and the
// inventory decorated with them. A pool selected by `drivers: [nvidia]` or `interfaceNames: [ens2f0]`
// must keep selecting its device once the agent has put it on vfio-pci (no driver name, no netdev
// any more); the operator matches selectors on current ∪ original facts. The agent records the facts
// once, before its first `driver_override`/unbind of a device, keeps the record in its node-local
// checkpoint, and reports them in `InventoryDevice.original` while the device still differs from them.
// Pure: no I/O; the caller owns the record and its persistence.
import type { InventoryDevice } from '../model.js';

/** The facts of one function before the agent first moved it. */
export interface OriginalFacts {
  /** Its driver then; absent when it had none. */
  driver?: string;
  /** Its network interface names then (at most {@link MAX_INTERFACE_NAMES}). */
  interfaceNames?: string[];
}

/** PCI address → facts. */
export type OriginalRecord = Readonly<Record<string, OriginalFacts>>;

/** The CRD's bound on `original.interfaceNames`. */
export const MAX_INTERFACE_NAMES = 16;

const PCI_RE = /^[0-9a-f]{4,5}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;

/** The facts worth recording of a function as it is now. */
export function factsOf(dev: InventoryDevice): OriginalFacts {
  const names = [...new Set((dev.netdevs ?? []).map((n) => n.name))].sort().slice(0, MAX_INTERFACE_NAMES);
  return { ...(dev.driver ? { driver: dev.driver } : {}), ...(names.length > 0 ? { interfaceNames: names } : {}) };
}

/**
 * The record after noting the devices at `addresses` that are about to be moved: a device already
 * recorded keeps its first facts (a second move, e.g. after an agent restart, must not record
 * vfio-pci as "original"); a device not in the inventory is not recorded. `changed` says whether the
 * record must be persisted. Call before the first write that changes a device's driver.
 */
export function recordOriginals(record: OriginalRecord, inventory: readonly InventoryDevice[], addresses: Iterable<string>): { record: OriginalRecord; changed: boolean } {
  const byAddr = new Map(inventory.map((d) => [d.pciAddress, d]));
  let out: Record<string, OriginalFacts> | undefined;
  for (const a of addresses) {
    if (Object.prototype.hasOwnProperty.call(record, a) || out?.[a]) continue;
    const dev = byAddr.get(a);
    if (!dev) continue;
    out ??= { ...record };
    out[a] = factsOf(dev);
  }
  return out ? { record: out, changed: true } : { record, changed: false };
}

/** Whether a device still differs from its recorded facts (is on another driver, or lost a recorded netdev). */
export function differsFrom(dev: InventoryDevice, facts: OriginalFacts): boolean {
  if ((dev.driver ?? '') !== (facts.driver ?? '')) return true;
  const now = new Set((dev.netdevs ?? []).map((n) => n.name));
  return (facts.interfaceNames ?? []).some((n) => !now.has(n));
}

/**
 * The inventory with `original` set on every device that has a record and still differs from it.
 * Devices without a record, or back as they were (released), are returned unchanged (the same
 * objects); an `original` the scan may already carry is replaced. The input is not modified.
 */
export function withOriginals(devices: readonly InventoryDevice[], record: OriginalRecord): InventoryDevice[] {
  return devices.map((d) => {
    const facts = Object.prototype.hasOwnProperty.call(record, d.pciAddress) ? record[d.pciAddress] : undefined;
    if (!facts || !differsFrom(d, facts)) {
      if (d.original === undefined) return d;
      const { original: _drop, ...rest } = d;
      return rest;
    }
    const original: NonNullable<InventoryDevice['original']> = {};
    if (facts.driver) original.driver = facts.driver;
    if (facts.interfaceNames?.length) original.interfaceNames = [...facts.interfaceNames];
    return { ...d, original };
  });
}

/**
 * Addresses whose record can be dropped: the device is back as it was (released to its driver).
 * A device absent from the inventory keeps its record (it may be mid-rebind or hidden by a failed
 * scan), so the facts are not lost.
 */
export function settledOriginals(record: OriginalRecord, devices: readonly InventoryDevice[]): string[] {
  const byAddr = new Map(devices.map((d) => [d.pciAddress, d]));
  return Object.keys(record).filter((a) => {
    const d = byAddr.get(a);
    const facts = record[a];
    return d !== undefined && facts !== undefined && !differsFrom(d, facts);
  }).sort();
}

/**
 * Validates a record read back from disk (a checkpoint may be truncated, edited or from another
 * version): well-formed entries are kept, each bad one is named in `errors` and left out.
 */
export function parseOriginalRecord(doc: unknown): { record: OriginalRecord; errors: string[] } {
  const errors: string[] = [];
  const record: Record<string, OriginalFacts> = {};
  if (doc === undefined || doc === null) return { record, errors };
  if (typeof doc !== 'object' || Array.isArray(doc)) return { record, errors: [`original facts: expected an object keyed by PCI address, got ${Array.isArray(doc) ? 'a list' : typeof doc}`] };
  for (const [addr, v] of Object.entries(doc as Record<string, unknown>)) {
    if (!PCI_RE.test(addr)) {
      errors.push(`original facts: ${JSON.stringify(addr)} is not a PCI address`);
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      errors.push(`original facts of ${addr}: expected an object`);
      continue;
    }
    const { driver, interfaceNames } = v as { driver?: unknown; interfaceNames?: unknown };
    if (driver !== undefined && (typeof driver !== 'string' || driver === '')) {
      errors.push(`original facts of ${addr}: driver must be a non-empty string, got ${JSON.stringify(driver)}`);
      continue;
    }
    if (interfaceNames !== undefined && (!Array.isArray(interfaceNames) || !interfaceNames.every((n) => typeof n === 'string' && n !== ''))) {
      errors.push(`original facts of ${addr}: interfaceNames must be a list of names, got ${JSON.stringify(interfaceNames)}`);
      continue;
    }
    const names = (interfaceNames as string[] | undefined)?.slice(0, MAX_INTERFACE_NAMES);
    record[addr] = { ...(driver ? { driver } : {}), ...(names?.length ? { interfaceNames: names } : {}) };
  }
  return { record, errors };
}
