// Carving as data: pure functions from (plan, inventory, allocations) to the ordered sysfs writes
// that make the slices exist, plus what cannot proceed now and why. Idempotent by construction:
// a write is planned only where the inventory differs from the wanted state.
import type { BlockedChange, CarvingPlan, Inventory, InventoryDevice, PoolPlan, SysfsWrite, VirtualIONodeSpec } from '../model.js';
import { compareText, isBridgeClass, isPciAddress, VFIO_PCI } from '../sysfs/pci.js';
import { isOnDemand, planOnDemand, planOnDemandUncarve, type MdevCapacity, type WantedMdev } from './ondemand.js';
import { indexDevices, isOurMdev, leftDriverless, isOurVport, mdevSlots, vfDriverOf, vfRange, vportSlots, vportsOf, wantedNumVfs, type PoolDevice } from './layout.js';
import { AMD_GIM_DRIVER } from './gpu.js';
import { gpuVfPathTarget, gpuVfResetWrites, gpuVfWrites, mixedQuotaProblem } from './gpu-vf.js';
import { isVgpuPool, planVgpu, planVgpuUncarve } from './vgpu.js';
import { isOnDemandVgpu, planOnDemandVgpu, planOnDemandVgpuUncarve, withKeptCatalogues } from './ondemand-vgpu.js';

/** Input of {@link planCarving}. */
export interface PlanInput {
  spec: VirtualIONodeSpec;
  inventory: Inventory;
  nodeName: string;
  /** Slice IDs the kubelet reports as allocated (PCI addresses, mdev UUIDs, WWPNs). */
  allocated: ReadonlySet<string>;
  /**
   * PFs whose VF count this agent set (its checkpoint). VFs enabled on any other PF belong to
   * someone else: they are never reset or re-bound unless a pool on the PF says
   * `adoptExistingVFs`; the pool reports a Conflict naming the PF instead. Absent: every PF is
   * treated as ours (unit tests of the plan alone).
   */
  ownedPfs?: ReadonlySet<string>;
  /** On-demand pools: the mdevs claims were allocated, and the parents' learned capacity. */
  onDemand?: { wanted: ReadonlyMap<string, WantedMdev>; capacity: MdevCapacity; ours?: ReadonlySet<string> };
}

const pciDev = (bdf: string, attr: string): string => `bus/pci/devices/${bdf}/${attr}`;

/** The three writes that move one function to `driver` (override, unbind if bound, probe). */
export function bindWrites(dev: InventoryDevice, driver: string, why: string, group = dev.pciAddress): SysfsWrite[] {
  const w: SysfsWrite[] = [{ path: pciDev(dev.pciAddress, 'driver_override'), value: driver, why, group }];
  if (dev.driver) w.push({ path: pciDev(dev.pciAddress, 'driver/unbind'), value: dev.pciAddress, why: `${why} (unbind from ${dev.driver})`, group });
  w.push({ path: 'bus/pci/drivers_probe', value: dev.pciAddress, why, group });
  return w;
}

/** Writes that return a function to its native driver: clear the override, unbind, re-probe. */
export function releaseWrites(dev: InventoryDevice, why: string): SysfsWrite[] {
  const group = dev.pciAddress;
  const w: SysfsWrite[] = [{ path: pciDev(dev.pciAddress, 'driver_override'), value: '\n', why, group }];
  if (dev.driver) w.push({ path: pciDev(dev.pciAddress, 'driver/unbind'), value: dev.pciAddress, why, group });
  w.push({ path: 'bus/pci/drivers_probe', value: dev.pciAddress, why, group });
  return w;
}

/** Tags writes with the pool they serve (where a failure is shown). */
function withPool(writes: SysfsWrite[], pool: string): SysfsWrite[] {
  for (const w of writes) w.pools = [pool];
  return writes;
}

function list(ids: string[], max = 8): string {
  return ids.length <= max ? ids.join(', ') : `${ids.slice(0, max).join(', ')} and ${ids.length - max} more`;
}

