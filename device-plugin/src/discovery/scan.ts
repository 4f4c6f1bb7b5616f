// Discovery: a full, sorted inventory snapshot read from a sysfs root (and optionally a dev root).
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { markGpuInterfaces, parseCreatableTypes, type GpuHint } from '../carving/gpu.js';
import type { FcVport, GpuVfProvisioning, Inventory, InventoryDevice } from '../model.js';
import { comparePci, compareText, isPciAddress, UUID_RE } from '../sysfs/pci.js';
import { AttrReader, listDir } from '../sysfs/read.js';
import { readGpuVfProvisioning } from './gpu-vf-iov.js';

/** Options of {@link scan}. */
export interface ScanOptions {
  /**
   * The dev root (default: none). When given, `inventory.devNodes` lists what exists under
   * `<devRoot>/vfio`, so health can be computed without further I/O.
   */
  devRoot?: string;
  /**
   * Devices read (synchronously) between two yields to the event loop (default 64), so a scan of
   * a large tree never blocks gRPC calls for long.
   */
  batch?: number;
}

type FcHost = NonNullable<InventoryDevice['fcHosts']>[number];

/** Facts of one function that do not go into the CRD inventory. */
interface Extra {
  vfioCdev?: string;
  /** The vfio cdevs of the mdevs below it, by UUID (an mdev takes a number when it is created). */
  mdevCdevs?: Record<string, string>;
  /** Intel's SR-IOV provisioning folder (i915 `drm/cardN/prelim_iov` or `iov`, xe `sriov_admin`). */
  gpuHint?: GpuHint;
  /** Its per-VF provisioning attributes (Intel SR-IOV GPUs). */
  gpuVf?: GpuVfProvisioning;
  vports: FcVport[];
}

const HEX4 = /^0x([0-9a-f]{4})$/;
const HEX6 = /^0x([0-9a-f]{6})$/;
const WWN = /^0x([0-9a-f]{1,16})$/;

/**
 * An IOMMU group number from the basename of an `iommu_group` link: the kernel names groups by an
 * `int` id (printed `%d`), so anything but 1-10 digits up to 2^31-1 is not a group (a longer run of
 * digits would become a float such as 1.2e29 and a `/dev/vfio/1.2e+29` node path).
 */
export function iommuGroupNumber(base: string): number | undefined {
  if (!/^\d{1,10}$/.test(base)) return undefined;
  const n = Number(base);
  return n <= 0x7fffffff ? n : undefined;
}

/** FC `port_name`/`node_name` (`0x%llx`, unpadded) → 16 lower-case hex digits without `0x`. */
export function normalizeWwn(raw: string): string | undefined {
  const m = WWN.exec(raw.trim().toLowerCase());
  return m?.[1]?.padStart(16, '0');
}

/** The `/dev` path of a vfio cdev named by a `vfio-dev/` entry (`vfio3` → `/dev/vfio/devices/vfio3`). */
export function vfioCdevPath(entry: string): string | undefined {
  return /^vfio\d+$/.test(entry) ? `/dev/vfio/devices/${entry}` : undefined;
}

/** The cdev a device's `vfio-dev/` folder names (its entries), or undefined. */
function cdevAmong(entries: readonly string[]): string | undefined {
  return entries.map(vfioCdevPath).find((p) => p !== undefined);
}

/** The `/dev` path of a VFIO group node. */
export function vfioGroupPath(group: number): string {
  return `/dev/vfio/${group}`;
}

/**
 * Maps a canonical `/dev/...` path to the file under `devRoot` (identity when devRoot is `/dev`).
 * Throws on a path outside `/dev`.
 */
export function devPathUnder(devRoot: string, canonical: string): string {
  if (!canonical.startsWith('/dev/')) throw new Error(`not a /dev path: ${canonical}`);
  return path.join(devRoot, canonical.slice('/dev/'.length));
}

/**
 * Reads the vfio cdev of one function: `<sysfsRoot>/bus/pci/devices/<bdf>/vfio-dev/vfioN` →
 * `/dev/vfio/devices/vfioN`; undefined when the function has none (not on vfio-pci, or no cdev
 * support in the kernel).
 */
export async function vfioCdevOf(sysfsRoot: string, pciAddress: string): Promise<string | undefined> {
  return cdevAmong(listDir(path.join(sysfsRoot, 'bus/pci/devices', pciAddress, 'vfio-dev')));
}

