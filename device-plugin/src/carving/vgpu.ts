// NVIDIA vendor-specific VFIO vGPU pools (vGPU 17+): which VF of a GPU serves which pool, and the
// writes that make it so. A pool names a profile; each GPU resolves it to its own type id. The VFs
// stay on `nvidia` (never rebound): sriov-manage enables them, `nvidia/current_vgpu_type` types them,
// writing 0 clears a type. Pure, like the rest of carving: the same layout feeds planning and health.
import type { CarvingPlan, Inventory, InventoryDevice, PoolPlan, SysfsWrite } from '../model.js';
import { compareText } from '../sysfs/pci.js';
import { catalogueOf, framebufferGb, gpuInterfaceOf, migProfileOf, resolveVgpuProfile, type VgpuType } from './gpu.js';

/** The driver vendor-VFIO VFs stay on. */
export const NVIDIA_DRIVER = 'nvidia';

/** A pool whose slices are NVIDIA vendor-VFIO vGPUs on VFs. */
export function isVgpuPool(p: PoolPlan): boolean {
  return p.mode === 'SRIOV' && typeof p.vgpuProfile === 'string' && p.vgpuProfile.length > 0;
}

/** `bus/pci/devices/<vf>/nvidia/current_vgpu_type`. */
export function vgpuTypePath(vf: string): string {
  return `bus/pci/devices/${vf}/nvidia/current_vgpu_type`;
}

/** Where one vGPU pool stands on one GPU. */
export interface VgpuPoolLayout {
  pool: PoolPlan;
  /** The profile resolved on this GPU (absent: the GPU has no such type). */
  type?: VgpuType;
  /** The pool's VFs on this GPU, in VF order: typed with its type, or chosen to be (at most `count`). */
  chosen: string[];
  /** Of `chosen`, the VFs still untyped (to be typed). */
  toType: string[];
  /** VFs typed with the pool's type beyond its count (cleared once no VM holds them). */
  extras: string[];
  /** Why the pool cannot have all it asks on this GPU (absent: it can). */
  problem?: string;
  /** MIG-backed profile: GPU instances of this MIG profile to create before the types fit. */
  gis?: { profile: string; count: number };
}

/** The MIG profile of a pool's vGPU profile name (`H100-1-10C` → `1g.10gb`), or undefined. */
export function poolMigProfile(p: PoolPlan): string | undefined {
  return migProfileOf(p.vgpuProfile);
}

/** One GPU and its vGPU pools. */
export interface VgpuGpuLayout {
  pf: string;
  /** Nothing can be carved on this GPU, and why. */
  problem?: string;
  /** The VFs are not enabled yet: sriov-manage -e is the next step. */
  enable?: { totalVFs: number };
  pools: VgpuPoolLayout[];
  /** VFs with a type no pool here asks for (someone else's): left alone. */
  foreign: { vf: string; type: number }[];
  /** Set the GPU's mixed-size mode before the first type (a pool asks for it and no VF has a type). */
  mixedSize: boolean;
  /** VF index by address. */
  index: Map<string, number>;
}

function typeName(t: VgpuType | undefined, id?: number): string {
  return t?.name ?? `type ${t?.id ?? id ?? '?'}`;
}

/** Pools by the GPU (pool device) they name, sorted by pool name within each. */
export function vgpuPoolsByGpu(pools: readonly PoolPlan[]): Map<string, PoolPlan[]> {
  const out = new Map<string, PoolPlan[]>();
  for (const p of [...pools].filter(isVgpuPool).sort((a, b) => compareText(a.name, b.name))) {
    for (const d of p.devices) out.set(d.pciAddress, [...(out.get(d.pciAddress) ?? []), p]);
  }
  return out;
}

/**
 * The layout of the vGPU pools on one GPU. Each pool keeps the VFs already typed with its type (in
 * VF order, up to `count`), then takes free VFs (no type) that still list its type as creatable;
 * VFs go to pools in name order, so two pools never pick the same VF. Two pools whose types differ
 * in framebuffer size (or one whose size differs from a type already on the GPU) need
 * `vgpuHeterogeneous` on every pool of the GPU: without it, the pool whose size is not on the GPU
 * yet (or, when none is, the later one by name) is refused with the reason.
 */
