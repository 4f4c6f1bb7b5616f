// The fake kernel's builders (kernel.ts): a PCI function folder with its attributes, SR-IOV
// capability, netdev, FC host, NVMe controller and mdev types, as FakeKernel.addFunction makes it.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bind } from './kernel-binding.js';
import { joinGroup, newIommuGroup } from './kernel-iommu.js';
import { MDEV_CAPACITY_REL, recountMdevTypes, type MdevCapacityModel } from './kernel-mdev.js';
import { link, parseBdf, touch, wwnAttr } from './kernel-tree.js';
import type { FakeKernel } from './kernel.js';

/** One PCI function for {@link FakeKernel.addFunction}. */
export interface FunctionSpec {
  address: string;
  vendor: string;
  device: string;
  /** 6 hex digits, e.g. `020000`. */
  classCode: string;
  driver?: string;
  /** Default -1 (unknown). */
  numaNode?: number;
  /** An existing group to join, or undefined for a new group of its own. */
  iommuGroup?: number;
  subsystemVendor?: string;
  subsystemDevice?: string;
  /**
   * SR-IOV capability. `acs: false` puts the VFs in the PF's IOMMU group (no ACS between them and
   * the PF, e.g. a root-complex integrated PF); default: each VF in a group of its own, what Linux
   * did for igb and NVMe VFs behind a root port with ACS in test/kernel.
   */
  sriov?: { totalVFs: number; vfDevice: string; offset?: number; stride?: number; acs?: boolean };
  /** Netdev of the function (NIC drivers); present while bound to a net driver. */
  netdev?: { name: string; operstate?: string; address?: string };
  fcHost?: { host: number; wwpn: string; wwnn: string; portState?: string; maxNPIVVports: number };
  nvme?: { name: string; model: string; serial: string };
  mdevTypes?: { id: string; name: string; availableInstances: number; deviceAPI?: string; units?: number }[];
  /**
   * The parent's shared mdev capacity: every type takes `units` (default 1) of `units` in total, and
   * `available_instances` of each type is the free units divided by the type's (the sample drivers:
   * torvalds/linux samples/vfio-mdev/mtty.c `available_ports / nr_ports`, mbochs.c
   * `mbochs_avail_mbytes / type->mbytes`; NVIDIA vGPU framebuffer). `exclusive`: once an instance of
   * one type exists, every other type shows 0 (NVIDIA time-sliced vGPU: one type per physical GPU).
   * Absent: each type counts down on its own (the older model).
   */
  mdevCapacity?: { units: number; exclusive?: boolean };
}


