// PCIe root of a PCI function, read from sysfs the way the standard attribute defines it: the first
// folder under <sysfs>/devices on the path that <sysfs>/bus/pci/devices/<address> links to
// (e.g. devices/pci0000:00/0000:00:03.0/0000:81:00.0 → "pci0000:00").
import { readlinkSync } from 'node:fs';
import path from 'node:path';

/** A cached reader; undefined when the link is missing or does not lead into devices/pci*. */
export function pcieRootReader(sysfsRoot: string): (pciAddress: string) => string | undefined {
  const cache = new Map<string, string | undefined>();
  return (addr) => {
    if (cache.has(addr)) return cache.get(addr);
    let root: string | undefined;
    try {
      const link = path.join(sysfsRoot, 'bus/pci/devices', addr);
      const target = path.resolve(path.dirname(link), readlinkSync(link));
      const rel = path.relative(path.resolve(sysfsRoot), target).split(path.sep);
      if (rel[0] === 'devices' && rel[1]?.startsWith('pci') && rel[rel.length - 1] === addr) root = rel[1];
    } catch {
      root = undefined;
    }
    cache.set(addr, root);
    return root;
  };
}
