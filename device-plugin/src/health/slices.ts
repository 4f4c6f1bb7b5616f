// Slices and their health: what each pool advertises, computed from the plan and one inventory.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { devPathUnder, vfioGroupPath } from '../discovery/scan.js';
import { isOnDemand, isOnDemandMdev, offeredParents, type MdevCapacity } from '../carving/ondemand.js';
import { indexDevices, mdevSlots, ourMdevIndex, vfDriverOf, vfRange, vportSlots, vportsOf } from '../carving/layout.js';
import { isVgpuPool, layoutVgpu, NVIDIA_DRIVER } from '../carving/vgpu.js';
import { isOnDemandVgpu, vgpuCatalogue } from '../carving/ondemand-vgpu.js';
import { resolveVgpuProfile } from '../carving/gpu.js';
import type { Inventory, InventoryDevice, PoolPlan, Slice, VirtualIONodeSpec } from '../model.js';
import { compareText, isBridgeClass, VFIO_PCI } from '../sysfs/pci.js';

/** Input of {@link buildSlices}. */
export interface SliceInput {
  spec: VirtualIONodeSpec;
  inventory: Inventory;
  /** The dev root (default `/dev`) where `/dev/vfio/<group>` must exist. */
  devRoot: string;
  /** The node name (mdev UUIDs and vport WWNs are derived from it). */
  nodeName: string;
  /**
   * The slices of the previous round. A slice that vanished but is still expected (its parent is
   * gone, or its VF index no longer exists) is kept, Unhealthy with the reason, instead of
   * silently dropping out of the kubelet's list.
   */
  previous?: readonly Slice[];
  /** On-demand pools: the parents' learned capacity (carving/ondemand.ts). */
  capacity?: MdevCapacity;
  /** Also report NIC PFs whose link is not up, and FC ports not Online, as a reason (default off). */
  linkCheck?: boolean;
}

interface Ctx {
  devices: Map<string, InventoryDevice>;
  nodes: Set<string> | undefined;
  devRoot: string;
  inv: Inventory;
  linkCheck: boolean;
}

function nodeExists(ctx: Ctx, canonical: string): boolean {
  if (ctx.nodes) return ctx.nodes.has(canonical);
  return existsSync(devPathUnder(ctx.devRoot, canonical));
}

/** Canonical vfio entries under devRoot, read once when the inventory carries none. */
function readNodes(devRoot: string): Set<string> | undefined {
  try {
    const out = new Set<string>();
    for (const n of readdirSync(path.join(devRoot, 'vfio'))) {
      if (n === 'devices') for (const c of readdirSync(path.join(devRoot, 'vfio/devices'))) out.add(`/dev/vfio/devices/${c}`);
      else out.add(`/dev/vfio/${n}`);
    }
    return out;
  } catch {
    return new Set();
  }
}

/** Why a function's IOMMU group cannot be handed to a VM, or undefined when it can. */
function groupProblem(ctx: Ctx, dev: InventoryDevice): string | undefined {
  const g = dev.iommuGroup;
  if (g === undefined) return `${dev.pciAddress} has no IOMMU group (IOMMU off?)`;
  for (const m of dev.iommuGroupMembers ?? [dev.pciAddress]) {
    if (m === dev.pciAddress) continue;
    const md = ctx.devices.get(m);
    if (!md) return `IOMMU group ${g} not viable: member ${m} not found`;
    if (md.driver === undefined || md.driver === VFIO_PCI || isBridgeClass(md.classCode)) continue;
    return `IOMMU group ${g} not viable: ${m} bound to ${md.driver}`;
  }
  return undefined;
}

/**
 * Device nodes of a vfio-bound function, and the first missing one. The group node
 * (`/dev/vfio/<group>`) is required. The iommufd cdev (`/dev/vfio/devices/vfioN`) is handed out only
 * when it exists: sysfs lists `vfio-dev/vfioN` for every vfio device even on kernels built without
 * `CONFIG_VFIO_DEVICE_CDEV` (Debian's 6.12, for one), where the node never appears and the group
 * node is the only way in, so its absence is no fault.
 */
function vfioNodes(ctx: Ctx, dev: InventoryDevice): { nodes: string[]; missing?: string } {
  const nodes: string[] = [];
  if (dev.iommuGroup !== undefined) nodes.push(vfioGroupPath(dev.iommuGroup));
  const missing = nodes.find((n) => !nodeExists(ctx, n));
  const cdev = ctx.inv.vfioCdevs?.[dev.pciAddress];
  if (cdev && nodeExists(ctx, cdev)) nodes.push(cdev);
  return missing === undefined ? { nodes } : { nodes, missing };
}