/** SR-IOV: numvfs per PF over every pool on it, then VF driver binding. */
function planSriov(pools: PoolPlan[], devices: Map<string, InventoryDevice>, allocated: ReadonlySet<string>, out: CarvingPlan, ownedPfs?: ReadonlySet<string>, provisioning: Inventory['gpuVfProvisioning'] = {}): void {
  const byPf = new Map<string, { pool: PoolPlan; dev: PoolDevice }[]>();
  for (const pool of pools) {
    for (const dev of pool.devices) {
      const l = byPf.get(dev.pciAddress) ?? [];
      l.push({ pool, dev });
      byPf.set(dev.pciAddress, l);
    }
  }
  for (const pfAddr of [...byPf.keys()].sort(compareText)) {
    const users = byPf.get(pfAddr) ?? [];
    const poolNames = users.map((u) => u.pool.name).join(',');
    const block = (reason: string): void => {
      for (const u of users) out.blocked.push({ pool: u.pool.name, device: pfAddr, reason });
    };
    const pf = devices.get(pfAddr);
    if (!pf) {
      block(`device ${pfAddr} not found`);
      continue;
    }
    const total = pf.sriov?.totalVFs;
    if (total === undefined) {
      block(`device ${pfAddr} is not SR-IOV capable (no sriov_totalvfs)`);
      continue;
    }
    const want = wantedNumVfs(users, total);
    if (want > total) {
      block(`${want} VFs wanted on ${pfAddr} but sriov_totalvfs is ${total}`);
      continue;
    }
    const vfs = pf.sriov?.vfs ?? [];
    const cur = pf.sriov?.numVFs ?? vfs.length;
    const pools = users.map((u) => u.pool.name);
    if (cur > 0 && ownedPfs && !ownedPfs.has(pfAddr) && !users.some((u) => u.pool.adoptExistingVFs)) {
      block(
        `Conflict: ${pfAddr} already has ${cur} VFs that virtualio did not create (another owner: an admin or the SR-IOV operator); left alone. ` +
          'Set spec.carving.adoptExistingVFs to take them over, or disable them (sriov_numvfs=0)',
      );
      continue;
    }
    if (cur !== want && pf.driver === AMD_GIM_DRIVER) {
      block(`${pfAddr} is on AMD's gim driver, which creates its VFs when it loads (${cur} now); their count cannot be set through sysfs: set spec.carving.count to ${cur}, or change gim's vf_num / /etc/gim_config and reload it`);
      continue;
    }
    // Intel SR-IOV GPUs: each pool's per-VF provisioning (spec.carving.gpuVf), for VF numbers 1-based.
    const prov = provisioning[pfAddr];
    const numbersOf = (u: { pool: PoolPlan; dev: PoolDevice }): number[] => {
      const { first, last } = vfRange(u.pool, u.dev, total);
      return Array.from({ length: Math.max(0, Math.min(last, want - 1) - first + 1) }, (_, i) => first + i + 1);
    };
    const quotaProblem = (): string | undefined => mixedQuotaProblem(pfAddr, prov, users.map((u) => u.pool));
    if (cur !== want) {
      // Quotas go on before the VFs exist: i915 checks them when sriov_numvfs is written.
      const quotas: SysfsWrite[] = [];
      const problems: { pool: string; reason: string }[] = [];
      const mixed = want > 0 ? quotaProblem() : undefined;
      if (mixed) for (const u of users) problems.push({ pool: u.pool.name, reason: mixed });
      for (const u of want > 0 && !mixed ? users : []) {
        const q = gpuVfWrites(u.pool, pf, prov, numbersOf(u), `before its VFs are enabled, pool ${u.pool.name}`);
        if (q.problem) problems.push({ pool: u.pool.name, reason: q.problem });
        quotas.push(...q.writes);
      }
      if (problems.length > 0) {
        for (const p of problems) out.blocked.push({ pool: p.pool, device: pfAddr, reason: p.reason });
        continue; // VFs are not enabled without what their pool asks for
      }
      if (cur !== 0) {
        const held = vfs.filter((vf) => allocated.has(vf));
        if (held.length > 0) {
          block(`re-carving ${pfAddr} from ${cur} to ${want} VFs waits: allocated VFs ${list(held)}`);
          continue;
        }
        out.writes.push({ path: pciDev(pfAddr, 'sriov_numvfs'), value: '0', why: `disable ${cur} VFs before enabling ${want} (pools ${poolNames})`, group: pfAddr, pools });
      }
      if (want > 0) {
        out.writes.push(...quotas);
        out.writes.push({ path: pciDev(pfAddr, 'sriov_drivers_autoprobe'), value: '0', why: `keep new VFs of ${pfAddr} unbound`, group: pfAddr, pools });
        out.writes.push({ path: pciDev(pfAddr, 'sriov_numvfs'), value: String(want), why: `enable ${want} VFs (pools ${poolNames})`, group: pfAddr, pools });
      }
      continue; // the VFs are bound on the next pass, once discovery has seen them
    }
    const mixed = quotaProblem();
    for (const { pool, dev } of users) {
      const { first, last } = vfRange(pool, dev, total);
      const driver = vfDriverOf(pool);
      if (pool.gpuVf) {
        // VFs already enabled (a changed spec, or enabled before): values go on each VF no VM holds.
        const q = mixed ? { writes: [], problem: mixed } : gpuVfWrites(pool, pf, prov, numbersOf({ pool, dev }), `pool ${pool.name}`);
        if (q.problem) {
          out.blocked.push({ pool: pool.name, device: pfAddr, reason: q.problem });
          continue; // its VFs are not handed out without what the pool asks for
        }
        for (const w of q.writes) {
          const vf = vfs[(gpuVfPathTarget(w.path)?.vf ?? 0) - 1];
          if (vf !== undefined && allocated.has(vf)) out.blocked.push({ pool: pool.name, device: vf, reason: `VF ${vf} is allocated: ${w.path.split('/').pop() ?? ''} changes to ${w.value} once it is released (never under a running VM)` });
          else out.writes.push({ ...w, group: vf ?? pfAddr });
        }
      }
      for (let i = first; i <= last && i < vfs.length; i++) {
        const vfAddr = vfs[i] as string;
        const vf = devices.get(vfAddr);
        if (!vf) {
          out.blocked.push({ pool: pool.name, device: vfAddr, reason: `VF ${i} of ${pfAddr} (${vfAddr}) not found` });
          continue;
        }
        if (vf.driver !== driver) out.writes.push(...withPool(bindWrites(vf, driver, `bind VF ${i} of ${pfAddr} to ${driver} (pool ${pool.name})`), pool.name));
      }
    }
  }
}

