// SR-IOV in the fake kernel (kernel.ts): sriov_numvfs, VF creation and teardown, function removal,
// and what removing or unbinding a function takes from a VM (for the witness).
import { readlink, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { probe, unbind } from './kernel-binding.js';
import { createFunctionDir } from './kernel-build.js';
import { KernelError } from './kernel-error.js';
import { groupOf, leaveGroup } from './kernel-iommu.js';
import { mdevRemove, mdevsOn } from './kernel-mdev.js';
import { vportsOn } from './kernel-npiv.js';
import { exists, formatBdf, link, list, parseBdf, readTrim, UUID_RE } from './kernel-tree.js';
import { i915AfterDisable, i915BeforeEnable } from './intel-iov.js';
import type { FakeKernel, WriteOptions } from './kernel.js';
import { resetVfStates } from './netlink.js';
import type { WriteGate } from './vfio.js';

/**
 * What unbinding or removing the function takes from a VM, as Linux does it: the function, its
 * mdevs (the parent driver unregisters them), its vports (the FC host goes) and, for a PF, its VFs
 * with theirs (PF drivers disable SR-IOV on remove). The fake's unbind keeps mdevs and VFs; the
 * witness counts them all the same.
 */
export async function takesWith(k: FakeKernel, bdf: string, dir: string): Promise<string[]> {
  return [bdf, ...(await mdevsOn(k, dir)), ...(await vportsOn(k, dir)), ...(await vfsWithMdevs(k, dir))];
}

/** The PF's VFs and the mdevs on them. */
export async function vfsWithMdevs(k: FakeKernel, pfDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const { bdf: vf } of await virtfns(k, pfDir)) {
    const vfDir = await k.functionDir(vf).catch(() => undefined);
    out.push(vf, ...(vfDir ? await mdevsOn(k, vfDir) : []));
  }
  return out;
}

export async function setNumVfs(k: FakeKernel, gate: WriteGate, dir: string, bdf: string, v: string, opts: WriteOptions): Promise<void> {
  if (!/^\d+$/.test(v)) throw new KernelError('EINVAL', `sriov_numvfs takes a number, got ${JSON.stringify(v)}`);
  const n = Number(v);
  const total = Number(await readTrim(path.join(dir, 'sriov_totalvfs')));
  if (n > total) throw new KernelError('ERANGE', `${bdf}: ${n} VFs requested; sriov_totalvfs is ${total}`);
  const current = (await virtfns(k, dir)).length;
  if (n === current) {
    if (!opts.alreadyWritten) await writeFile(path.join(dir, 'sriov_numvfs'), `${n}\n`);
    return;
  }
  const pfDrv = await k.driverOf(bdf);
  if (!pfDrv) throw new KernelError('ENOENT', `${bdf}: no driver bound to device; cannot configure SR-IOV`);
  if ((await k.config()).noSriovConfigure?.includes(pfDrv)) throw new KernelError('ENOENT', `${bdf}: driver ${pfDrv} does not support SR-IOV configuration via sysfs`);
  if (n !== 0 && current !== 0 && !opts.alreadyWritten) throw new KernelError('EBUSY', `${bdf}: ${current} VFs already enabled. Disable before enabling ${n} VFs`);
  if (n !== 0) await i915BeforeEnable(k, dir, n); // i915 prelim_iov: verifies (or auto-provisions) the VF quotas
  // Any change of the VF count takes every VF (and mdevs on them, and conservatively the PF's own).
  await gate.witness([...(await vfsWithMdevs(k, dir)), ...(await mdevsOn(k, dir))]);
  if (n !== 0 && current !== 0) await disableVfs(k, dir);
  if (n === 0) await disableVfs(k, dir);
  if (n === 0) await i915AfterDisable(k, dir);
  else await enableVfs(k, gate, dir, bdf, n);
  resetVfStates(k.root, bdf); // the PF driver's VF settings (MAC, VLAN, ...) start over: netlink.ts
  if (!opts.alreadyWritten) await writeFile(path.join(dir, 'sriov_numvfs'), `${n}\n`);
}

