// Driver binding in the fake kernel (kernel.ts): probe and driver matching (driver_override,
// dynamic and static IDs), sysfs bind/unbind/new_id/remove_id, and bind's side effects (VFIO nodes,
// netdevs, NVIDIA's vendor VFIO).
import { mkdir, readlink, rm } from 'node:fs/promises';
import path from 'node:path';
import { stashDir, writeNetdev } from './kernel-build.js';
import { KernelError } from './kernel-error.js';
import { addVfioNodes, removeVfioNodes } from './kernel-iommu.js';
import { takesWith } from './kernel-sriov.js';
import { BDF_RE, exists, link, list, readTrim, rmRename } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';
import { onBind as nvidiaOnBind, onUnbind as nvidiaOnUnbind } from './nvidia.js';
import type { WriteGate } from './vfio.js';

export async function ids(k: FakeKernel, bdf: string): Promise<string> {
  const dir = await k.functionDir(bdf);
  const v = (await readTrim(path.join(dir, 'vendor')))?.replace(/^0x/, '');
  const d = (await readTrim(path.join(dir, 'device')))?.replace(/^0x/, '');
  return `${v}:${d}`;
}

export async function override(k: FakeKernel, dir: string): Promise<string | undefined> {
  const o = await readTrim(path.join(dir, 'driver_override'));
  return o === undefined || o === '(null)' || o === '' ? undefined : o;
}

/** Which driver a probe would bind, honouring driver_override, or undefined. */
export async function matchDriver(k: FakeKernel, bdf: string): Promise<string | undefined> {
  const dir = await k.functionDir(bdf);
  const o = await override(k, dir);
  let drv: string | undefined;
  if (o !== undefined) drv = o === 'none' ? undefined : o;
  else {
    // Dynamic IDs (new_id) match before a driver's static table, as in Linux's pci_match_device.
    const c = await k.config();
    const id = await ids(k, bdf);
    drv = Object.entries(c.dynamicIds ?? {}).find(([, ids]) => ids.includes(id))?.[0] ?? c.driverIds[id];
  }
  if (drv === undefined || !(await exists(path.join(k.root, 'bus/pci/drivers', drv)))) return undefined;
  return drv;
}

/**
 * Like Linux's pci_device_can_probe(), checked on every probe (not only when VFs are created): a
 * VF of a PF with sriov_drivers_autoprobe=0 is probed only when it has a driver_override.
 */
export async function canProbe(k: FakeKernel, dir: string): Promise<boolean> {
  if (!(await exists(path.join(dir, 'physfn')))) return true;
  if ((await override(k, dir)) !== undefined) return true;
  return (await readTrim(path.join(dir, 'physfn', 'sriov_drivers_autoprobe'))) !== '0';
}

/** `echo BDF > bus/pci/drivers_probe`: binds an unbound function to its matching driver, if any. */
export async function probe(k: FakeKernel, gate: WriteGate, bdf: string): Promise<void> {
  if (!BDF_RE.test(bdf)) throw new KernelError('EINVAL', `drivers_probe: bad address ${JSON.stringify(bdf)}`);
  const fdir = await k.functionDir(bdf);
  if (await k.driverOf(bdf)) return;
  if (!(await canProbe(k, fdir))) return;
  const drv = await matchDriver(k, bdf);
  if (drv && !(await gate.refuseBind(bdf, drv))) await bind(k, bdf, drv);
}

export async function sysfsBind(k: FakeKernel, gate: WriteGate, bdf: string, drv: string): Promise<void> {
  await k.functionDir(bdf);
  if (await k.driverOf(bdf)) throw new KernelError('EBUSY', `${bdf} is already bound to ${await k.driverOf(bdf)}`);
  const dir = await k.functionDir(bdf);
  if (!(await canProbe(k, dir))) throw new KernelError('EIO', `${bdf}: VF of a PF with sriov_drivers_autoprobe=0 and no driver_override cannot be probed`);
  const o = await override(k, dir);
  const c = await k.config();
  const id = await ids(k, bdf);
  const idMatch = c.driverIds[id] === drv || (c.dynamicIds?.[drv] ?? []).includes(id);
  if (o !== undefined ? o !== drv : !idMatch) throw new KernelError('ENODEV', `${drv} does not accept ${bdf}`);
  if (await gate.refuseBind(bdf, drv)) throw new KernelError('EBUSY', `${bdf} is in an IOMMU group a VFIO user holds; ${drv} cannot claim it`);
  await bind(k, bdf, drv);
}

export async function sysfsUnbind(k: FakeKernel, gate: WriteGate, bdf: string, drv: string): Promise<void> {
  await k.functionDir(bdf);
  if ((await k.driverOf(bdf)) !== drv) throw new KernelError('ENODEV', `${bdf} is not bound to ${drv}`);
  await gate.witness(await takesWith(k, bdf, await k.functionDir(bdf)));
  await unbind(k, bdf);
}

