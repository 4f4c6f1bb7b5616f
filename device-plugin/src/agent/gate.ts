// The one place a destructive carving write passes. The planners already leave held slices alone;
// the gate checks again, right before the write, against the ledger, from the kernel's point of
// view: which existing devices would this write tear down (a PF's VF count takes every VF and the
// mdevs on them, an unbind takes the function and what hangs off it, an mdev `remove` or a
// `vport_delete` takes that one)? If any of them is held, or nobody can say ("don't know" is held),
// the write and the rest of its group are refused and reported; nothing is written.
//
// One exception, for a function that is back on the host driver it had before virtualio first moved
// it (`onOriginalDriver`, from the checkpoint's original facts), as every function is after a reboot:
// its holder was handed it on the pool's driver and cannot be using it through the host driver, so
// unbinding it from there takes nothing from anyone (what hangs off it — VFs, mdevs, vports — still
// counts). This is what lets a held passthrough function or VF be re-bound after a reboot.
import type { Inventory, InventoryDevice, SysfsWrite } from '../model.js';
import { gpuVfPathTarget } from '../carving/gpu-vf.js';

/** Every slice-shaped ID that exists on the node: functions, mdevs, vports. */
export function existingIds(inv: Inventory): Set<string> {
  const out = new Set<string>();
  for (const d of inv.devices) {
    out.add(d.pciAddress);
    for (const m of d.mdevs ?? []) out.add(m.uuid);
  }
  for (const v of inv.vports ?? []) if (v.wwpn) out.add(v.wwpn);
  return out;
}

/** What goes with a PCI function when it is torn down: its VFs, mdevs on it and them, its vports. */
function below(addr: string, devices: ReadonlyMap<string, InventoryDevice>, inv: Inventory, withSelf: boolean, out: Set<string>): void {
  const d = devices.get(addr);
  if (withSelf) out.add(addr);
  if (!d) return;
  for (const m of d.mdevs ?? []) out.add(m.uuid);
  for (const v of inv.vports ?? []) if (v.pciAddress === addr && v.wwpn) out.add(v.wwpn);
  for (const vf of d.sriov?.vfs ?? []) below(vf, devices, inv, true, out);
}

const PCI_ATTR = /^bus\/pci\/devices\/([^/]+)\/(sriov_numvfs|driver\/unbind|remove)$/;
const DRIVER_UNBIND = /^bus\/pci\/drivers\/[^/]+\/unbind$/;
const MDEV_REMOVE = /^bus\/mdev\/devices\/([^/]+)\/remove$/;
const VPORT_DELETE = /^class\/fc_host\/[^/]+\/vport_delete$/;
const VPORT_SELF_DELETE = /^class\/fc_vports\/([^/]+)\/vport_delete$/;
const VGPU_TYPE = /^bus\/pci\/devices\/([^/]+)\/nvidia\/current_vgpu_type$/;

/**
 * The existing devices a write destroys (an empty list for writes that create, bind or set a value
 * that destroys nothing, e.g. `sriov_numvfs` equal to the current count).
 */
