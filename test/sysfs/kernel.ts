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
// The kernel's parts live beside it: kernel-tree.ts (tree helpers), kernel-config.ts, kernel-build.ts
// (addFunction), kernel-binding.ts, kernel-iommu.ts (groups, VFIO nodes), kernel-sriov.ts,
// kernel-mdev.ts and kernel-npiv.ts; FakeKernel is the one class tests use.
import { mkdir, readlink, realpath, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { SysfsWriter } from '../../device-plugin/src/sysfs/writer.js';
import { bind, newId, probe, removeId, sysfsBind, sysfsUnbind, unbind } from './kernel-binding.js';
import { addFunction, type FunctionSpec } from './kernel-build.js';
import { DEFAULT_CONFIG, NVIDIA_VALUE_ATTRS, PCI_DRIVER_FILES, readConfig, VALUE_ATTRS, writeConfig, type KernelConfig } from './kernel-config.js';
import { KernelError } from './kernel-error.js';
import { addVfioNodes, removeVfioNodes } from './kernel-iommu.js';
import { mdevCreate, mdevRemove } from './kernel-mdev.js';
import { vportCreate, vportDelete, vportDeleteSelf } from './kernel-npiv.js';
import { removeFunction, setNumVfs, takesWith } from './kernel-sriov.js';
import { BDF_RE, exists, list, touch, UUID_RE } from './kernel-tree.js';
import { writeVgpuType } from './nvidia.js';
import { isI915Quota, writeI915Quota } from './intel-iov.js';
import { ownership, WriteGate, type Destroyed, type OpenOptions, type Ownership, type Violation, type VfioRequest } from './vfio.js';

export { KernelError } from './kernel-error.js';
export { readViolations, type Destroyed, type OpenOptions, type Violation, type VfioRequest } from './vfio.js';
export { DEFAULT_CONFIG, NVIDIA_VALUE_ATTRS, VALUE_ATTRS, type KernelConfig } from './kernel-config.js';
export { isFifo, readAttr } from './kernel-tree.js';
export type { FunctionSpec } from './kernel-build.js';

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
  /** The kernel config stored in the tree ({@link DEFAULT_CONFIG} when the tree has none, e.g. a recording). */
  config(): Promise<KernelConfig> {
    return readConfig(this.root);
  }

  saveConfig(c: KernelConfig): Promise<void> {
    return writeConfig(this.root, c);
  }


  /** `modprobe <driver>`: creates `bus/pci/drivers/<driver>` with bind/unbind/new_id/remove_id. */
  async loadModule(driver: string): Promise<void> {
    const dir = path.join(this.root, 'bus/pci/drivers', driver);
    await mkdir(dir, { recursive: true });
    for (const f of PCI_DRIVER_FILES) await touch(path.join(dir, f));
  }

  // ---- builders (kernel-build.ts) ----------------------------------------------------------------

  /** Adds one PCI function (and binds it to `spec.driver`, loading that module). Returns its folder. */
  addFunction(spec: FunctionSpec): Promise<string> {
    return addFunction(this, spec);
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

    if (dir === path.join(this.root, 'bus/pci') && name === 'drivers_probe') return probe(this, this.gate, v.trim());
    if (path.dirname(dir) === path.join(this.root, 'bus/pci/drivers')) {
      const drv = path.basename(dir);
      if (name === 'bind') return sysfsBind(this, this.gate, v.trim(), drv);
      if (name === 'unbind') return sysfsUnbind(this, this.gate, v.trim(), drv);
      if (name === 'new_id') return newId(this, this.gate, v.trim(), drv);
      if (name === 'remove_id') return removeId(this, v.trim(), drv);
    }
    if (parent === 'mdev_supported_types' && name === 'create') return mdevCreate(this, dir, v.trim());
    if (name === 'remove' && UUID_RE.test(path.basename(dir)) && (await exists(path.join(dir, 'mdev_type')))) {
      if (v.trim() === '1') await this.witness([path.basename(dir)]);
      return mdevRemove(this, dir, v.trim());
    }
    if (parent === 'fc_host' && name === 'vport_create') return vportCreate(this, dir, v.trim());
    if (parent === 'fc_host' && name === 'vport_delete') return vportDelete(this, this.gate, dir, v.trim());
    if (parent === 'fc_vports' && name === 'vport_delete') return vportDeleteSelf(this, this.gate, dir);

    if (path.basename(dir) === 'nvidia' && name === 'current_vgpu_type' && BDF_RE.test(path.basename(path.dirname(dir)))) {
      return writeVgpuType(this, path.dirname(dir), relPath, v, opts.alreadyWritten === true);
    }
    if (path.basename(dir) === 'nvidia' && name === 'creatable_vgpu_types') throw new KernelError('EACCES', 'creatable_vgpu_types is read-only');
    if (isI915Quota(file)) return writeI915Quota(this, file, relPath, v);
    const bdf = path.basename(dir);
    if (BDF_RE.test(bdf) && (await exists(path.join(dir, 'vendor')))) {
      if (name === 'sriov_numvfs') return setNumVfs(this, this.gate, dir, bdf, v.trim(), opts);
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
        await this.witness(await takesWith(this, bdf, dir));
        return removeFunction(this, bdf);
      }
      if (['vendor', 'device', 'class', 'numa_node', 'iommu_group', 'sriov_totalvfs', 'subsystem_vendor', 'subsystem_device', 'revision'].includes(name)) {
        throw new KernelError('EACCES', `${name} is read-only`);
      }
    }
    if (!opts.alreadyWritten) await writeFile(file, value);
  }

  // ---- binding (kernel-binding.ts, kernel-iommu.ts) ---------------------------------------------

  /** Binds with every side effect: links, vfio group and cdev nodes, netdevs. */
  bind(bdf: string, drv: string): Promise<void> {
    return bind(this, bdf, drv);
  }

  /** Unbinds with every side effect (vfio nodes go when the group has no vfio-pci member left). */
  unbind(bdf: string): Promise<void> {
    return unbind(this, bdf);
  }

  /** The VFIO side of binding a VFIO driver: the group node and the vfio cdev entry (kernel-iommu.ts). */
  addVfioNodes(bdf: string, dir: string): Promise<void> {
    return addVfioNodes(this, bdf, dir);
  }

  /** Undoes {@link addVfioNodes}: the group node goes when no other member is a VFIO device. */
  removeVfioNodes(bdf: string, dir: string): Promise<void> {
    return removeVfioNodes(this, bdf, dir);
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

// ---- named builders (builders.ts) ------------------------------------------------------------

export { amdMi300x, connectX6, emulexFc, gpuWithAudio, intel82599, intelFlex170, mdevGpu, mdevGpuMixed, nvmeWithSriov, pciBridge } from './builders.js';
