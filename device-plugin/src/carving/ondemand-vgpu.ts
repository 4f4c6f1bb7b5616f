// On-demand NVIDIA vendor-VFIO vGPU (pools with `onDemand.vgpuProfiles`): which GPUs and profiles a
// pool offers, and the writes that make the node match the claims the scheduler allocated: write
// the claimed type on the claimed VF (`nvidia/current_vgpu_type`, the VF stays on `nvidia`), clear
// the type of a VF we typed once no claim wants it and nobody holds it. A VF is ours when the
// checkpoint recorded a claim for it before its type was written (agent/ondemand.ts): the VF
// address is reused, so nothing else tells our types from an admin's. Pure; the gate still checks
// every clear.
import type { CarvingPlan, Inventory, InventoryDevice, PoolPlan, SysfsWrite } from '../model.js';
import { compareText } from '../sysfs/pci.js';
import { catalogueOf, framebufferGb, gpuInterfaceOf, mergeCatalogue, migProfileOf, resolveVgpuProfile, type VgpuType } from './gpu.js';
import type { MdevCapacity, OnDemandFailure, WantedMdev } from './ondemand.js';
import { NVIDIA_DRIVER, vgpuTypePath } from './vgpu.js';

/** The key under which a GPU's learned framebuffer (GB) is kept in the capacity record. */
export const FRAMEBUFFER_KEY = 'vgpu-framebuffer-gb';

/** True for pools whose claims pick a vGPU profile per VF at allocation. */
export function isOnDemandVgpu(p: Pick<PoolPlan, 'onDemand' | 'mode'>): boolean {
  return p.mode === 'SRIOV' && (p.onDemand?.vgpuProfiles?.length ?? 0) > 0;
}

/** One profile a GPU offers: its type and framebuffer size. */
export interface OfferedProfile extends VgpuType {
  gb: number;
}

/** One GPU of an on-demand vGPU pool. */
export interface OfferedGpu {
  pf: string;
  /** Framebuffer of the whole GPU (GB): the largest type it lists, as learned. */
  framebufferGb: number;
  /** The pool's profiles this GPU has (sorted by id). */
  profiles: OfferedProfile[];
  /** The GPU's VFs in VF order. */
  vfs: string[];
  heterogeneous: boolean;
  /** Framebuffer (GB) of every type the GPU's catalogue names. */
  sizes: Map<number, number>;
}

/** Prefix of the catalogue entries (type name → id) kept with the framebuffer in the capacity record. */
const TYPE_KEY = 'type:';

/**
 * A GPU's catalogue: what this process remembered (else what its VFs list now), merged with what
 * the checkpoint kept. After a restart on a busy GPU the VFs list only what still fits, and a typed
 * VF lists nothing: without the kept table the types on the VFs would have no name, and their
 * slices no profile.
 */
export function vgpuCatalogue(pf: InventoryDevice, devices: ReadonlyMap<string, InventoryDevice>, inventory: Pick<Inventory, 'vgpuCatalogues'>, capacity: MdevCapacity = {}): VgpuType[] {
  const kept = Object.entries(capacity[pf.pciAddress] ?? {}).filter(([k]) => k.startsWith(TYPE_KEY)).map(([k, id]) => ({ id, name: k.slice(TYPE_KEY.length) }));
  return mergeCatalogue(inventory.vgpuCatalogues?.[pf.pciAddress] ?? catalogueOf(pf, devices), kept);
}
const catalogue = vgpuCatalogue;

/**
 * `inventory` with each GPU's catalogue merged with the table the checkpoint kept (`kept`: the
 * capacity record, `type:<name>` → id). Deleting or retiring a vGPU pool after a restart on a busy
 * GPU resolves its profile from this: the VFs list only what still fits, a typed VF lists nothing,
 * so without the kept table the held type has no name and its VFs would never be cleared.
 */
export function withKeptCatalogues(inventory: Inventory, kept: MdevCapacity): Inventory {
  const byAddr = new Map(inventory.devices.map((d) => [d.pciAddress, d]));
  const merged: Record<string, VgpuType[]> = { ...inventory.vgpuCatalogues };
  let changed = false;
  for (const addr of Object.keys(kept)) {
    const pf = byAddr.get(addr);
    if (!pf || !Object.keys(kept[addr] ?? {}).some((k) => k.startsWith(TYPE_KEY))) continue;
    merged[addr] = vgpuCatalogue(pf, byAddr, inventory, kept);
    changed = true;
  }
  return changed ? { ...inventory, vgpuCatalogues: merged } : inventory;
}