export function victimsOf(
  w: SysfsWrite,
  inv: Inventory,
  devices: ReadonlyMap<string, InventoryDevice> = new Map(inv.devices.map((d) => [d.pciAddress, d])),
  onOriginalDriver: OnOriginalDriver = () => false,
): string[] {
  const out = new Set<string>();
  const value = w.value.trim();
  const m = PCI_ATTR.exec(w.path);
  if (m) {
    const [, addr, attr] = m as unknown as [string, string, string];
    const d = devices.get(addr);
    if (attr === 'sriov_numvfs') {
      const vfs = d?.sriov?.vfs ?? [];
      if (vfs.length > 0 && value !== String(vfs.length)) below(addr, devices, inv, false, out);
    } else if (attr === 'remove') {
      if (value === '1') below(addr, devices, inv, true, out);
    } else if (d?.driver) {
      below(addr, devices, inv, !onOriginalDriver(addr, d.driver), out); // unbind from its driver: a PF driver's remove disables SR-IOV too
    }
  } else if (DRIVER_UNBIND.test(w.path)) {
    const drv = devices.get(value)?.driver;
    if (drv) below(value, devices, inv, !onOriginalDriver(value, drv), out);
  } else if (VGPU_TYPE.test(w.path)) {
    // NVIDIA vendor VFIO: clearing (0) or changing a VF's vGPU type destroys the vGPU a VM may use;
    // typing an untyped VF destroys nothing. An unknown current type counts as typed.
    const vf = (VGPU_TYPE.exec(w.path) as RegExpExecArray)[1] as string;
    const cur = devices.get(vf)?.nvidiaVgpu?.currentType;
    if (cur !== 0 && value !== String(cur)) out.add(vf);
  } else if (gpuVfPathTarget(w.path)) {
    // Intel SR-IOV GPU provisioning (i915 quotas, xe sriov_admin profile): the driver applies a new
    // value to an enabled VF at once (i915 reallocates its LMEM), under whatever VM has it.
    const t = gpuVfPathTarget(w.path) as { pf: string; vf: number };
    const vf = devices.get(t.pf)?.sriov?.vfs?.[t.vf - 1];
    if (vf !== undefined) out.add(vf);
  } else if (MDEV_REMOVE.test(w.path)) {
    const uuid = (MDEV_REMOVE.exec(w.path) as RegExpExecArray)[1] as string;
    if (value === '1') out.add(uuid);
  } else if (VPORT_DELETE.test(w.path)) {
    const wwpn = value.split(':')[0]?.toLowerCase().replace(/^0x/, '');
    if (wwpn) out.add(wwpn);
  } else if (VPORT_SELF_DELETE.test(w.path)) {
    const name = (VPORT_SELF_DELETE.exec(w.path) as RegExpExecArray)[1];
    const v = (inv.vports ?? []).find((x) => x.name === name);
    if (v?.wwpn) out.add(v.wwpn);
  }
  return [...out].sort();
}

/** Is this function on the host driver it had before virtualio first moved it (see the file comment)? */
export type OnOriginalDriver = (pciAddress: string, driver: string) => boolean;

/** Why a slice must not be destroyed now (held, or nobody can tell), or undefined. */
export type Protection = (id: string) => string | undefined;

export interface GateResult {
  /** Writes that may go ahead, in order, with what each destroys. */
  allowed: { write: SysfsWrite; victims: string[] }[];
  /** Writes refused: the first held victim and why; later writes of the same group are refused with it. */
  refused: { write: SysfsWrite; victim: string; why: string }[];
}

/** Checks writes in order; a refused write also refuses the rest of its group (they depend on it). */
export function gate(writes: readonly SysfsWrite[], inv: Inventory, protection: Protection, onOriginalDriver?: OnOriginalDriver): GateResult {
  const devices = new Map(inv.devices.map((d) => [d.pciAddress, d]));
  const out: GateResult = { allowed: [], refused: [] };
  const closed = new Map<string, { victim: string; why: string }>();
  for (const w of writes) {
    const key = w.group ?? w.path;
    const earlier = closed.get(key);
    if (earlier) {
      out.refused.push({ write: w, ...earlier });
      continue;
    }
    const victims = victimsOf(w, inv, devices, onOriginalDriver);
    let hit: { victim: string; why: string } | undefined;
    for (const v of victims) {
      // A VM holds a whole IOMMU group: a member of a held slice's group (a GPU's audio function) is held too.
      for (const id of [v, ...(devices.get(v)?.iommuGroupMembers ?? [])]) {
        const why = protection(id);
        if (why) {
          hit = { victim: v, why: id === v ? why : `in the IOMMU group of ${id}, ${why}` };
          break;
        }
      }
      if (hit) break;
    }
    if (hit) {
      closed.set(key, hit);
      out.refused.push({ write: w, ...hit });
    } else {
      out.allowed.push({ write: w, victims });
    }
  }
  return out;
}
