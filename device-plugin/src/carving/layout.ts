// What a pool wants on one physical device, computed the same way by carving (to make it) and by
// health (to check it): VF index ranges, deterministic mdev UUIDs and NPIV WWNs.
import { createHash } from 'node:crypto';
import type { FcVport, Inventory, InventoryDevice, PoolPlan } from '../model.js';
import { VFIO_PCI } from '../sysfs/pci.js';

/** The devices entry of a pool plan. */
export type PoolDevice = PoolPlan['devices'][number];

/** Fixed namespace of virtualio's name-based mdev UUIDs (never change it: kubelet checkpoints hold the IDs). */
export const MDEV_UUID_NAMESPACE = '6f1c2b7e-4a0d-5b9e-8c3f-2d7a9e4b1c60';

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex');
}

/** RFC 9562 name-based UUID, version 5 (SHA-1), lower-case. */
export function uuidV5(name: string, namespace: string = MDEV_UUID_NAMESPACE): string {
  const hash = createHash('sha1').update(uuidBytes(namespace)).update(name, 'utf8').digest();
  const b = Buffer.from(hash.subarray(0, 16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x50;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The mdev UUID for slot `index` of `type` on `parent` (a PCI address) on node `node`: the same
 * inputs always give the same UUID, so a reboot recreates the IDs the kubelet has checkpointed.
 */
export function mdevUuid(node: string, parent: string, type: string, index: number): string {
  return uuidV5(`virtualio/mdev/${node}/${parent}/${type}/${index}`);
}

/**
 * Deterministic NPIV names for vport `index` on the FC port identified by `port` (its permanent
 * WWPN when known, else its host name) of HBA `pciAddress` on `node`: `prefix` (6-12 hex digits)
 * followed by hash digits, 16 lower-case hex digits each, WWPN ≠ WWNN.
 */
export function vportWwns(prefix: string, node: string, pciAddress: string, port: string, index: number): { wwpn: string; wwnn: string } {
  const digits = (salt: string): string =>
    createHash('sha256').update(`virtualio/npiv/${node}/${pciAddress}/${port}/${index}/${salt}`).digest('hex').slice(0, 16 - prefix.length);
  return { wwpn: `${prefix}${digits('wwpn')}`, wwnn: `${prefix}${digits('wwnn')}` };
}

/** Inventory devices by PCI address. */
export function indexDevices(inv: Inventory): Map<string, InventoryDevice> {
  return new Map(inv.devices.map((d) => [d.pciAddress, d]));
}

/** The driver VFs of an SR-IOV pool are bound to. */
export function vfDriverOf(pool: PoolPlan): string {
  return pool.vfDriver && pool.vfDriver.length > 0 ? pool.vfDriver : VFIO_PCI;
}

/**
 * VF indexes `[first, last]` a pool takes on one PF: `vfFirst`/`vfLast` when given, else `count`
 * VFs from `vfFirst` (default 0), else every VF up to `sriov_totalvfs`.
 */
export function vfRange(pool: PoolPlan, dev: PoolDevice, totalVFs: number): { first: number; last: number } {
  const first = dev.vfFirst ?? 0;
  const last = dev.vfLast ?? (pool.count !== undefined ? first + pool.count - 1 : totalVFs - 1);
  return { first, last };
}

/** VFs per PF the given (non-deleting) pools need: the highest `last + 1` over them. */
export function wantedNumVfs(pools: { pool: PoolPlan; dev: PoolDevice }[], totalVFs: number): number {
  let want = 0;
  for (const { pool, dev } of pools) want = Math.max(want, vfRange(pool, dev, totalVFs).last + 1);
  return want;
}

/** The mdev type id a pool's `mdevType` names on a parent (by id, or by name with spaces as `_`). */
export function resolveMdevType(dev: InventoryDevice, mdevType: string | undefined): string | undefined {
  if (!mdevType) return undefined;
  for (const t of dev.mdevTypes ?? []) if (t.id === mdevType) return t.id;
  for (const t of dev.mdevTypes ?? []) if (t.name !== undefined && t.name.replace(/ /g, '_') === mdevType) return t.id;
  // A parent whose types folder was not captured (recordings) but that carries mdevs of the type.
  if ((dev.mdevs ?? []).some((m) => m.type === mdevType)) return mdevType;
  return undefined;
}

/** One mdev slot: the parent it lives on, its index there, and its deterministic UUID. */
export interface MdevSlot {
  parent: string;
  type: string;
  index: number;
  uuid: string;
}

/**
 * How many slot indexes beyond those a parent can currently show are checked when telling our
 * mdevs / vports from foreign ones (a plan whose count shrank leaves ours at higher indexes).
 */
const OWNERSHIP_MARGIN = 64;

/**
 * The slot index of `uuid` if it is one of virtualio's deterministic mdev UUIDs for (`node`,
 * `parent`, `type`), checking indexes below `bound`; undefined for a foreign mdev (one we did not
 * create, which carving must never remove).
 */
export function ourMdevIndex(node: string, parent: string, type: string, uuid: string, bound: number): number | undefined {
  for (let i = 0; i < bound; i++) if (mdevUuid(node, parent, type, i) === uuid) return i;
  return undefined;
}

/**
 * Whether mdev `m` on `parent` is one virtualio made on this node, under the type it has (see
 * {@link ourMdevIndex}): whatever type its pool asks for now, so that our mdevs of a type an edit
 * replaced are ours even when the agent's record of that type is lost (a damaged checkpoint).
 */
export function isOurMdev(node: string, parent: InventoryDevice, m: { uuid: string; type?: string }, count = 1): boolean {
  if (m.type === undefined) return false;
  return ourMdevIndex(node, parent.pciAddress, m.type, m.uuid, Math.max(count, (parent.mdevs ?? []).length) + OWNERSHIP_MARGIN) !== undefined;
}

/**
 * Where a Mediated pool's mdevs go on one pool device. A device with its own mdev types is the
 * parent of `count` mdevs (indexes 0..count-1). A PF whose VFs are the mdev parents (NVIDIA
 * SR-IOV vGPU, e.g. A16: at most one vGPU per VF) gets one mdev on each of `count` VFs that support
 * the type, chosen deterministically: first the VFs that already hold our mdev (so nothing moves),
 * then, in VF order, those with `available_instances` > 0 (or, when the type folder shows no count,
 * those that hold no mdev at all). A VF holding someone else's mdev is never chosen.
 * `candidates` lists every VF supporting the type; `missing` counts slots with no parent to go on.
 */
export function mdevSlots(
  node: string,
  pool: PoolPlan,
  dev: PoolDevice,
  devices: Map<string, InventoryDevice>,
): { slots: MdevSlot[]; candidates: string[]; missing: number; type?: string } {
  const count = pool.count ?? 1;
  const d = devices.get(dev.pciAddress);
  if (!d) return { slots: [], candidates: [], missing: count };
  const own = resolveMdevType(d, pool.mdevType);
  if (own !== undefined || (d.mdevTypes ?? []).length > 0) {
    if (own === undefined) return { slots: [], candidates: [d.pciAddress], missing: count };
    const slots = Array.from({ length: count }, (_, i) => ({ parent: d.pciAddress, type: own, index: i, uuid: mdevUuid(node, d.pciAddress, own, i) }));
    return { slots, candidates: [d.pciAddress], missing: 0, type: own };
  }
  const vfParents: { addr: string; type: string; order: number; ours: boolean; free: boolean }[] = [];
  for (const vf of d.sriov?.vfs ?? []) {
    const v = devices.get(vf);
    const t = v ? resolveMdevType(v, pool.mdevType) : undefined;
    if (v === undefined || t === undefined) continue;
    const mdevs = v.mdevs ?? [];
    const ours = mdevs.some((m) => m.type === t && m.uuid === mdevUuid(node, vf, t, 0));
    const avail = (v.mdevTypes ?? []).find((x) => x.id === t)?.availableInstances;
    const free = avail !== undefined ? avail > 0 : mdevs.length === 0;
    vfParents.push({ addr: vf, type: t, order: vfParents.length, ours, free });
  }
  const chosen = [...vfParents.filter((p) => p.ours), ...vfParents.filter((p) => !p.ours && p.free)].slice(0, count).sort((a, b) => a.order - b.order);
  const slots = chosen.map((p) => ({ parent: p.addr, type: p.type, index: 0, uuid: mdevUuid(node, p.addr, p.type, 0) }));
  const type = vfParents[0]?.type;
  return { slots, candidates: vfParents.map((p) => p.addr), missing: count - chosen.length, ...(type !== undefined ? { type } : {}) };
}

/** One NPIV slot on one physical FC port. */
export interface VportSlot {
  pciAddress: string;
  host: string;
  index: number;
  wwpn: string;
  wwnn: string;
}

/** `count` (default 1) deterministic vports per physical FC port of the pool device. */
export function vportSlots(node: string, pool: PoolPlan, dev: InventoryDevice): VportSlot[] {
  const prefix = pool.wwnPrefix;
  if (!prefix) return [];
  const out: VportSlot[] = [];
  for (const h of dev.fcHosts ?? []) {
    for (let i = 0; i < (pool.count ?? 1); i++) {
      out.push({ pciAddress: dev.pciAddress, host: h.host, index: i, ...vportWwns(prefix, node, dev.pciAddress, h.wwpn ?? h.host, i) });
    }
  }
  return out;
}

/**
 * Whether WWPN `wwpn` on physical port `host` of `dev` is one of the deterministic vports of a pool
 * with `prefix` on `node` (checking indexes below max(`count`, vports present) + a margin); a
 * vport that is not ours is never deleted.
 */
export function isOurVport(prefix: string, node: string, dev: InventoryDevice, host: string, wwpn: string, present: number, count = 1): boolean {
  if (!wwpn.startsWith(prefix)) return false;
  const port = (dev.fcHosts ?? []).find((h) => h.host === host);
  const bound = Math.max(count, present) + OWNERSHIP_MARGIN;
  for (let i = 0; i < bound; i++) if (vportWwns(prefix, node, dev.pciAddress, port?.wwpn ?? host, i).wwpn === wwpn) return true;
  return false;
}

/** Vports of one physical host. */
export function vportsOf(inv: Inventory, pciAddress: string, host: string): FcVport[] {
  return (inv.vports ?? []).filter((v) => v.pciAddress === pciAddress && v.parentHost === host);
}

/**
 * A function its release unbound but that never got back to the driver it had before we moved it
 * (the agent stopped between the unbind and the probe, or the probe failed): no driver now, an
 * original driver on record (InventoryDevice.original, from the checkpoint), and that driver loaded.
 * Its release is not done until a probe has put it back; a function that had no driver stays as is.
 */
export function leftDriverless(dev: InventoryDevice, inventory: Inventory): boolean {
  const native = dev.original?.driver;
  if (dev.driver !== undefined || native === undefined || native === VFIO_PCI) return false;
  return inventory.pciDrivers === undefined || inventory.pciDrivers.includes(native);
}