function readFcHost(fc: AttrReader, host: string): FcHost {
  const out: FcHost = { host };
  const wwpn = fc.text('port_name');
  if (wwpn !== undefined) {
    const v = normalizeWwn(wwpn);
    if (v) out.wwpn = v;
    else fc.fail('port_name', `malformed value ${JSON.stringify(wwpn)}`);
  }
  const wwnn = fc.text('node_name');
  if (wwnn !== undefined) {
    const v = normalizeWwn(wwnn);
    if (v) out.wwnn = v;
    else fc.fail('node_name', `malformed value ${JSON.stringify(wwnn)}`);
  }
  const state = fc.text('port_state');
  if (state !== undefined) out.portState = state.trim();
  const max = fc.int('max_npiv_vports');
  if (max !== undefined) out.maxNPIVVports = max;
  const inUse = fc.int('npiv_vports_inuse');
  if (inUse !== undefined) out.npivVportsInUse = inUse;
  return out;
}

/** Vports under `<dev>/<host>/vport-*`: their attributes live in `fc_vports/<name>/`. */
function readVports(r: AttrReader, pciAddress: string, host: string): FcVport[] {
  const out: FcVport[] = [];
  for (const name of r.list(host)) {
    if (!/^vport-\d+:\d+-\d+$/.test(name)) continue;
    const vr = r.sub(`${host}/${name}`);
    const attrs = vr.sub(`fc_vports/${name}`);
    const v: FcVport = { pciAddress, parentHost: host, name };
    const wwpn = attrs.text('port_name');
    const wwnn = attrs.text('node_name');
    if (wwpn !== undefined) {
      const n = normalizeWwn(wwpn);
      if (n) v.wwpn = n;
      else attrs.fail('port_name', `malformed value ${JSON.stringify(wwpn)}`);
    }
    if (wwnn !== undefined) {
      const n = normalizeWwn(wwnn);
      if (n) v.wwnn = n;
      else attrs.fail('node_name', `malformed value ${JSON.stringify(wwnn)}`);
    }
    const state = attrs.text('vport_state');
    if (state !== undefined) v.state = state.trim();
    const child = (vr.list()).find((n) => /^host\d+$/.test(n));
    if (child) v.host = child;
    out.push(v);
  }
  return out;
}

/**
 * The mediated-device side of a parent (PCI function or not): its `mdev_supported_types` and the
 * mdevs below it (UUID-named folders with an `mdev_type` link).
 */
function readMdevParent(r: AttrReader, entries: string[], device: InventoryDevice): Record<string, string> | undefined {
  if (entries.includes('mdev_supported_types')) {
    const types: NonNullable<InventoryDevice['mdevTypes']> = [];
    for (const id of r.list('mdev_supported_types')) {
      const tr = r.sub(`mdev_supported_types/${id}`);
      const t: (typeof types)[number] = { id };
      const tname = tr.text('name');
      if (tname !== undefined) t.name = tname.trim();
      const avail = tr.int('available_instances');
      if (avail !== undefined) t.availableInstances = avail;
      const api = tr.text('device_api');
      if (api !== undefined) t.deviceAPI = api.trim();
      types.push(t);
    }
    device.mdevTypes = types;
  }

  const mdevs: NonNullable<InventoryDevice['mdevs']> = [];
  let cdevs: Record<string, string> | undefined;
  for (const e of entries) {
    if (!UUID_RE.test(e)) continue;
    const mr = r.sub(e);
    const typeLink = mr.link('mdev_type');
    if (typeLink === undefined) continue; // a UUID-named folder that is not an mdev
    const m: (typeof mdevs)[number] = { uuid: e, type: path.basename(typeLink) };
    const g = mr.linkBase('iommu_group');
    if (g !== undefined) {
      const n = iommuGroupNumber(g);
      if (n !== undefined) m.iommuGroup = n;
      else mr.fail('iommu_group', `malformed link target ${JSON.stringify(g)}`);
    }
    mdevs.push(m);
    const cdev = cdevAmong(mr.list('vfio-dev'));
    if (cdev) (cdevs ??= {})[e] = cdev;
  }
  if (mdevs.length > 0) device.mdevs = mdevs;
  return cdevs;
}

/**
 * NVIDIA's vendor-specific VFIO folder of a VF (vGPU 17+): `nvidia/current_vgpu_type` (0 or the type
 * id) and `nvidia/creatable_vgpu_types` (what fits now). A folder without `current_vgpu_type` is
 * not that ABI (an mdev's `nvidia/` holds vgpu_params and vm_name) and is ignored.
 */
