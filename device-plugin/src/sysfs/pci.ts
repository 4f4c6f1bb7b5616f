// PCI address and class helpers shared by discovery, carving and health.

/** A PCI function address as sysfs names it: `dddd:bb:dd.f` (lower-case hex; VMD domains have 5 digits). */
export const PCI_ADDRESS_RE = /^[0-9a-f]{4,5}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$/;

/** An mdev UUID as sysfs names it (lower-case, 8-4-4-4-12). */
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** True when `s` is a well-formed PCI function address. */
export function isPciAddress(s: string): boolean {
  return PCI_ADDRESS_RE.test(s);
}

function pciKey(a: string): number[] | undefined {
  const m = /^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.([0-7])$/i.exec(a);
  if (!m) return undefined;
  return [m[1], m[2], m[3], m[4]].map((p) => parseInt(p ?? '0', 16));
}

/**
 * Orders PCI addresses numerically (domain, bus, device, function), so `10000:00:00.0` sorts after
 * `0000:ff:1f.7`. Malformed addresses sort after every valid one, then by string.
 */
export function comparePci(a: string, b: string): number {
  const ka = pciKey(a);
  const kb = pciKey(b);
  if (ka && kb) {
    for (let i = 0; i < 4; i++) {
      const d = (ka[i] ?? 0) - (kb[i] ?? 0);
      if (d !== 0) return d;
    }
    return 0;
  }
  if (ka) return -1;
  if (kb) return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Plain code-unit string order, for deterministic sorting that does not depend on the locale. */
export function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when a 6-hex-digit class code is a PCI-to-PCI bridge (`0604xx`) or host bridge (`0600xx`). */
export function isBridgeClass(classCode: string | undefined): boolean {
  return classCode !== undefined && (classCode.startsWith('0604') || classCode.startsWith('0600'));
}

/** Driver name that makes a function usable for VFIO device assignment. */
export const VFIO_PCI = 'vfio-pci';