/**
 * Learns each GPU's framebuffer: the largest size its catalogue names (the full-GPU profile,
 * `L40S-48Q`), never lower than what was recorded before (after a restart on a busy GPU the VFs
 * list only what still fits).
 */
export function learnFramebuffer(prev: MdevCapacity, pools: readonly PoolPlan[], devices: ReadonlyMap<string, InventoryDevice>, inventory: Pick<Inventory, 'vgpuCatalogues'>): MdevCapacity {
  const out: MdevCapacity = { ...prev };
  for (const p of pools) {
    for (const d of p.devices) {
      const pf = devices.get(d.pciAddress);
      if (!pf) continue;
      const cat = catalogue(pf, devices, inventory, prev);
      const gb = Math.max(prev[pf.pciAddress]?.[FRAMEBUFFER_KEY] ?? 0, ...cat.map((t) => framebufferGb(t.name) ?? 0));
      if (gb <= 0) continue;
      const types = Object.fromEntries(cat.filter((t) => t.name).map((t) => [`${TYPE_KEY}${t.name as string}`, t.id]));
      out[pf.pciAddress] = { [FRAMEBUFFER_KEY]: gb, ...types };
    }
  }
  return out;
}

/** Why a pool device cannot offer vGPU profiles (undefined: it can, or it needs its VFs enabled). */
function gpuProblem(pf: InventoryDevice, devices: ReadonlyMap<string, InventoryDevice>): string | undefined {
  const iface = gpuInterfaceOf(pf, devices);
  if (iface === 'NvidiaVendorVfio') return undefined;
  if (iface === 'NvidiaSriovDisabled') return pf.driver === NVIDIA_DRIVER ? undefined : `${pf.pciAddress} is not bound to nvidia (the NVIDIA vGPU host driver must own the GPU)`;
  if (iface === 'Mdev') return `${pf.pciAddress} speaks the mdev vGPU interface; use carving.mode Mediated with onDemand.mdevTypes instead of onDemand.vgpuProfiles`;
  return `${pf.pciAddress} is not an NVIDIA vendor-specific VFIO GPU (it speaks ${iface ?? 'no GPU interface'})`;
}

/** The GPUs of an on-demand vGPU pool that offer at least one profile, with the profiles. */
export function offeredGpus(pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, inventory: Pick<Inventory, 'vgpuCatalogues'>, capacity: MdevCapacity): OfferedGpu[] {
  const out: OfferedGpu[] = [];
  for (const d of pool.devices) {
    const pf = devices.get(d.pciAddress);
    if (!pf || gpuProblem(pf, devices) !== undefined) continue;
    const vfs = pf.sriov?.vfs ?? [];
    const fb = capacity[pf.pciAddress]?.[FRAMEBUFFER_KEY];
    if (vfs.length === 0 || !fb) continue;
    const cat = catalogue(pf, devices, inventory, capacity);
    const profiles: OfferedProfile[] = [];
    for (const want of pool.onDemand?.vgpuProfiles ?? []) {
      const t = resolveVgpuProfile(want, cat);
      const gb = framebufferGb(t?.name);
      // MIG-backed types need GPU instances first: not offered on demand.
      if (!t || gb === undefined || gb > fb || migProfileOf(t.name) !== undefined || profiles.some((x) => x.id === t.id)) continue;
      profiles.push({ ...t, gb });
    }
    if (profiles.length === 0) continue;
    profiles.sort((a, b) => a.id - b.id);
    const sizes = new Map(cat.flatMap((t) => (framebufferGb(t.name) !== undefined ? [[t.id, framebufferGb(t.name) as number] as const] : [])));
    out.push({ pf: pf.pciAddress, framebufferGb: fb, profiles, vfs, heterogeneous: pool.vgpuHeterogeneous === true, sizes });
  }
  return out.sort((a, b) => compareText(a.pf, b.pf));
}