/** Passthrough: the function and every non-bridge member of its IOMMU group on vfio-pci. */
function planPassthrough(pool: PoolPlan, devices: Map<string, InventoryDevice>, out: CarvingPlan, seen: Set<string>): void {
  for (const pd of pool.devices) {
    const dev = devices.get(pd.pciAddress);
    if (!dev) {
      out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: `device ${pd.pciAddress} not found` });
      continue;
    }
    const members = new Set<string>([dev.pciAddress, ...(dev.iommuGroupMembers ?? [])]);
    const missing = [...members].filter((m) => !devices.has(m));
    if (missing.length > 0) {
      out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `IOMMU group ${dev.iommuGroup ?? '?'} members not found: ${list(missing)}` });
      continue;
    }
    // Moving a function that carries mdevs or enabled VFs to vfio-pci destroys them (and whatever
    // VM holds one): refuse, naming the member, e.g. a GPU sharing its group with a vGPU parent.
    const carrying = [...members].filter((m) => {
      const md = devices.get(m) as InventoryDevice;
      return md.driver !== VFIO_PCI && ((md.mdevs ?? []).length > 0 || (md.sriov?.numVFs ?? 0) > 0);
    });
    if (carrying.length > 0) {
      out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `IOMMU group ${dev.iommuGroup ?? '?'} member(s) ${list(carrying)} carry mdevs or VFs; moving them to vfio-pci would destroy those` });
      continue;
    }
    for (const m of [...members].sort(compareText)) {
      const md = devices.get(m) as InventoryDevice;
      if (m !== dev.pciAddress && isBridgeClass(md.classCode)) continue;
      if (md.driver === VFIO_PCI || seen.has(m)) continue;
      seen.add(m);
      const why = m === dev.pciAddress ? `pass ${m} through (pool ${pool.name})` : `IOMMU group ${dev.iommuGroup} member of ${dev.pciAddress} (pool ${pool.name})`;
      out.writes.push(...withPool(bindWrites(md, VFIO_PCI, why), pool.name));
    }
  }
}

function noteForeign(out: CarvingPlan, f: BlockedChange): void {
  (out.foreign ??= []).push(f);
}

/**
 * Mediated: create the deterministic UUIDs that are missing, remove extras of OUR UUIDs no pod
 * holds. An mdev that is not one of our deterministic UUIDs is foreign: never removed, it occupies
 * its parent's capacity and is reported in `foreign`.
 */
