// A scan is published as the node's complete inventory, and the operator plans from it: a device
// missing from it is unplanned, and its pool's slices are released. A node does not lose all of its
// PCI functions at once, while a broken view of sysfs (not mounted into the container, the wrong
// --sysfs-root, an unreadable bus/pci/devices) looks exactly like that. Such a scan is suspect: the
// caller keeps the last accepted inventory, reports the reason, and scans again. Pure.
import type { Inventory } from '../model.js';
import { isPciAddress } from '../sysfs/pci.js';

export type ScanVerdict = { ok: true } | { ok: false; reason: string };

/** The prefix scan() gives an error of the PCI device folder itself (see discovery/scan.ts). */
const PCI_FOLDER_ERROR = 'bus/pci/devices:';

function pciCount(inv: Inventory): number {
  return inv.devices.filter((d) => isPciAddress(d.pciAddress)).length;
}

/**
 * Decides whether `next` may replace `previous` (the last ACCEPTED inventory; undefined before the
 * first one) as the node's inventory. Refused, with the reason:
 * - `bus/pci/devices` could not be listed (the scan cannot be complete);
 * - no PCI function at all, while `previous` had some, or while `expected` (PCI addresses the plan
 *   or the checkpoint says this node has; what a restarted agent knows before its first scan)
 *   names any.
 * A node that never had a PCI function (e.g. only an s390 vfio_ap matrix) is accepted as it is.
 */
export function acceptScan(previous: Inventory | undefined, next: Inventory, opts: { expected?: Iterable<string> } = {}): ScanVerdict {
  const folderError = (next.errors ?? []).find((e) => e.startsWith(PCI_FOLDER_ERROR));
  if (folderError) return { ok: false, reason: `suspect scan: ${folderError}; keeping the last inventory until bus/pci/devices can be read` };
  if (pciCount(next) > 0) return { ok: true };
  const had = previous ? pciCount(previous) : 0;
  if (had > 0) {
    return { ok: false, reason: `suspect scan: no PCI function found under bus/pci/devices (missing or empty) while the last inventory had ${had}; keeping it (is sysfs mounted, and --sysfs-root right?)` };
  }
  const expected = [...(opts.expected ?? [])].filter(isPciAddress);
  if (expected.length > 0) {
    const shown = expected.slice(0, 3).join(', ');
    return {
      ok: false,
      reason: `suspect scan: no PCI function found under bus/pci/devices (missing or empty) while the plan names ${expected.length} (${shown}${expected.length > 3 ? ', ...' : ''}); not publishing it (is sysfs mounted, and --sysfs-root right?)`,
    };
  }
  return { ok: true };
}
