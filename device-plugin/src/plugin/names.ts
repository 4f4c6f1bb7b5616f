// Names derived from a pool: socket file, env variable names, Multus device-info file, CDI names.
// All pure string functions; the formats are the kubelet/KubeVirt/Multus/CDI contracts
// (the kubelet device plugin and KubeVirt env contracts).
import { join } from 'node:path';

/** Socket file name (the Register `endpoint`) of a pool's device plugin server. */
export function socketName(pool: string): string {
  return `virtualio-${pool}.sock`;
}

/**
 * Our folder under the kubelet's `plugins/` (same name as the DRA driver): the DRA socket and
 * checkpoint, and the device plugin sockets registered through the plugin watcher. Unlike
 * `device-plugins/`, the kubelet does not empty it when it starts.
 */
export function kubeletPluginFolder(kubeletDir: string): string {
  return join(kubeletDir, 'plugins', 'virtualio.dev');
}

/**
 * KubeVirt's resource-name-to-env normalisation: upper-case, `/` and `.` become `_`, `-` is kept
 * (e.g. `virtualio.dev/a16-vgpu` → `VIRTUALIO_DEV_A16-VGPU`).
 */
export function resourceEnvSuffix(resourceName: string): string {
  return resourceName.toUpperCase().replace(/[/.]/g, '_');
}

/** `PCI_RESOURCE_<NAME>`: comma-joined PCI addresses of VF and whole-function slices. */
export function pciEnvName(resourceName: string): string {
  return `PCI_RESOURCE_${resourceEnvSuffix(resourceName)}`;
}

/** `MDEV_PCI_RESOURCE_<NAME>`: comma-joined mdev UUIDs. */
export function mdevEnvName(resourceName: string): string {
  return `MDEV_PCI_RESOURCE_${resourceEnvSuffix(resourceName)}`;
}

/**
 * `VIRTUALIO_NPIV_<NAME>`: comma-joined `wwpn:wwnn` pairs of NPIV vports. virtualio's own variable:
 * KubeVirt has no NPIV device type, so a VM consumes the vport's LUNs through the storage stack and
 * the pod learns which vport it holds from this variable.
 */
export function npivEnvName(resourceName: string): string {
  return `VIRTUALIO_NPIV_${resourceEnvSuffix(resourceName)}`;
}

/** Multus device-info file name for one device: `<resource with / → ->-<deviceID>-device.json`. */
export function devinfoFileName(resourceName: string, deviceId: string): string {
  return `${resourceName.replace(/\//g, '-')}-${deviceId.replace(/\//g, '-')}-device.json`;
}

/** CDI vendor of every virtualio spec. */
export const CDI_VENDOR = 'virtualio.dev';

/**
 * CDI class of a pool: the pool name with characters CDI class names do not allow (`.`) turned
 * into `_` (pool names are Kubernetes object names, which may contain dots).
 */
export function cdiClass(pool: string): string {
  return pool.replace(/[^A-Za-z0-9_-]/g, '_');
}

/** Fully qualified CDI device name `virtualio.dev/<pool>=<id>` (`:` and `.` in IDs are valid). */
export function cdiDeviceName(pool: string, id: string): string {
  return `${CDI_VENDOR}/${cdiClass(pool)}=${id}`;
}

/** CDI spec file name of a pool, `virtualio.dev-<pool>.json`. */
export function cdiSpecFileName(pool: string): string {
  return `${CDI_VENDOR}-${cdiClass(pool)}.json`;
}