/** Checks of a function that must be on `driver`; reasons in order of importance. */
function functionProblems(ctx: Ctx, label: string, dev: InventoryDevice, driver: string): { reason?: string; nodes: string[] } {
  if (dev.driver !== driver) {
    // A bare node (no udev, or a module left out of the image) may lack the driver altogether:
    // say so rather than only that the function is unbound.
    const drivers = ctx.inv.pciDrivers;
    if (drivers !== undefined && !drivers.includes(driver)) {
      const now = dev.driver ? `bound to ${dev.driver}` : 'not bound to a driver';
      return { reason: `${label} ${dev.pciAddress} is ${now}: driver ${driver} is not loaded (modprobe ${driver})`, nodes: [] };
    }
    return { reason: dev.driver ? `${label} ${dev.pciAddress} is bound to ${dev.driver}, expected ${driver}` : `${label} ${dev.pciAddress} is not bound to a driver, expected ${driver}`, nodes: [] };
  }
  if (driver !== VFIO_PCI) return { nodes: [] };
  const gp = groupProblem(ctx, dev);
  const { nodes, missing } = vfioNodes(ctx, dev);
  if (gp) return { reason: gp, nodes };
  if (missing) return { reason: `${missing} is missing`, nodes };
  return { nodes };
}

function linkProblem(ctx: Ctx, pf: InventoryDevice): string | undefined {
  if (!ctx.linkCheck) return undefined;
  const nd = pf.netdevs?.[0];
  if (nd?.operState !== undefined && nd.operState !== 'up') return `PF ${pf.pciAddress} link ${nd.name} is ${nd.operState}`;
  return undefined;
}

function finish(s: Omit<Slice, 'health' | 'reason'>, reason: string | undefined): Slice {
  return reason === undefined ? { ...s, health: 'Healthy' } : { ...s, health: 'Unhealthy', reason };
}

function sriovSlices(ctx: Ctx, pool: PoolPlan, out: Slice[]): void {
  const driver = vfDriverOf(pool);
  for (const pd of pool.devices) {
    const pf = ctx.devices.get(pd.pciAddress);
    if (!pf) continue;
    const vfs = pf.sriov?.vfs ?? [];
    const { first, last } = vfRange(pool, pd, pf.sriov?.totalVFs ?? 0);
    for (let i = first; i <= last && i < vfs.length; i++) {
      const addr = vfs[i] as string;
      const vf = ctx.devices.get(addr);
      const base: Omit<Slice, 'health' | 'reason'> = {
        id: addr,
        pool: pool.name,
        resourceName: pool.resourceName,
        kind: 'VF',
        parent: pf.pciAddress,
        pciAddress: addr,
        index: i,
        deviceNodes: [],
      };
      const numa = vf?.numaNode ?? pf.numaNode;
      if (numa !== undefined) base.numaNode = numa;
      if (pool.class === 'NIC' && pf.netdevs?.[0]) base.pfNetdev = pf.netdevs[0].name;
      if (!vf) {
        out.push(finish(base, `VF ${addr} gone`));
        continue;
      }
      if (vf.iommuGroup !== undefined) base.iommuGroup = vf.iommuGroup;
      const { reason, nodes } = functionProblems(ctx, 'VF', vf, driver);
      base.deviceNodes = nodes;
      out.push(finish(base, reason ?? linkProblem(ctx, pf)));
    }
  }
}

/**
 * NVIDIA vendor-VFIO vGPU slices: the VFs the layout gives each pool (carving/vgpu.ts). Healthy when
 * the VF is on `nvidia` (never vfio-pci), has the pool's type in `nvidia/current_vgpu_type`, and its
 * `/dev/vfio/<group>` exists; the VF's cdev (`vfio-dev/vfioN`) is handed out when its node exists.
 */
