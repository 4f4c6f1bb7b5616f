// GPU interfaces, detected per device (never per node): which carving ABI one GPU speaks, and the
// NVIDIA vendor-specific VFIO facts (vGPU 17+) discovery reads from a VF's `nvidia/` folder.
// ../docs/gpu-nvidia-vendor-vfio.md describes the ABI; every fact here is read from sysfs.
import type { Inventory, InventoryDevice } from '../model.js';

/** The carving ABI of one GPU (the CRD's `gpuInterface`). */
export type GpuInterface = 'NvidiaVendorVfio' | 'Mdev' | 'SriovVfio' | 'NvidiaSriovDisabled' | 'AmdMxgpu' | 'IntelI915Iov' | 'IntelXeSriov' | 'Passthrough';

/** What discovery saw beside the PCI attributes: Intel's SR-IOV provisioning folders. */
export type GpuHint = 'i915-iov' | 'xe-sriov-admin';

/** AMD's MxGPU host driver: it creates the VFs itself when it loads; sriov_numvfs is not its way. */
export const AMD_GIM_DRIVER = 'gim';

export type VgpuType = { id: number; name?: string };

/**
 * Parses `nvidia/creatable_vgpu_types`: a header line (`ID    : vGPU Name`), then `%-5d : %s` per
 * type. A header alone (a VF that has a type, or a full GPU) is an empty list. Lines that are not
 * `<id> : <name>` are returned in `bad` so the caller can report them.
 */
export function parseCreatableTypes(text: string): { types: VgpuType[]; bad: string[] } {
  const types: VgpuType[] = [];
  const bad: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || /^ID\s*:/i.test(line)) continue;
    const m = /^(\d+)\s*:\s*(.*)$/.exec(line);
    if (m) types.push({ id: Number(m[1]), name: (m[2] as string).trim() });
    else bad.push(line);
  }
  return { types, bad };
}

// Display controllers (03) and processing accelerators (12: Instinct, some data-center parts).
const isDisplayClass = (c: string | undefined): boolean => c !== undefined && (c.startsWith('03') || c.startsWith('12'));

/**
 * The interface a GPU (a PF, or a function without SR-IOV) speaks, from what its own sysfs shows:
 * - `NvidiaVendorVfio`: a VF has the `nvidia/` folder (current_vgpu_type, creatable_vgpu_types);
 * - `Mdev`: the function or one of its VFs lists mdev types, or carries mdevs (the vGPU ≤ 16 ABI,
 *   and any kernel that still has mdev_set_iommu_device);
 * - `NvidiaSriovDisabled`: an NVIDIA SR-IOV GPU with no VFs yet; which of the two above it speaks
 *   shows once sriov-manage has enabled them (the PF itself has neither folder);
 * - `AmdMxgpu`: a PF on AMD's `gim`, which creates the VFs when it loads (count not settable in sysfs);
 * - `IntelI915Iov` / `IntelXeSriov`: an Intel PF whose driver shows its per-VF provisioning folder
 *   (i915 `drm/cardN/prelim_iov` or `iov`; xe `sriov_admin`); VFs for vfio-pci;
 * - `SriovVfio`: another SR-IOV GPU: plain VFs for vfio-pci;
 * - `Passthrough`: the whole function only.
 * Undefined for functions that are not display-class PFs (VFs, NICs...).
 */
export function gpuInterfaceOf(dev: InventoryDevice, devices: ReadonlyMap<string, InventoryDevice>, hint?: GpuHint): GpuInterface | undefined {
  if (!isDisplayClass(dev.classCode) || dev.physfn !== undefined) return undefined;
  const vfs = (dev.sriov?.vfs ?? []).map((a) => devices.get(a)).filter((d): d is InventoryDevice => d !== undefined);
  if (vfs.some((v) => v.nvidiaVgpu !== undefined)) return 'NvidiaVendorVfio';
  const mdevish = (d: InventoryDevice): boolean => (d.mdevTypes ?? []).length > 0 || (d.mdevs ?? []).length > 0;
  if (mdevish(dev) || vfs.some(mdevish)) return 'Mdev';
  if (dev.driver === AMD_GIM_DRIVER) return 'AmdMxgpu';
  if (hint === 'i915-iov') return 'IntelI915Iov';
  if (hint === 'xe-sriov-admin') return 'IntelXeSriov';
  if (dev.sriov?.totalVFs !== undefined) {
    if (dev.vendorID === '10de' && vfs.length === 0) return 'NvidiaSriovDisabled';
    return 'SriovVfio';
  }
  return 'Passthrough';
}

