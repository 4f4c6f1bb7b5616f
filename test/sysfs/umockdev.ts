// Loads any umockdev-record text file into a temporary sysfs tree (plus the parts the kernel implies
// that a recording leaves out), so discovery can be tested against recordings of real machines.
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** One `P:` block of a recording. */
export interface UmockdevDevice {
  /** Path below `/sys`, e.g. `/devices/pci0000:00/0000:00:03.0/0000:08:00.0`. */
  path: string;
  /** `E:` uevent properties, raw. */
  props: Record<string, string>;
  /** `A:` (decoded) and `H:` (binary) attributes, in file order. */
  attrs: { name: string; value: Buffer }[];
  /** `L:` symlinks relative to the device folder. */
  links: { name: string; target: string }[];
  /** `N:` device node name below `/dev`, if any. */
  node?: string;
}

/**
 * Decodes C-style escapes as umockdev writes them (GLib `g_strescape` plus `\xHH`): `\n \t \r \b
 * \f \v \a \e \\ \" \'`, octal `\NNN`, hex `\xHH`; an unknown escape yields the character itself.
 */
export function decodeCEscapes(s: string): Buffer {
  const bytes: number[] = [];
  const simple: Record<string, number> = { n: 10, t: 9, r: 13, b: 8, f: 12, v: 11, a: 7, e: 27, '\\': 92, '"': 34, "'": 39 };
  for (let i = 0; i < s.length; i++) {
    const ch = s[i] as string;
    if (ch !== '\\' || i === s.length - 1) {
      bytes.push(...Buffer.from(ch, 'utf8'));
      continue;
    }
    const n = s[i + 1] as string;
    if (n in simple) {
      bytes.push(simple[n] as number);
      i++;
    } else if (/[0-7]/.test(n)) {
      const m = /^[0-7]{1,3}/.exec(s.slice(i + 1)) as RegExpExecArray;
      bytes.push(parseInt(m[0], 8) & 0xff);
      i += m[0].length;
    } else if (n === 'x' && /^[0-9a-fA-F]{1,2}/.test(s.slice(i + 2))) {
      const m = /^[0-9a-fA-F]{1,2}/.exec(s.slice(i + 2)) as RegExpExecArray;
      bytes.push(parseInt(m[0], 16));
      i += 1 + m[0].length;
    } else {
      bytes.push(...Buffer.from(n, 'utf8'));
      i++;
    }
  }
  return Buffer.from(bytes);
}

/** Parses a recording. Throws with the line number on a line that is not umockdev syntax. */
export function parseUmockdev(text: string): UmockdevDevice[] {
  const devices: UmockdevDevice[] = [];
  let cur: UmockdevDevice | undefined;
  const lines = text.split('\n');
  lines.forEach((line, idx) => {
    if (line.trim() === '') {
      cur = undefined;
      return;
    }
    if (line.startsWith('#')) return;
    const m = /^([PNSEAHL]): ?(.*)$/.exec(line);
    if (!m) throw new Error(`umockdev line ${idx + 1}: not a record line: ${JSON.stringify(line.slice(0, 80))}`);
    const kind = m[1] as string;
    const rest = m[2] as string;
    if (kind === 'P') {
      cur = { path: rest, props: {}, attrs: [], links: [] };
      devices.push(cur);
      return;
    }
    if (!cur) throw new Error(`umockdev line ${idx + 1}: ${kind}: before any P: line`);
    if (kind === 'N') {
      cur.node = rest;
      return;
    }
    if (kind === 'S') return; // udev symlinks in /dev: not needed for sysfs
    const eq = rest.indexOf('=');
    if (eq <= 0) throw new Error(`umockdev line ${idx + 1}: ${kind}: without name=value`);
    const name = rest.slice(0, eq);
    const value = rest.slice(eq + 1);
    if (kind === 'E') cur.props[name] = value;
    else if (kind === 'A') cur.attrs.push({ name, value: decodeCEscapes(value) });
    else if (kind === 'H') cur.attrs.push({ name, value: Buffer.from(value, 'hex') });
    else cur.links.push({ name, target: value });
  });
  return devices;
}

/**
 * Subsystems that are buses (devices appear in `/sys/bus/<name>/devices`); every other
 * `SUBSYSTEM` is a class (`/sys/class/<name>/<dev>`). Recordings do not keep the `subsystem` link,
 * so this list decides.
 */
const BUSES = new Set([
  'acpi', 'clockevents', 'clocksource', 'container', 'cpu', 'edac', 'event_source', 'gpio', 'hid', 'i2c',
  'machinecheck', 'mdev', 'mdio_bus', 'memory', 'mmc', 'node', 'nvmem', 'pci', 'pci_express', 'platform',
  'pnp', 'scsi', 'sdio', 'serio', 'spi', 'usb', 'virtio', 'wmi', 'workqueue', 'xen', 'dax', 'cxl', 'auxiliary',
]);

/** Write-only attributes the kernel gives every PCI driver folder and the PCI bus. */
const PCI_DRIVER_ATTRS = ['bind', 'unbind', 'new_id', 'remove_id', 'uevent'];
const PCI_BUS_ATTRS = ['drivers_probe', 'drivers_autoprobe', 'rescan'];