function vgpuSlices(ctx: Ctx, pools: PoolPlan[], out: Slice[]): void {
  for (const g of layoutVgpu(pools, ctx.devices, ctx.inv)) {
    const pf = ctx.devices.get(g.pf);
    for (const l of g.pools) {
      for (const addr of l.chosen) {
        const vf = ctx.devices.get(addr);
        const base: Omit<Slice, 'health' | 'reason'> = { id: addr, pool: l.pool.name, resourceName: l.pool.resourceName, kind: 'VF', parent: g.pf, pciAddress: addr, index: g.index.get(addr) ?? 0, deviceNodes: [] };
        const numa = vf?.numaNode ?? pf?.numaNode;
        if (numa !== undefined) base.numaNode = numa;
        if (!vf) {
          out.push(finish(base, `VF ${addr} gone`));
          continue;
        }
        if (vf.iommuGroup !== undefined) base.iommuGroup = vf.iommuGroup;
        const { nodes, missing } = vfioNodes(ctx, vf);
        base.deviceNodes = nodes;
        const cur = vf.nvidiaVgpu?.currentType;
        let reason: string | undefined;
        if (vf.driver !== NVIDIA_DRIVER) reason = `VF ${addr} is ${vf.driver ? `bound to ${vf.driver}` : 'not bound to a driver'}, expected nvidia (vendor-specific VFIO)`;
        else if (cur !== l.type?.id) reason = cur ? `VF ${addr} has vGPU type ${cur}, expected ${l.type?.name ?? l.type?.id}` : `VF ${addr} has no vGPU type yet (${l.type?.name ?? l.type?.id} is being created)`;
        else if (vf.iommuGroup === undefined) reason = `VF ${addr} has no IOMMU group (IOMMU off?)`;
        else if (missing) reason = `${missing} is missing`;
        out.push(finish(base, reason));
      }
    }
  }
}

/**
 * On-demand vGPU profile pools: a slice for each VF of the pool's GPUs that has one of the pool's
 * types (what could be typed is not a slice). Its DRA device is `vgpu-<VF>-<type>`, so a claim
 * given another type on that VF does not find it until its own type is written.
 */
function onDemandVgpuSlices(ctx: Ctx, pool: PoolPlan, capacity: MdevCapacity, out: Slice[]): void {
  for (const pd of pool.devices) {
    const pf = ctx.devices.get(pd.pciAddress);
    if (!pf) continue;
    const cat = vgpuCatalogue(pf, ctx.devices, ctx.inv, capacity);
    const ids = new Set((pool.onDemand?.vgpuProfiles ?? []).map((p) => resolveVgpuProfile(p, cat)?.id).filter((x): x is number => x !== undefined));
    (pf.sriov?.vfs ?? []).forEach((addr, index) => {
      const vf = ctx.devices.get(addr);
      const cur = vf?.nvidiaVgpu?.currentType ?? 0;
      if (!vf || !ids.has(cur)) return;
      const name = cat.find((t) => t.id === cur)?.name;
      const base: Omit<Slice, 'health' | 'reason'> = { id: addr, pool: pool.name, resourceName: pool.resourceName, kind: 'VF', parent: pf.pciAddress, pciAddress: addr, index, vgpuType: cur, ...(name ? { mdevType: name } : {}), deviceNodes: [] };
      const numa = vf.numaNode ?? pf.numaNode;
      if (numa !== undefined) base.numaNode = numa;
      if (vf.iommuGroup !== undefined) base.iommuGroup = vf.iommuGroup;
      const { nodes, missing } = vfioNodes(ctx, vf);
      base.deviceNodes = nodes;
      let reason: string | undefined;
      if (vf.driver !== NVIDIA_DRIVER) reason = `VF ${addr} is ${vf.driver ? `bound to ${vf.driver}` : 'not bound to a driver'}, expected nvidia (vendor-specific VFIO)`;
      else if (vf.iommuGroup === undefined) reason = `VF ${addr} has no IOMMU group (IOMMU off?)`;
      else if (missing) reason = `${missing} is missing`;
      out.push(finish(base, reason));
    });
  }
}

function passthroughSlices(ctx: Ctx, pool: PoolPlan, out: Slice[]): void {
  for (const pd of pool.devices) {
    const dev = ctx.devices.get(pd.pciAddress);
    const base: Omit<Slice, 'health' | 'reason'> = {
      id: pd.pciAddress,
      pool: pool.name,
      resourceName: pool.resourceName,
      kind: 'Function',
      parent: pd.pciAddress,
      pciAddress: pd.pciAddress,
      deviceNodes: [],
    };
    if (!dev) {
      out.push(finish(base, `device ${pd.pciAddress} gone`));
      continue;
    }
    if (dev.numaNode !== undefined) base.numaNode = dev.numaNode;
    if (dev.iommuGroup !== undefined) base.iommuGroup = dev.iommuGroup;
    if (pool.class === 'NIC' && dev.netdevs?.[0]) base.pfNetdev = dev.netdevs[0].name;
    const { reason, nodes } = functionProblems(ctx, 'function', dev, VFIO_PCI);
    base.deviceNodes = nodes;
    out.push(finish(base, reason));
  }
}

