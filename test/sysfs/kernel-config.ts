// Kernel-wide configuration of the fake kernel (kernel.ts), kept in the tree so every FakeKernel
// over one root agrees, and the attribute names the kernel daemon watches.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

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
/** The files of every loaded PCI driver's folder. */
export const PCI_DRIVER_FILES = ['bind', 'unbind', 'new_id', 'remove_id'];

/** Attributes whose written value stays readable (the daemon watches them as plain files). */
export const VALUE_ATTRS = ['sriov_numvfs', 'sriov_drivers_autoprobe', 'driver_override'];
/** Value attributes in a function's `nvidia/` folder (NVIDIA vendor VFIO, nvidia.ts). */
export const NVIDIA_VALUE_ATTRS = ['current_vgpu_type'];

/** The kernel config stored in the tree ({@link DEFAULT_CONFIG} when the tree has none, e.g. a recording). */
export async function readConfig(root: string): Promise<KernelConfig> {
  try {
    return JSON.parse(await readFile(path.join(root, CONFIG_REL), 'utf8')) as KernelConfig;
  } catch {
    return DEFAULT_CONFIG;
  }
}

export async function writeConfig(root: string, c: KernelConfig): Promise<void> {
  await mkdir(path.join(root, path.dirname(CONFIG_REL)), { recursive: true });
  await writeFile(path.join(root, CONFIG_REL), JSON.stringify(c, null, 2));
}