function readNvidiaVgpu(r: AttrReader, device: InventoryDevice): void {
  const nr = r.sub('nvidia');
  if (!nr.list().includes('current_vgpu_type')) return;
  const v: NonNullable<InventoryDevice['nvidiaVgpu']> = {};
  const cur = nr.int('current_vgpu_type');
  if (cur !== undefined) {
    if (cur >= 0) v.currentType = cur;
    else nr.fail('current_vgpu_type', `out of range ${cur}`);
  }
  const text = nr.text('creatable_vgpu_types');
  if (text !== undefined) {
    const { types, bad } = parseCreatableTypes(text);
    v.creatableTypes = types;
    if (bad.length > 0) nr.fail('creatable_vgpu_types', `malformed line(s) ${bad.map((b) => JSON.stringify(b)).join(', ')}`);
  }
  device.nvidiaVgpu = v;
}

function readDevice(root: string, name: string, fcExtraHosts: ClassFcHost[]): { device: InventoryDevice; extra: Extra } {
  const errors: string[] = [];
  const device: InventoryDevice = { pciAddress: name };
  const extra: Extra = { vports: [] };
  const r = new AttrReader(path.join(root, 'bus/pci/devices', name), errors);
  if (!isPciAddress(name)) errors.push(`pciAddress: malformed ${JSON.stringify(name)}`);

  const vendor = r.matched('vendor', HEX4, true);
  if (vendor) device.vendorID = vendor[1];
  const dev = r.matched('device', HEX4, true);
  if (dev) device.deviceID = dev[1];
  const cls = r.matched('class', HEX6, true);
  if (cls) device.classCode = cls[1];
  const driver = r.linkBase('driver');
  if (driver) device.driver = driver;
  const numa = r.int('numa_node');
  if (numa !== undefined && numa >= 0) device.numaNode = numa;
  else if (numa !== undefined && numa !== -1) r.fail('numa_node', `out of range ${numa}`);

  const group = r.linkBase('iommu_group');
  const groupNo = group === undefined ? undefined : iommuGroupNumber(group);
  if (group !== undefined) {
    if (groupNo !== undefined) {
      device.iommuGroup = groupNo;
      const members = listDir(path.join(root, 'kernel/iommu_groups', group, 'devices'), (m) =>
        errors.push(`kernel/iommu_groups/${group}/devices: ${m}`),
      );
      if (members.length === 0) errors.push(`kernel/iommu_groups/${group}/devices: missing or empty`);
      else device.iommuGroupMembers = members.sort(comparePci);
    } else {
      r.fail('iommu_group', `malformed link target ${JSON.stringify(group)}`);
    }
  }

  const physfn = r.linkBase('physfn');
  if (physfn) device.physfn = physfn;

  const entries = r.list();
  if (entries.includes('sriov_totalvfs')) {
    const sriov: NonNullable<InventoryDevice['sriov']> = {};
    const total = r.int('sriov_totalvfs', true);
    if (total !== undefined) sriov.totalVFs = total;
    const vfLinks = entries
      .map((e) => /^virtfn(\d+)$/.exec(e))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => ({ n: Number(m[1]), link: m[0] }))
      .sort((a, b) => a.n - b.n);
    const vfs: string[] = [];
    for (const { link } of vfLinks) {
      const vf = r.linkBase(link);
      if (vf) vfs.push(vf);
    }
    sriov.vfs = vfs;
    // The VF count is the virtfnN links, not `sriov_numvfs`: reading that attribute takes the PF's
    // device lock, which a blocked `sriov_numvfs` write holds while the kernel waits for a VMM to
    // release a VF. On Debian's 6.12 in test/kernel a `cat sriov_numvfs` then sat in D state for
    // minutes (hung-task report), so one stuck PF would freeze every scan of the agent's loop.
    sriov.numVFs = vfLinks.length;
    device.sriov = sriov;
  }

  const mdevCdevs = readMdevParent(r, entries, device);
  if (mdevCdevs) extra.mdevCdevs = mdevCdevs;
  if (entries.includes('nvidia')) readNvidiaVgpu(r, device);
  if (entries.includes('sriov_admin')) extra.gpuHint = 'xe-sriov-admin';
  else if (entries.includes('drm')) {
    for (const card of r.list('drm')) if (/^card\d+$/.test(card) && r.list(`drm/${card}`).some((e) => e === 'prelim_iov' || e === 'iov')) extra.gpuHint = 'i915-iov';
  }
  if (extra.gpuHint) {
    const p = readGpuVfProvisioning(r, name, entries, path.join(root, 'bus/pci/devices', name));
    if (p) extra.gpuVf = p;
  }

  if (entries.includes('net')) {
    const netdevs: NonNullable<InventoryDevice['netdevs']> = [];
    for (const ifname of r.list('net')) {
      const state = r.sub(`net/${ifname}`).text('operstate');
      netdevs.push(state === undefined ? { name: ifname } : { name: ifname, operState: state.trim() });
    }
    if (netdevs.length > 0) device.netdevs = netdevs;
  }

  // Physical FC ports: hostN/fc_host/hostN below the function, plus ports found via class/fc_host.
  const hosts = new Map<string, AttrReader>();
  for (const e of entries) {
    if (/^host\d+$/.test(e) && (listDir(path.join(r.dir, e, 'fc_host'))).includes(e)) hosts.set(e, r.sub(`${e}/fc_host/${e}`));
  }
  for (const h of fcExtraHosts) if (!hosts.has(h.host)) hosts.set(h.host, new AttrReader(h.attrsDir, errors, `class/fc_host/${h.host}`));
  if (hosts.size > 0) {
    const fcHosts: FcHost[] = [];
    const sorted = [...hosts.keys()].sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)));
    for (const h of sorted) {
      fcHosts.push(readFcHost(hosts.get(h) as AttrReader, h));
      extra.vports.push(...readVports(r, name, h));
    }
    device.fcHosts = fcHosts;
  }

  if (entries.includes('nvme')) {
    const nvme: NonNullable<InventoryDevice['nvme']> = [];
    for (const ctrl of r.list('nvme')) {
      if (!/^nvme\d+$/.test(ctrl)) continue;
      const nr = r.sub(`nvme/${ctrl}`);
      const c: (typeof nvme)[number] = { name: ctrl };
      const model = nr.text('model');
      if (model !== undefined) c.model = model.trim();
      const serial = nr.text('serial');
      if (serial !== undefined) c.serial = serial.trim();
      nvme.push(c);
    }
    if (nvme.length > 0) device.nvme = nvme.sort((a, b) => Number(a.name.slice(4)) - Number(b.name.slice(4)));
  }

  if (entries.includes('vfio-dev')) {
    const cdev = cdevAmong(r.list('vfio-dev'));
    if (cdev) extra.vfioCdev = cdev;
  }

  if (errors.length > 0) device.errors = errors;
  return { device, extra };
}