/** The slice of mdev `s` of `pool`, with its health. */
function mdevSlice(ctx: Ctx, pool: PoolPlan, s: { parent: string; uuid: string; type: string; index: number }, poolDevice: string, withType: boolean): Slice {
  const parent = ctx.devices.get(s.parent);
  const base: Omit<Slice, 'health' | 'reason'> = {
    id: s.uuid,
    pool: pool.name,
    resourceName: pool.resourceName,
    kind: 'Mdev',
    parent: s.parent,
    mdevUuid: s.uuid,
    ...(withType ? { mdevType: s.type } : {}),
    index: s.index,
    deviceNodes: [],
  };
  const numa = parent?.numaNode ?? ctx.devices.get(poolDevice)?.numaNode;
  if (numa !== undefined) base.numaNode = numa;
  if (!parent) return finish(base, `parent ${s.parent} gone`);
  const m = (parent.mdevs ?? []).find((x) => x.uuid === s.uuid);
  if (!m) return finish(base, `mdev ${s.uuid} does not exist on ${s.parent}`);
  if (m.type !== s.type) return finish(base, `mdev ${s.uuid} has type ${m.type ?? '(unknown)'}, expected ${s.type}`);
  if (m.iommuGroup === undefined) return finish(base, `mdev ${s.uuid} has no IOMMU group`);
  base.iommuGroup = m.iommuGroup;
  const g = vfioGroupPath(m.iommuGroup);
  base.deviceNodes = [g];
  return finish(base, nodeExists(ctx, g) ? undefined : `${g} is missing`);
}

function mediatedSlices(ctx: Ctx, node: string, pool: PoolPlan, out: Slice[]): void {
  for (const pd of pool.devices) {
    if (!ctx.devices.has(pd.pciAddress)) continue;
    for (const s of mdevSlots(node, pool, pd, ctx.devices).slots) out.push(mdevSlice(ctx, pool, s, pd.pciAddress, false));
  }
}

/** On-demand pools: a slice for each of the pool's mdevs that exists (what could be carved is not a slice). */
function onDemandSlices(ctx: Ctx, node: string, pool: PoolPlan, capacity: MdevCapacity, out: Slice[]): void {
  for (const p of offeredParents(pool, ctx.devices, capacity)) {
    for (const m of ctx.devices.get(p.parent)?.mdevs ?? []) {
      const t = p.types.find((x) => x.id === m.type);
      if (!t || !isOnDemandMdev(node, p.parent, t, m.uuid)) continue;
      const index = ourMdevIndex(node, p.parent, t.id, m.uuid, t.max + 64) ?? 0;
      out.push(mdevSlice(ctx, pool, { parent: p.parent, uuid: m.uuid, type: t.id, index }, p.parent, true));
    }
  }
}

function npivSlices(ctx: Ctx, node: string, pool: PoolPlan, out: Slice[]): void {
  for (const pd of pool.devices) {
    const dev = ctx.devices.get(pd.pciAddress);
    if (!dev) continue;
    for (const s of vportSlots(node, pool, dev)) {
      const v = vportsOf(ctx.inv, dev.pciAddress, s.host).find((x) => x.wwpn === s.wwpn);
      const base: Omit<Slice, 'health' | 'reason'> = {
        id: s.wwpn,
        pool: pool.name,
        resourceName: pool.resourceName,
        kind: 'VPort',
        parent: dev.pciAddress,
        index: s.index,
        vport: { wwpn: s.wwpn, wwnn: v?.wwnn ?? s.wwnn, parentHost: s.host, ...(v?.host ? { host: v.host } : {}) },
        deviceNodes: [],
      };
      if (dev.numaNode !== undefined) base.numaNode = dev.numaNode;
      let reason: string | undefined;
      if (!v) reason = `vport ${s.wwpn} does not exist on ${s.host}`;
      else if (v.state !== undefined && v.state !== 'Active') reason = `vport ${s.wwpn} is ${v.state}`;
      else if (ctx.linkCheck) {
        const h = (dev.fcHosts ?? []).find((x) => x.host === s.host);
        if (h?.portState !== undefined && h.portState !== 'Online') reason = `FC port ${s.host} of ${dev.pciAddress} is ${h.portState}`;
      }
      out.push(finish(base, reason));
    }
  }
}