export function layoutGpu(pfAddr: string, pools: readonly PoolPlan[], devices: ReadonlyMap<string, InventoryDevice>, inventory: Inventory): VgpuGpuLayout {
  const out: VgpuGpuLayout = { pf: pfAddr, pools: pools.map((pool) => ({ pool, chosen: [], toType: [], extras: [] })), foreign: [], mixedSize: false, index: new Map() };
  const pf = devices.get(pfAddr);
  if (!pf) return { ...out, problem: `device ${pfAddr} not found` };
  const iface = gpuInterfaceOf(pf, devices);
  if (iface === 'Mdev') {
    return { ...out, problem: `${pfAddr} speaks the mdev vGPU interface (mdev types on the GPU or its VFs: vGPU 16 or older, or a kernel with mdev_set_iommu_device); use carving.mode Mediated with mdevType instead of carving.vgpu` };
  }
  if (iface === 'NvidiaSriovDisabled') {
    if (pf.driver !== NVIDIA_DRIVER) return { ...out, problem: `${pfAddr} is ${pf.driver ? `bound to ${pf.driver}` : 'not bound to a driver'}, not nvidia (the NVIDIA vGPU host driver must own the GPU)` };
    return { ...out, enable: { totalVFs: pf.sriov?.totalVFs ?? 0 } };
  }
  if (iface !== 'NvidiaVendorVfio') {
    const why = pf.vendorID === '10de' && (pf.sriov?.vfs ?? []).length > 0 ? `its VFs show no nvidia/ folder (not on the nvidia vGPU host driver of vGPU 17 or later?)` : `it speaks ${iface ?? 'no GPU interface'}`;
    return { ...out, problem: `${pfAddr} is not an NVIDIA vendor-specific VFIO GPU: ${why}` };
  }
  const catalogue = inventory.vgpuCatalogues?.[pfAddr] ?? catalogueOf(pf, devices);
  const vfs = pf.sriov?.vfs ?? [];
  vfs.forEach((a, i) => out.index.set(a, i));
  const cur = (a: string): number | undefined => devices.get(a)?.nvidiaVgpu?.currentType;
  const sizeOf = (id: number): number | undefined => framebufferGb(catalogue.find((t) => t.id === id)?.name);

  for (const l of out.pools) {
    const t = resolveVgpuProfile(l.pool.vgpuProfile ?? '', catalogue);
    const mig = poolMigProfile(l.pool);
    if (t) l.type = t;
    else if (mig) {
      // A MIG-backed type is listed only once a free GPU instance of its profile exists.
      l.problem = `${l.pool.vgpuProfile ?? ''} needs GPU instances of MIG profile ${mig} on ${pfAddr}: creating them`;
      l.gis = { profile: mig, count: l.pool.count ?? 1 };
    } else l.problem = `profile ${l.pool.vgpuProfile ?? ''} is not among the vGPU types ${pfAddr} has listed${catalogue.length ? ` (${catalogue.map((x) => x.name ?? x.id).join(', ')})` : ' (it lists no creatable types now and the agent has not seen its catalogue since it started)'}`;
  }
  const present = new Set(vfs.map(cur).filter((x): x is number => x !== undefined && x > 0));
  // Mixed-size mode asked for but off: a vGPU exists and the free VFs list types of its size only
  // (some, so the GPU is not simply full). No sysfs file shows the mode; this is how the driver shows it.
  const sizeFixed = (heterogeneous: boolean, wantedSize: number | undefined, free: readonly string[]): boolean => {
    if (!heterogeneous || present.size === 0) return false;
    const sizes = new Set([...present].map(sizeOf));
    if (sizes.has(wantedSize)) return false;
    const listed = free.flatMap((a) => devices.get(a)?.nvidiaVgpu?.creatableTypes ?? []);
    return listed.length > 0 && listed.every((x) => sizes.has(sizeOf(x.id)));
  };
  // Pools whose type is on the GPU already keep their place; then by name.
  const order = out.pools.filter((l) => l.type).sort((a, b) => Number(!present.has(a.type!.id)) - Number(!present.has(b.type!.id)) || compareText(a.pool.name, b.pool.name));
  const accepted: VgpuPoolLayout[] = [];
  for (const l of order) {
    const t = l.type as VgpuType;
    const same = accepted.find((a) => a.type!.id === t.id);
    if (same) {
      l.problem = `pool ${same.pool.name} already serves ${typeName(t)} on ${pfAddr}: one pool (one resource) per profile and GPU`;
      continue;
    }
    const size = sizeOf(t.id);
    const others = [...accepted.map((a) => ({ who: `pool ${a.pool.name}'s ${typeName(a.type)}`, size: sizeOf(a.type!.id), het: a.pool.vgpuHeterogeneous === true })),
      ...[...present].filter((id) => !accepted.some((a) => a.type!.id === id) && id !== t.id).map((id) => ({ who: `${typeName(catalogue.find((x) => x.id === id), id)} already on the GPU`, size: sizeOf(id), het: true }))];
    const clash = others.find((o) => o.size !== size);
    if (clash && (l.pool.vgpuHeterogeneous !== true || !others.every((o) => o.het))) {
      const without = [l, ...accepted].filter((a) => a.pool.vgpuHeterogeneous !== true).map((a) => a.pool.name).sort(compareText);
      l.problem = `${typeName(t)} (${size ?? '?'} GB) and ${clash.who} (${clash.size ?? '?'} GB) would mix framebuffer sizes on ${pfAddr}, which NVIDIA allows only in mixed-size (heterogeneous) mode: set spec.carving.vgpu.heterogeneous on ${without.length ? `pool(s) ${without.join(', ')}` : 'every pool of the GPU'}`;
      continue;
    }
    accepted.push(l);
  }

  const claimed = new Set<string>();
  for (const l of accepted) {
    const t = l.type as VgpuType;
    const count = l.pool.count ?? 1;
    const ours = vfs.filter((a) => cur(a) === t.id);
    l.chosen = ours.slice(0, count);
    l.extras = ours.slice(count);
    for (const a of ours) claimed.add(a);
  }
  for (const l of accepted) {
    const t = l.type as VgpuType;
    const need = (l.pool.count ?? 1) - l.chosen.length;
    if (need <= 0) continue;
    const free = vfs.filter((a) => cur(a) === 0 && !claimed.has(a) && devices.get(a)?.driver === NVIDIA_DRIVER);
    const fits = free.filter((a) => (devices.get(a)?.nvidiaVgpu?.creatableTypes ?? []).some((x) => x.id === t.id));
    l.toType = fits.slice(0, need);
    for (const a of l.toType) claimed.add(a);
    l.chosen = [...l.chosen, ...l.toType].sort((a, b) => (out.index.get(a) ?? 0) - (out.index.get(b) ?? 0));
    const missing = need - l.toType.length;
    const mig = poolMigProfile(l.pool);
    if (missing > 0 && mig && l.toType.length === 0 && free.length > 0) {
      l.gis = { profile: mig, count: Math.min(missing, free.length) };
      l.problem = `${missing} of ${l.pool.count ?? 1} ${typeName(t)} vGPUs need GPU instances of MIG profile ${mig} on ${pfAddr}: creating them`;
    } else if (missing > 0) {
      l.problem = free.length === 0
        ? `${missing} of ${l.pool.count ?? 1} ${typeName(t)} vGPUs have no free VF on ${pfAddr}`
        : sizeFixed(l.pool.vgpuHeterogeneous === true, sizeOf(t.id), free)
          ? `${missing} of ${l.pool.count ?? 1} ${typeName(t)} vGPUs do not fit on ${pfAddr} now: its free VFs list no type of this framebuffer size, so mixed-size mode is off there. Without nvidia-smi in the agent (the chart as shipped) the host sets it, before the GPU's first vGPU: nvidia-smi vgpu -i ${pfAddr} -shm 1 (after sriov-manage -e; clear the GPU's vGPUs first if it has some)`
          : `${missing} of ${l.pool.count ?? 1} ${typeName(t)} vGPUs do not fit on ${pfAddr} now: its free VFs do not list the type as creatable (the GPU is full, or another framebuffer size fixed it)`;
    }
  }
  const wanted = new Set(accepted.map((l) => l.type!.id));
  for (const a of vfs) {
    const c = cur(a);
    if (c !== undefined && c > 0 && !wanted.has(c) && !claimed.has(a)) out.foreign.push({ vf: a, type: c });
  }
  out.mixedSize = accepted.some((l) => l.pool.vgpuHeterogeneous === true) && present.size === 0 && accepted.some((l) => l.toType.length > 0);
  return out;
}