/** The VF and type id an on-demand vGPU device name stands for (`vgpu-0000-3b-00-4-1153`). */
export function parseVgpuDevice(name: string): { vf: string; type: number } | undefined {
  const m = /^vgpu-([0-9a-f]{4})-([0-9a-f]{2})-([0-9a-f]{2})-([0-7])-(\d+)$/.exec(name);
  return m ? { vf: `${m[1]}:${m[2]}:${m[3]}.${m[4]}`, type: Number(m[5]) } : undefined;
}

/** The DRA device name of type `type` on VF `vf`. */
export function vgpuDeviceName(vf: string, type: number): string {
  return `vgpu-${vf.toLowerCase().replace(/[:.]/g, '-')}-${type}`;
}

const typeLabel = (t: VgpuType | undefined, id: number): string => t?.name ?? `type ${id}`;

/**
 * The writes of one on-demand vGPU pool. `wanted` is keyed by VF address (a claim's VF) and says
 * the type; `ours` holds the VFs the checkpoint says we typed. Per GPU, in order: NVIDIA's
 * sriov-manage when its VFs are not enabled; clearing each of our typed VFs no claim wants (or
 * wants with another type) unless someone holds it; mixed-size mode before the first vGPU of a
 * heterogeneous pool; the claimed type on each untyped claimed VF that lists it as creatable. A
 * claim whose type cannot be written now gets a failure with the reason.
 */
export function planOnDemandVgpu(
  pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, inventory: Pick<Inventory, 'vgpuCatalogues'>,
  wanted: ReadonlyMap<string, WantedMdev>, ours: ReadonlySet<string>, held: ReadonlySet<string>, out: CarvingPlan & { failed?: OnDemandFailure[] },
): void {
  const fail = (vf: string, reason: string): void => void (out.failed ??= []).push({ pool: pool.name, uuid: vf, reason });
  const mine = [...wanted.values()].filter((w) => w.pool === pool.name && w.vgpuType !== undefined);
  for (const d of pool.devices) {
    const pf = devices.get(d.pciAddress);
    const here = mine.filter((w) => devices.get(w.uuid)?.physfn === d.pciAddress);
    if (!pf) continue;
    const problem = gpuProblem(pf, devices);
    if (problem) {
      out.blocked.push({ pool: pool.name, device: pf.pciAddress, reason: problem });
      continue;
    }
    const vfs = pf.sriov?.vfs ?? [];
    if (vfs.length === 0) {
      out.writes.push({ path: `bus/pci/devices/${pf.pciAddress}/sriov_numvfs`, value: String(pf.sriov?.totalVFs ?? 0), tool: 'sriov-manage', why: `enable the VFs of ${pf.pciAddress} with NVIDIA's sriov-manage -e (pool ${pool.name})`, group: pf.pciAddress, pools: [pool.name] });
      continue;
    }
    const cur = (a: string): number | undefined => devices.get(a)?.nvidiaVgpu?.currentType;
    const unreadable = vfs.filter((a) => devices.get(a)?.nvidiaVgpu !== undefined && cur(a) === undefined);
    if (unreadable.length > 0) {
      out.blocked.push({ pool: pool.name, device: pf.pciAddress, reason: `current_vgpu_type of ${unreadable.join(', ')} cannot be read now; ${pf.pciAddress} waits` });
      for (const w of here) fail(w.uuid, `the vGPU types of ${pf.pciAddress} cannot be read now`);
      continue;
    }
    const cat = catalogue(pf, devices, inventory);
    const byVf = new Map(here.map((w) => [w.uuid, w]));
    const index = new Map(vfs.map((a, i) => [a, i]));
    // Clears: our types nobody wants (with that type) and nobody holds.
    for (const vf of vfs) {
      const c = cur(vf) ?? 0;
      const w = byVf.get(vf);
      if (c === 0 || !ours.has(vf) || w?.vgpuType === c) continue;
      if (held.has(vf)) {
        if (w) fail(vf, `VF ${vf} still has ${typeLabel(cat.find((t) => t.id === c), c)} of a VM that holds it; ${typeLabel(cat.find((t) => t.id === w.vgpuType), w.vgpuType ?? 0)} cannot be written before it is released`);
        else out.blocked.push({ pool: pool.name, device: vf, reason: `VF ${vf} (${typeLabel(cat.find((t) => t.id === c), c)}) is held; its type is cleared once released` });
        continue;
      }
      out.writes.push({ path: vgpuTypePath(vf), value: '0', why: `clear ${typeLabel(cat.find((t) => t.id === c), c)} from VF ${vf}: no claim of pool ${pool.name} wants it any more`, group: vf, pools: [pool.name] });
    }
    const typedNow = vfs.filter((a) => (cur(a) ?? 0) > 0);
    const creates: SysfsWrite[] = [];
    for (const w of here.sort((a, b) => (index.get(a.uuid) ?? 0) - (index.get(b.uuid) ?? 0))) {
      const vf = w.uuid;
      const t = w.vgpuType as number;
      const c = cur(vf) ?? 0;
      const label = typeLabel(cat.find((x) => x.id === t), t);
      if (c === t) continue; // carved
      if (c !== 0) {
        if (!ours.has(vf)) fail(vf, `VF ${vf} has vGPU type ${c}, which this pool did not write (left alone)`);
        continue; // ours: cleared above (or held), typed in a later pass
      }
      const vfDev = devices.get(vf);
      if (vfDev?.driver !== NVIDIA_DRIVER) {
        fail(vf, `VF ${vf} is ${vfDev?.driver ? `bound to ${vfDev.driver}` : 'not bound to a driver'}, not nvidia`);
        continue;
      }
      if (!(vfDev.nvidiaVgpu?.creatableTypes ?? []).some((x) => x.id === t)) {
        fail(vf, `${label} no longer fits on ${pf.pciAddress}: VF ${vf} does not list it in creatable_vgpu_types (the GPU's framebuffer is used${pool.vgpuHeterogeneous ? '' : ', or another framebuffer size fixed it'})`);
        continue;
      }
      creates.push({ path: vgpuTypePath(vf), value: String(t), why: `create ${label} on VF ${index.get(vf) ?? '?'} of ${pf.pciAddress} for claim ${w.claim}`, group: pf.pciAddress, pools: [pool.name] });
    }
    if (creates.length > 0 && pool.vgpuHeterogeneous === true && typedNow.length === 0) {
      out.writes.push({ path: `bus/pci/devices/${pf.pciAddress}`, value: '1', tool: 'nvidia-smi-shm', why: `mixed-size vGPU mode on ${pf.pciAddress} before its first vGPU (nvidia-smi vgpu -shm 1)`, group: pf.pciAddress, pools: [pool.name] });
    }
    out.writes.push(...creates);
  }
}

