// The port through which carving changes the kernel's state: one sysfs attribute write at a time.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';

/**
 * Writes one sysfs attribute. `relPath` is relative to the sysfs root (e.g.
 * `bus/pci/devices/0000:81:00.0/sriov_numvfs`). A rejected promise means the kernel refused the
 * write (EBUSY, EINVAL, ENOENT...); the error's message says why. Implementations do not retry.
 */
export interface SysfsWriter {
  /**
   * `lane` names the device the write is for (a PCI address, an FC host): a writer that isolates
   * blocking writes (IsolatedSysfsWriter) reports that device stuck and keeps serving the others.
   */
  write(relPath: string, value: string, opts?: { lane?: string }): Promise<void>;
}

/**
 * Joins `relPath` below `root`, refusing absolute paths, NUL bytes and paths that climb out of the
 * root with `..`. Throws an Error naming the bad path.
 */
export function resolveUnderRoot(root: string, relPath: string): string {
  if (relPath.includes('\0') || path.isAbsolute(relPath)) throw new Error(`invalid sysfs path ${JSON.stringify(relPath)}`);
  const norm = path.posix.normalize(relPath);
  if (norm === '..' || norm.startsWith('../') || norm === '.') throw new Error(`sysfs path ${JSON.stringify(relPath)} escapes the root`);
  return path.join(root, norm);
}

/**
 * The production writer: opens `<root>/<relPath>` write-only WITHOUT O_CREAT (a missing attribute
 * is ENOENT, never a new file; write-only attributes such as `bind` refuse read opens on sysfs)
 * and issues one write of `value`, as `echo -n value > file` does. O_TRUNC is harmless on sysfs and
 * keeps plain files in temp-dir trees exact.
 */
export class FsSysfsWriter implements SysfsWriter {
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  async write(relPath: string, value: string): Promise<void> {
    const file = resolveUnderRoot(this.root, relPath);
    const fh = await open(file, constants.O_WRONLY | constants.O_TRUNC);
    try {
      await fh.write(value);
    } finally {
      await fh.close();
    }
  }
}