export async function newId(k: FakeKernel, gate: WriteGate, v: string, drv: string): Promise<void> {
  const m = /^([0-9a-f]{4}) ([0-9a-f]{4})/i.exec(v);
  if (!m) throw new KernelError('EINVAL', `new_id takes "vvvv dddd", got ${JSON.stringify(v)}`);
  const c = await k.config();
  const key = `${(m[1] as string).toLowerCase()}:${(m[2] as string).toLowerCase()}`;
  c.dynamicIds = { ...(c.dynamicIds ?? {}), [drv]: [...new Set([...(c.dynamicIds?.[drv] ?? []), key])] };
  await k.saveConfig(c);
  for (const bdf of await list(path.join(k.root, 'bus/pci/devices'))) {
    if ((await ids(k, bdf)) === key && !(await k.driverOf(bdf)) && (await override(k, await k.functionDir(bdf))) === undefined && !(await gate.refuseBind(bdf, drv))) await bind(k, bdf, drv);
  }
}

export async function removeId(k: FakeKernel, v: string, drv: string): Promise<void> {
  const m = /^([0-9a-f]{4}) ([0-9a-f]{4})/i.exec(v);
  if (!m) throw new KernelError('EINVAL', `remove_id takes "vvvv dddd", got ${JSON.stringify(v)}`);
  const c = await k.config();
  const key = `${(m[1] as string).toLowerCase()}:${(m[2] as string).toLowerCase()}`;
  if (!(c.dynamicIds?.[drv] ?? []).includes(key)) throw new KernelError('ENODEV', `${drv} has no dynamic ID ${key}`);
  c.dynamicIds = { ...(c.dynamicIds ?? {}), [drv]: (c.dynamicIds?.[drv] ?? []).filter((x) => x !== key) };
  await k.saveConfig(c);
}

/** Binds with every side effect: links, vfio group and cdev nodes, netdevs. */
export async function bind(k: FakeKernel, bdf: string, drv: string): Promise<void> {
  const dir = await k.functionDir(bdf);
  const drvDir = path.join(k.root, 'bus/pci/drivers', drv);
  if (!(await exists(drvDir))) throw new KernelError('ENODEV', `driver ${drv} is not loaded`);
  await link(drvDir, path.join(dir, 'driver'));
  await link(dir, path.join(drvDir, bdf));
  const cfg = await k.config();
  if (drv === 'vfio-pci') await addVfioNodes(k, bdf, dir);
  await nvidiaOnBind(k, bdf, drv);
  if (cfg.netDrivers.includes(drv)) await attachNetdev(k, bdf, dir);
}

export async function attachNetdev(k: FakeKernel, bdf: string, dir: string): Promise<void> {
  const stash = path.join(stashDir(k, bdf), 'net');
  let names = await list(stash);
  if (names.length === 0) {
    // A VF without a recorded name: named after its PF's netdev, like `ens1f0v3`.
    const pf = await readlink(path.join(dir, 'physfn')).catch(() => undefined);
    let base = `eth${bdf.replace(/[:.]/g, '')}`;
    let idx = 0;
    if (pf) {
      const pfDir = path.resolve(dir, pf);
      const pfNet = (await list(path.join(pfDir, 'net')))[0] ?? (await list(path.join(stashDir(k, path.basename(pfDir)), 'net')))[0];
      for (const l of await list(pfDir)) {
        const m = /^virtfn(\d+)$/.exec(l);
        if (m && path.basename(await readlink(path.join(pfDir, l))) === bdf) idx = Number(m[1]);
      }
      if (pfNet) base = `${pfNet}v${idx}`;
    }
    await writeNetdev(k, stash, base, { operstate: 'up' });
    names = [base];
  }
  await rm(path.join(dir, 'net'), { recursive: true, force: true });
  await mkdir(path.join(dir, 'net'), { recursive: true });
  for (const n of names) {
    await rmRename(path.join(stash, n), path.join(dir, 'net', n));
    await link(path.join(dir, 'net', n), path.join(k.root, 'class/net', n));
  }
}

/** Unbinds with every side effect (vfio nodes go when the group has no vfio-pci member left). */
export async function unbind(k: FakeKernel, bdf: string): Promise<void> {
  const dir = await k.functionDir(bdf);
  const drv = await k.driverOf(bdf);
  if (!drv) return;
  await rm(path.join(dir, 'driver'), { force: true });
  await rm(path.join(k.root, 'bus/pci/drivers', drv, bdf), { force: true });
  if (drv === 'vfio-pci') await removeVfioNodes(k, bdf, dir);
  await nvidiaOnUnbind(k, bdf, drv);
  const nets = await list(path.join(dir, 'net'));
  if (nets.length > 0) {
    await mkdir(path.join(stashDir(k, bdf), 'net'), { recursive: true });
    for (const n of nets) {
      await rm(path.join(k.root, 'class/net', n), { force: true });
      await rmRename(path.join(dir, 'net', n), path.join(stashDir(k, bdf), 'net', n));
    }
    await rm(path.join(dir, 'net'), { recursive: true, force: true });
  }
}