/** Fills `gpuInterface` on every display-class PF of a (sorted) device list, in place. */
export function markGpuInterfaces(devices: InventoryDevice[], hints: ReadonlyMap<string, GpuHint> = new Map()): void {
  const byAddr = new Map(devices.map((d) => [d.pciAddress, d]));
  for (const d of devices) {
    const g = gpuInterfaceOf(d, byAddr, hints.get(d.pciAddress));
    if (g !== undefined) d.gpuInterface = g;
  }
}

/** A type name without NVIDIA's prefix and with spaces as "_"-insensitive: "NVIDIA L40S-12Q" → "l40s-12q". */
function profileKey(name: string): string {
  return name.trim().replace(/^NVIDIA[ _]+/i, '').replace(/[ _]+/g, ' ').toLowerCase();
}

/**
 * The type id a pool's profile names in `catalogue` (every type the GPU listed: id and name): a
 * decimal id, or a name with or without the "NVIDIA " prefix, case-insensitive. Undefined when the
 * GPU has no such type.
 */
export function resolveVgpuProfile(profile: string, catalogue: readonly VgpuType[]): VgpuType | undefined {
  if (/^\d+$/.test(profile.trim())) return catalogue.find((t) => t.id === Number(profile.trim()));
  const key = profileKey(profile);
  return catalogue.find((t) => t.name !== undefined && profileKey(t.name) === key);
}

/**
 * The GPU's type catalogue as its VFs show it now: the union of every VF's creatable list. A VF
 * that has a type lists nothing, and a full GPU lists nothing anywhere, so the caller keeps the
 * catalogue it saw earlier ({@link mergeCatalogue}): NVIDIA's advice is to keep the first full read.
 */
export function catalogueOf(pf: InventoryDevice, devices: ReadonlyMap<string, InventoryDevice>): VgpuType[] {
  const seen = new Map<number, VgpuType>();
  for (const a of pf.sriov?.vfs ?? []) {
    for (const t of devices.get(a)?.nvidiaVgpu?.creatableTypes ?? []) if (!seen.has(t.id)) seen.set(t.id, { id: t.id, ...(t.name !== undefined ? { name: t.name } : {}) });
  }
  return [...seen.values()].sort((a, b) => a.id - b.id);
}

/** `known` plus the types of `now` it did not have (an id keeps its first name). */
export function mergeCatalogue(known: readonly VgpuType[], now: readonly VgpuType[]): VgpuType[] {
  const out = new Map(known.map((t) => [t.id, t]));
  for (const t of now) if (!out.has(t.id)) out.set(t.id, t);
  return [...out.values()].sort((a, b) => a.id - b.id);
}

/**
 * The framebuffer size a vGPU type name implies, in GB, for the heterogeneous-mode check: the
 * number before the series letter (`L40S-12Q` → 12, `A16-4C` → 4; MIG-backed `H100-1-10C` → 10).
 * Undefined when the name does not say.
 */
export function framebufferGb(name: string | undefined): number | undefined {
  if (!name) return undefined;
  const m = /-(?:\d+-)?(\d+)[A-Z]+$/i.exec(name.trim());
  return m ? Number(m[1]) : undefined;
}

/**
 * Sets `inventory.vgpuCatalogues` for every vendor-VFIO GPU: what its VFs list now merged into
 * `memory` (what this process saw before, updated in place). Returns the inventory.
 */
export function rememberCatalogues(inventory: Inventory, memory: Map<string, VgpuType[]>): Inventory {
  const byAddr = new Map(inventory.devices.map((d) => [d.pciAddress, d]));
  const out: Record<string, VgpuType[]> = {};
  for (const d of inventory.devices) {
    if (d.gpuInterface !== 'NvidiaVendorVfio') continue;
    const merged = mergeCatalogue(memory.get(d.pciAddress) ?? [], catalogueOf(d, byAddr));
    memory.set(d.pciAddress, merged);
    out[d.pciAddress] = merged;
  }
  if (Object.keys(out).length > 0) inventory.vgpuCatalogues = out;
  return inventory;
}

/**
 * The MIG profile a MIG-backed vGPU type name names (`H100-1-10C` → `1g.10gb`,
 * NVIDIA/vgpu-device-manager's mapping); undefined for a time-sliced type (`L40S-12Q`, `H100-10C`).
 */
export function migProfileOf(name: string | undefined): string | undefined {
  const m = /-(\d+)-(\d+)[A-Z]+(?:ME|NOME|MEALL|GFX)?$/i.exec((name ?? '').trim());
  return m ? `${m[1]}g.${m[2]}gb` : undefined;
}
