// Generated sysfs trees for the scan fuzzer: PCI functions whose attributes and links are each
// well-formed or hostile (junk bytes, numbers past what the kernel prints, missing, a folder, a
// symlink loop, a dangling link, a FIFO, a file far larger than a sysfs page), and the check of
// what scan() made of them: every well-formed value comes back as written, every hostile one is
// named in that device's errors, and no field carries a value the kernel could not have printed.
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Inventory } from '../../device-plugin/src/model.js';

export type Hostile = 'missing' | 'junk' | 'huge' | 'dir' | 'loop' | 'dangling' | 'fifo' | 'big';
export type AttrCase = { kind: 'good'; value: number } | { kind: Hostile; junk: string };

/** The attributes generated, their format and the inventory field a good value lands in. */
const TEXT_ATTRS = {
  vendor: { fmt: (n: number) => `0x${(n & 0xffff).toString(16).padStart(4, '0')}`, field: 'vendorID', re: /^0x([0-9a-f]{4})$/, required: true },
  device: { fmt: (n: number) => `0x${(n & 0xffff).toString(16).padStart(4, '0')}`, field: 'deviceID', re: /^0x([0-9a-f]{4})$/, required: true },
  class: { fmt: (n: number) => `0x${(n & 0xffffff).toString(16).padStart(6, '0')}`, field: 'classCode', re: /^0x([0-9a-f]{6})$/, required: true },
  numa_node: { fmt: (n: number) => String((n % 9) - 1), field: 'numaNode', re: /^(-1|\d{1,15})$/, required: false },
} as const;
type TextAttr = keyof typeof TEXT_ATTRS;

export interface DeviceCase {
  name: string;
  attrs: Record<TextAttr, AttrCase>;
  /** The iommu_group link: good = a group number, else hostile. */
  group: AttrCase;
  /** The driver link. */
  driver: AttrCase;
}

export interface TreeCase {
  devices: DeviceCase[];
  /** FIFOs may be generated (only where a hang can be killed: a child process). */
  fifos: boolean;
}

function attrCase(fifos: boolean): fc.Arbitrary<AttrCase> {
  const hostile: Hostile[] = ['missing', 'junk', 'huge', 'dir', 'loop', 'dangling', 'big', ...(fifos ? ['fifo' as const] : [])];
  return fc.oneof(
    { weight: 3, arbitrary: fc.nat({ max: 0xffffff }).map((value): AttrCase => ({ kind: 'good', value })) },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...hostile), fc.string({ maxLength: 40, unit: 'binary' })).map(([kind, junk]): AttrCase => ({ kind, junk })) },
  );
}

export function treeCase(fifos: boolean): fc.Arbitrary<TreeCase> {
  const a = attrCase(fifos);
  const dev = fc.record({
    bus: fc.integer({ min: 0, max: 255 }),
    attrs: fc.record({ vendor: a, device: a, class: a, numa_node: a }),
    group: a,
    driver: a,
  });
  return fc.uniqueArray(dev, { minLength: 1, maxLength: 4, selector: (d) => d.bus }).map((ds) => ({
    fifos,
    devices: ds.map((d) => ({ name: `0000:${d.bus.toString(16).padStart(2, '0')}:00.0`, attrs: d.attrs, group: d.group, driver: d.driver })),
  }));
}

function mkfifo(p: string): void {
  const r = spawnSync('mkfifo', [p]);
  if (r.status !== 0) throw new Error(`mkfifo ${p}: ${r.stderr}`);
}

/** Writes one hostile entry at `p` (a file, folder, link or FIFO), `text` being what a good one would hold. */
function writeHostile(p: string, c: AttrCase & { kind: Hostile }): void {
  switch (c.kind) {
    case 'missing':
      return;
    case 'junk':
      writeFileSync(p, Buffer.from(`${c.junk}\n`, 'latin1'));
      return;
    case 'huge':
      writeFileSync(p, '123456789012345678901234567890\n');
      return;
    case 'dir':
      mkdirSync(p);
      return;
    case 'loop':
      symlinkSync(path.basename(p), p);
      return;
    case 'dangling':
      symlinkSync('../nowhere/at/all', p);
      return;
    case 'fifo':
      mkfifo(p);
      return;
    case 'big':
      writeFileSync(p, Buffer.alloc(1 << 20, 0x31));
  }
}

