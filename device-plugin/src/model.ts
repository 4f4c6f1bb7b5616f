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
}

/** One sysfs write, in order. Carving plans are data so they can be logged, tested and diffed. */
export interface SysfsWrite {
  /** Path relative to the sysfs root, e.g. `bus/pci/devices/0000:81:00.0/sriov_numvfs`. */
  path: string;
  value: string;
  /** Human-readable purpose, for logs and events. */
  why: string;
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
}