/** A physical FC port found through `class/fc_host`. */
interface ClassFcHost {
  host: string;
  /** The folder holding port_name, node_name... */
  attrsDir: string;
}

/**
 * Physical FC ports by PCI address, found through `<root>/class/fc_host/hostN`, in either layout:
 * a link to `…/<bdf>/hostN/fc_host/hostN` (current sysfs), or a class folder holding the attributes
 * with a `device` link to `…/<bdf>/hostN` (older layout). A vport's host sits below `vport-X:Y-Z`
 * instead of a PCI function, so it is not a physical port and is skipped.
 */
function fcHostsFromClass(root: string, errors: string[]): Map<string, ClassFcHost[]> {
  const out = new Map<string, ClassFcHost[]>();
  const classDir = path.join(root, 'class/fc_host');
  for (const host of listDir(classDir, (m) => errors.push(`class/fc_host: ${m}`))) {
    if (!/^host\d+$/.test(host)) continue;
    let attrsDir: string;
    let hostDir: string;
    try {
      attrsDir = realpathSync(path.join(classDir, host));
    } catch {
      errors.push(`class/fc_host/${host}: dangling link`);
      continue;
    }
    try {
      hostDir = realpathSync(path.join(attrsDir, 'device'));
    } catch {
      hostDir = path.dirname(path.dirname(attrsDir)); // …/hostN/fc_host/hostN without a device link
    }
    const bdf = path.basename(path.dirname(hostDir));
    if (path.basename(hostDir) !== host || !isPciAddress(bdf)) continue;
    const list = out.get(bdf) ?? [];
    list.push({ host, attrsDir });
    out.set(bdf, list);
  }
  return out;
}

/**
 * mdev parents that are not PCI functions, from `<root>/class/mdev_bus/<name>`: the kernel's sample
 * parents (`mtty`, `mdpy`, `mbochs` under /sys/devices/virtual), s390's `vfio_ap` matrix device and
 * `vfio_ccw` subchannels. The mdev ABI below the class entry is the same as for a PCI parent, so
 * they are reported as devices named by their class entry (the `pciAddress` field holds that name),
 * with their types and mdevs and nothing else. PCI parents are skipped: the PCI scan has them.
 */