/** The layouts of every GPU a vGPU pool of `pools` names. */
export function layoutVgpu(pools: readonly PoolPlan[], devices: ReadonlyMap<string, InventoryDevice>, inventory: Inventory): VgpuGpuLayout[] {
  return [...vgpuPoolsByGpu(pools)].sort(([a], [b]) => compareText(a, b)).map(([pf, ps]) => layoutGpu(pf, ps, devices, inventory));
}

/**
 * Plans the vGPU pools' writes: `sriov-manage -e` on a GPU without VFs; then, per GPU, clearing
 * types beyond a pool's count that no VM holds (held ones are kept and reported), and, once nothing
 * is being cleared on the GPU, mixed-size mode (when asked for, before the first type) and the
 * types of the chosen free VFs. VFs are never rebound. Types no pool here asks for are left alone.
 */
export function planVgpu(pools: readonly PoolPlan[], devices: ReadonlyMap<string, InventoryDevice>, inventory: Inventory, allocated: ReadonlySet<string>, out: CarvingPlan): void {
  for (const g of layoutVgpu(pools, devices, inventory)) {
    const names = g.pools.map((l) => l.pool.name);
    const block = (pool: string, reason: string, device = g.pf): void => void out.blocked.push({ pool, device, reason });
    if (g.problem) {
      for (const n of names) block(n, g.problem);
      continue;
    }
    // A VF whose type cannot be read is not known to be free: nothing is written on this GPU until it can be.
    const unreadable = (devices.get(g.pf)?.sriov?.vfs ?? []).filter((a) => devices.get(a)?.nvidiaVgpu !== undefined && devices.get(a)?.nvidiaVgpu?.currentType === undefined);
    if (unreadable.length > 0) {
      for (const n of names) block(n, `current_vgpu_type of ${unreadable.join(', ')} cannot be read now; ${g.pf} waits`);
      continue;
    }
    if (g.enable) {
      // MIG-backed profiles: MIG mode first (sriov-manage would wipe GPU instances, not the mode).
      if (g.pools.some((l) => poolMigProfile(l.pool))) out.writes.push({ path: `bus/pci/devices/${g.pf}`, value: 'mode=1', tool: 'nvidia-smi-mig', why: `MIG mode on ${g.pf} before its VFs (nvidia-smi -mig 1)`, group: g.pf, pools: names });
      out.writes.push({ path: `bus/pci/devices/${g.pf}/sriov_numvfs`, value: String(g.enable.totalVFs), tool: 'sriov-manage', why: `enable the VFs of ${g.pf} with NVIDIA's sriov-manage -e (pools ${names.join(',')})`, group: g.pf, pools: names });
      continue;
    }
    for (const f of g.foreign) (out.foreign ??= []).push({ pool: names[0] ?? '', device: f.vf, reason: `VF ${f.vf} has vGPU type ${f.type}, which no pool here asks for (not created by this pool); left alone` });
    const clears: SysfsWrite[] = [];
    for (const l of g.pools) {
      if (l.problem) block(l.pool.name, l.problem);
      // A VM keeps its VF: a held VF beyond the count changes place with a free one within it.
      const freeWithin = l.chosen.filter((vf) => !l.toType.includes(vf) && !allocated.has(vf)).reverse();
      for (const extra of l.extras) {
        const vf = allocated.has(extra) ? freeWithin.shift() : extra;
        if (vf === undefined) {
          block(l.pool.name, `VF ${extra} has ${typeName(l.type)} beyond the pool's count and a VM holds it: cleared once released`, extra);
          continue;
        }
        clears.push({ path: vgpuTypePath(vf), value: '0', why: `clear ${typeName(l.type)} from VF ${vf}: beyond the count of pool ${l.pool.name}`, group: vf, pools: [l.pool.name] });
      }
    }
    if (clears.length > 0) {
      out.writes.push(...clears); // types go on in the next pass, from a fresh creatable_vgpu_types
      continue;
    }
    if (g.mixedSize) out.writes.push({ path: `bus/pci/devices/${g.pf}`, value: '1', tool: 'nvidia-smi-shm', why: `mixed-size vGPU mode on ${g.pf} before its first vGPU (nvidia-smi vgpu -shm 1)`, group: g.pf, pools: names });
    for (const l of g.pools) {
      if (l.gis) out.writes.push({ path: `bus/pci/devices/${g.pf}`, value: `cgi=${Array.from({ length: l.gis.count }, () => l.gis!.profile).join(',')}`, tool: 'nvidia-smi-mig', why: `create ${l.gis.count} GPU instance(s) of ${l.gis.profile} on ${g.pf} (pool ${l.pool.name})`, group: g.pf, pools: [l.pool.name] });
      for (const vf of l.toType) out.writes.push({ path: vgpuTypePath(vf), value: String(l.type!.id), why: `create ${typeName(l.type)} on VF ${g.index.get(vf) ?? '?'} of ${g.pf} (pool ${l.pool.name})`, group: g.pf, pools: [l.pool.name] });
    }
  }
}

