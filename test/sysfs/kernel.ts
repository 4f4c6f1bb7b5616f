// A fake Linux kernel for tests: builds sysfs trees of synthetic PCI devices in a temp folder and
// reacts to attribute writes the way the kernel does for what virtualio uses (SR-IOV, driver
// binding, vfio, mediated devices, FC NPIV vports). All state lives in the tree itself (links and
// attribute files), so several FakeKernel objects, the kernel daemon and discovery always agree.
//
// Two ways in:
//  * `kernel.write(relPath, value)`: the SysfsWriter port; a refused write rejects with a
//    KernelError carrying the errno the real kernel returns (EBUSY, ERANGE, EINVAL, ENODEV...).
//  * `startKernel(root, devRoot)` (kernel-daemon.ts): watches the tree so an unmodified process that
//    writes real files gets the same behaviour.
//
// The kernel is also the witness of allocation safety (vfio.ts): a VMM holds `/dev/vfio/<N>` open
// (`openVfio`, or test/sysfs/vmm.ts) or a vport (`holdVport`); every destructive write that reaches
// a held device is recorded in `violations` (and `<root>/.fake-kernel/violations.jsonl`), and, like
// Linux, a PCI/mdev one blocks until the holder lets go (the holder is asked to, see 'vfio-request').
// A blocked write leaves the write chain while it waits, so writes to OTHER devices proceed (as in
// Linux, where only the device's own lock is held); writes to the devices it is destroying wait for
// it. Every destructive write applied is logged in `destroyed`. Only writes are witnessed: the
// builder methods (`addFunction`, `bind`, `unbind`) are set-up tools and check nothing.
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, readdir, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { SysfsWriter } from '../../device-plugin/src/sysfs/writer.js';
import { KernelError } from './kernel-error.js';
import { resetVfStates } from './netlink.js';
import { onBind as nvidiaOnBind, onUnbind as nvidiaOnUnbind, writeVgpuType } from './nvidia.js';
import { normalizeWwn, ownership, WriteGate, type Destroyed, type OpenOptions, type Ownership, type Violation, type VfioRequest } from './vfio.js';

export { KernelError } from './kernel-error.js';
export { readViolations, type Destroyed, type OpenOptions, type Violation, type VfioRequest } from './vfio.js';

/** Kernel-wide facts a tree cannot express as sysfs (module alias tables, build options). */
export interface KernelConfig {
  /** `vvvv:dddd` (lower-case hex) → the driver that claims the function when probed. */
  driverIds: Record<string, string>;
  /** The kernel has the VFIO cdev: `/dev/vfio/devices/vfioN` exists (sysfs lists `vfio-dev/vfioN` either way). */
  vfioCdev: boolean;
  /** PFs whose VFs join the PF's IOMMU group (no ACS), see FunctionSpec.sriov.acs. */
  vfsShareGroup?: string[];
  /** Parent driver → the mdev driver its mediated devices bind to. */
  mdevDrivers: Record<string, string>;
  /** Drivers that register a netdev for the functions they bind (NIC drivers). */
  netDrivers: string[];
  /**
   * PF drivers without sriov_configure: `sriov_numvfs` is refused with ENOENT while the PF is bound
   * to one (Linux drivers/pci/iov.c; NVIDIA's `nvidia`, see nvidia.ts).
   */
  noSriovConfigure?: string[];
  /** IDs added with `new_id` (`vvvv:dddd`), by driver, until `remove_id` (Linux's dynamic IDs). */
  dynamicIds?: Record<string, string[]>;
}

/** The defaults: common NIC/GPU/NVMe/FC drivers and their VF drivers. */
export const DEFAULT_CONFIG: KernelConfig = {
  driverIds: {
    '15b3:101d': 'mlx5_core', // ConnectX-6 PF
    '15b3:101e': 'mlx5_core', // ConnectX VF
    '8086:10fb': 'ixgbe', // 82599 PF
    '8086:10ed': 'ixgbevf', // 82599 VF
    '10df:f100': 'lpfc', // Emulex LPe12000 family
    '144d:a824': 'nvme', // Samsung PM173x
  },
  vfioCdev: true,
  mdevDrivers: { nvidia: 'nvidia-vgpu-vfio', i915: 'vfio_mdev' },
  netDrivers: ['mlx5_core', 'ixgbe', 'ixgbevf', 'i40e', 'iavf', 'ice', 'bnxt_en'],
};

const CONFIG_REL = '.fake-kernel/config.json';
const MDEV_CAPACITY_REL = '.fake-kernel/mdev-capacity';
const PCI_DRIVER_FILES = ['bind', 'unbind', 'new_id', 'remove_id'];
const BDF_RE = /^([0-9a-f]{4,5}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])$/;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Attributes whose written value stays readable (the daemon watches them as plain files). */
export const VALUE_ATTRS = ['sriov_numvfs', 'sriov_drivers_autoprobe', 'driver_override'];
/** Value attributes in a function's `nvidia/` folder (NVIDIA vendor VFIO, nvidia.ts). */
export const NVIDIA_VALUE_ATTRS = ['current_vgpu_type'];

async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * An attribute's text, or undefined when it is absent or a FIFO. Tests put a FIFO in place of an
 * attribute to make the agent's write to it block for real; a plain read of it would park a libuv
 * thread in open(2) until some writer comes, which freezes this kernel's queue (and keeps the test
 * process from exiting). Opening with O_NONBLOCK returns at once, and a FIFO is left unread (reading
 * would consume a write meant for the test).
 */