function planMediated(node: string, pool: PoolPlan, devices: Map<string, InventoryDevice>, allocated: ReadonlySet<string>, out: CarvingPlan): void {
  for (const pd of pool.devices) {
    if (!devices.has(pd.pciAddress)) {
      out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: `device ${pd.pciAddress} not found` });
      continue;
    }
    const { slots, candidates, missing, type } = mdevSlots(node, pool, pd, devices);
    const wanted = new Set(slots.map((s) => s.uuid));
    const ourExtras = new Map<string, number>();
    let foreignCount = 0;
    for (const parent of candidates) {
      const p = devices.get(parent) as InventoryDevice;
      let freed = 0;
      for (const m of p.mdevs ?? []) {
        if (wanted.has(m.uuid)) continue;
        // Ours also under a type an edit replaced (no other pool carves on this pool's devices).
        if (type === undefined || !isOurMdev(node, p, m, pool.count ?? 1)) {
          foreignCount++;
          noteForeign(out, { pool: pool.name, device: parent, reason: `mdev ${m.uuid} of type ${m.type} was not created by virtualio; left alone` });
          continue;
        }
        if (allocated.has(m.uuid)) {
          out.blocked.push({ pool: pool.name, device: parent, reason: `mdev ${m.uuid} is not one of the pool's but is allocated; kept until released` });
          continue;
        }
        freed++;
        out.writes.push({ path: `bus/mdev/devices/${m.uuid}/remove`, value: '1', why: `remove mdev ${m.uuid} of type ${m.type} not in pool ${pool.name}`, group: parent, pools: [pool.name] });
      }
      ourExtras.set(parent, freed);
    }
    if (missing > 0) {
      const why = type === undefined ? 'supports the type' : `is free (${candidates.length} support the type${foreignCount > 0 ? `, ${foreignCount} foreign mdev(s) occupy some` : ''})`;
      out.blocked.push({
        pool: pool.name,
        device: pd.pciAddress,
        reason: `${missing} of ${pool.count ?? 1} mdevs of type ${pool.mdevType ?? '(none)'} have no parent on ${pd.pciAddress} that ${why}`,
      });
    }
    const byParent = new Map<string, typeof slots>();
    for (const s of slots) byParent.set(s.parent, [...(byParent.get(s.parent) ?? []), s]);
    for (const [parent, ps] of byParent) {
      const p = devices.get(parent) as InventoryDevice;
      const have = new Set((p.mdevs ?? []).map((m) => m.uuid));
      const toCreate = ps.filter((s) => !have.has(s.uuid));
      const t = (p.mdevTypes ?? []).find((x) => x.id === ps[0]?.type);
      const avail = t?.availableInstances;
      const extrasFreed = ourExtras.get(parent) ?? 0;
      let creatable = toCreate.length;
      if (avail !== undefined && avail + extrasFreed < toCreate.length) {
        creatable = Math.max(0, avail + extrasFreed);
        out.blocked.push({
          pool: pool.name,
          device: parent,
          reason: `${toCreate.length} mdevs of type ${ps[0]?.type} wanted on ${parent} but only ${avail + extrasFreed} instances are available`,
        });
      }
      for (const s of toCreate.slice(0, creatable)) {
        out.writes.push({
          path: `${isPciAddress(parent) ? `bus/pci/devices/${parent}` : `class/mdev_bus/${parent}`}/mdev_supported_types/${s.type}/create`, // non-PCI parents (mtty, vfio_ap) by their class entry
          value: s.uuid,
          why: `create mdev ${s.index} of type ${s.type} on ${parent} (pool ${pool.name})`,
          group: parent,
          pools: [pool.name],
        });
      }
    }
  }
}