/**
 * Releases a deleting or removed on-demand vGPU pool: each VF of its GPUs typed with one of its
 * profiles is cleared unless held (kept, listed in `held`). VFs stay enabled: sriov-manage -d
 * would clear types this pool did not write.
 */
export function planOnDemandVgpuUncarve(pool: PoolPlan, devices: ReadonlyMap<string, InventoryDevice>, inventory: Pick<Inventory, 'vgpuCatalogues'>, allocated: ReadonlySet<string>, out: CarvingPlan & { held: string[] }): void {
  for (const d of pool.devices) {
    const pf = devices.get(d.pciAddress);
    if (!pf) continue;
    const cat = catalogue(pf, devices, inventory);
    const ids = new Set((pool.onDemand?.vgpuProfiles ?? []).map((p) => resolveVgpuProfile(p, cat)?.id).filter((x): x is number => x !== undefined));
    for (const vf of pf.sriov?.vfs ?? []) {
      const c = devices.get(vf)?.nvidiaVgpu?.currentType ?? 0;
      if (!ids.has(c)) continue;
      if (allocated.has(vf)) {
        out.held.push(vf);
        out.blocked.push({ pool: pool.name, device: vf, reason: `VF ${vf} (${typeLabel(cat.find((t) => t.id === c), c)}) is allocated; its type is cleared once released` });
        continue;
      }
      out.writes.push({ path: vgpuTypePath(vf), value: '0', why: `release ${typeLabel(cat.find((t) => t.id === c), c)} of VF ${vf} (pool ${pool.name})`, group: vf, pools: [pool.name] });
    }
  }
}
