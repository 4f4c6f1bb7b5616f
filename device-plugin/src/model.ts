// The agent's internal model: what discovery, carving and health produce and what the device plugin
// servers consume. Status types written to the API come from crds/generated/types.ts; these types
// carry the extra facts the agent needs at run time (device nodes, netdev, parent addresses).
import type { InventoryDevice, PoolPlan, VirtualIONodeSpec } from '../../crds/generated/types.js';

export type { InventoryDevice, PoolPlan, VirtualIONodeSpec };

export type Health = 'Healthy' | 'Unhealthy';
export type SliceKind = 'VF' | 'Mdev' | 'Function' | 'VPort';

/** A full discovery snapshot of one node: a pure function of the sysfs root (and dev root). */
export interface Inventory {
  /** Every PCI function, sorted by PCI address. Devices with unreadable values carry `errors`. */
  devices: InventoryDevice[];
  /** NPIV virtual ports found under the physical FC hosts, sorted by PCI address, host, name. */
  vports?: FcVport[];
  /** vfio cdev nodes by PCI address, and by UUID for mdevs (`vfio-dev/vfioN` → `/dev/vfio/devices/vfioN`). */
  vfioCdevs?: Record<string, string>;
  /**
   * Entries found under `<devRoot>/vfio`, as canonical paths (`/dev/vfio/vfio`, `/dev/vfio/42`,
   * `/dev/vfio/devices/vfio3`), sorted. Absent when the scan was given no dev root.
   */
  devNodes?: string[];
  /** PCI drivers loaded (`bus/pci/drivers/*`), sorted; absent when that folder is missing or empty. */
  pciDrivers?: string[];
  /**
   * NVIDIA vendor-VFIO GPUs: every vGPU type (id and name) the agent has seen each PF's VFs list,
   * by PF address. `creatable_vgpu_types` shrinks as the GPU fills (and is empty on a typed VF), so
   * the agent keeps what it read before (agent-only; carving/gpu.ts).
   */
  vgpuCatalogues?: Record<string, { id: number; name?: string }[]>;
  /** Intel SR-IOV GPUs: each PF's per-VF provisioning attributes and their values (agent-only; discovery/gpu-vf-iov.ts). */
  gpuVfProvisioning?: Record<string, GpuVfProvisioning>;
  /** Problems that are not tied to one device (e.g. an unreadable `bus/pci/devices`). */
  errors?: string[];
}

/** The per-VF provisioning folder of an Intel SR-IOV GPU's PF. */
export interface GpuVfProvisioning {
  driver: 'i915' | 'xe';
  /** Sysfs path (from the root) of the folder holding `vf1/`, `vf2/`, ... */
  base: string;
  /** By VF number (1-based, as the folder names it): attribute path below `vfN/` (`gt0/lmem_quota`, `profile/vram_quota`) → its value. */
  vfs: Record<string, Record<string, string>>;
  /** Attributes the driver shows read-only on a VF (xe's sched_priority where the GuC cannot change it). */
  readOnly?: string[];
}

/** One NPIV virtual port (agent-only fact; the CRD inventory carries only the physical ports). */
export interface FcVport {
  /** PCI address of the HBA function. */
  pciAddress: string;
  /** The physical port's SCSI host, e.g. `host5`. */
  parentHost: string;
  /** The vport's name, e.g. `vport-5:0-0`. */
  name: string;
  /** The vport's own SCSI host (e.g. `host6`), when it has one. */
  host?: string;
  /** 16 lower-case hex digits, no `0x`. */
  wwpn?: string;
  wwnn?: string;
  /** `vport_state`, e.g. `Active`. */
  state?: string;
}