/** NPIV: deterministic vports per physical port; extras with the pool's prefix that no pod holds go. */
function planNpiv(node: string, pool: PoolPlan, devices: Map<string, InventoryDevice>, inv: Inventory, allocated: ReadonlySet<string>, out: CarvingPlan): void {
  for (const pd of pool.devices) {
    const dev = devices.get(pd.pciAddress);
    if (!dev) {
      out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: `device ${pd.pciAddress} not found` });
      continue;
    }
    if (!pool.wwnPrefix) {
      out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: 'NPIV pool has no wwnPrefix' });
      continue;
    }
    if ((dev.fcHosts ?? []).length === 0) {
      out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: `device ${pd.pciAddress} has no Fibre Channel host` });
      continue;
    }
    const slots = vportSlots(node, pool, dev);
    for (const h of dev.fcHosts ?? []) {
      const mine = slots.filter((s) => s.host === h.host);
      const wanted = new Set(mine.map((s) => s.wwpn));
      const existing = vportsOf(inv, dev.pciAddress, h.host);
      const have = new Set(existing.map((v) => v.wwpn));
      let freed = 0;
      for (const v of existing) {
        if (v.wwpn && wanted.has(v.wwpn)) continue;
        if (!v.wwpn || !v.wwnn || !isOurVport(pool.wwnPrefix, node, dev, h.host, v.wwpn, existing.length, pool.count ?? 1)) {
          noteForeign(out, { pool: pool.name, device: dev.pciAddress, reason: `vport ${v.name} (${v.wwpn ?? 'no WWPN'}) on ${h.host} was not created by virtualio; left alone` });
          continue;
        }
        if (allocated.has(v.wwpn)) {
          out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `vport ${v.wwpn} is no longer wanted but is allocated; kept until released` });
          continue;
        }
        freed++;
        out.writes.push({ path: `class/fc_host/${h.host}/vport_delete`, value: `${v.wwpn}:${v.wwnn}`, why: `delete vport ${v.wwpn} not in pool ${pool.name}`, group: `${dev.pciAddress}/${h.host}`, pools: [pool.name] });
      }
      const toCreate = mine.filter((s) => !have.has(s.wwpn));
      let room = toCreate.length;
      if (h.maxNPIVVports !== undefined) {
        room = Math.max(0, h.maxNPIVVports - (h.npivVportsInUse ?? existing.length) + freed);
        if (room < toCreate.length) {
          out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `${toCreate.length} vports wanted on ${h.host} but only ${room} of max_npiv_vports ${h.maxNPIVVports} are free` });
        }
      }
      for (const s of toCreate.slice(0, room)) {
        out.writes.push({ path: `class/fc_host/${h.host}/vport_create`, value: `${s.wwpn}:${s.wwnn}`, why: `create vport ${s.index} on ${h.host} (pool ${pool.name})`, group: `${dev.pciAddress}/${h.host}`, pools: [pool.name] });
      }
    }
  }
}

function sortBlocked(b: BlockedChange[]): BlockedChange[] {
  return b.sort((x, y) => compareText(x.pool, y.pool) || compareText(x.device, y.device) || compareText(x.reason, y.reason));
}

/**
 * Plans the sysfs writes that make every non-deleting pool of `spec` exist on this node, in order.
 * Pure and deterministic. A change that would destroy an allocated slice (re-carving a PF whose VFs
 * are held, removing a held mdev or vport) is not planned: it is reported in `blocked` with the
 * reason, and other devices proceed. SR-IOV converges in two passes: enabling VFs first, binding
 * them once the next scan sees them. Applying the plan and planning again yields no writes.
 */
export function planCarving(input: PlanInput): CarvingPlan {
  const out: CarvingPlan = { writes: [], blocked: [] };
  const devices = indexDevices(input.inventory);
  const pools = [...(input.spec.pools ?? [])].filter((p) => !p.deleting).sort((a, b) => compareText(a.name, b.name));
  planSriov(pools.filter((p) => p.mode === 'SRIOV' && !isVgpuPool(p) && !isOnDemandVgpu(p)), devices, input.allocated, out, input.ownedPfs, input.inventory.gpuVfProvisioning);
  planVgpu(pools.filter(isVgpuPool), devices, input.inventory, input.allocated, out);
  const seen = new Set<string>();
  for (const pool of pools) {
    if (pool.mode === 'Passthrough') planPassthrough(pool, devices, out, seen);
    else if (isOnDemandVgpu(pool)) planOnDemandVgpu(pool, devices, input.inventory, input.onDemand?.wanted ?? new Map(), input.onDemand?.ours ?? new Set(), input.allocated, out);
    else if (isOnDemand(pool)) planOnDemand(input.nodeName, pool, devices, input.onDemand?.capacity ?? {}, input.onDemand?.wanted ?? new Map(), input.allocated, out);
    else if (pool.mode === 'Mediated') planMediated(input.nodeName, pool, devices, input.allocated, out);
    else if (pool.mode === 'NPIV') planNpiv(input.nodeName, pool, devices, input.inventory, input.allocated, out);
  }
  holdBindsToMissingDrivers(out, input.inventory);
  sortBlocked(out.blocked);
  if (out.foreign) sortBlocked(out.foreign);
  return out;
}

