// The NVIDIA vGPU host driver's vendor-specific VFIO ABI (vGPU 17+ on kernels without
// mdev_set_iommu_device) for the fake kernel, plus the host tools that go with it (sriov-manage,
// `nvidia-smi vgpu -shm`). State lives in the tree (`<root>/.fake-kernel/nvidia.json` and the VFs'
// `nvidia/` files) like the rest of the fake kernel.
//
// Behaviours modelled, each with where it was checked (../../../shared/reference/gpu.md names them):
//  1. Only VFs on `nvidia` have the `nvidia/` folder (current_vgpu_type, creatable_vgpu_types,
//     vgpu_params, gpu_instance_id, placement_id); the PF has none. Source: Harvester's L40S fixture
//     harvester/pcidevices pkg/util/gpuhelper/testdata/sys/bus/pci/devices/0000:26:00.4/nvidia/.
//  2. A VF on `nvidia` is a VFIO device (the driver registers it through vfio_pci_core): it has
//     `vfio-dev/vfioN`, `/dev/vfio/<group>` and the cdev exist; it is never rebound to vfio-pci.
//     Source: NVIDIA's vGPU host driver common/inc/nv-vgpu-vfio-interface.h (NV_USE_VFIO_PCI_CORE);
//     Proxmox qemu-server "pci: mdev: adapt to NVIDIA's modern interface with kernel >= 6.8".
//  3. `creatable_vgpu_types`: header `ID    : vGPU Name`, then `%-5d : %s`; lists what fits now: empty
//     (header only) on a VF that has a type and on every VF of a full GPU; in equal-size mode the
//     first type fixes the framebuffer size of the GPU; in mixed-size mode sizes add up to the
//     framebuffer. Source: the L40S fixture above (format, ids, names); gpu.md (shrinking).
//  4. `current_vgpu_type`: reads 0 or the id; an id creates the vGPU, 0 destroys it; EPERM writing an
//     id over an id and writing 0 to an unconfigured VF; clearing while a VMM holds the VF fails
//     (EBUSY here; Proxmox retries the clear 10 x 1 s after QEMU exits:
//     proxmox/qemu-server src/PVE/QemuServer.pm cleanup_pci_devices) and is recorded as a violation.
//  5. `sriov_numvfs` on a PF bound to `nvidia` is refused with ENOENT: the driver has no
//     sriov_configure (torvalds/linux drivers/pci/iov.c sriov_numvfs_store: "driver does not support
//     SR-IOV configuration via sysfs"). KernelConfig.noSriovConfigure lists it.
//  6. sriov-manage -e/-d does what NVIDIA's script does in sysfs, in order: unbind the PF, give
//     pci-pf-stub its ID (new_id) and the PF, write sriov_numvfs (sriov_totalvfs or 0), unbind from
//     pci-pf-stub, remove_id, bind the PF to nvidia, and (-e) bind every VF to nvidia; -d first
//     unbinds every VF. Every write goes through FakeKernel.write, so the witness sees it. Rebinding
//     the PF resets mixed-size mode (gpu.md). Source: the script itself (a copy is public in code
//     search: "sriov-manage <-e|-d> <ssss:bb:dd.f|ALL>").
//  7. `nvidia-smi vgpu -i <GPU> -shm 1|0`: mixed-size mode, refused once a vGPU exists (gpu.md).
//  8. MIG-backed vGPU: `nvidia-smi -i <GPU> -mig 1|0` (0 refused while VFs exist), `nvidia-smi mig -i
//     <GPU> -cgi <profile,...>` / `-dgi` (a GI a vGPU sits on is not destroyed); a MIG-backed type
//     (`H100-1-10C` ↔ `1g.10gb`) is creatable only in MIG mode with a free GI of its profile and the
//     write picks the instance (`gpu_instance_id` tells which); time-sliced types are not creatable in
//     MIG mode; sriov-manage (a PF rebind) destroys the GIs. Capacity: the GIs' compute slices add up
//     to 7. Sources: gpu.md "MIG-backed vGPU" (NVIDIA/vgpu-device-manager pkg/types/vgpu_type.go for
//     the name mapping; the order from Harvester's design and a third party's hardware logs).
// Not modelled: vgpu_params' EPERM
// while open, ENODEV when a VMM opens an untyped VF, the unbindLock of /proc/driver/nvidia.
import { mkdir, readdir, readFile, readlink, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { FakeKernel, FunctionSpec } from './kernel.js';
import { KernelError } from './kernel-error.js';

/** One vGPU type of a GPU model. */
export interface VgpuTypeSpec {
  id: number;
  name: string;
  /** Framebuffer in GB. */
  gb: number;
  /** MIG-backed (never creatable here: MIG is not modelled). */
  mig?: boolean;
}

/** A GPU model the fake driver knows: PCI ID, SR-IOV layout, framebuffer and type table. */
export interface GpuModel {
  name: string;
  device: string;
  totalVFs: number;
  vfOffset: number;
  framebufferGb: number;
  types: VgpuTypeSpec[];
}

const series = (prefix: string, first: number, spec: [string, number][]): VgpuTypeSpec[] => spec.map(([n, gb], i) => ({ id: first + i, name: `NVIDIA ${prefix}-${n}`, gb }));

/**
 * L40S (10de:26b9, 48 GB, 32 VFs from offset 4): ids and names exactly as Harvester's fixture lists
 * them (1145..1166, 2164); sizes from the names.
 */
export const L40S: GpuModel = {
  name: 'L40S', device: '26b9', totalVFs: 32, vfOffset: 4, framebufferGb: 48,
  types: [
    ...series('L40S', 1145, [['1B', 1], ['2B', 2], ['1Q', 1], ['2Q', 2], ['3Q', 3], ['4Q', 4], ['6Q', 6], ['8Q', 8], ['12Q', 12], ['16Q', 16], ['24Q', 24], ['48Q', 48],
      ['1A', 1], ['2A', 2], ['3A', 3], ['4A', 4], ['6A', 6], ['8A', 8], ['12A', 12], ['16A', 16], ['24A', 24], ['48A', 48]]),
    { id: 2164, name: 'NVIDIA L40S-3B', gb: 3 },
  ],
};

/**
 * H100 PCIe (10de:2331, 80 GB): NVIDIA's C-series table (time-sliced 4C..80C, MIG-backed 1-10C..7-80C).
 * The type ids are this file's own (NVIDIA publishes names and sizes; the driver assigns ids).
 */
export const H100: GpuModel = {
  name: 'H100', device: '2331', totalVFs: 32, vfOffset: 4, framebufferGb: 80,
  types: [
    ...series('H100', 9001, [['4C', 4], ['5C', 5], ['8C', 8], ['10C', 10], ['16C', 16], ['20C', 20], ['40C', 40], ['80C', 80]]),
    ...series('H100', 9101, [['1-10C', 10], ['2-20C', 20], ['3-40C', 40], ['4-40C', 40], ['7-80C', 80]]).map((t) => ({ ...t, mig: true })),
  ],
};

/**
 * The recorded server's GA107GL (10de:25b6, 16 GB, 16 VFs from offset 4): type ids 742..756 as its
 * mdev types were numbered; names as the same host lists them in Harvester's fixture
 * (class/mdev_bus/0000:08:01.7/mdev_supported_types/nvidia-7xx/name: "NVIDIA A2-…"; A2 and A16 share
 * the PCI ID).
 */
export const GA107_RECORDED: GpuModel = {
  name: 'A2', device: '25b6', totalVFs: 16, vfOffset: 4, framebufferGb: 16,
  types: series('A2', 742, [['1B', 1], ['2B', 2], ['1Q', 1], ['2Q', 2], ['4Q', 4], ['8Q', 8], ['16Q', 16], ['1A', 1], ['2A', 2], ['4A', 4], ['8A', 8], ['16A', 16], ['4C', 4], ['8C', 8], ['16C', 16]]),
};

interface GpuState {
  model: GpuModel;
  mixedSize: boolean;
  /** MIG (behaviour 8): the mode, the GPU instances, and which GI each MIG-backed vGPU sits on. */
  mig?: { mode: boolean; gis: { id: number; profile: string }[]; vfGi: Record<string, number> };
  /** The vGPU type of each VF that has one (the driver's truth; the file may hold a pending write). */
  vfTypes: Record<string, number>;
}
interface DriverState {
  gpus: Record<string, GpuState>;
}

const STATE_REL = '.fake-kernel/nvidia.json';

async function load(k: FakeKernel): Promise<DriverState> {
  try {
    return JSON.parse(await readFile(path.join(k.root, STATE_REL), 'utf8')) as DriverState;
  } catch {
    return { gpus: {} };
  }
}

async function save(k: FakeKernel, s: DriverState): Promise<void> {
  await mkdir(path.join(k.root, path.dirname(STATE_REL)), { recursive: true });
  await writeFile(path.join(k.root, STATE_REL), JSON.stringify(s, null, 2));
}

/** Replaces a file the driver rewrites in one step: a reader never sees it half-written (as sysfs). */
async function putAttr(file: string, content: string): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.new`);
  await writeFile(tmp, content);
  await rename(tmp, file);
}

/** The PF of a VF (its `physfn`), or undefined. */
async function pfOf(k: FakeKernel, vf: string): Promise<string | undefined> {
  try {
    return path.basename(await readlink(path.join(await k.functionDir(vf), 'physfn')));
  } catch {
    return undefined;
  }
}

async function vfsOf(k: FakeKernel, pf: string): Promise<string[]> {
  const dir = await k.functionDir(pf);
  const out: { n: number; a: string }[] = [];
  for (const e of await readdir(dir)) {
    const m = /^virtfn(\d+)$/.exec(e);
    if (m) out.push({ n: Number(m[1]), a: path.basename(await readlink(path.join(dir, e))) });
  }
  return out.sort((a, b) => a.n - b.n).map((x) => x.a);
}

/** A PF spec for FakeKernel.addFunction: the GPU on `nvidia`, SR-IOV capable, no VFs yet. */
export function nvidiaGpu(address: string, model: GpuModel, o: { numaNode?: number } = {}): FunctionSpec {
  return {
    address, vendor: '10de', device: model.device, classCode: '030200', driver: 'nvidia', numaNode: o.numaNode ?? 0,
    sriov: { totalVFs: model.totalVFs, vfDevice: model.device, offset: model.vfOffset, stride: 1 },
  };
}

/**
 * Adds an NVIDIA GPU that speaks vendor-specific VFIO (the vGPU 17+ host driver) to `k`: the PF,
 * the driver's state, pci-pf-stub (sriov-manage needs it) and `nvidia` in noSriovConfigure.
 */
export async function addNvidiaVfioGpu(k: FakeKernel, address: string, model: GpuModel, o: { numaNode?: number } = {}): Promise<void> {
  await registerVfioGpu(k, address, model);
  await k.addFunction(nvidiaGpu(address, model, o));
}

/**
 * Puts an existing NVIDIA PF (e.g. from a recording) under the vendor-VFIO driver: registers its
 * state; the VFs already on `nvidia` get their `nvidia/` folder and VFIO nodes, as a driver reload
 * would give them. Mediated devices on them must be gone first (the caller removes them).
 */
export async function registerVfioGpu(k: FakeKernel, pf: string, model: GpuModel): Promise<void> {
  const s = await load(k);
  s.gpus[pf] = { model, mixedSize: false, vfTypes: {} };
  await save(k, s);
  const c = await k.config();
  await k.saveConfig({ ...c, noSriovConfigure: [...new Set([...(c.noSriovConfigure ?? []), 'nvidia'])] });
  await k.loadModule('pci-pf-stub');
  await k.loadModule('nvidia');
  for (const vf of await vfsOf(k, pf).catch(() => [])) if ((await k.driverOf(vf)) === 'nvidia') await onBind(k, vf, 'nvidia');
}

/** The GPU state a VF belongs to, or undefined (not a vendor-VFIO VF). */
async function gpuOfVf(k: FakeKernel, vf: string): Promise<{ pf: string; s: DriverState; g: GpuState } | undefined> {
  const pf = await pfOf(k, vf);
  if (!pf) return undefined;
  const s = await load(k);
  const g = s.gpus[pf];
  return g ? { pf, s, g } : undefined;
}

/** Rewrites every VF's creatable_vgpu_types from the GPU's state (what fits now). */
async function refreshCreatable(k: FakeKernel, pf: string, g: GpuState): Promise<void> {
  const vfs = await vfsOf(k, pf);
  const typed = Object.entries(g.vfTypes).filter(([vf, t]) => t > 0 && vfs.includes(vf));
  const sizeOf = (id: number): number => g.model.types.find((t) => t.id === id)?.gb ?? 0;
  const used = typed.reduce((n, [, t]) => n + sizeOf(t), 0);
  const sizes = new Set(typed.map(([, t]) => sizeOf(t)));
  const usedGis = new Set(Object.values(g.mig?.vfGi ?? {}));
  const fits = (t: VgpuTypeSpec): boolean => {
    if (typed.length >= vfs.length) return false;
    if (g.mig?.mode) return t.mig === true && g.mig.gis.some((gi) => gi.profile === migProfileOf(t.name) && !usedGis.has(gi.id));
    if (t.mig) return false;
    if (g.mixedSize) return used + t.gb <= g.model.framebufferGb;
    if (sizes.size > 0 && !sizes.has(t.gb)) return false;
    return (typed.length + 1) * t.gb <= g.model.framebufferGb;
  };
  const list = g.model.types.filter(fits).map((t) => `${String(t.id).padEnd(5)} : ${t.name}\n`).join('');
  for (const vf of vfs) {
    const dir = path.join(await k.functionDir(vf), 'nvidia');
    const mine = (g.vfTypes[vf] ?? 0) > 0;
    await putAttr(path.join(dir, 'creatable_vgpu_types'), `ID    : vGPU Name\n${mine ? '' : list}`).catch(() => undefined);
  }
}

/** The bind side effects of `nvidia` on a vendor-VFIO VF (behaviours 1, 2); FakeKernel.bind calls it. */
export async function onBind(k: FakeKernel, bdf: string, drv: string): Promise<void> {
  if (drv !== 'nvidia') return;
  const pfState = (await load(k)).gpus[bdf];
  if (pfState) {
    // The PF (re)bound to nvidia: a fresh driver instance forgets mixed-size mode and the GPU
    // instances (sriov-manage does this; MIG mode itself stays).
    const s = await load(k);
    const g = s.gpus[bdf] as GpuState;
    g.mixedSize = false;
    if (g.mig) g.mig = { ...g.mig, gis: [], vfGi: {} };
    await save(k, s);
    return;
  }
  const found = await gpuOfVf(k, bdf);
  if (!found) return;
  const dir = await k.functionDir(bdf);
  const nv = path.join(dir, 'nvidia');
  await mkdir(nv, { recursive: true });
  await writeFile(path.join(nv, 'current_vgpu_type'), `${found.g.vfTypes[bdf] ?? 0}\n`);
  await writeFile(path.join(nv, 'vgpu_params'), '\n');
  await writeFile(path.join(nv, 'warm_update'), '0\n');
  await k.addVfioNodes(bdf, dir);
  await refreshCreatable(k, found.pf, found.g);
}

/** The unbind side effects (the vGPU goes with the driver); FakeKernel.unbind calls it. */
export async function onUnbind(k: FakeKernel, bdf: string, drv: string): Promise<void> {
  if (drv !== 'nvidia') return;
  const found = await gpuOfVf(k, bdf);
  if (!found) return;
  const dir = await k.functionDir(bdf);
  await rm(path.join(dir, 'nvidia'), { recursive: true, force: true });
  await k.removeVfioNodes(bdf, dir);
  delete found.g.vfTypes[bdf];
  await save(k, found.s);
  await refreshCreatable(k, found.pf, found.g);
}

/**
 * A write to `<vf>/nvidia/current_vgpu_type` (behaviour 4). `alreadyWritten`: the file holds the new
 * value already (the daemon saw it); the driver's state says what was there before.
 */
export async function writeVgpuType(k: FakeKernel, vfDir: string, rel: string, value: string, alreadyWritten: boolean): Promise<void> {
  const vf = path.basename(vfDir);
  const found = await gpuOfVf(k, vf);
  if (!found) throw new KernelError('ENODEV', `${vf} is not a vendor-VFIO vGPU VF`);
  const file = path.join(vfDir, 'nvidia/current_vgpu_type');
  const v = value.trim();
  if (!/^\d+$/.test(v)) throw new KernelError('EINVAL', `current_vgpu_type takes a decimal type id, got ${JSON.stringify(value)}`);
  const want = Number(v);
  const prev = found.g.vfTypes[vf] ?? 0;
  if (want === prev && alreadyWritten) return;
  if (want === 0) {
    if (prev === 0) throw new KernelError('EPERM', `${vf} has no vGPU to destroy`);
    const hits = await k.ownership.holdersOf([vf]);
    if (hits.length > 0) {
      await k.ownership.recordViolations({ path: rel, value: v }, hits);
      throw new KernelError('EBUSY', `${vf}: the vGPU is in use (held by ${hits.map((h) => h.holder).join(', ')}); it cannot be destroyed`);
    }
    k.ownership.recordDestroyed({ path: rel, value: v }, [vf]);
    delete found.g.vfTypes[vf];
    if (found.g.mig) delete found.g.mig.vfGi[vf];
  } else {
    if (prev !== 0) throw new KernelError('EPERM', `${vf} already has vGPU type ${prev}; write 0 first`);
    const t = found.g.model.types.find((x) => x.id === want);
    if (!t) throw new KernelError('EINVAL', `${found.g.model.name} has no vGPU type ${want}`);
    const creatable = await readFile(path.join(vfDir, 'nvidia/creatable_vgpu_types'), 'utf8');
    if (!creatable.split('\n').some((l) => l.startsWith(`${want} `) || l.startsWith(`${want}\t`))) throw new KernelError('EINVAL', `${vf}: ${t.name} is not creatable now (the GPU is full, or another framebuffer size fixed it)`);
    found.g.vfTypes[vf] = want;
    if (t.mig && found.g.mig) {
      const used = new Set(Object.values(found.g.mig.vfGi));
      const gi = found.g.mig.gis.find((x) => x.profile === migProfileOf(t.name) && !used.has(x.id));
      if (gi) found.g.mig.vfGi[vf] = gi.id;
    }
  }
  const giId = found.g.mig?.vfGi[vf];
  if (giId !== undefined) await putAttr(path.join(vfDir, 'nvidia/gpu_instance_id'), `${giId}\n`);
  else await rm(path.join(vfDir, 'nvidia/gpu_instance_id'), { force: true });
  await save(k, found.s);
  await putAttr(file, `${found.g.vfTypes[vf] ?? 0}\n`);
  await refreshCreatable(k, found.pf, found.g);
}

/** Restores `current_vgpu_type` after a refused write the daemon applied after the fact. */
export async function vgpuTypeNow(k: FakeKernel, vf: string): Promise<number> {
  return (await gpuOfVf(k, vf))?.g.vfTypes[vf] ?? 0;
}

/** NVIDIA's sriov-manage (behaviour 6), as its sysfs writes. Returns what it prints. */
export async function sriovManage(k: FakeKernel, flag: string, pf: string): Promise<string> {
  if (flag !== '-e' && flag !== '-d') throw new KernelError('EINVAL', `usage: sriov-manage <-e|-d> <ssss:bb:dd.f>`);
  const s = await load(k);
  if (!s.gpus[pf]) throw new KernelError('ENODEV', `${pf} is not an SR-IOV vGPU GPU of the NVIDIA driver`);
  const vfs = await vfsOf(k, pf);
  if (flag === '-e' && vfs.length > 0) return `GPU at ${pf} already has VFs enabled.`;
  if (flag === '-d' && vfs.length === 0) return `GPU at ${pf} already has VFs disabled.`;
  const dir = await k.functionDir(pf);
  const ids = `10de ${(await readFile(path.join(dir, 'device'), 'utf8')).trim().replace(/^0x/, '')}`;
  if (flag === '-d') for (const vf of vfs) for (const d of ['vfio-pci', 'nvidia']) if ((await k.driverOf(vf)) === d) await k.write(`bus/pci/drivers/${d}/unbind`, vf);
  const drv = await k.driverOf(pf);
  if (drv) await k.write(`bus/pci/drivers/${drv}/unbind`, pf);
  await k.write('bus/pci/drivers/pci-pf-stub/new_id', ids);
  if ((await k.driverOf(pf)) !== 'pci-pf-stub') await k.write('bus/pci/drivers/pci-pf-stub/bind', pf);
  const total = (await readFile(path.join(dir, 'sriov_totalvfs'), 'utf8')).trim();
  await k.write(`bus/pci/devices/${pf}/sriov_numvfs`, flag === '-e' ? total : '0');
  await k.write('bus/pci/drivers/pci-pf-stub/unbind', pf);
  await k.write('bus/pci/drivers/pci-pf-stub/remove_id', ids);
  await k.write('bus/pci/drivers/nvidia/bind', pf);
  if (flag === '-e') {
    for (const vf of await vfsOf(k, pf)) {
      const d = await k.driverOf(vf);
      if (d === 'nvidia') continue;
      if (d) await k.write(`bus/pci/drivers/${d}/unbind`, vf);
      await k.write('bus/pci/drivers/nvidia/bind', vf);
    }
  }
  return `${flag === '-e' ? 'Enabling' : 'Disabling'} VFs on ${pf}`;
}

/** `nvidia-smi vgpu -i <GPU> -shm 0|1` (behaviour 7). */
export async function setMixedSize(k: FakeKernel, pf: string, on: boolean): Promise<void> {
  const s = await load(k);
  const g = s.gpus[pf];
  if (!g) throw new KernelError('ENODEV', `${pf}: no such vGPU GPU`);
  if (Object.values(g.vfTypes).some((t) => t > 0)) throw new KernelError('EBUSY', `${pf}: vGPUs exist; the mode changes only before the first one`);
  g.mixedSize = on;
  await save(k, s);
  await refreshCreatable(k, pf, g);
}

/** `H100-1-10C` (with or without "NVIDIA ") → its MIG profile `1g.10gb`; undefined for time-sliced types. */
export function migProfileOf(name: string): string | undefined {
  const m = /-(\d+)-(\d+)[A-Z]+$/.exec(name.trim());
  return m ? `${m[1]}g.${m[2]}gb` : undefined;
}

const MIG_SLICES = 7;
const slicesOf = (profile: string): number => Number(/^(\d+)g\./.exec(profile)?.[1] ?? MIG_SLICES);

/** The GPU instances of a GPU (for tests: what `nvidia-smi mig -lgi` would list). */
export async function gpuInstances(k: FakeKernel, pf: string): Promise<{ id: number; profile: string }[]> {
  return (await load(k)).gpus[pf]?.mig?.gis ?? [];
}

/** MIG mode and GPU instances (behaviour 8). */
async function migCommand(k: FakeKernel, pf: string, op: 'mode' | 'cgi' | 'dgi', arg: string): Promise<string> {
  const s = await load(k);
  const g = s.gpus[pf];
  if (!g) throw new KernelError('ENODEV', `${pf}: no such vGPU GPU`);
  const mig = g.mig ?? { mode: false, gis: [], vfGi: {} };
  if (!g.model.types.some((t) => t.mig)) throw new KernelError('EINVAL', `${g.model.name} does not support MIG`);
  let out: string;
  if (op === 'mode') {
    const on = arg === '1';
    if (!on && (await vfsOf(k, pf)).length > 0) throw new KernelError('EBUSY', `${pf}: disable the VFs (sriov-manage -d) before MIG mode`);
    if (!on && mig.gis.length > 0) throw new KernelError('EBUSY', `${pf}: destroy the GPU instances before MIG mode`);
    mig.mode = on;
    if (!on) mig.gis = [];
    out = `${on ? 'Enabled' : 'Disabled'} MIG Mode for GPU ${pf}`;
  } else if (op === 'cgi') {
    if (!mig.mode) throw new KernelError('EINVAL', `${pf}: MIG mode is off`);
    const want = arg.split(',').filter(Boolean);
    let used = mig.gis.reduce((n, gi) => n + slicesOf(gi.profile), 0);
    for (const p of want) {
      if (!g.model.types.some((t) => t.mig && migProfileOf(t.name) === p)) throw new KernelError('EINVAL', `${pf}: no MIG profile ${p}`);
      if (used + slicesOf(p) > MIG_SLICES) throw new KernelError('ENOSPC', `${pf}: not enough free compute slices for ${p}`);
      used += slicesOf(p);
      const id = Math.max(0, ...mig.gis.map((x) => x.id + 1));
      mig.gis.push({ id, profile: p });
    }
    out = `Successfully created ${want.length} GPU instance(s) on GPU ${pf}`;
  } else {
    const busy = new Set(Object.values(mig.vfGi));
    const before = mig.gis.length;
    mig.gis = mig.gis.filter((gi) => busy.has(gi.id));
    out = `Successfully destroyed ${before - mig.gis.length} GPU instance(s) on GPU ${pf}${busy.size ? ` (${busy.size} in use)` : ''}`;
  }
  g.mig = mig;
  await save(k, s);
  if ((await vfsOf(k, pf)).length > 0) await refreshCreatable(k, pf, g);
  return out;
}

/** The fake tools' command line (`sriov-manage -e <PF>`, `nvidia-smi vgpu -i <PF> -shm 1`) → output. */
export async function nvidiaTool(k: FakeKernel, argv: string[]): Promise<string> {
  const [tool, ...args] = argv;
  if (tool === 'sriov-manage') return sriovManage(k, args[0] ?? '', args[1] ?? '');
  if (tool === 'nvidia-smi' && args[0] === '-i' && args[2] === '-mig') return migCommand(k, args[1] ?? '', 'mode', args[3] ?? '');
  if (tool === 'nvidia-smi' && args[0] === 'mig' && args[1] === '-i' && args[3] === '-cgi') return migCommand(k, args[2] ?? '', 'cgi', args[4] ?? '');
  if (tool === 'nvidia-smi' && args[0] === 'mig' && args[1] === '-i' && args[3] === '-dgi') return migCommand(k, args[2] ?? '', 'dgi', '');
  if (tool === 'nvidia-smi' && args[0] === 'vgpu' && args[1] === '-i' && args[3] === '-shm') {
    await setMixedSize(k, args[2] ?? '', args[4] === '1');
    return `Mixed-size mode ${args[4] === '1' ? 'enabled' : 'disabled'} for GPU ${args[2] ?? ''}`;
  }
  throw new KernelError('EINVAL', `unknown tool command ${JSON.stringify(argv.join(' '))}`);
}