/** Previous slices that vanished but are still expected, kept as Unhealthy with the reason. */
function carryForward(ctx: Ctx, pools: PoolPlan[], previous: readonly Slice[], out: Slice[]): void {
  const have = new Set(out.map((s) => `${s.pool}\u0000${s.id}`));
  // A VF position already served by another function (VFs re-created at new addresses, or a
  // numbering seen mid-removal: Linux removes VFs one by one while a VMM holds one) replaces the old.
  const vfSlots = new Set(out.filter((s) => s.kind === 'VF').map((s) => `${s.pool}\u0000${s.parent}\u0000${s.index ?? -1}`));
  const byName = new Map(pools.map((p) => [p.name, p]));
  for (const s of previous) {
    const pool = byName.get(s.pool);
    if (!pool || have.has(`${s.pool}\u0000${s.id}`)) continue;
    if (s.kind === 'VF' && vfSlots.has(`${s.pool}\u0000${s.parent}\u0000${s.index ?? -1}`)) continue;
    const parentGone = !ctx.devices.has(s.parent);
    const poolDevice = pool.devices.find((d) => d.pciAddress === s.parent);
    if (!parentGone && !poolDevice) continue;
    // A function, VF or vport whose pool device is no longer planned (e.g. hot-unplugged, then
    // dropped from the plan) is not expected any more: drop it rather than list it as "parent gone".
    if (!poolDevice && s.kind !== 'Mdev') continue;
    // With its parent present, every mdev/vport the plan still expects was built above (missing
    // ones as Unhealthy); one that is not is no longer planned (count lowered, released): drop it.
    if ((s.kind === 'Mdev' || s.kind === 'VPort') && !parentGone) continue;
    if (isVgpuPool(pool) && !parentGone) continue; // the layout lists every VF the pool still expects
    if (isOnDemandVgpu(pool) && !parentGone) continue; // a VF without its type is not a slice any more
    if (s.kind === 'VF' && poolDevice && s.index !== undefined) {
      const { first, last } = vfRange(pool, poolDevice, Number.MAX_SAFE_INTEGER);
      if (s.index < first || s.index > last) continue;
    }
    const reason = parentGone ? `parent ${s.parent} gone` : `${s.kind === 'VF' ? `VF ${s.index ?? '?'} of ${s.parent}` : `${s.kind} ${s.id}`} does not exist`;
    const { reason: _r, ...rest } = s;
    out.push({ ...rest, pool: pool.name, resourceName: pool.resourceName, health: 'Unhealthy', reason });
  }
}

/**
 * Builds every slice of every pool in `spec` (deleting pools included, so held slices stay
 * visible), sorted by pool then ID, each with its health and, when Unhealthy, a precise reason:
 * missing, bound to the wrong driver, IOMMU group not viable, `/dev/vfio/<group>` missing, parent
 * gone, or (with `linkCheck`) link down. Health is recomputed from scratch each time, so it
 * recovers as soon as the cause clears. Pure given an inventory with `devNodes`; otherwise reads
 * `<devRoot>/vfio` once. Slice IDs: VF/Function = PCI address, Mdev = UUID, VPort = WWPN.
 */
export function buildSlices(input: SliceInput): Slice[] {
  const ctx: Ctx = {
    devices: indexDevices(input.inventory),
    nodes: input.inventory.devNodes ? new Set(input.inventory.devNodes) : readNodes(input.devRoot),
    devRoot: input.devRoot,
    inv: input.inventory,
    linkCheck: input.linkCheck ?? false,
  };
  const pools = [...(input.spec.pools ?? [])].sort((a, b) => compareText(a.name, b.name));
  const out: Slice[] = [];
  vgpuSlices(ctx, pools.filter(isVgpuPool), out);
  for (const pool of pools) {
    if (isVgpuPool(pool)) continue;
    if (isOnDemandVgpu(pool)) onDemandVgpuSlices(ctx, pool, input.capacity ?? {}, out);
    else if (pool.mode === 'SRIOV') sriovSlices(ctx, pool, out);
    else if (pool.mode === 'Passthrough') passthroughSlices(ctx, pool, out);
    else if (isOnDemand(pool)) onDemandSlices(ctx, input.nodeName, pool, input.capacity ?? {}, out);
    else if (pool.mode === 'Mediated') mediatedSlices(ctx, input.nodeName, pool, out);
    else if (pool.mode === 'NPIV') npivSlices(ctx, input.nodeName, pool, out);
  }
  if (input.previous) carryForward(ctx, pools, input.previous, out);
  return out.sort((a, b) => compareText(a.pool, b.pool) || compareText(a.id, b.id));
}