/**
 * Releases a deleting or removed vGPU pool: every VF typed with its type is cleared unless a VM
 * holds it (kept, listed in `held`) or an active pool serves the same type on that GPU; once no VF
 * of the GPU has a type and no active vGPU pool is left on it, sriov-manage -d disables the VFs
 * (only on GPUs whose VFs this agent enabled, when `ownedPfs` is given).
 */
export function planVgpuUncarve(pool: PoolPlan, active: readonly PoolPlan[], devices: ReadonlyMap<string, InventoryDevice>, inventory: Inventory, allocated: ReadonlySet<string>, out: CarvingPlan, held: Set<string>, ownedPfs?: ReadonlySet<string>): void {
  for (const pd of pool.devices) {
    const pf = devices.get(pd.pciAddress);
    if (!pf) continue;
    const vfs = pf.sriov?.vfs ?? [];
    if (vfs.length === 0) continue;
    const others = active.filter((p) => isVgpuPool(p) && p.name !== pool.name && p.devices.some((d) => d.pciAddress === pd.pciAddress));
    const catalogue = inventory.vgpuCatalogues?.[pf.pciAddress] ?? catalogueOf(pf, devices);
    const t = resolveVgpuProfile(pool.vgpuProfile ?? '', catalogue);
    const shared = t !== undefined && others.some((p) => resolveVgpuProfile(p.vgpuProfile ?? '', catalogue)?.id === t.id);
    const cur = (a: string): number => devices.get(a)?.nvidiaVgpu?.currentType ?? 0;
    if (t && !shared) {
      for (const vf of vfs.filter((a) => cur(a) === t.id)) {
        if (allocated.has(vf)) {
          held.add(vf);
          out.blocked.push({ pool: pool.name, device: vf, reason: `VF ${vf} (${typeName(t)}) is allocated; its type is cleared once released` });
          continue;
        }
        out.writes.push({ path: vgpuTypePath(vf), value: '0', why: `release ${typeName(t)} of VF ${vf} (pool ${pool.name})`, group: vf, pools: [pool.name] });
      }
    }
    if (others.length > 0 || vfs.some((a) => cur(a) !== 0) || vfs.some((a) => allocated.has(a))) continue;
    if (ownedPfs && !ownedPfs.has(pf.pciAddress)) continue;
    // Reverse of the making order: types (above, a pass earlier), GPU instances, VFs, MIG mode.
    const mig = poolMigProfile(pool) !== undefined;
    const at = `bus/pci/devices/${pf.pciAddress}`;
    if (mig) out.writes.push({ path: at, value: 'dgi', tool: 'nvidia-smi-mig', why: `destroy the unused GPU instances of ${pf.pciAddress} (pool ${pool.name} released)`, group: pf.pciAddress, pools: [pool.name] });
    out.writes.push({ path: `${at}/sriov_numvfs`, value: '0', tool: 'sriov-manage', why: `disable the VFs of ${pf.pciAddress} with sriov-manage -d (pool ${pool.name} released)`, group: pf.pciAddress, pools: [pool.name] });
    if (mig) out.writes.push({ path: at, value: 'mode=0', tool: 'nvidia-smi-mig', why: `MIG mode off on ${pf.pciAddress} (pool ${pool.name} released)`, group: pf.pciAddress, pools: [pool.name] });
  }
}
