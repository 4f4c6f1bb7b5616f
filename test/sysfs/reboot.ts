// A node reboot on the fake kernel: the kernel's runtime state is lost, files on disk are not.
//
// What a real reboot loses (Linux; each is state the kernel keeps in memory and nothing replays at
// boot unless a tool is configured to, which virtualio is not):
// - every process: VMs let go of their VFIO groups and vports (a reboot first kills them);
// - mdevs: created through `mdev_supported_types/<type>/create`, they live only in the parent
//   driver's memory (persistent ones need mdevctl's definitions, which virtualio does not write);
// - NPIV vports: `vport_create` asks the HBA driver for a virtual port; gone with the driver;
// - SR-IOV VFs: `sriov_numvfs` starts at 0 (PCI_SRIOV_CTRL is reset with the device); the VFs, their
//   MAC/VLAN (held by the PF driver) and the vGPU types written on them go with them;
// - driver bindings: every function is probed at boot by the driver its IDs match; `driver_override`
//   starts empty ("(null)"), the drivers' dynamic IDs (`new_id`) are empty and
//   `sriov_drivers_autoprobe` is 1 again.
// What survives: the hardware (PCI functions, their IDs, `sriov_totalvfs`, FC ports and their
// permanent WWPNs, the mdev types a parent offers) and everything on disk — here, the agent's state
// folder and the kubelet's checkpoint, which the caller keeps.
//
// How: with the writer daemon stopped (so the reboot is not in the next daemon's witness record),
// holders are released and the runtime state is taken apart through the kernel's own operations, in
// the order that never leaves a child without its parent. Not modelled: NVIDIA driver state (vGPU
// types on vendor-VFIO VFs beyond the VFs' removal, MIG GPU instances), which this helper refuses to
// pretend about — it throws when a function has an `nvidia/` folder.
import { readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { readAttr, type FakeKernel } from './kernel.js';

async function list(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}

async function readTrim(p: string): Promise<string | undefined> {
  return (await readAttr(p))?.trim();
}

/** What the reboot took away (for the test's own record). */
export interface RebootReport {
  released: number;
  mdevs: string[];
  vports: string[];
  vfsDisabledOn: string[];
  rebound: { bdf: string; from: string; to: string | undefined }[];
}

/** Takes the fake kernel's runtime state away as a reboot does (see the file comment). The daemon must be stopped. */
export async function rebootKernel(k: FakeKernel): Promise<RebootReport> {
  const root = k.root;
  const report: RebootReport = { released: 0, mdevs: [], vports: [], vfsDisabledOn: [], rebound: [] };
  const pci = path.join(root, 'bus/pci/devices');
  for (const bdf of await list(pci)) {
    if ((await list(path.join(pci, bdf))).includes('nvidia')) throw new Error(`rebootKernel: ${bdf} has NVIDIA driver state, which this reboot model does not cover`);
  }
  // 1. Every process dies: VMs let go.
  const held = k.ownership.holders();
  for (const g of held.groups) k.closeVfio(g.group, g.holder);
  for (const v of held.vports) k.releaseVport(v.wwpn, v.holder);
  report.released = held.groups.length + held.vports.length;
  // 2. mdevs and vports (children of functions) go.
  for (const uuid of await list(path.join(root, 'bus/mdev/devices'))) {
    await k.write(`bus/mdev/devices/${uuid}/remove`, '1');
    report.mdevs.push(uuid);
  }
  for (const v of await list(path.join(root, 'class/fc_vports'))) {
    const attrs = path.join(root, 'class/fc_vports', v);
    const wwpn = (await readTrim(path.join(attrs, 'port_name')))?.replace(/^0x/, '');
    const wwnn = (await readTrim(path.join(attrs, 'node_name')))?.replace(/^0x/, '');
    if (!wwpn || !wwnn) continue;
    // The parent FC host: the vport's folder sits under it (<host>/vport-N:0-K).
    const vdir = path.dirname(path.dirname(path.resolve(path.dirname(path.join(root, 'class/fc_vports', v)), await readlink(path.join(root, 'class/fc_vports', v)))));
    const host = path.basename(path.dirname(vdir));
    await k.write(`class/fc_host/${host}/vport_delete`, `${wwpn}:${wwnn}`);
    report.vports.push(wwpn);
  }
  // 3. SR-IOV off on every PF.
  for (const bdf of await list(pci)) {
    const n = await readTrim(path.join(pci, bdf, 'sriov_numvfs'));
    if (n !== undefined && n !== '0') {
      await k.write(`bus/pci/devices/${bdf}/sriov_numvfs`, '0');
      report.vfsDisabledOn.push(bdf);
    }
  }
  // 4. Boot-time probing: no overrides, no dynamic IDs, autoprobe on, each function on the driver its IDs match.
  const c = await k.config();
  delete c.dynamicIds;
  await k.saveConfig(c);
  for (const bdf of await list(pci)) {
    const dir = path.join(pci, bdf);
    if ((await readTrim(path.join(dir, 'sriov_drivers_autoprobe'))) === '0') await k.write(`bus/pci/devices/${bdf}/sriov_drivers_autoprobe`, '1');
    const override = await readTrim(path.join(dir, 'driver_override'));
    if (override !== undefined && override !== '(null)') await k.write(`bus/pci/devices/${bdf}/driver_override`, '\n');
    const vendor = (await readTrim(path.join(dir, 'vendor')))?.replace(/^0x/, '');
    const device = (await readTrim(path.join(dir, 'device')))?.replace(/^0x/, '');
    const boot = c.driverIds[`${vendor}:${device}`];
    const now = await k.driverOf(bdf);
    if (now === boot) continue;
    if (now) await k.write(`bus/pci/drivers/${now}/unbind`, bdf);
    if (boot) await k.write('bus/pci/drivers_probe', bdf);
    report.rebound.push({ bdf, from: now ?? '(none)', to: await k.driverOf(bdf) });
  }
  return report;
}