export async function readAttr(p: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(p, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if ((await fh.stat()).isFIFO()) return undefined;
    return await fh.readFile('utf8');
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}

async function readTrim(p: string): Promise<string | undefined> {
  return (await readAttr(p))?.trim();
}

async function list(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

async function link(target: string, at: string): Promise<void> {
  await mkdir(path.dirname(at), { recursive: true });
  await rm(at, { force: true, recursive: false }).catch(() => undefined);
  await symlink(path.relative(path.dirname(at), target) || '.', at);
}

async function touch(p: string, content = ''): Promise<void> {
  await mkdir(path.dirname(p), { recursive: true });
  if (!(await exists(p))) await writeFile(p, content);
}

/** `dddd:bb:dd.f` → routing ID parts. */
function parseBdf(bdf: string): { domain: string; rid: number } {
  const m = BDF_RE.exec(bdf);
  if (!m) throw new KernelError('EINVAL', `bad PCI address ${JSON.stringify(bdf)}`);
  const bus = parseInt(m[2] as string, 16);
  const dev = parseInt(m[3] as string, 16);
  const fn = parseInt(m[4] as string, 10);
  return { domain: m[1] as string, rid: (bus << 8) | (dev << 3) | fn };
}

function formatBdf(domain: string, rid: number): string {
  const bus = (rid >> 8) & 0xff;
  const dev = (rid >> 3) & 0x1f;
  const fn = rid & 7;
  return `${domain}:${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}`;
}

/** `0x%llx` as the FC transport prints WWNs. */
function wwnAttr(hex16: string): string {
  return `0x${BigInt(`0x${hex16}`).toString(16)}\n`;
}

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

/** The shared capacity model of an mdev parent, kept beside the tree (see FunctionSpec.mdevCapacity). */
interface MdevCapacityModel {
  units: number;
  exclusive: boolean;
  types: Record<string, number>;
}

/** Options of {@link FakeKernel.write}. */
export interface WriteOptions {
  /** The device a write is for (the SysfsWriter port's lane); the fake kernel does not need it. */
  lane?: string;
  /**
   * The file already holds the new value (the daemon saw it written): apply the side effects
   * without rewriting the attribute, and apply a non-zero → different non-zero `sriov_numvfs`
   * change as "0 then N", since a coalesced write of 0 in between cannot be told apart.
   */
  alreadyWritten?: boolean;
  /**
   * Called when the write starts to wait: for a holder to let go of a device it destroys, or for
   * another blocked write on the same device. The kernel daemon uses it to move on.
   */
  onBlocked?: () => void;
}

/**
 * The fake kernel over one temp tree: `<root>` plays `/sys`, `<devRoot>` plays `/dev`.
 * Implements {@link SysfsWriter}; writes are serialized.
 */
export class FakeKernel implements SysfsWriter {
  readonly root: string;
  readonly devRoot: string;
  /** Who holds what, and the witness record; shared by every FakeKernel over this root. */
  readonly ownership: Ownership;
  /** Serializes writes and witnesses destructive ones. */
  private readonly gate: WriteGate;

  constructor(root: string, devRoot: string) {
    this.root = root;
    this.devRoot = devRoot;
    this.ownership = ownership(root, devRoot);
    this.gate = new WriteGate(this.ownership, root);
  }

  // ---- VFIO ownership (vfio.ts) ---------------------------------------------------------------

  /** open(/dev/vfio/<group>) by `holder`: ENOENT without the node, EBUSY when it is open already. */
  openVfio(group: number, holder: string, opts?: OpenOptions): Promise<void> {
    return this.ownership.open(group, holder, opts);
  }

  /** The holder closes the group (EBADF when it does not have it open). */
  closeVfio(group: number, holder: string): void {
    this.ownership.close(group, holder);
  }

  /** A VM uses the LUNs of the vport with this WWPN (ENOENT when absent, EBUSY when held). */
  holdVport(wwpn: string, holder: string): Promise<void> {
    return this.ownership.holdVport(wwpn, holder);
  }

  releaseVport(wwpn: string, holder: string): void {
    this.ownership.releaseVport(wwpn, holder);
  }

  /** Destructive writes that reached a held device, in order. */
  get violations(): Violation[] {
    return this.ownership.violations;
  }

  /** Destructive writes applied (violating or not), in order. */
  get destroyed(): Destroyed[] {
    return this.ownership.destroyed;
  }

  /** 'vfio-request': the kernel asks a holder to let go of a group a write is destroying. */
  on(event: 'vfio-request', fn: (r: VfioRequest) => void): this {
    this.ownership.on(event, fn);
    return this;
  }

  off(event: 'vfio-request', fn: (r: VfioRequest) => void): this {
    this.ownership.off(event, fn);
    return this;
  }

  /**
   * Creates the skeleton of an empty machine (bus/pci, iommu_groups, class folders, `/dev/vfio/vfio`,
   * vfio-pci loaded) and saves `config` (merged over {@link DEFAULT_CONFIG}) in the tree.
   */
  static async create(root: string, devRoot: string, config: Partial<KernelConfig> = {}): Promise<FakeKernel> {
    const k = new FakeKernel(root, devRoot);
    for (const d of ['bus/pci/devices', 'bus/pci/drivers', 'bus/mdev/devices', 'kernel/iommu_groups', 'class/net', 'class/fc_host', 'class/scsi_host', 'class/mdev_bus', 'devices']) {
      await mkdir(path.join(root, d), { recursive: true });
    }
    for (const f of ['drivers_probe', 'rescan']) await touch(path.join(root, 'bus/pci', f));
    await touch(path.join(root, 'bus/pci/drivers_autoprobe'), '1\n');
    await touch(path.join(devRoot, 'vfio/vfio'));
    await k.saveConfig({ ...DEFAULT_CONFIG, ...config, driverIds: { ...DEFAULT_CONFIG.driverIds, ...(config.driverIds ?? {}) } });
    await k.loadModule('vfio-pci');
    return k;
  }

  /** The kernel config stored in the tree ({@link DEFAULT_CONFIG} when the tree has none, e.g. a recording). */
  async config(): Promise<KernelConfig> {
    try {
      return JSON.parse(await readFile(path.join(this.root, CONFIG_REL), 'utf8')) as KernelConfig;
    } catch {
      return DEFAULT_CONFIG;
    }
  }

  async saveConfig(c: KernelConfig): Promise<void> {
    await mkdir(path.join(this.root, path.dirname(CONFIG_REL)), { recursive: true });
    await writeFile(path.join(this.root, CONFIG_REL), JSON.stringify(c, null, 2));
  }

  /** `modprobe <driver>`: creates `bus/pci/drivers/<driver>` with bind/unbind/new_id/remove_id. */
  async loadModule(driver: string): Promise<void> {
    const dir = path.join(this.root, 'bus/pci/drivers', driver);
    await mkdir(dir, { recursive: true });
    for (const f of PCI_DRIVER_FILES) await touch(path.join(dir, f));
  }

  // ---- builders -------------------------------------------------------------------------------

  /** Adds one PCI function (and binds it to `spec.driver`, loading that module). Returns its folder. */
  async addFunction(spec: FunctionSpec): Promise<string> {
    const [domain, bus] = spec.address.split(':');
    parseBdf(spec.address);
    const dir = path.join(this.root, 'devices', `pci${domain}:${bus}`, spec.address);
    await this.createFunctionDir(dir, spec.address, {
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
        const c = await this.config();
        await this.saveConfig({ ...c, vfsShareGroup: [...(c.vfsShareGroup ?? []), spec.address] });
      }
    }
    if (spec.netdev) {
      // Kept in a stash until a net driver binds, like a netdev that exists only while bound.
      await this.writeNetdev(path.join(this.stashDir(spec.address), 'net'), spec.netdev.name, spec.netdev);
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
      await link(fc, path.join(this.root, 'class/fc_host', h));
      await link(path.join(dir, h, 'scsi_host', h), path.join(this.root, 'class/scsi_host', h));
    }
    if (spec.nvme) {
      const n = path.join(dir, 'nvme', spec.nvme.name);
      await mkdir(n, { recursive: true });
      await writeFile(path.join(n, 'model'), `${spec.nvme.model.padEnd(40)}\n`);
      await writeFile(path.join(n, 'serial'), `${spec.nvme.serial.padEnd(20)}\n`);
      await writeFile(path.join(n, 'transport'), 'pcie\n');
      await writeFile(path.join(n, 'address'), `${spec.address}\n`);
      await link(dir, path.join(n, 'device'));
      await link(n, path.join(this.root, 'class/nvme', spec.nvme.name));
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
      await link(dir, path.join(this.root, 'class/mdev_bus', spec.address));
      if (spec.mdevCapacity) {
        const model: MdevCapacityModel = { units: spec.mdevCapacity.units, exclusive: spec.mdevCapacity.exclusive ?? false, types: Object.fromEntries(spec.mdevTypes.map((t) => [t.id, t.units ?? 1])) };
        await mkdir(path.join(this.root, MDEV_CAPACITY_REL), { recursive: true });
        await writeFile(path.join(this.root, MDEV_CAPACITY_REL, `${spec.address}.json`), JSON.stringify(model));
        await this.recountMdevTypes(dir);
      }
    }
    if (spec.driver) {
      await this.loadModule(spec.driver);
      if (spec.driver !== 'vfio-pci') {
        // The driver that bound at boot claims this ID (its module alias table), so a re-probe
        // after clearing driver_override brings it back.
        const c = await this.config();
        const key = `${spec.vendor}:${spec.device}`;
        if (!c.driverIds[key]) {
          c.driverIds[key] = spec.driver;
          await this.saveConfig(c);
        }
      }
      await this.bind(spec.address, spec.driver);
    }
    return dir;
  }

  private stashDir(bdf: string): string {
    return path.join(this.root, '.fake-kernel/stash', bdf);
  }

  private async writeNetdev(netDir: string, name: string, o: { operstate?: string; address?: string }): Promise<void> {
    const d = path.join(netDir, name);
    await mkdir(d, { recursive: true });
    await writeFile(path.join(d, 'operstate'), `${o.operstate ?? 'up'}\n`);
    await writeFile(path.join(d, 'address'), `${o.address ?? '02:00:00:00:00:01'}\n`);
    await writeFile(path.join(d, 'mtu'), '1500\n');
  }

  private async createFunctionDir(
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
    for (const [k, v] of Object.entries(attrs)) await writeFile(path.join(dir, k), v);
    await touch(path.join(dir, 'remove'));
    await link(dir, path.join(this.root, 'bus/pci/devices', bdf));
    const group = f.iommuGroup ?? (await this.newIommuGroup());
    await this.joinGroup(dir, bdf, group);
  }

  /** The next unused IOMMU group number. */
  private async newIommuGroup(): Promise<number> {
    const used = (await list(path.join(this.root, 'kernel/iommu_groups'))).map(Number).filter((n) => Number.isInteger(n));
    return used.length === 0 ? 0 : Math.max(...used) + 1;
  }

  private async joinGroup(dir: string, name: string, group: number): Promise<void> {
    const g = path.join(this.root, 'kernel/iommu_groups', String(group));
    await mkdir(path.join(g, 'devices'), { recursive: true });
    await link(g, path.join(dir, 'iommu_group'));
    await link(dir, path.join(g, 'devices', name));
  }

  private async leaveGroup(dir: string, name: string): Promise<void> {
    let g: string;
    try {
      g = path.resolve(dir, await readlink(path.join(dir, 'iommu_group')));
    } catch {
      return;
    }
    await rm(path.join(g, 'devices', name), { force: true });
    if ((await list(path.join(g, 'devices'))).length === 0) await rm(g, { recursive: true, force: true });
  }

  // ---- state queries --------------------------------------------------------------------------

  /** The function's real folder; ENODEV when it does not exist. */
  async functionDir(bdf: string): Promise<string> {
    try {
      return await realpath(path.join(this.root, 'bus/pci/devices', bdf));
    } catch {
      throw new KernelError('ENODEV', `no PCI device ${bdf}`);
    }
  }

  /** Driver bound to the function, or undefined. */
  async driverOf(bdf: string): Promise<string | undefined> {
    try {
      return path.basename(await readlink(path.join(await this.functionDir(bdf), 'driver')));
    } catch {
      return undefined;
    }
  }

  private async groupOf(dir: string): Promise<string | undefined> {
    try {
      return path.basename(await readlink(path.join(dir, 'iommu_group')));
    } catch {
      return undefined;
    }
  }

  // ---- the write entry point ------------------------------------------------------------------

  /**
   * Applies one write to `<root>/<relPath>` with kernel semantics, serialized with every other
   * write. Rejects with a {@link KernelError} where the kernel refuses (the tree is unchanged).
   */
  write(relPath: string, value: string, opts: WriteOptions = {}): Promise<void> {
    return this.gate.run({ path: relPath, value: value.trim(), onBlocked: opts.onBlocked }, () => this.apply(relPath, value, opts));
  }

  /** The witness (WriteGate.witness): every destructive write passes here before it changes the tree. */
  private witness(devices: string[]): Promise<void> {
    return this.gate.witness(devices);
  }

  /** Binding a driver that does not manage DMA into a held group: refused, recorded (WriteGate.refuseBind). */
  private refusedInHeldGroup(bdf: string, drv: string): Promise<boolean> {
    return this.gate.refuseBind(bdf, drv);
  }

  /** mdev UUIDs on the function at `dir`. */
  private async mdevsOn(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const e of await list(dir)) if (UUID_RE.test(e) && (await exists(path.join(dir, e, 'mdev_type')))) out.push(e);
    return out;
  }

  /** WWPNs of the NPIV vports on the function's FC hosts. */
  private async vportsOn(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const h of await list(dir)) {
      if (!/^host\d+$/.test(h)) continue;
      for (const v of await list(path.join(dir, h))) {
        if (!v.startsWith('vport-')) continue;
        const w = normalizeWwn((await readTrim(path.join(dir, h, v, 'fc_vports', v, 'port_name'))) ?? '');
        if (w) out.push(w);
      }
    }
    return out;
  }

  /**
   * What unbinding or removing the function takes from a VM, as Linux does it: the function, its
   * mdevs (the parent driver unregisters them), its vports (the FC host goes) and, for a PF, its VFs
   * with theirs (PF drivers disable SR-IOV on remove). The fake's unbind keeps mdevs and VFs; the
   * witness counts them all the same.
   */
  private async takesWith(bdf: string, dir: string): Promise<string[]> {
    return [bdf, ...(await this.mdevsOn(dir)), ...(await this.vportsOn(dir)), ...(await this.vfsWithMdevs(dir))];
  }

  /** The PF's VFs and the mdevs on them. */
  private async vfsWithMdevs(pfDir: string): Promise<string[]> {
    const out: string[] = [];
    for (const { bdf: vf } of await this.virtfns(pfDir)) {
      const vfDir = await this.functionDir(vf).catch(() => undefined);
      out.push(vf, ...(vfDir ? await this.mdevsOn(vfDir) : []));
    }
    return out;
  }

  private async apply(relPath: string, value: string, opts: WriteOptions): Promise<void> {
    if (path.isAbsolute(relPath) || relPath.split('/').includes('..')) throw new KernelError('EINVAL', `bad path ${relPath}`);
    const abs = path.join(this.root, relPath);
    let file: string;
    try {
      file = path.join(await realpath(path.dirname(abs)), path.basename(abs));
      await stat(file);
    } catch {
      throw new KernelError('ENOENT', `no such attribute ${relPath}`);
    }
    const dir = path.dirname(file);
    const name = path.basename(file);
    const v = value.replace(/\n$/, '');
    const parent = path.basename(path.dirname(dir));

    if (dir === path.join(this.root, 'bus/pci') && name === 'drivers_probe') return this.probe(v.trim());
    if (path.dirname(dir) === path.join(this.root, 'bus/pci/drivers')) {
      const drv = path.basename(dir);
      if (name === 'bind') return this.sysfsBind(v.trim(), drv);
      if (name === 'unbind') return this.sysfsUnbind(v.trim(), drv);
      if (name === 'new_id') return this.newId(v.trim(), drv);
      if (name === 'remove_id') return this.removeId(v.trim(), drv);
    }
    if (parent === 'mdev_supported_types' && name === 'create') return this.mdevCreate(dir, v.trim());
    if (name === 'remove' && UUID_RE.test(path.basename(dir)) && (await exists(path.join(dir, 'mdev_type')))) {
      if (v.trim() === '1') await this.witness([path.basename(dir)]);
      return this.mdevRemove(dir, v.trim());
    }
    if (parent === 'fc_host' && name === 'vport_create') return this.vportCreate(dir, v.trim());
    if (parent === 'fc_host' && name === 'vport_delete') return this.vportDelete(dir, v.trim());
    if (parent === 'fc_vports' && name === 'vport_delete') return this.vportDeleteSelf(dir);

    if (path.basename(dir) === 'nvidia' && name === 'current_vgpu_type' && BDF_RE.test(path.basename(path.dirname(dir)))) {
      return writeVgpuType(this, path.dirname(dir), relPath, v, opts.alreadyWritten === true);
    }
    if (path.basename(dir) === 'nvidia' && name === 'creatable_vgpu_types') throw new KernelError('EACCES', 'creatable_vgpu_types is read-only');
    const bdf = path.basename(dir);
    if (BDF_RE.test(bdf) && (await exists(path.join(dir, 'vendor')))) {
      if (name === 'sriov_numvfs') return this.setNumVfs(dir, bdf, v.trim(), opts);
      if (name === 'sriov_drivers_autoprobe') {
        if (!/^[01]$/.test(v.trim())) throw new KernelError('EINVAL', `sriov_drivers_autoprobe takes 0 or 1, got ${JSON.stringify(v)}`);
        if (!opts.alreadyWritten) await writeFile(file, `${v.trim()}\n`);
        return;
      }
      if (name === 'driver_override') {
        const o = v.trim();
        if (o.length > 255) throw new KernelError('EINVAL', 'driver_override too long');
        if (!opts.alreadyWritten || o === '') await writeFile(file, o === '' ? '(null)\n' : `${o}\n`);
        return;
      }
      if (name === 'remove') {
        if (v.trim() !== '1') return;
        await this.witness(await this.takesWith(bdf, dir));
        return this.removeFunction(bdf);
      }
      if (['vendor', 'device', 'class', 'numa_node', 'iommu_group', 'sriov_totalvfs', 'subsystem_vendor', 'subsystem_device', 'revision'].includes(name)) {
        throw new KernelError('EACCES', `${name} is read-only`);
      }
    }
    if (!opts.alreadyWritten) await writeFile(file, value);
  }

  // ---- binding --------------------------------------------------------------------------------

  private async ids(bdf: string): Promise<string> {
    const dir = await this.functionDir(bdf);
    const v = (await readTrim(path.join(dir, 'vendor')))?.replace(/^0x/, '');
    const d = (await readTrim(path.join(dir, 'device')))?.replace(/^0x/, '');
    return `${v}:${d}`;
  }

  private async override(dir: string): Promise<string | undefined> {
    const o = await readTrim(path.join(dir, 'driver_override'));
    return o === undefined || o === '(null)' || o === '' ? undefined : o;
  }

  /** Which driver a probe would bind, honouring driver_override, or undefined. */
  private async matchDriver(bdf: string): Promise<string | undefined> {
    const dir = await this.functionDir(bdf);
    const o = await this.override(dir);
    let drv: string | undefined;
    if (o !== undefined) drv = o === 'none' ? undefined : o;
    else {
      // Dynamic IDs (new_id) match before a driver's static table, as in Linux's pci_match_device.
      const c = await this.config();
      const id = await this.ids(bdf);
      drv = Object.entries(c.dynamicIds ?? {}).find(([, ids]) => ids.includes(id))?.[0] ?? c.driverIds[id];
    }
    if (drv === undefined || !(await exists(path.join(this.root, 'bus/pci/drivers', drv)))) return undefined;
    return drv;
  }

  /**
   * Like Linux's pci_device_can_probe(), checked on every probe (not only when VFs are created): a
   * VF of a PF with sriov_drivers_autoprobe=0 is probed only when it has a driver_override.
   */
  private async canProbe(dir: string): Promise<boolean> {
    if (!(await exists(path.join(dir, 'physfn')))) return true;
    if ((await this.override(dir)) !== undefined) return true;
    return (await readTrim(path.join(dir, 'physfn', 'sriov_drivers_autoprobe'))) !== '0';
  }

  /** `echo BDF > bus/pci/drivers_probe`: binds an unbound function to its matching driver, if any. */
  private async probe(bdf: string): Promise<void> {
    if (!BDF_RE.test(bdf)) throw new KernelError('EINVAL', `drivers_probe: bad address ${JSON.stringify(bdf)}`);
    const fdir = await this.functionDir(bdf);
    if (await this.driverOf(bdf)) return;
    if (!(await this.canProbe(fdir))) return;
    const drv = await this.matchDriver(bdf);
    if (drv && !(await this.refusedInHeldGroup(bdf, drv))) await this.bind(bdf, drv);
  }

  private async sysfsBind(bdf: string, drv: string): Promise<void> {
    await this.functionDir(bdf);
    if (await this.driverOf(bdf)) throw new KernelError('EBUSY', `${bdf} is already bound to ${await this.driverOf(bdf)}`);
    const dir = await this.functionDir(bdf);
    if (!(await this.canProbe(dir))) throw new KernelError('EIO', `${bdf}: VF of a PF with sriov_drivers_autoprobe=0 and no driver_override cannot be probed`);
    const o = await this.override(dir);
    const c = await this.config();
    const id = await this.ids(bdf);
    const idMatch = c.driverIds[id] === drv || (c.dynamicIds?.[drv] ?? []).includes(id);
    if (o !== undefined ? o !== drv : !idMatch) throw new KernelError('ENODEV', `${drv} does not accept ${bdf}`);
    if (await this.refusedInHeldGroup(bdf, drv)) throw new KernelError('EBUSY', `${bdf} is in an IOMMU group a VFIO user holds; ${drv} cannot claim it`);
    await this.bind(bdf, drv);
  }

  private async sysfsUnbind(bdf: string, drv: string): Promise<void> {
    await this.functionDir(bdf);
    if ((await this.driverOf(bdf)) !== drv) throw new KernelError('ENODEV', `${bdf} is not bound to ${drv}`);
    await this.witness(await this.takesWith(bdf, await this.functionDir(bdf)));
    await this.unbind(bdf);
  }

  private async newId(v: string, drv: string): Promise<void> {
    const m = /^([0-9a-f]{4}) ([0-9a-f]{4})/i.exec(v);
    if (!m) throw new KernelError('EINVAL', `new_id takes "vvvv dddd", got ${JSON.stringify(v)}`);
    const c = await this.config();
    const key = `${(m[1] as string).toLowerCase()}:${(m[2] as string).toLowerCase()}`;
    c.dynamicIds = { ...(c.dynamicIds ?? {}), [drv]: [...new Set([...(c.dynamicIds?.[drv] ?? []), key])] };
    await this.saveConfig(c);
    for (const bdf of await list(path.join(this.root, 'bus/pci/devices'))) {
      if ((await this.ids(bdf)) === key && !(await this.driverOf(bdf)) && (await this.override(await this.functionDir(bdf))) === undefined && !(await this.refusedInHeldGroup(bdf, drv))) await this.bind(bdf, drv);
    }
  }

  private async removeId(v: string, drv: string): Promise<void> {
    const m = /^([0-9a-f]{4}) ([0-9a-f]{4})/i.exec(v);
    if (!m) throw new KernelError('EINVAL', `remove_id takes "vvvv dddd", got ${JSON.stringify(v)}`);
    const c = await this.config();
    const key = `${(m[1] as string).toLowerCase()}:${(m[2] as string).toLowerCase()}`;
    if (!(c.dynamicIds?.[drv] ?? []).includes(key)) throw new KernelError('ENODEV', `${drv} has no dynamic ID ${key}`);
    c.dynamicIds = { ...(c.dynamicIds ?? {}), [drv]: (c.dynamicIds?.[drv] ?? []).filter((x) => x !== key) };
    await this.saveConfig(c);
  }

  /** Binds with every side effect: links, vfio group and cdev nodes, netdevs. */
  async bind(bdf: string, drv: string): Promise<void> {
    const dir = await this.functionDir(bdf);
    const drvDir = path.join(this.root, 'bus/pci/drivers', drv);
    if (!(await exists(drvDir))) throw new KernelError('ENODEV', `driver ${drv} is not loaded`);
    await link(drvDir, path.join(dir, 'driver'));
    await link(dir, path.join(drvDir, bdf));
    const cfg = await this.config();
    if (drv === 'vfio-pci') await this.addVfioNodes(bdf, dir);
    await nvidiaOnBind(this, bdf, drv);
    if (cfg.netDrivers.includes(drv)) await this.attachNetdev(bdf, dir);
  }

  /**
   * The VFIO side of binding a VFIO driver (vfio-pci, or NVIDIA's vendor VFIO on a VF): the group
   * node and, like Linux 6.x, a `vfio-dev/vfioN` entry in sysfs for every vfio device, while the
   * /dev/vfio/devices/vfioN node exists only with CONFIG_VFIO_DEVICE_CDEV (checked against Debian's
   * 6.12 in test/kernel: entry present, node absent).
   */
  async addVfioNodes(bdf: string, dir: string): Promise<void> {
    const cfg = await this.config();
    const g = await this.groupOf(dir);
    if (g !== undefined) await touch(path.join(this.devRoot, 'vfio', g));
    const n = await this.nextVfioCdev(cfg.vfioCdev);
    await mkdir(path.join(dir, 'vfio-dev', `vfio${n}`), { recursive: true });
    await writeFile(path.join(dir, 'vfio-dev', `vfio${n}`, 'dev'), `511:${n}\n`);
    if (cfg.vfioCdev) await touch(path.join(this.devRoot, 'vfio/devices', `vfio${n}`));
    void bdf;
  }

  /** Undoes {@link addVfioNodes}: the group node goes when no other member is a VFIO device. */
  async removeVfioNodes(bdf: string, dir: string): Promise<void> {
    for (const c of await list(path.join(dir, 'vfio-dev'))) await rm(path.join(this.devRoot, 'vfio/devices', c), { force: true });
    await rm(path.join(dir, 'vfio-dev'), { recursive: true, force: true });
    const g = await this.groupOf(dir);
    if (g === undefined) return;
    for (const m of await list(path.join(this.root, 'kernel/iommu_groups', g, 'devices'))) {
      if (m !== bdf && BDF_RE.test(m) && (await exists(path.join(await this.functionDir(m), 'vfio-dev')))) return;
    }
    await rm(path.join(this.devRoot, 'vfio', g), { force: true });
  }

  /**
   * The number of a new vfio device: the lowest one free, as Linux takes it from an IDA when the VFIO
   * driver probes (drivers/vfio/vfio_main.c vfio_init_device: `ida_alloc_max(&vfio.device_ida,
   * MINORMASK, ...)`, which is both the `vfioN` name and the cdev minor, drivers/vfio/device_cdev.c
   * vfio_init_device_cdev) and gives back at unbind (ida_free on release). So numbers follow bind
   * order, a freed one is reused by the next bind, and a reboot does not keep them.
   */
  private async nextVfioCdev(withNodes: boolean): Promise<number> {
    const names: string[] = [];
    if (withNodes) names.push(...(await list(path.join(this.devRoot, 'vfio/devices'))));
    else for (const bdf of await list(path.join(this.root, 'bus/pci/devices'))) names.push(...(await list(path.join(this.root, 'bus/pci/devices', bdf, 'vfio-dev'))));
    const used = new Set(names.map((n) => Number(n.replace(/^vfio/, ''))).filter(Number.isInteger));
    let n = 0;
    while (used.has(n)) n++;
    return n;
  }

  private async attachNetdev(bdf: string, dir: string): Promise<void> {
    const stash = path.join(this.stashDir(bdf), 'net');
    let names = await list(stash);
    if (names.length === 0) {
      // A VF without a recorded name: named after its PF's netdev, like `ens1f0v3`.
      const pf = await readlink(path.join(dir, 'physfn')).catch(() => undefined);
      let base = `eth${bdf.replace(/[:.]/g, '')}`;
      let idx = 0;
      if (pf) {
        const pfDir = path.resolve(dir, pf);
        const pfNet = (await list(path.join(pfDir, 'net')))[0] ?? (await list(path.join(this.stashDir(path.basename(pfDir)), 'net')))[0];
        for (const l of await list(pfDir)) {
          const m = /^virtfn(\d+)$/.exec(l);
          if (m && path.basename(await readlink(path.join(pfDir, l))) === bdf) idx = Number(m[1]);
        }
        if (pfNet) base = `${pfNet}v${idx}`;
      }
      await this.writeNetdev(stash, base, { operstate: 'up' });
      names = [base];
    }
    await rm(path.join(dir, 'net'), { recursive: true, force: true });
    await mkdir(path.join(dir, 'net'), { recursive: true });
    for (const n of names) {
      await rmRename(path.join(stash, n), path.join(dir, 'net', n));
      await link(path.join(dir, 'net', n), path.join(this.root, 'class/net', n));
    }
  }

  /** Unbinds with every side effect (vfio nodes go when the group has no vfio-pci member left). */
  async unbind(bdf: string): Promise<void> {
    const dir = await this.functionDir(bdf);
    const drv = await this.driverOf(bdf);
    if (!drv) return;
    await rm(path.join(dir, 'driver'), { force: true });
    await rm(path.join(this.root, 'bus/pci/drivers', drv, bdf), { force: true });
    if (drv === 'vfio-pci') await this.removeVfioNodes(bdf, dir);
    await nvidiaOnUnbind(this, bdf, drv);
    const nets = await list(path.join(dir, 'net'));
    if (nets.length > 0) {
      await mkdir(path.join(this.stashDir(bdf), 'net'), { recursive: true });
      for (const n of nets) {
        await rm(path.join(this.root, 'class/net', n), { force: true });
        await rmRename(path.join(dir, 'net', n), path.join(this.stashDir(bdf), 'net', n));
      }
      await rm(path.join(dir, 'net'), { recursive: true, force: true });
    }
  }

  // ---- SR-IOV ---------------------------------------------------------------------------------

  private async setNumVfs(dir: string, bdf: string, v: string, opts: WriteOptions): Promise<void> {
    if (!/^\d+$/.test(v)) throw new KernelError('EINVAL', `sriov_numvfs takes a number, got ${JSON.stringify(v)}`);
    const n = Number(v);
    const total = Number(await readTrim(path.join(dir, 'sriov_totalvfs')));
    if (n > total) throw new KernelError('ERANGE', `${bdf}: ${n} VFs requested; sriov_totalvfs is ${total}`);
    const current = (await this.virtfns(dir)).length;
    if (n === current) {
      if (!opts.alreadyWritten) await writeFile(path.join(dir, 'sriov_numvfs'), `${n}\n`);
      return;
    }
    const pfDrv = await this.driverOf(bdf);
    if (!pfDrv) throw new KernelError('ENOENT', `${bdf}: no driver bound to device; cannot configure SR-IOV`);
    if ((await this.config()).noSriovConfigure?.includes(pfDrv)) throw new KernelError('ENOENT', `${bdf}: driver ${pfDrv} does not support SR-IOV configuration via sysfs`);
    if (n !== 0 && current !== 0 && !opts.alreadyWritten) throw new KernelError('EBUSY', `${bdf}: ${current} VFs already enabled. Disable before enabling ${n} VFs`);
    // Any change of the VF count takes every VF (and mdevs on them, and conservatively the PF's own).
    await this.witness([...(await this.vfsWithMdevs(dir)), ...(await this.mdevsOn(dir))]);
    if (n !== 0 && current !== 0) await this.disableVfs(dir);
    if (n === 0) await this.disableVfs(dir);
    else await this.enableVfs(dir, bdf, n);
    resetVfStates(this.root, bdf); // the PF driver's VF settings (MAC, VLAN, ...) start over: netlink.ts
    if (!opts.alreadyWritten) await writeFile(path.join(dir, 'sriov_numvfs'), `${n}\n`);
  }

  private async virtfns(dir: string): Promise<{ n: number; bdf: string }[]> {
    const out: { n: number; bdf: string }[] = [];
    for (const e of await list(dir)) {
      const m = /^virtfn(\d+)$/.exec(e);
      if (m) out.push({ n: Number(m[1]), bdf: path.basename(await readlink(path.join(dir, e))) });
    }
    return out.sort((a, b) => a.n - b.n);
  }

  private async enableVfs(pfDir: string, pf: string, n: number): Promise<void> {
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
      const shared = (await this.config()).vfsShareGroup?.includes(pf) ? await this.groupOf(pfDir) : undefined;
      await this.createFunctionDir(vfDir, vf, { vendor, device: vfDevice, classCode, numaNode: numa, subsystemVendor: subVendor, subsystemDevice: subDevice, iommuGroup: shared === undefined ? undefined : Number(shared) });
      await link(pfDir, path.join(vfDir, 'physfn'));
      await link(vfDir, path.join(pfDir, `virtfn${i}`));
      if (autoprobe) await this.probe(vf);
    }
  }

  private async disableVfs(pfDir: string): Promise<void> {
    for (const { n, bdf } of await this.virtfns(pfDir)) {
      await this.destroyFunction(bdf);
      await rm(path.join(pfDir, `virtfn${n}`), { force: true });
    }
  }

  /** Removes a function and everything hanging off it (mdevs, VFs, links, group membership). */
  private async destroyFunction(bdf: string): Promise<void> {
    const dir = await this.functionDir(bdf);
    for (const e of await list(dir)) {
      if (UUID_RE.test(e) && (await exists(path.join(dir, e, 'mdev_type')))) await this.mdevRemove(path.join(dir, e), '1');
    }
    if ((await this.virtfns(dir)).length > 0) await this.disableVfs(dir);
    await this.unbind(bdf);
    await this.leaveGroup(dir, bdf);
    await rm(path.join(this.root, 'bus/pci/devices', bdf), { force: true });
    await rm(path.join(this.root, 'class/mdev_bus', bdf), { force: true });
    for (const h of await list(dir)) {
      if (/^host\d+$/.test(h)) {
        await rm(path.join(this.root, 'class/fc_host', h), { force: true });
        await rm(path.join(this.root, 'class/scsi_host', h), { force: true });
      }
    }
    await rm(dir, { recursive: true, force: true });
  }

  /** `echo 1 > remove`: hot-unplug of a function (VFs first). */
  private async removeFunction(bdf: string): Promise<void> {
    const dir = await this.functionDir(bdf);
    const physfn = await readlink(path.join(dir, 'physfn')).catch(() => undefined);
    if (physfn) {
      const pfDir = path.resolve(dir, physfn);
      for (const { n, bdf: vf } of await this.virtfns(pfDir)) if (vf === bdf) await rm(path.join(pfDir, `virtfn${n}`), { force: true });
    }
    await this.destroyFunction(bdf);
  }

  // ---- mediated devices -----------------------------------------------------------------------

  private async mdevCreate(typeDir: string, uuid: string): Promise<void> {
    if (!UUID_RE.test(uuid.toLowerCase())) throw new KernelError('EINVAL', `create takes a UUID, got ${JSON.stringify(uuid)}`);
    const id = uuid.toLowerCase();
    if (await exists(path.join(this.root, 'bus/mdev/devices', id))) throw new KernelError('EEXIST', `mdev ${id} exists`);
    const avail = Number(await readTrim(path.join(typeDir, 'available_instances')));
    if (!(avail > 0)) throw new KernelError('EUSERS', `no available instances of ${path.basename(typeDir)}`);
    const parentDir = path.dirname(path.dirname(typeDir));
    const mdir = path.join(parentDir, id);
    await mkdir(mdir, { recursive: true });
    await link(typeDir, path.join(mdir, 'mdev_type'));
    await touch(path.join(mdir, 'remove'));
    await writeFile(path.join(mdir, 'uevent'), `MDEV_TYPE=${path.basename(typeDir)}\n`);
    const group = await this.newIommuGroup();
    await this.joinGroup(mdir, id, group);
    await link(mdir, path.join(this.root, 'bus/mdev/devices', id));
    await link(mdir, path.join(typeDir, 'devices', id));
    const parentDrv = await readlink(path.join(parentDir, 'driver')).then((l) => path.basename(l)).catch(() => undefined);
    const mdrv = (parentDrv && (await this.config()).mdevDrivers[parentDrv]) || 'vfio_mdev';
    const mdrvDir = path.join(this.root, 'bus/mdev/drivers', mdrv);
    await mkdir(mdrvDir, { recursive: true });
    await link(mdrvDir, path.join(mdir, 'driver'));
    await link(mdir, path.join(mdrvDir, id));
    await touch(path.join(this.devRoot, 'vfio', String(group)));
    if (!(await this.recountMdevTypes(parentDir))) await writeFile(path.join(typeDir, 'available_instances'), `${avail - 1}\n`);
  }

  /**
   * With a shared capacity model for the parent at `parentDir`: sets every type's
   * `available_instances` from the units its mdevs take. Returns false when the parent has no model.
   */
  private async recountMdevTypes(parentDir: string): Promise<boolean> {
    const types = path.join(parentDir, 'mdev_supported_types');
    let model: MdevCapacityModel;
    try {
      model = JSON.parse(await readFile(path.join(this.root, MDEV_CAPACITY_REL, `${path.basename(parentDir)}.json`), 'utf8')) as MdevCapacityModel;
    } catch {
      // No model given (a recorded tree): an NVIDIA VF hosts one vGPU of any type (vGPU <= 16 on an
      // SR-IOV card such as the A16: every type of a VF shows 0 once it holds one, 1 again once it is gone).
      if (!(await this.isNvidiaVf(parentDir))) return false;
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

  private async isNvidiaVf(dir: string): Promise<boolean> {
    return (await exists(path.join(dir, 'physfn'))) && (await readTrim(path.join(dir, 'vendor')))?.replace(/^0x/, '') === '10de';
  }

  private async mdevRemove(mdir: string, v: string): Promise<void> {
    if (v !== '1') throw new KernelError('EINVAL', `remove takes 1, got ${JSON.stringify(v)}`);
    const id = path.basename(mdir);
    const typeDir = path.resolve(mdir, await readlink(path.join(mdir, 'mdev_type')));
    const g = await this.groupOf(mdir);
    const drvLink = await readlink(path.join(mdir, 'driver')).catch(() => undefined);
    if (drvLink) await rm(path.join(path.resolve(mdir, drvLink), id), { force: true });
    await this.leaveGroup(mdir, id);
    if (g !== undefined) await rm(path.join(this.devRoot, 'vfio', g), { force: true });
    await rm(path.join(this.root, 'bus/mdev/devices', id), { force: true });
    await rm(path.join(typeDir, 'devices', id), { force: true });
    await rm(mdir, { recursive: true, force: true });
    if (await this.recountMdevTypes(path.dirname(path.dirname(typeDir)))) return;
    const avail = Number(await readTrim(path.join(typeDir, 'available_instances')));
    if (Number.isFinite(avail)) await writeFile(path.join(typeDir, 'available_instances'), `${avail + 1}\n`);
  }

  // ---- FC NPIV --------------------------------------------------------------------------------

  private async nextScsiHost(): Promise<number> {
    const used = [...(await list(path.join(this.root, 'class/scsi_host'))), ...(await list(path.join(this.root, 'class/fc_host')))]
      .map((h) => Number(h.replace(/^host/, '')))
      .filter(Number.isInteger);
    return used.length === 0 ? 0 : Math.max(...used) + 1;
  }

  private async vportCreate(fcDir: string, v: string): Promise<void> {
    const m = /^([0-9a-fA-F]{16}):([0-9a-fA-F]{16})$/.exec(v);
    if (!m) throw new KernelError('EINVAL', `vport_create takes "<16 hex WWPN>:<16 hex WWNN>", got ${JSON.stringify(v)}`);
    const wwpn = (m[1] as string).toLowerCase();
    const wwnn = (m[2] as string).toLowerCase();
    const max = Number(await readTrim(path.join(fcDir, 'max_npiv_vports')));
    const inUse = Number(await readTrim(path.join(fcDir, 'npiv_vports_inuse')));
    if (!(inUse < max)) throw new KernelError('ENOSPC', `${path.basename(fcDir)}: ${inUse} of ${max} NPIV vports in use`);
    const hostName = path.basename(fcDir);
    const hostDir = path.dirname(path.dirname(fcDir));
    for (const e of await list(hostDir)) {
      if (!e.startsWith('vport-')) continue;
      const pn = await readTrim(path.join(hostDir, e, 'fc_vports', e, 'port_name'));
      if (pn !== undefined && BigInt(pn) === BigInt(`0x${wwpn}`)) throw new KernelError('EEXIST', `vport with WWPN ${wwpn} exists`);
    }
    const hostNo = hostName.replace(/^host/, '');
    let k = 0;
    while (await exists(path.join(hostDir, `vport-${hostNo}:0-${k}`))) k++;
    const vname = `vport-${hostNo}:0-${k}`;
    const vdir = path.join(hostDir, vname);
    const attrs = path.join(vdir, 'fc_vports', vname);
    await mkdir(attrs, { recursive: true });
    const files: Record<string, string> = {
      port_name: wwnAttr(wwpn),
      node_name: wwnAttr(wwnn),
      vport_state: 'Active\n',
      vport_last_state: 'Active\n',
      vport_type: 'NPIV\n',
      roles: 'FCP Initiator\n',
      symbolic_name: '\n',
      vport_delete: '',
      vport_disable: '',
    };
    for (const [f, c] of Object.entries(files)) await writeFile(path.join(attrs, f), c);
    await link(attrs, path.join(this.root, 'class/fc_vports', vname));
    const child = `host${await this.nextScsiHost()}`;
    const cfc = path.join(vdir, child, 'fc_host', child);
    await mkdir(cfc, { recursive: true });
    await writeFile(path.join(cfc, 'port_name'), wwnAttr(wwpn));
    await writeFile(path.join(cfc, 'node_name'), wwnAttr(wwnn));
    await writeFile(path.join(cfc, 'port_state'), 'Online\n');
    await writeFile(path.join(cfc, 'port_type'), 'NPIV VPORT\n');
    await mkdir(path.join(vdir, child, 'scsi_host', child), { recursive: true });
    await link(cfc, path.join(this.root, 'class/fc_host', child));
    await link(path.join(vdir, child, 'scsi_host', child), path.join(this.root, 'class/scsi_host', child));
    await writeFile(path.join(fcDir, 'npiv_vports_inuse'), `${inUse + 1}\n`);
  }

  private async vportDelete(fcDir: string, v: string): Promise<void> {
    const m = /^([0-9a-fA-F]{16}):([0-9a-fA-F]{16})$/.exec(v);
    if (!m) throw new KernelError('EINVAL', `vport_delete takes "<16 hex WWPN>:<16 hex WWNN>", got ${JSON.stringify(v)}`);
    const hostDir = path.dirname(path.dirname(fcDir));
    for (const e of await list(hostDir)) {
      if (!e.startsWith('vport-')) continue;
      const a = path.join(hostDir, e, 'fc_vports', e);
      const pn = await readTrim(path.join(a, 'port_name'));
      const nn = await readTrim(path.join(a, 'node_name'));
      if (pn !== undefined && nn !== undefined && BigInt(pn) === BigInt(`0x${m[1]}`) && BigInt(nn) === BigInt(`0x${m[2]}`)) {
        await this.witness([normalizeWwn(m[1] as string) as string]);
        return this.destroyVport(fcDir, path.join(hostDir, e));
      }
    }
    throw new KernelError('ENOENT', `no vport ${v} on ${path.basename(fcDir)}`);
  }

  private async vportDeleteSelf(attrsDir: string): Promise<void> {
    const vdir = path.dirname(path.dirname(attrsDir));
    const hostDir = path.dirname(vdir);
    const host = path.basename(hostDir);
    const wwpn = normalizeWwn((await readTrim(path.join(attrsDir, 'port_name'))) ?? '');
    await this.witness(wwpn ? [wwpn] : []);
    await this.destroyVport(path.join(hostDir, 'fc_host', host), vdir);
  }

  private async destroyVport(fcDir: string, vdir: string): Promise<void> {
    const vname = path.basename(vdir);
    for (const c of await list(vdir)) {
      if (/^host\d+$/.test(c)) {
        await rm(path.join(this.root, 'class/fc_host', c), { force: true });
        await rm(path.join(this.root, 'class/scsi_host', c), { force: true });
      }
    }
    await rm(path.join(this.root, 'class/fc_vports', vname), { force: true });
    await rm(vdir, { recursive: true, force: true });
    const inUse = Number(await readTrim(path.join(fcDir, 'npiv_vports_inuse')));
    await writeFile(path.join(fcDir, 'npiv_vports_inuse'), `${Math.max(0, inUse - 1)}\n`);
  }

  // ---- what the daemon watches ----------------------------------------------------------------

  /**
   * Real paths of the write-only trigger attributes (bind, unbind, new_id, drivers_probe, mdev
   * create/remove, vport_create/vport_delete) and of the value attributes the agent writes
   * (sriov_numvfs, sriov_drivers_autoprobe, driver_override), sorted.
   */
  async watchedFiles(): Promise<{ triggers: string[]; values: string[] }> {
    const triggers: string[] = [];
    const values: string[] = [];
    const add = async (arr: string[], p: string): Promise<void> => {
      if (await exists(p)) arr.push(p);
    };
    await add(triggers, path.join(this.root, 'bus/pci/drivers_probe'));
    for (const d of await list(path.join(this.root, 'bus/pci/drivers'))) {
      for (const f of PCI_DRIVER_FILES) await add(triggers, path.join(this.root, 'bus/pci/drivers', d, f));
    }
    for (const bdf of await list(path.join(this.root, 'bus/pci/devices'))) {
      let dir: string;
      try {
        dir = await realpath(path.join(this.root, 'bus/pci/devices', bdf));
      } catch {
        continue;
      }
      const entries = await list(dir);
      for (const f of VALUE_ATTRS) if (entries.includes(f)) values.push(path.join(dir, f));
      if (entries.includes('nvidia')) for (const f of NVIDIA_VALUE_ATTRS) await add(values, path.join(dir, 'nvidia', f));
      for (const t of await list(path.join(dir, 'mdev_supported_types'))) await add(triggers, path.join(dir, 'mdev_supported_types', t, 'create'));
      for (const e of entries) {
        if (UUID_RE.test(e)) await add(triggers, path.join(dir, e, 'remove'));
        if (/^host\d+$/.test(e)) {
          await add(triggers, path.join(dir, e, 'fc_host', e, 'vport_create'));
          await add(triggers, path.join(dir, e, 'fc_host', e, 'vport_delete'));
          for (const v of await list(path.join(dir, e))) if (v.startsWith('vport-')) await add(triggers, path.join(dir, e, v, 'fc_vports', v, 'vport_delete'));
        }
      }
    }
    return { triggers: triggers.sort(), values: values.sort() };
  }
}

/** Moves a file or folder within the tree, replacing what is at `to`. */
async function rmRename(from: string, to: string): Promise<void> {
  await mkdir(path.dirname(to), { recursive: true });
  await rm(to, { recursive: true, force: true });
  await rename(from, to);
}

// ---- named builders (builders.ts) ------------------------------------------------------------

export { amdMi300x, connectX6, emulexFc, gpuWithAudio, intel82599, intelFlex170, mdevGpu, mdevGpuMixed, nvmeWithSriov, pciBridge } from './builders.js';

/** True when `p` is a FIFO (the daemon turns trigger attributes into FIFOs while it runs). */
export async function isFifo(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isFIFO();
  } catch {
    return false;
  }
}