/** One allocatable unit, as one pool's device plugin advertises it. */
export interface Slice {
  /** Device plugin ID (≤ 63 chars): VF/function PCI address, mdev UUID, or vport WWPN (16 hex). */
  id: string;
  pool: string;
  resourceName: string;
  kind: SliceKind;
  /** PCI address of the physical device the slice was carved from (for Function: itself). */
  parent: string;
  /** PCI address of the function handed to the VM (VF, Function); absent for Mdev and VPort. */
  pciAddress?: string;
  /** Mdev UUID (Mdev only). */
  mdevUuid?: string;
  /** Mdev type, where a pool's slices differ in it (on-demand pools). */
  mdevType?: string;
  /** On-demand vGPU pools: the vGPU type id on the VF (one DRA device per VF and type). */
  vgpuType?: number;
  /** FC vport facts (VPort only). */
  vport?: { wwpn: string; wwnn: string; parentHost: string; host?: string };
  /** Netdev of the PF (NIC pools), for the Multus device-info file. */
  pfNetdev?: string;
  iommuGroup?: number;
  /** Host NUMA node; undefined when sysfs says -1 or nothing. */
  numaNode?: number;
  /**
   * Device nodes to expose, host paths equal container paths: `/dev/vfio/<group>` and, where the
   * function has vfio cdev support, `/dev/vfio/devices/vfioN`. `/dev/vfio/vfio` is always added by
   * Allocate and is not listed here.
   */
  deviceNodes: string[];
  health: Health;
  /** Why the slice is Unhealthy (empty when Healthy). */
  reason?: string;
  /** VF index on its PF (VF), or creation index on its parent (Mdev, VPort). */
  index?: number;
  /**
   * Why the slice left the plan while a pod holds it. A draining slice stays carved and bound, is
   * advertised to the kubelet as Unhealthy (so it is never allocated again) and is released once
   * its pod is gone.
   */
  draining?: string;
}

/** One sysfs write, in order. Carving plans are data so they can be logged, tested and diffed. */
export interface SysfsWrite {
  /** Path relative to the sysfs root, e.g. `bus/pci/devices/0000:81:00.0/sriov_numvfs`. */
  path: string;
  value: string;
  /** Human-readable purpose, for logs and events. */
  why: string;
  /**
   * Writes with the same group depend on each other in order (one device's re-carve): after one
   * fails, `applyCarving` skips the rest of its group. Absent: independent.
   */
  group?: string;
  /** The pools the write serves: where its failure is shown. */
  pools?: string[];
  /**
   * The write's effect is made by a vendor tool instead of a plain write, because the driver does
   * not take the plain write: `sriov-manage` (NVIDIA: `sriov_numvfs` N → `-e <PF>`, 0 → `-d <PF>`;
   * the nvidia driver has no sriov_configure) or `nvidia-smi-shm` (`nvidia-smi vgpu -i <PF> -shm 1`,
   * the GPU's mixed-size vGPU mode; `path` names the PF folder) or `nvidia-smi-mig` (`path` the PF
   * folder; value `mode=1|0` → `nvidia-smi -i <PF> -mig 1|0`, `cgi=<profile>,…` → `nvidia-smi mig -i
   * <PF> -cgi …`, `dgi` → `nvidia-smi mig -i <PF> -dgi`). The gate judges it by `path` and `value`
   * like the plain write it stands for.
   */
  tool?: 'sriov-manage' | 'nvidia-smi-shm' | 'nvidia-smi-mig';
  /**
   * Paths (relative to the sysfs root) that exist once the write took effect: the next write waits
   * for them, up to a second. Set while the agent restores VFIO numbers on the last write of a bind or
   * mdev create (agent/vfio-numbers.ts): each number must be taken before the next device asks for
   * one, and a write can return before its effect (a driver's asynchronous probe).
   */
  settle?: string[];
}

/** A pool/device pair whose carving cannot proceed now (e.g. its slices are allocated). */
export interface BlockedChange {
  pool: string;
  device: string;
  reason: string;
}

export interface CarvingPlan {
  writes: SysfsWrite[];
  blocked: BlockedChange[];
  /** Slice IDs that stay because a pod holds them (uncarving), sorted. */
  held?: string[];
  /**
   * What carving found on the pool's devices that virtualio did not create (foreign mdevs and
   * vports) and therefore leaves alone; it still occupies capacity. Informational: not a block.
   */
  foreign?: BlockedChange[];
  /** On-demand mdevs a claim was allocated that cannot be carved now, and why (UUID → reason). */
  failed?: { pool: string; uuid: string; reason: string }[];
}
