// Mediated devices in the fake kernel (kernel.ts): mdev create/remove on a parent's types and the
// parent's `available_instances` (a shared capacity model, or one count per type).
import { mkdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { KernelError } from './kernel-error.js';
import { groupOf, joinGroup, leaveGroup, newIommuGroup, nextVfioCdev } from './kernel-iommu.js';
import { exists, link, list, readTrim, touch, UUID_RE } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';

export const MDEV_CAPACITY_REL = '.fake-kernel/mdev-capacity';

/** The shared capacity model of an mdev parent, kept beside the tree (see FunctionSpec.mdevCapacity). */
export interface MdevCapacityModel {
  units: number;
  exclusive: boolean;
  types: Record<string, number>;
}

/** mdev UUIDs on the function at `dir`. */
export async function mdevsOn(k: FakeKernel, dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await list(dir)) if (UUID_RE.test(e) && (await exists(path.join(dir, e, 'mdev_type')))) out.push(e);
  return out;
}

// ---- mediated devices -----------------------------------------------------------------------

export async function mdevCreate(k: FakeKernel, typeDir: string, uuid: string): Promise<void> {
  if (!UUID_RE.test(uuid.toLowerCase())) throw new KernelError('EINVAL', `create takes a UUID, got ${JSON.stringify(uuid)}`);
  const id = uuid.toLowerCase();
  if (await exists(path.join(k.root, 'bus/mdev/devices', id))) throw new KernelError('EEXIST', `mdev ${id} exists`);
  const avail = Number(await readTrim(path.join(typeDir, 'available_instances')));
  const parentDir = path.dirname(path.dirname(typeDir));
  if (!(avail > 0)) {
    // EUSERS is the mdev core's own refusal, for drivers that leave the count to it. A parent with a
    // shared capacity model stands for a driver that counts its own room (get_available), which the
    // core leaves to it: mtty and mbochs refuse in their init with ENOSPC (the real kernel's answer in
    // test/kernel's on-demand DRA scenario, mtty on 6.12).
    const own = await exists(path.join(k.root, MDEV_CAPACITY_REL, `${path.basename(parentDir)}.json`));
    throw new KernelError(own ? 'ENOSPC' : 'EUSERS', `no available instances of ${path.basename(typeDir)}`);
  }
  const mdir = path.join(parentDir, id);
  await mkdir(mdir, { recursive: true });
  await link(typeDir, path.join(mdir, 'mdev_type'));
  await touch(path.join(mdir, 'remove'));
  await writeFile(path.join(mdir, 'uevent'), `MDEV_TYPE=${path.basename(typeDir)}\n`);
  const group = await newIommuGroup(k);
  await joinGroup(k, mdir, id, group);
  await link(mdir, path.join(k.root, 'bus/mdev/devices', id));
  await link(mdir, path.join(typeDir, 'devices', id));
  const parentDrv = await readlink(path.join(parentDir, 'driver')).then((l) => path.basename(l)).catch(() => undefined);
  const mdrv = (parentDrv && (await k.config()).mdevDrivers[parentDrv]) || 'vfio_mdev';
  const mdrvDir = path.join(k.root, 'bus/mdev/drivers', mdrv);
  await mkdir(mdrvDir, { recursive: true });
  await link(mdrvDir, path.join(mdir, 'driver'));
  await link(mdir, path.join(mdrvDir, id));
  await touch(path.join(k.devRoot, 'vfio', String(group)));
  // Every mdev driver registers a vfio device as the mdev probes (vfio_register_emulated_iommu_dev,
  // vfio_init_device), which takes its number from the same IDA as vfio-pci's binds: on Debian's 6.12
  // (test/kernel scenario 15) mtty mdevs created at boot took vfio0 and vfio1 ahead of the PCI functions.
  const cfg = await k.config();
  const n = await nextVfioCdev(k, cfg.vfioCdev);
  await mkdir(path.join(mdir, 'vfio-dev', `vfio${n}`), { recursive: true });
  await writeFile(path.join(mdir, 'vfio-dev', `vfio${n}`, 'dev'), `511:${n}\n`);
  if (cfg.vfioCdev) await touch(path.join(k.devRoot, 'vfio/devices', `vfio${n}`));
  if (!(await recountMdevTypes(k, parentDir))) await writeFile(path.join(typeDir, 'available_instances'), `${avail - 1}\n`);
}

/**
 * With a shared capacity model for the parent at `parentDir`: sets every type's
 * `available_instances` from the units its mdevs take. Returns false when the parent has no model.
 */
export async function recountMdevTypes(k: FakeKernel, parentDir: string): Promise<boolean> {
  const types = path.join(parentDir, 'mdev_supported_types');
  let model: MdevCapacityModel;
  try {
    model = JSON.parse(await readFile(path.join(k.root, MDEV_CAPACITY_REL, `${path.basename(parentDir)}.json`), 'utf8')) as MdevCapacityModel;
  } catch {
    // No model given (a recorded tree): an NVIDIA VF hosts one vGPU of any type (vGPU <= 16 on an
    // SR-IOV card such as the A16: every type of a VF shows 0 once it holds one, 1 again once it is gone).
    if (!(await isNvidiaVf(k, parentDir))) return false;
    model = { units: 1, exclusive: true, types: Object.fromEntries((await list(types)).map((t) => [t, 1])) };
  }
  const used = new Map<string, number>();
  for (const t of Object.keys(model.types)) used.set(t, (await list(path.join(types, t, 'devices'))).length);
  const free = model.units - [...used].reduce((sum, [t, n]) => sum + n * (model.types[t] ?? 1), 0);
  for (const [t, units] of Object.entries(model.types)) {
    const blocked = model.exclusive && [...used].some(([o, n]) => o !== t && n > 0);
    await writeFile(path.join(types, t, 'available_instances'), `${blocked ? 0 : Math.max(0, Math.floor(free / units))}\n`);
  }
  return true;
}

export async function isNvidiaVf(k: FakeKernel, dir: string): Promise<boolean> {
  return (await exists(path.join(dir, 'physfn'))) && (await readTrim(path.join(dir, 'vendor')))?.replace(/^0x/, '') === '10de';
}

export async function mdevRemove(k: FakeKernel, mdir: string, v: string): Promise<void> {
  if (v !== '1') throw new KernelError('EINVAL', `remove takes 1, got ${JSON.stringify(v)}`);
  const id = path.basename(mdir);
  const typeDir = path.resolve(mdir, await readlink(path.join(mdir, 'mdev_type')));
  const g = await groupOf(k, mdir);
  const drvLink = await readlink(path.join(mdir, 'driver')).catch(() => undefined);
  if (drvLink) await rm(path.join(path.resolve(mdir, drvLink), id), { force: true });
  await leaveGroup(k, mdir, id);
  if (g !== undefined) await rm(path.join(k.devRoot, 'vfio', g), { force: true });
  for (const c of await list(path.join(mdir, 'vfio-dev'))) await rm(path.join(k.devRoot, 'vfio/devices', c), { force: true });
  await rm(path.join(k.root, 'bus/mdev/devices', id), { force: true });
  await rm(path.join(typeDir, 'devices', id), { force: true });
  await rm(mdir, { recursive: true, force: true });
  if (await recountMdevTypes(k, path.dirname(path.dirname(typeDir)))) return;
  const avail = Number(await readTrim(path.join(typeDir, 'available_instances')));
  if (Number.isFinite(avail)) await writeFile(path.join(typeDir, 'available_instances'), `${avail + 1}\n`);
}