export async function virtfns(k: FakeKernel, dir: string): Promise<{ n: number; bdf: string }[]> {
  const out: { n: number; bdf: string }[] = [];
  for (const e of await list(dir)) {
    const m = /^virtfn(\d+)$/.exec(e);
    if (m) out.push({ n: Number(m[1]), bdf: path.basename(await readlink(path.join(dir, e))) });
  }
  return out.sort((a, b) => a.n - b.n);
}

export async function enableVfs(k: FakeKernel, gate: WriteGate, pfDir: string, pf: string, n: number): Promise<void> {
  const { domain, rid } = parseBdf(pf);
  const offset = Number(await readTrim(path.join(pfDir, 'sriov_offset')));
  const stride = Number(await readTrim(path.join(pfDir, 'sriov_stride')));
  const vfDevice = (await readTrim(path.join(pfDir, 'sriov_vf_device'))) ?? '0000';
  const vendor = (await readTrim(path.join(pfDir, 'vendor')))?.replace(/^0x/, '') ?? '0000';
  const classCode = (await readTrim(path.join(pfDir, 'class')))?.replace(/^0x/, '') ?? '000000';
  const numa = Number((await readTrim(path.join(pfDir, 'numa_node'))) ?? -1);
  const subVendor = (await readTrim(path.join(pfDir, 'subsystem_vendor')))?.replace(/^0x/, '') ?? vendor;
  const subDevice = (await readTrim(path.join(pfDir, 'subsystem_device')))?.replace(/^0x/, '') ?? '0000';
  const autoprobe = (await readTrim(path.join(pfDir, 'sriov_drivers_autoprobe'))) !== '0';
  for (let i = 0; i < n; i++) {
    const vf = formatBdf(domain, rid + offset + i * stride);
    const vfDir = path.join(path.dirname(pfDir), vf);
    if (await exists(vfDir)) throw new KernelError('EEXIST', `VF address ${vf} is taken`);
    const shared = (await k.config()).vfsShareGroup?.includes(pf) ? await groupOf(k, pfDir) : undefined;
    await createFunctionDir(k, vfDir, vf, { vendor, device: vfDevice, classCode, numaNode: numa, subsystemVendor: subVendor, subsystemDevice: subDevice, iommuGroup: shared === undefined ? undefined : Number(shared) });
    await link(pfDir, path.join(vfDir, 'physfn'));
    await link(vfDir, path.join(pfDir, `virtfn${i}`));
    if (autoprobe) await probe(k, gate, vf);
  }
}

export async function disableVfs(k: FakeKernel, pfDir: string): Promise<void> {
  for (const { n, bdf } of await virtfns(k, pfDir)) {
    await destroyFunction(k, bdf);
    await rm(path.join(pfDir, `virtfn${n}`), { force: true });
  }
}

/** Removes a function and everything hanging off it (mdevs, VFs, links, group membership). */
export async function destroyFunction(k: FakeKernel, bdf: string): Promise<void> {
  const dir = await k.functionDir(bdf);
  for (const e of await list(dir)) {
    if (UUID_RE.test(e) && (await exists(path.join(dir, e, 'mdev_type')))) await mdevRemove(k, path.join(dir, e), '1');
  }
  if ((await virtfns(k, dir)).length > 0) await disableVfs(k, dir);
  await unbind(k, bdf);
  await leaveGroup(k, dir, bdf);
  await rm(path.join(k.root, 'bus/pci/devices', bdf), { force: true });
  await rm(path.join(k.root, 'class/mdev_bus', bdf), { force: true });
  for (const h of await list(dir)) {
    if (/^host\d+$/.test(h)) {
      await rm(path.join(k.root, 'class/fc_host', h), { force: true });
      await rm(path.join(k.root, 'class/scsi_host', h), { force: true });
    }
  }
  await rm(dir, { recursive: true, force: true });
}

/** `echo 1 > remove`: hot-unplug of a function (VFs first). */
export async function removeFunction(k: FakeKernel, bdf: string): Promise<void> {
  const dir = await k.functionDir(bdf);
  const physfn = await readlink(path.join(dir, 'physfn')).catch(() => undefined);
  if (physfn) {
    const pfDir = path.resolve(dir, physfn);
    for (const { n, bdf: vf } of await virtfns(k, pfDir)) if (vf === bdf) await rm(path.join(pfDir, `virtfn${n}`), { force: true });
  }
  await destroyFunction(k, bdf);
}