/**
 * Binding to a driver that is not loaded cannot succeed (drivers_probe leaves the function unbound
 * and the writes would repeat every pass; on a real kernel without vfio-pci loaded they did): such
 * moves are not planned but blocked with the reason, and the function keeps its current driver.
 * Applies only when the inventory lists the loaded drivers.
 */
function holdBindsToMissingDrivers(out: CarvingPlan, inventory: Inventory): void {
  const loaded = inventory.pciDrivers;
  if (loaded === undefined) return;
  const missing = new Map<string, SysfsWrite>();
  for (const w of out.writes) {
    const m = /^bus\/pci\/devices\/([^/]+)\/driver_override$/.exec(w.path);
    const v = w.value.trim();
    if (m && v !== '' && !loaded.includes(v)) missing.set(m[1] as string, w);
  }
  if (missing.size === 0) return;
  out.writes = out.writes.filter((w) => {
    const addr = w.path === 'bus/pci/drivers_probe' ? w.value : /^bus\/pci\/devices\/([^/]+)\/(driver_override|driver\/unbind)$/.exec(w.path)?.[1];
    return addr === undefined || !missing.has(addr);
  });
  for (const [addr, w] of missing) {
    const driver = w.value.trim();
    for (const pool of w.pools ?? ['']) out.blocked.push({ pool, device: addr, reason: `cannot bind ${addr} to ${driver}: driver ${driver} is not loaded (modprobe ${driver})` });
  }
}

/** Input of {@link planUncarve}. */
export interface UncarveInput {
  /** The pool being deleted or removed (its last known plan). */
  pool: PoolPlan;
  /** The node's current plan: pools still active there keep what they share with `pool`. */
  spec: VirtualIONodeSpec;
  inventory: Inventory;
  nodeName: string;
  allocated: ReadonlySet<string>;
  /** PFs whose VF count this agent set; VFs of any other PF are never disabled. Absent: all ours. */
  ownedPfs?: ReadonlySet<string>;
  /** The checkpoint's capacity record: each vGPU GPU's type table (name → id), which a busy GPU no longer lists. */
  kept?: MdevCapacity;
}

/**
 * Plans the release of a deleting or removed pool: what no pod holds is uncarved (VFs disabled when
 * no other active pool uses the PF, mdevs and vports removed, passthrough functions returned to
 * their native driver); what pods hold stays and is listed in `held` (and in `blocked` with a
 * reason). Pure; planning again after applying yields no writes.
 */