/** Options of {@link loadUmockdev}. */
export interface LoadOptions {
  /** Also create `<devRoot>/<N:>` as plain files for every device node the recording names. */
  devRoot?: string;
}

/** What a load produced, for tests and diagnostics. */
export interface LoadResult {
  devices: number;
  pciDevices: string[];
  /** Non-fatal conflicts (e.g. a link where a folder already exists). */
  warnings: string[];
}

async function inBatches<T>(items: T[], width: number, fn: (t: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

function rel(from: string, to: string): string {
  return path.relative(from, to) || '.';
}

async function ensureLink(target: string, at: string, warnings: string[]): Promise<void> {
  await mkdir(path.dirname(at), { recursive: true });
  try {
    await symlink(target, at);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') warnings.push(`exists: ${at}`);
    else throw err;
  }
}

async function ensureFile(at: string, content: Buffer | string = ''): Promise<void> {
  await mkdir(path.dirname(at), { recursive: true });
  try {
    await writeFile(at, content, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/**
 * Builds a sysfs tree under `root` from a recording (`source` is the text, or a path when it does
 * not contain a newline): each `P:` becomes `<root><path>` with its `A:`/`H:` files and `L:` links;
 * then what the kernel implies: `bus/<bus>/devices/<name>` links for bus subsystems (PCI included),
 * `class/<class>/<name>` links for the others (net, nvme, fc_host, scsi_host, vfio...), the driver
 * folders named by `driver` links (PCI ones with `bind`/`unbind`/`new_id` and a link back to each
 * bound device), `bus/pci/{drivers_probe,rescan}`, `kernel/iommu_groups/<N>/devices/<name>` links,
 * and `class/mdev_bus/<parent>` for devices with `mdev_supported_types`. Generic: nothing in here
 * knows the fixtures.
 */
export async function loadUmockdev(source: string, root: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const text = source.includes('\n') ? source : await readFile(source, 'utf8');
  const devices = parseUmockdev(text);
  const warnings: string[] = [];
  const pciDevices: string[] = [];
  const inRoot = (p: string): boolean => p === root || p.startsWith(root + path.sep);
  let hasPci = false;

  // Folders first (sorted, so parents come before children), then every file, many at a time.
  const dirs = new Set<string>();
  const files: { file: string; value: Buffer }[] = [];
  for (const d of devices) {
    const dir = path.join(root, d.path);
    if (!inRoot(dir)) throw new Error(`device path ${d.path} escapes the root`);
    dirs.add(dir);
    for (const a of d.attrs) {
      const file = path.join(dir, a.name);
      if (!inRoot(file)) throw new Error(`attribute ${a.name} of ${d.path} escapes the root`);
      dirs.add(path.dirname(file));
      files.push({ file, value: a.value });
    }
  }
  for (const dir of [...dirs].sort()) await mkdir(dir, { recursive: true });
  await inBatches(files, 64, ({ file, value }) => writeFile(file, value));
  // Links after all folders exist, so a link never shadows a recorded child device.
  for (const d of devices) {
    const dir = path.join(root, d.path);
    for (const l of d.links) {
      const at = path.join(dir, l.name);
      if (!inRoot(at)) throw new Error(`link ${l.name} of ${d.path} escapes the root`);
      await ensureLink(l.target, at, warnings);
    }
  }
  for (const d of devices) {
    const dir = path.join(root, d.path);
    const name = path.basename(d.path);
    const subsystem = d.props.SUBSYSTEM;
    if (subsystem) {
      if (BUSES.has(subsystem)) {
        const at = path.join(root, 'bus', subsystem, 'devices', name);
        await ensureLink(rel(path.dirname(at), dir), at, warnings);
      } else {
        const at = path.join(root, 'class', subsystem, name);
        await ensureLink(rel(path.dirname(at), dir), at, warnings);
      }
    }
    if (subsystem === 'pci') {
      hasPci = true;
      pciDevices.push(name);
    }
    for (const l of d.links) {
      const resolved = path.resolve(dir, l.target);
      if (l.name === 'driver' && inRoot(resolved)) {
        await mkdir(resolved, { recursive: true });
        await ensureLink(rel(resolved, dir), path.join(resolved, name), warnings);
        if (path.basename(path.dirname(path.dirname(resolved))) === 'pci') {
          for (const f of PCI_DRIVER_ATTRS) await ensureFile(path.join(resolved, f));
        }
      }
      if (l.name === 'iommu_group' && inRoot(resolved)) {
        const at = path.join(resolved, 'devices', name);
        await ensureLink(rel(path.dirname(at), dir), at, warnings);
      }
    }
    if (d.attrs.some((a) => a.name.startsWith('mdev_supported_types/'))) {
      const at = path.join(root, 'class/mdev_bus', name);
      await ensureLink(rel(path.dirname(at), dir), at, warnings);
    }
    if (d.node && opts.devRoot) await ensureFile(path.join(opts.devRoot, d.node));
  }
  if (hasPci) {
    for (const f of PCI_BUS_ATTRS) await ensureFile(path.join(root, 'bus/pci', f));
    await mkdir(path.join(root, 'bus/pci/drivers'), { recursive: true });
  }
  return { devices: devices.length, pciDevices: pciDevices.sort(), warnings };
}