/** Adds one PCI function (and binds it to `spec.driver`, loading that module). Returns its folder. */
export async function addFunction(k: FakeKernel, spec: FunctionSpec): Promise<string> {
  const [domain, bus] = spec.address.split(':');
  parseBdf(spec.address);
  const dir = path.join(k.root, 'devices', `pci${domain}:${bus}`, spec.address);
  await createFunctionDir(k, dir, spec.address, {
    vendor: spec.vendor,
    device: spec.device,
    classCode: spec.classCode,
    numaNode: spec.numaNode ?? -1,
    subsystemVendor: spec.subsystemVendor ?? spec.vendor,
    subsystemDevice: spec.subsystemDevice ?? '0000',
    iommuGroup: spec.iommuGroup,
  });
  if (spec.sriov) {
    await writeFile(path.join(dir, 'sriov_totalvfs'), `${spec.sriov.totalVFs}\n`);
    await writeFile(path.join(dir, 'sriov_numvfs'), '0\n');
    await writeFile(path.join(dir, 'sriov_drivers_autoprobe'), '1\n');
    await writeFile(path.join(dir, 'sriov_offset'), `${spec.sriov.offset ?? 1}\n`);
    await writeFile(path.join(dir, 'sriov_stride'), `${spec.sriov.stride ?? 1}\n`);
    await writeFile(path.join(dir, 'sriov_vf_device'), `${spec.sriov.vfDevice}\n`);
    if (spec.sriov.acs === false) {
      const c = await k.config();
      await k.saveConfig({ ...c, vfsShareGroup: [...(c.vfsShareGroup ?? []), spec.address] });
    }
  }
  if (spec.netdev) {
    // Kept in a stash until a net driver binds, like a netdev that exists only while bound.
    await writeNetdev(k, path.join(stashDir(k, spec.address), 'net'), spec.netdev.name, spec.netdev);
  }
  if (spec.fcHost) {
    const h = `host${spec.fcHost.host}`;
    const fc = path.join(dir, h, 'fc_host', h);
    await mkdir(fc, { recursive: true });
    await writeFile(path.join(fc, 'port_name'), wwnAttr(spec.fcHost.wwpn));
    await writeFile(path.join(fc, 'node_name'), wwnAttr(spec.fcHost.wwnn));
    await writeFile(path.join(fc, 'port_state'), `${spec.fcHost.portState ?? 'Online'}\n`);
    await writeFile(path.join(fc, 'port_type'), 'NPort (fabric via point-to-point)\n');
    await writeFile(path.join(fc, 'max_npiv_vports'), `${spec.fcHost.maxNPIVVports}\n`);
    await writeFile(path.join(fc, 'npiv_vports_inuse'), '0\n');
    await touch(path.join(fc, 'vport_create'));
    await touch(path.join(fc, 'vport_delete'));
    await mkdir(path.join(dir, h, 'scsi_host', h), { recursive: true });
    await link(fc, path.join(k.root, 'class/fc_host', h));
    await link(path.join(dir, h, 'scsi_host', h), path.join(k.root, 'class/scsi_host', h));
  }
  if (spec.nvme) {
    const n = path.join(dir, 'nvme', spec.nvme.name);
    await mkdir(n, { recursive: true });
    await writeFile(path.join(n, 'model'), `${spec.nvme.model.padEnd(40)}\n`);
    await writeFile(path.join(n, 'serial'), `${spec.nvme.serial.padEnd(20)}\n`);
    await writeFile(path.join(n, 'transport'), 'pcie\n');
    await writeFile(path.join(n, 'address'), `${spec.address}\n`);
    await link(dir, path.join(n, 'device'));
    await link(n, path.join(k.root, 'class/nvme', spec.nvme.name));
  }
  if (spec.mdevTypes) {
    for (const t of spec.mdevTypes) {
      const td = path.join(dir, 'mdev_supported_types', t.id);
      await mkdir(path.join(td, 'devices'), { recursive: true });
      await writeFile(path.join(td, 'name'), `${t.name}\n`);
      await writeFile(path.join(td, 'available_instances'), `${t.availableInstances}\n`);
      await writeFile(path.join(td, 'device_api'), `${t.deviceAPI ?? 'vfio-pci'}\n`);
      await writeFile(path.join(td, 'description'), `num_heads=4, frl_config=60\n`);
      await touch(path.join(td, 'create'));
    }
    await link(dir, path.join(k.root, 'class/mdev_bus', spec.address));
    if (spec.mdevCapacity) {
      const model: MdevCapacityModel = { units: spec.mdevCapacity.units, exclusive: spec.mdevCapacity.exclusive ?? false, types: Object.fromEntries(spec.mdevTypes.map((t) => [t.id, t.units ?? 1])) };
      await mkdir(path.join(k.root, MDEV_CAPACITY_REL), { recursive: true });
      await writeFile(path.join(k.root, MDEV_CAPACITY_REL, `${spec.address}.json`), JSON.stringify(model));
      await recountMdevTypes(k, dir);
    }
  }
  if (spec.driver) {
    await k.loadModule(spec.driver);
    if (spec.driver !== 'vfio-pci') {
      // The driver that bound at boot claims this ID (its module alias table), so a re-probe
      // after clearing driver_override brings it back.
      const c = await k.config();
      const key = `${spec.vendor}:${spec.device}`;
      if (!c.driverIds[key]) {
        c.driverIds[key] = spec.driver;
        await k.saveConfig(c);
      }
    }
    await bind(k, spec.address, spec.driver);
  }
  return dir;
}

export function stashDir(k: FakeKernel, bdf: string): string {
  return path.join(k.root, '.fake-kernel/stash', bdf);
}

export async function writeNetdev(k: FakeKernel, netDir: string, name: string, o: { operstate?: string; address?: string }): Promise<void> {
  const d = path.join(netDir, name);
  await mkdir(d, { recursive: true });
  await writeFile(path.join(d, 'operstate'), `${o.operstate ?? 'up'}\n`);
  await writeFile(path.join(d, 'address'), `${o.address ?? '02:00:00:00:00:01'}\n`);
  await writeFile(path.join(d, 'mtu'), '1500\n');
}

export async function createFunctionDir(
  k: FakeKernel,
  dir: string,
  bdf: string,
  f: { vendor: string; device: string; classCode: string; numaNode: number; subsystemVendor: string; subsystemDevice: string; iommuGroup?: number | undefined },
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const attrs: Record<string, string> = {
    vendor: `0x${f.vendor}\n`,
    device: `0x${f.device}\n`,
    class: `0x${f.classCode}\n`,
    subsystem_vendor: `0x${f.subsystemVendor}\n`,
    subsystem_device: `0x${f.subsystemDevice}\n`,
    revision: '0x00\n',
    numa_node: `${f.numaNode}\n`,
    driver_override: '(null)\n',
    enable: '1\n',
    uevent: `PCI_CLASS=${f.classCode.toUpperCase().replace(/^0/, '')}\nPCI_ID=${f.vendor.toUpperCase()}:${f.device.toUpperCase()}\nPCI_SLOT_NAME=${bdf}\n`,
  };
  for (const [name, v] of Object.entries(attrs)) await writeFile(path.join(dir, name), v);
  await touch(path.join(dir, 'remove'));
  await link(dir, path.join(k.root, 'bus/pci/devices', bdf));
  const group = f.iommuGroup ?? (await newIommuGroup(k));
  await joinGroup(k, dir, bdf, group);
}