/** Lays the tree out under `root` (a fresh folder). */
export function writeTree(root: string, t: TreeCase): void {
  mkdirSync(path.join(root, 'bus/pci/drivers/vfio-pci'), { recursive: true });
  for (const d of t.devices) {
    const dir = path.join(root, 'bus/pci/devices', d.name);
    mkdirSync(dir, { recursive: true });
    for (const [attr, c] of Object.entries(d.attrs) as [TextAttr, AttrCase][]) {
      const p = path.join(dir, attr);
      if (c.kind === 'good') writeFileSync(p, `${TEXT_ATTRS[attr].fmt(c.value)}\n`);
      else writeHostile(p, c);
    }
    const g = d.group;
    if (g.kind === 'good') {
      const n = g.value % 100;
      mkdirSync(path.join(root, 'kernel/iommu_groups', String(n), 'devices'), { recursive: true });
      const member = path.join(root, 'kernel/iommu_groups', String(n), 'devices', d.name);
      symlinkSync(dir, member);
      symlinkSync(path.join(root, 'kernel/iommu_groups', String(n)), path.join(dir, 'iommu_group'));
    } else if (g.kind === 'huge') {
      symlinkSync('../../../kernel/iommu_groups/123456789012345678901234567890', path.join(dir, 'iommu_group'));
    } else if (g.kind === 'junk') {
      symlinkSync(`../../../kernel/iommu_groups/${g.junk.replace(/[/\0]/g, '_') || '_'}x`, path.join(dir, 'iommu_group'));
    } else if (g.kind !== 'big') {
      writeHostile(path.join(dir, 'iommu_group'), g);
    }
    const dr = d.driver;
    if (dr.kind === 'good') symlinkSync(path.join(root, 'bus/pci/drivers/vfio-pci'), path.join(dir, 'driver'));
    else if (dr.kind === 'dir' || dr.kind === 'fifo' || dr.kind === 'junk') writeHostile(path.join(dir, 'driver'), dr);
  }
}

/** Throws, naming the device and attribute, when scan() did not report the tree faithfully. */
export function checkInventory(t: TreeCase, inv: Inventory): void {
  const fail = (m: string): never => {
    throw new Error(m);
  };
  for (const d of t.devices) {
    const dev = inv.devices.find((x) => x.pciAddress === d.name) ?? fail(`${d.name} missing from the inventory`);
    const errors = dev.errors ?? [];
    const named = (attr: string) => errors.some((e) => e.startsWith(`${attr}:`));
    for (const [attr, c] of Object.entries(d.attrs) as [TextAttr, AttrCase][]) {
      const spec = TEXT_ATTRS[attr];
      const got = (dev as unknown as Record<string, unknown>)[spec.field];
      if (c.kind === 'good') {
        const m = spec.re.exec(spec.fmt(c.value)) as RegExpExecArray;
        const want = attr === 'numa_node' ? (Number(m[1]) >= 0 ? Number(m[1]) : undefined) : m[1];
        if (got !== want) fail(`${d.name}/${attr}: wrote ${spec.fmt(c.value)}, scan reported ${JSON.stringify(got)}`);
        if (named(attr)) fail(`${d.name}/${attr}: well-formed but reported as an error: ${errors.join('; ')}`);
        continue;
      }
      if (c.kind === 'junk' && spec.re.test(Buffer.from(`${c.junk}\n`, 'latin1').toString('utf8').replace(/\n$/, ''))) continue; // junk that happens to be well-formed
      const silent = (c.kind === 'missing' || c.kind === 'dangling') && !spec.required; // a dangling link reads as absent
      if (!silent && !named(attr)) fail(`${d.name}/${attr} (${c.kind}) is not named in the errors: ${JSON.stringify(errors)}`);
      if (got !== undefined && c.kind !== 'junk') fail(`${d.name}/${attr} (${c.kind}) gave a value: ${JSON.stringify(got)}`);
      if (typeof got === 'number' && !Number.isSafeInteger(got)) fail(`${d.name}/${attr}: not an integer the kernel prints: ${got}`);
    }
    if (d.group.kind === 'good') {
      if (dev.iommuGroup !== d.group.value % 100) fail(`${d.name}/iommu_group: wrote ${d.group.value % 100}, scan reported ${dev.iommuGroup}`);
      if (!(dev.iommuGroupMembers ?? []).includes(d.name)) fail(`${d.name}: not a member of its own group ${JSON.stringify(dev.iommuGroupMembers)}`);
    } else if (dev.iommuGroup !== undefined) {
      fail(`${d.name}/iommu_group (${d.group.kind}) gave group ${dev.iommuGroup}`);
    }
    if (d.driver.kind === 'good' && dev.driver !== 'vfio-pci') fail(`${d.name}/driver: reported ${JSON.stringify(dev.driver)}`);
    if (d.driver.kind !== 'good' && dev.driver !== undefined) fail(`${d.name}/driver (${d.driver.kind}) gave driver ${dev.driver}`);
    if (['dir', 'fifo', 'junk'].includes(d.driver.kind) && !named('driver')) fail(`${d.name}/driver (${d.driver.kind}, not a link) is not named in the errors: ${JSON.stringify(errors)}`);
  }
}
