// Named builders for FakeKernel.addFunction: real devices virtualio meets, with their PCI IDs,
// drivers and SR-IOV layout (offset/stride as the hardware reports them).
import type { FunctionSpec } from './kernel.js';

/** Mellanox ConnectX-6 PF (15b3:101d, mlx5_core) with a netdev; VFs are 15b3:101e. */
export function connectX6(address: string, o: { netdev: string; totalVFs?: number; numaNode?: number; iommuGroup?: number } = { netdev: 'ens1f0np0' }): FunctionSpec {
  return {
    address, vendor: '15b3', device: '101d', classCode: '020000', driver: 'mlx5_core', numaNode: o.numaNode ?? 0,
    iommuGroup: o.iommuGroup, subsystemDevice: '0016',
    sriov: { totalVFs: o.totalVFs ?? 8, vfDevice: '101e', offset: 2, stride: 1 },
    netdev: { name: o.netdev, operstate: 'up', address: '0c:42:a1:00:00:01' },
  };
}

/** Intel 82599 10GbE PF (8086:10fb, ixgbe); VFs are 8086:10ed at offset 128, stride 2. */
export function intel82599(address: string, o: { netdev: string; totalVFs?: number; numaNode?: number } = { netdev: 'eno49' }): FunctionSpec {
  return {
    address, vendor: '8086', device: '10fb', classCode: '020000', driver: 'ixgbe', numaNode: o.numaNode ?? 0,
    sriov: { totalVFs: o.totalVFs ?? 63, vfDevice: '10ed', offset: 128, stride: 2 },
    netdev: { name: o.netdev, operstate: 'up', address: '5c:b9:01:89:c6:e4' },
  };
}

/** NVIDIA A10 GPU (10de:2236, nvidia) and its HDMI audio function (10de:1aef) in one IOMMU group. */
export function gpuWithAudio(gpu: string, audio: string, o: { group: number; numaNode?: number }): FunctionSpec[] {
  return [
    { address: gpu, vendor: '10de', device: '2236', classCode: '030200', driver: 'nvidia', numaNode: o.numaNode ?? 0, iommuGroup: o.group },
    { address: audio, vendor: '10de', device: '1aef', classCode: '040300', driver: 'snd_hda_intel', numaNode: o.numaNode ?? 0, iommuGroup: o.group },
  ];
}

/** PCI-to-PCI bridge (class 060400, pcieport). */
export function pciBridge(address: string, o: { group?: number; numaNode?: number } = {}): FunctionSpec {
  return { address, vendor: '8086', device: '2f04', classCode: '060400', driver: 'pcieport', numaNode: o.numaNode ?? 0, iommuGroup: o.group };
}

/** Samsung PM1733 NVMe controller (144d:a824, nvme) with SR-IOV (VF 144d:a824). */
export function nvmeWithSriov(address: string, o: { name: string; serial: string; totalVFs?: number; numaNode?: number }): FunctionSpec {
  return {
    address, vendor: '144d', device: 'a824', classCode: '010802', driver: 'nvme', numaNode: o.numaNode ?? 1,
    sriov: { totalVFs: o.totalVFs ?? 32, vfDevice: 'a824', offset: 1, stride: 1 },
    nvme: { name: o.name, model: 'SAMSUNG MZWLJ3T8HBLS-00007', serial: o.serial },
  };
}

/** Emulex LPe32000 FC HBA (10df:f100, lpfc) with one fc_host port. */
export function emulexFc(address: string, o: { host: number; wwpn: string; wwnn: string; maxNPIVVports?: number; numaNode?: number; portState?: string }): FunctionSpec {
  return {
    address, vendor: '10df', device: 'f100', classCode: '0c0400', driver: 'lpfc', numaNode: o.numaNode ?? 0,
    fcHost: { host: o.host, wwpn: o.wwpn, wwnn: o.wwnn, maxNPIVVports: o.maxNPIVVports ?? 255, portState: o.portState ?? 'Online' },
  };
}

/**
 * An NVIDIA A16 GPU (10de:25b6, nvidia) as an mdev parent in mixed-size mode: 16 GB of framebuffer
 * shared by its vGPU types (2Q: 8 fit, 4Q: 4, 8Q: 2, 16Q: 1), so `available_instances` of every
 * type drops as any instance exists (see FunctionSpec.mdevCapacity). Type ids are illustrative.
 * `exclusive`: one type per GPU (time-sliced vGPU without mixed-size mode).
 */
export function mdevGpuMixed(address: string, o: { numaNode?: number; exclusive?: boolean } = {}): FunctionSpec {
  return {
    address, vendor: '10de', device: '25b6', classCode: '030200', driver: 'nvidia', numaNode: o.numaNode ?? 0,
    mdevCapacity: { units: 16, ...(o.exclusive ? { exclusive: true } : {}) },
    mdevTypes: [
      { id: 'nvidia-745', name: 'NVIDIA A16-2Q', availableInstances: 8, units: 2 },
      { id: 'nvidia-746', name: 'NVIDIA A16-4Q', availableInstances: 4, units: 4 },
      { id: 'nvidia-747', name: 'NVIDIA A16-8Q', availableInstances: 2, units: 8 },
      { id: 'nvidia-748', name: 'NVIDIA A16-16Q', availableInstances: 1, units: 16 },
    ],
  };
}

/** NVIDIA T4 (10de:1eb8, nvidia) as an mdev parent with GRID types nvidia-222 (16×1B) and nvidia-230 (1×16Q). */
export function mdevGpu(address: string, o: { numaNode?: number; instances?: number } = {}): FunctionSpec {
  return {
    address, vendor: '10de', device: '1eb8', classCode: '030200', driver: 'nvidia', numaNode: o.numaNode ?? 0,
    mdevTypes: [
      { id: 'nvidia-222', name: 'GRID T4-1B', availableInstances: o.instances ?? 16 },
      { id: 'nvidia-230', name: 'GRID T4-16Q', availableInstances: 1 },
    ],
  };
}

/**
 * Intel Data Center GPU Flex 170 (8086:56c0) on Intel's out-of-tree i915 with SR-IOV (31 VFs, VF ID
 * 56c0), its per-VF provisioning folder `drm/card<N>/prelim_iov/` present. Returns the spec and the
 * folders to create under the PF; intel-iov.ts addIntelFlex170 adds the quota files and the driver's rules.
 */
export function intelFlex170(address: string, o: { card?: number; numaNode?: number } = {}): { spec: FunctionSpec; dirs: string[] } {
  const card = `drm/card${o.card ?? 1}`;
  return {
    spec: { address, vendor: '8086', device: '56c0', classCode: '038000', driver: 'i915', numaNode: o.numaNode ?? 0, sriov: { totalVFs: 31, vfDevice: '56c0', offset: 1, stride: 1 } },
    dirs: [`${card}/prelim_iov/pf`, ...Array.from({ length: 31 }, (_, i) => `${card}/prelim_iov/vf${i + 1}/gt0`)],
  };
}

/** AMD Instinct MI300X (1002:74a1) on AMD's gim host driver; its VFs are 1002:74b5 (gpu.md). */
export function amdMi300x(address: string, o: { numaNode?: number } = {}): FunctionSpec {
  return { address, vendor: '1002', device: '74a1', classCode: '120000', driver: 'gim', numaNode: o.numaNode ?? 0, sriov: { totalVFs: 8, vfDevice: '74b5', offset: 1, stride: 1 } };
}