export function planUncarve(input: UncarveInput): CarvingPlan {
  const { pool, nodeName, allocated } = input;
  // vGPU profiles resolve against the kept type table too: after a restart a held type's name may be listed nowhere.
  const inventory = withKeptCatalogues(input.inventory, input.kept ?? {});
  const out: CarvingPlan = { writes: [], blocked: [], held: [] };
  const held = new Set<string>();
  const devices = indexDevices(inventory);
  const others = (input.spec.pools ?? []).filter((p) => p.name !== pool.name && !p.deleting);
  for (const pd of pool.devices) {
    const dev = devices.get(pd.pciAddress);
    if (!dev) continue; // gone: nothing left to release
    if (isOnDemand(pool) || isOnDemandVgpu(pool)) continue; // below, once for all its parents
    if (isVgpuPool(pool)) {
      planVgpuUncarve({ ...pool, devices: [pd] }, others, devices, inventory, allocated, out, held, input.ownedPfs);
    } else if (pool.mode === 'SRIOV') {
      const total = dev.sriov?.totalVFs ?? 0;
      const vfs = dev.sriov?.vfs ?? [];
      const { first, last } = vfRange(pool, pd, total);
      const mine = vfs.slice(first, last + 1);
      for (const vf of mine) if (allocated.has(vf)) held.add(vf);
      const shared = others.some((p) => p.mode === 'SRIOV' && p.devices.some((d) => d.pciAddress === pd.pciAddress));
      if (shared || vfs.length === 0) continue;
      if (input.ownedPfs && !input.ownedPfs.has(pd.pciAddress)) continue; // someone else's VFs: never ours to disable
      if (dev.driver === AMD_GIM_DRIVER) continue; // gim's VFs: their count is gim's
      const heldOnPf = vfs.filter((vf) => allocated.has(vf));
      if (heldOnPf.length > 0) {
        out.blocked.push({ pool: pool.name, device: pd.pciAddress, reason: `disabling VFs of ${pd.pciAddress} waits: allocated VFs ${list(heldOnPf)}` });
        continue;
      }
      out.writes.push({ path: pciDev(pd.pciAddress, 'sriov_numvfs'), value: '0', why: `release ${vfs.length} VFs of pool ${pool.name}`, group: pd.pciAddress, pools: [pool.name] });
      out.writes.push({ path: pciDev(pd.pciAddress, 'sriov_drivers_autoprobe'), value: '1', why: `restore VF autoprobe on ${pd.pciAddress}`, group: pd.pciAddress, pools: [pool.name] });
      // i915 quotas go back to unset once the VFs are gone: the next owner gets the driver's even split.
      out.writes.push(...gpuVfResetWrites(pool, inventory.gpuVfProvisioning?.[pd.pciAddress], Array.from({ length: last - first + 1 }, (_, i) => first + i + 1)));
    } else if (pool.mode === 'Mediated') {
      // Every mdev of ours on the pool's parents goes (also ours beyond the current slots); foreign ones stay.
      const { candidates, type } = mdevSlots(nodeName, pool, pd, devices);
      for (const parent of candidates) {
        const p = devices.get(parent) as InventoryDevice;
        for (const m of p.mdevs ?? []) {
          if (type === undefined || !isOurMdev(nodeName, p, m, pool.count ?? 1)) continue;
          if (allocated.has(m.uuid)) {
            held.add(m.uuid);
            out.blocked.push({ pool: pool.name, device: parent, reason: `mdev ${m.uuid} is allocated; removed once released` });
            continue;
          }
          out.writes.push({ path: `bus/mdev/devices/${m.uuid}/remove`, value: '1', why: `release mdev ${m.uuid} of pool ${pool.name}`, group: parent, pools: [pool.name] });
        }
      }
    } else if (pool.mode === 'Passthrough') {
      if (allocated.has(dev.pciAddress)) {
        held.add(dev.pciAddress);
        out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `${dev.pciAddress} is allocated; returned to its driver once released` });
        continue;
      }
      const usedByOthers = new Set(others.filter((p) => p.mode === 'Passthrough').flatMap((p) => p.devices.flatMap((d) => [d.pciAddress, ...(devices.get(d.pciAddress)?.iommuGroupMembers ?? [])])));
      for (const m of [dev.pciAddress, ...(dev.iommuGroupMembers ?? [])].filter((x, i, a) => a.indexOf(x) === i).sort(compareText)) {
        const md = devices.get(m);
        if (!md || usedByOthers.has(m)) continue;
        if (m !== dev.pciAddress && isBridgeClass(md.classCode)) continue;
        if (md.driver === VFIO_PCI) out.writes.push(...withPool(releaseWrites(md, `return ${m} to its native driver (pool ${pool.name} released)`), pool.name));
        else if (leftDriverless(md, inventory)) out.writes.push(...withPool(releaseWrites(md, `probe ${m} back to ${md.original?.driver ?? '?'}: its release left it with no driver (pool ${pool.name})`), pool.name));
      }
    } else if (pool.mode === 'NPIV') {
      for (const s of vportSlots(nodeName, pool, dev)) {
        const v = vportsOf(inventory, dev.pciAddress, s.host).find((x) => x.wwpn === s.wwpn);
        if (!v) continue;
        if (allocated.has(s.wwpn)) {
          held.add(s.wwpn);
          out.blocked.push({ pool: pool.name, device: dev.pciAddress, reason: `vport ${s.wwpn} is allocated; deleted once released` });
          continue;
        }
        out.writes.push({ path: `class/fc_host/${s.host}/vport_delete`, value: `${s.wwpn}:${v.wwnn ?? s.wwnn}`, why: `release vport ${s.wwpn} of pool ${pool.name}`, group: `${dev.pciAddress}/${s.host}`, pools: [pool.name] });
      }
    }
  }
  if (isOnDemand(pool) || isOnDemandVgpu(pool)) {
    const od = { ...out, held: [] as string[] };
    if (isOnDemandVgpu(pool)) planOnDemandVgpuUncarve(pool, devices, inventory, allocated, od);
    else planOnDemandUncarve(nodeName, pool, devices, allocated, od);
    for (const id of od.held) held.add(id);
  }
  out.held = [...held].sort(compareText);
  sortBlocked(out.blocked);
  return out;
}