function nonPciMdevParents(root: string, pciNames: ReadonlySet<string>, errors: string[]): { device: InventoryDevice; extra: Extra }[] {
  const out: { device: InventoryDevice; extra: Extra }[] = [];
  for (const name of listDir(path.join(root, 'class/mdev_bus'), (m) => errors.push(`class/mdev_bus: ${m}`))) {
    if (pciNames.has(name) || isPciAddress(name)) continue;
    const devErrors: string[] = [];
    const device: InventoryDevice = { pciAddress: name };
    const r = new AttrReader(path.join(root, 'class/mdev_bus', name), devErrors, `class/mdev_bus/${name}`);
    const driver = r.linkBase('driver');
    if (driver) device.driver = driver;
    const mdevCdevs = readMdevParent(r, r.list(), device);
    if (devErrors.length > 0) device.errors = devErrors;
    out.push({ device, extra: { vports: [], ...(mdevCdevs ? { mdevCdevs } : {}) } });
  }
  return out;
}

/** Canonical `/dev/vfio/...` entries present under `<devRoot>/vfio`. */
function readDevNodes(devRoot: string): string[] {
  const out: string[] = [];
  for (const n of listDir(path.join(devRoot, 'vfio'))) {
    if (n === 'devices') {
      for (const c of listDir(path.join(devRoot, 'vfio/devices'))) out.push(`/dev/vfio/devices/${c}`);
    } else {
      out.push(`/dev/vfio/${n}`);
    }
  }
  return out.sort(compareText);
}

/**
 * Scans every PCI function under `<sysfsRoot>/bus/pci/devices` and returns a full, deterministic
 * snapshot (devices sorted by PCI address, every list sorted). A pure function of the two roots:
 * no globals, no caching. Never throws because of a device: a malformed or unreadable value adds a
 * message to that device's `errors`, the rest of the device is still reported, and a failure of the
 * whole folder is reported in `inventory.errors`.
 */
export async function scan(sysfsRoot: string, opts: ScanOptions = {}): Promise<Inventory> {
  const errors: string[] = [];
  const names = listDir(path.join(sysfsRoot, 'bus/pci/devices'), (m) => errors.push(`bus/pci/devices: ${m}`));
  const fcByDevice = fcHostsFromClass(sysfsRoot, errors);
  const batch = Math.max(1, opts.batch ?? 64);
  const results: { device: InventoryDevice; extra: Extra }[] = [];
  for (let i = 0; i < names.length; i++) {
    if (i > 0 && i % batch === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    const name = names[i] as string;
    try {
      results.push(readDevice(sysfsRoot, name, fcByDevice.get(name) ?? []));
    } catch (err) {
      const device: InventoryDevice = { pciAddress: name, errors: [`scan failed: ${err instanceof Error ? err.message : String(err)}`] };
      results.push({ device, extra: { vports: [] } });
    }
  }
  results.push(...nonPciMdevParents(sysfsRoot, new Set(names), errors));
  results.sort((a, b) => comparePci(a.device.pciAddress, b.device.pciAddress));
  const inventory: Inventory = { devices: results.map((r) => r.device) };
  markGpuInterfaces(inventory.devices, new Map(results.flatMap((r) => (r.extra.gpuHint ? [[r.device.pciAddress, r.extra.gpuHint] as const] : []))));
  const provisioning = Object.fromEntries(results.flatMap((r) => (r.extra.gpuVf ? [[r.device.pciAddress, r.extra.gpuVf] as const] : [])));
  if (Object.keys(provisioning).length > 0) inventory.gpuVfProvisioning = provisioning;
  const vports = results.flatMap((r) => r.extra.vports);
  if (vports.length > 0) inventory.vports = vports;
  const cdevs: Record<string, string> = {};
  for (const r of results) {
    if (r.extra.vfioCdev) cdevs[r.device.pciAddress] = r.extra.vfioCdev;
    Object.assign(cdevs, r.extra.mdevCdevs);
  }
  if (Object.keys(cdevs).length > 0) inventory.vfioCdevs = cdevs;
  if (opts.devRoot !== undefined) inventory.devNodes = readDevNodes(opts.devRoot);
  const drivers = listDir(path.join(sysfsRoot, 'bus/pci/drivers'));
  if (drivers.length > 0) inventory.pciDrivers = drivers.sort(compareText);
  if (errors.length > 0) inventory.errors = errors;
  return inventory;
}
