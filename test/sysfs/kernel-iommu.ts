// IOMMU groups and VFIO nodes of the fake kernel (kernel.ts): group membership of functions and
// mdevs, `/dev/vfio/<group>` and the vfio cdev entries a VFIO driver's bind creates.
import { mkdir, readlink, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { BDF_RE, exists, link, list, touch } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';

/**
 * The number of a new IOMMU group: the lowest one free, as Linux takes it from an IDA
 * (drivers/iommu/iommu.c iommu_group_alloc: `ida_alloc(&iommu_group_ida, ...)`) and gives back when
 * the group's last device leaves (iommu_group_release: ida_free). A VF gets its group when it is
 * created (`sriov_numvfs`), an mdev when it is created, so after a reboot their numbers follow the
 * order of creation, not the numbers they had.
 */
export async function newIommuGroup(k: FakeKernel): Promise<number> {
  const used = new Set((await list(path.join(k.root, 'kernel/iommu_groups'))).map(Number).filter((n) => Number.isInteger(n)));
  let n = 0;
  while (used.has(n)) n++;
  return n;
}

export async function joinGroup(k: FakeKernel, dir: string, name: string, group: number): Promise<void> {
  const g = path.join(k.root, 'kernel/iommu_groups', String(group));
  await mkdir(path.join(g, 'devices'), { recursive: true });
  await link(g, path.join(dir, 'iommu_group'));
  await link(dir, path.join(g, 'devices', name));
}

export async function leaveGroup(k: FakeKernel, dir: string, name: string): Promise<void> {
  let g: string;
  try {
    g = path.resolve(dir, await readlink(path.join(dir, 'iommu_group')));
  } catch {
    return;
  }
  await rm(path.join(g, 'devices', name), { force: true });
  if ((await list(path.join(g, 'devices'))).length === 0) await rm(g, { recursive: true, force: true });
}

export async function groupOf(k: FakeKernel, dir: string): Promise<string | undefined> {
  try {
    return path.basename(await readlink(path.join(dir, 'iommu_group')));
  } catch {
    return undefined;
  }
}

/**
 * The VFIO side of binding a VFIO driver (vfio-pci, or NVIDIA's vendor VFIO on a VF): the group
 * node and, like Linux 6.x, a `vfio-dev/vfioN` entry in sysfs for every vfio device, while the
 * /dev/vfio/devices/vfioN node exists only with CONFIG_VFIO_DEVICE_CDEV (checked against Debian's
 * 6.12 in test/kernel: entry present, node absent).
 */
export async function addVfioNodes(k: FakeKernel, bdf: string, dir: string): Promise<void> {
  const cfg = await k.config();
  const g = await groupOf(k, dir);
  if (g !== undefined) await touch(path.join(k.devRoot, 'vfio', g));
  const n = await nextVfioCdev(k, cfg.vfioCdev);
  await mkdir(path.join(dir, 'vfio-dev', `vfio${n}`), { recursive: true });
  await writeFile(path.join(dir, 'vfio-dev', `vfio${n}`, 'dev'), `511:${n}\n`);
  if (cfg.vfioCdev) await touch(path.join(k.devRoot, 'vfio/devices', `vfio${n}`));
  void bdf;
}

/** Undoes {@link addVfioNodes}: the group node goes when no other member is a VFIO device. */
export async function removeVfioNodes(k: FakeKernel, bdf: string, dir: string): Promise<void> {
  for (const c of await list(path.join(dir, 'vfio-dev'))) await rm(path.join(k.devRoot, 'vfio/devices', c), { force: true });
  await rm(path.join(dir, 'vfio-dev'), { recursive: true, force: true });
  const g = await groupOf(k, dir);
  if (g === undefined) return;
  for (const m of await list(path.join(k.root, 'kernel/iommu_groups', g, 'devices'))) {
    if (m !== bdf && BDF_RE.test(m) && (await exists(path.join(await k.functionDir(m), 'vfio-dev')))) return;
  }
  await rm(path.join(k.devRoot, 'vfio', g), { force: true });
}

/**
 * The number of a new vfio device: the lowest one free, as Linux takes it from an IDA when the VFIO
 * driver probes (drivers/vfio/vfio_main.c vfio_init_device: `ida_alloc_max(&vfio.device_ida,
 * MINORMASK, ...)`, which is both the `vfioN` name and the cdev minor, drivers/vfio/device_cdev.c
 * vfio_init_device_cdev) and gives back at unbind (ida_free on release). So numbers follow bind
 * order, a freed one is reused by the next bind, and a reboot does not keep them. mdevs take theirs
 * from the same IDA when they are created (kernel-mdev.ts).
 */
export async function nextVfioCdev(k: FakeKernel, withNodes: boolean): Promise<number> {
  const names: string[] = [];
  if (withNodes) names.push(...(await list(path.join(k.devRoot, 'vfio/devices'))));
  else {
    for (const bdf of await list(path.join(k.root, 'bus/pci/devices'))) names.push(...(await list(path.join(k.root, 'bus/pci/devices', bdf, 'vfio-dev'))));
    for (const id of await list(path.join(k.root, 'bus/mdev/devices'))) names.push(...(await list(path.join(k.root, 'bus/mdev/devices', id, 'vfio-dev'))));
  }
  const used = new Set(names.map((n) => Number(n.replace(/^vfio/, ''))).filter(Number.isInteger));
  let n = 0;
  while (used.has(n)) n++;
  return n;
}
