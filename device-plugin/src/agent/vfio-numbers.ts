// VFIO numbers across a reboot (issue 21: never hand a VM another device under the same ID).
//
// The kubelet keeps each container's Allocate answer in its checkpoint and, after a reboot, starts
// the container from it without asking again. That answer names device nodes by number: the VFIO
// cdev `/dev/vfio/devices/vfioN` and the group node `/dev/vfio/<group>`. The kernel hands both out
// from an IDA, lowest number free: cdevs when a VFIO driver binds a function or an mdev is created
// (drivers/vfio/vfio_main.c vfio_init_device; the same IDA for both, seen on Debian's 6.12 in
// test/kernel), groups when a VF or an mdev is created (drivers/iommu/iommu.c iommu_group_alloc).
// A reboot keeps neither, so a saved path can name ANOTHER function afterwards.
//
// What the agent does about it, with a record in its checkpoint:
// - `cdevs`: the cdev number of every function on a VFIO driver and of every mdev (held or not: a
//   GPU's audio function, spare VFs and an mdev made for a claim after the binds take numbers between
//   held ones). From the agent's first pass that binds or creates anything (for the restore wait,
//   10 s), binds to vfio-pci and mdev creates are made in ascending recorded number, and each waits
//   for a recorded function or mdev with a lower number that is not back yet: the IDA then hands
//   the same numbers back, as long as nothing else took one. What the agent destroys itself is
//   forgotten (`forget`): made again later, it is a new device.
// - `nodes`: the device nodes each slice had when it was last free. A held slice whose nodes differ
//   now (a cdev or group number that could not be had back) is listed Unhealthy with the old and
//   new paths, so the kubelet does not start the VM on what the saved answer would open.
// The IOMMU group numbers of VFs and mdevs are not re-ordered: they follow the order in which the
// agent re-creates VFs and mdevs, which is its plan's order, as at its first carving; a held slice
// whose group still moved is caught by `nodes`.
import type { Logger } from '../log.js';
import type { Inventory, Slice, SysfsWrite } from '../model.js';
import { isPciAddress, VFIO_PCI } from '../sysfs/pci.js';

/** The checkpoint's record (see the file comment). */
export interface VfioRecord {
  cdevs: Record<string, number>;
  nodes: Record<string, string[]>;
}

const CDEV = /^\/dev\/vfio\/devices\/vfio(\d+)$/;

/** Functions on a VFIO driver now, with their cdev numbers. */
export function cdevNumbers(inv: Inventory): Map<string, number> {
  const out = new Map<string, number>();
  for (const [bdf, p] of Object.entries(inv.vfioCdevs ?? {})) {
    const m = CDEV.exec(p);
    if (m) out.set(bdf, Number(m[1]));
  }
  return out;
}

const OVERRIDE = /^bus\/pci\/devices\/([^/]+)\/driver_override$/;
const MDEV_CREATE = /\/mdev_supported_types\/[^/]+\/create$/;

/** The sysfs folder that exists once a function or mdev (by UUID) has its VFIO number. */
const vfioDevPath = (id: string): string => (isPciAddress(id) ? `bus/pci/devices/${id}/vfio-dev` : `bus/mdev/devices/${id}/vfio-dev`);

/** What a write gives a VFIO number to: a function it binds to vfio-pci, or the mdev it creates. */
function numbered(w: SysfsWrite): string | undefined {
  if (MDEV_CREATE.test(w.path)) return w.value.trim();
  const m = OVERRIDE.exec(w.path);
  return m && w.value.trim() === VFIO_PCI ? m[1] : undefined;
}

/**
 * Orders one pass's binds to vfio-pci and mdev creates ("binds" below: each takes a cdev number) by
 * recorded cdev number (those with none after, in plan order), after every other write of the pass;
 * each bind keeps its own writes (its group) in order.
 * While `waiting`, a bind is left for a later pass when a recorded function with a lower number is
 * not on a VFIO driver and this pass does not bind it first: it does not exist yet (it will be
 * created, e.g. a VF whose PF is being re-enabled) or it exists and its bind is not planned yet (a VF
 * created moments ago). A function with no record waits for every such one. `waitingFor` names what held binds back. Also while `waiting`, a
 * function whose bind is `inFlight` (written moments ago; a rescan may not show it yet) is not bound
 * again: a repeated "unbind, probe" that reaches it once it is on vfio-pci would give its number up
 * and take the lowest free one. `binds` lists the functions bound by the writes returned, `inFlight`
 * those left out for being in flight (the caller comes back for them when that ends).
 */
export function orderVfioBinds(writes: readonly SysfsWrite[], rec: VfioRecord, inv: Inventory, waiting: boolean, inFlight: (bdf: string) => boolean = () => false): { writes: SysfsWrite[]; waitingFor: string[]; binds: string[]; inFlight: string[] } {
  const unitOf = new Map<string, string[]>(); // group key → functions bound to vfio-pci, mdevs created by it
  const groupKey = (w: SysfsWrite): string => w.group ?? `${w.path}\n${w.value}`;
  for (const w of writes) {
    const id = numbered(w);
    if (id) unitOf.set(groupKey(w), [...(unitOf.get(groupKey(w)) ?? []), id]);
  }
  if (unitOf.size === 0 || Object.keys(rec.cdevs).length === 0) return { writes: [...writes], waitingFor: [], binds: [...unitOf.values()].flat(), inFlight: [] };
  // Recorded functions not on a VFIO driver now: absent (a VF not re-created yet) or present and not
  // bound yet (a VF created moments ago whose bind is not in this pass). A function with a higher
  // number waits for each of them; one whose bind this pass writes first, or wrote moments ago, no more.
  const onVfio = cdevNumbers(inv);
  const driverOf = new Map(inv.devices.map((d) => [d.pciAddress, d.driver]));
  const pending = Object.entries(rec.cdevs).filter(([bdf]) => !onVfio.has(bdf) && driverOf.get(bdf) !== VFIO_PCI && !inFlight(bdf));
  const rank = (key: string): number => Math.min(...(unitOf.get(key) ?? []).map((b) => rec.cdevs[b] ?? Infinity));
  const keyOf = (w: SysfsWrite): string | undefined => {
    const k = groupKey(w);
    return unitOf.has(k) ? k : undefined;
  };
  const rest = writes.filter((w) => keyOf(w) === undefined);
  const keys = [...unitOf.keys()].map((k, i) => ({ k, i, n: rank(k) })).sort((a, b) => a.n - b.n || a.i - b.i);
  const out = [...rest];
  const waitingFor = new Set<string>();
  const binds: string[] = [];
  const skipped: string[] = [];
  for (const { k, n } of keys) {
    const fns = unitOf.get(k) ?? [];
    if (waiting && fns.every(inFlight)) {
      skipped.push(...fns);
      continue;
    }
    const lower = waiting ? pending.filter(([b, m]) => m < n && !binds.includes(b) && !fns.includes(b)) : [];
    if (lower.length > 0) {
      for (const [b, m] of lower) waitingFor.add(`${b} (vfio${m}${driverOf.has(b) ? ', not bound yet' : ''})`);
      continue;
    }
    const own = writes.filter((w) => keyOf(w) === k);
    // While restoring, the next unit waits until this one's numbers are taken (its vfio-dev is there).
    if (waiting && own.length > 0) own[own.length - 1] = { ...(own.at(-1) as SysfsWrite), settle: fns.map(vfioDevPath) };
    out.push(...own);
    binds.push(...fns);
  }
  return { writes: out, waitingFor: [...waitingFor].sort(), binds, inFlight: skipped };
}

const same = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * Brings the record up to date with this round and marks held slices whose device nodes are not the
 * ones they were handed out with. Updates `rec` in place; returns the slices (moved ones Unhealthy
 * with the reason), whether the record changed, and the moves found.
 * - cdevs: every function on a VFIO driver now is recorded; a recorded one that is not is kept while
 *   `keepMissing` (the agent is still restoring) or a holder has it, else forgotten.
 * - nodes: a slice's nodes are recorded while nobody holds it (a held slice keeps the nodes it was
 *   handed out with); a slice gone, or listed without nodes (an on-demand mdev removed, its device
 *   still published), is forgotten unless held or `keepMissing`.
 */
export function checkVfioNumbers(rec: VfioRecord, slices: readonly Slice[], inv: Inventory, held: (id: string) => boolean, keepMissing: boolean): { slices: Slice[]; changed: boolean; moved: { id: string; was: string[]; now: string[] }[] } {
  let changed = false;
  const now = cdevNumbers(inv);
  const byCdev = new Map([...now].map(([bdf, n]) => [`/dev/vfio/devices/vfio${n}`, bdf]));
  // Functions a holder has: a held slice's own function and every function whose cdev it hands out.
  const heldFns = new Set<string>();
  for (const s of slices) {
    if (!held(s.id)) continue;
    if (s.pciAddress) heldFns.add(s.pciAddress);
    for (const d of s.deviceNodes) {
      const f = byCdev.get(d);
      if (f) heldFns.add(f);
    }
  }
  for (const [bdf, n] of now) {
    const was = rec.cdevs[bdf];
    if (was === n || (was !== undefined && heldFns.has(bdf))) continue;
    rec.cdevs[bdf] = n;
    changed = true;
  }
  for (const bdf of Object.keys(rec.cdevs)) {
    if (now.has(bdf) || keepMissing || heldFns.has(bdf) || held(bdf)) continue;
    delete rec.cdevs[bdf];
    changed = true;
  }
  const out: Slice[] = [];
  const moved: { id: string; was: string[]; now: string[] }[] = [];
  const ids = new Set<string>();
  for (const s of slices) {
    ids.add(s.id);
    const nodes = [...s.deviceNodes].sort();
    const was = rec.nodes[s.id];
    if (nodes.length === 0 && was !== undefined && !keepMissing && !held(s.id)) {
      // Listed without nodes and nobody holds it: not there (an on-demand device published before any
      // claim has it carved). Its next incarnation is new; the old nodes are nobody's saved answer.
      delete rec.nodes[s.id];
      changed = true;
    }
    if (nodes.length === 0 || s.health !== 'Healthy') {
      out.push(s);
      continue;
    }
    if (was !== undefined && !same(was, nodes) && held(s.id)) {
      const gone = was.filter((p) => !nodes.includes(p));
      const came = nodes.filter((p) => !was.includes(p));
      moved.push({ id: s.id, was: gone, now: came });
      out.push({ ...s, health: 'Unhealthy', reason: `handed out with ${gone.join(', ')}, which the kubelet's saved answer still names, and now ${came.length ? came.join(', ') : 'without it'} (the kernel numbered it anew, e.g. after a reboot); not served until its holder lets go` });
      continue;
    }
    if (was === undefined || !same(was, nodes)) {
      rec.nodes[s.id] = nodes;
      changed = true;
    }
    out.push(s);
  }
  for (const id of Object.keys(rec.nodes)) {
    if (ids.has(id) || keepMissing || held(id)) continue;
    delete rec.nodes[id];
    changed = true;
  }
  return { slices: out, changed, moved };
}

/** The agent's use of the record: its checkpoint, what it logs, and when it is still restoring. */
export class VfioNumbers {
  private lastWaiting = '';
  private lastMoved = '';
  /** Functions a bind to vfio-pci was written for while restoring, and when. */
  private readonly sent = new Map<string, number>();
  private readonly startedAt: number;
  /** When the first carving pass with a bind to vfio-pci came (the ordering window starts there). */
  private firstBindAt: number | undefined;
  /** When a bind the last pass left out may go (see {@link nextDue}). */
  private due: number | undefined;

  constructor(
    private readonly checkpoint: { vfio(): VfioRecord; save(): void },
    private readonly log: Logger,
    private readonly now: () => number,
    /**
     * How long binds keep waiting for lower-numbered functions, counted from the first pass that
     * binds anything: a time counted from the agent's start closes early when that pass comes late
     * (a slow start on a busy node, PodResources not trusted yet), and the numbers then come back in
     * whatever order the passes bind them.
     */
    private readonly windowMs: number,
    /** Records of absent functions are kept this long when no pass has bound anything yet. */
    private readonly idleKeepMs = 60_000,
    /** How long a bind written while restoring counts as in flight (ms). */
    private readonly inFlightMs = 2000,
  ) {
    this.startedAt = now();
  }

  /** Binds still wait for lower-numbered functions not created yet. */
  private bindsWait(t: number): boolean {
    return this.firstBindAt === undefined || t - this.firstBindAt < this.windowMs;
  }

  /** Records of functions and slices not there now are kept (the agent is still restoring). */
  private restoring(t: number): boolean {
    return this.firstBindAt === undefined ? t - this.startedAt < this.idleKeepMs : t - this.firstBindAt < this.windowMs;
  }

  /** A carving pass's writes, binds ordered (see {@link orderVfioBinds}). */
  order(writes: SysfsWrite[], inv: Inventory): SysfsWrite[] {
    const t = this.now();
    const waiting = this.bindsWait(t);
    const r = orderVfioBinds(writes, this.checkpoint.vfio(), inv, waiting, (bdf) => t - (this.sent.get(bdf) ?? -Infinity) < this.inFlightMs);
    if (this.firstBindAt === undefined && (r.binds.length > 0 || r.waitingFor.length > 0)) this.firstBindAt = t;
    if (waiting) for (const b of r.binds) this.sent.set(b, t);
    // Nothing else may wake the loop for what was left out: sysfs sends no event when a function
    // appears, and a function that left vfio-pci moments after its bind sent its one event already.
    const dues = r.inFlight.map((b) => (this.sent.get(b) ?? t) + this.inFlightMs);
    if (r.waitingFor.length > 0 && this.firstBindAt !== undefined) dues.push(this.firstBindAt + this.windowMs);
    this.due = dues.length > 0 ? Math.min(...dues) : undefined;
    const text = r.waitingFor.join(', ');
    if (text && text !== this.lastWaiting) this.log.info({ waitingFor: r.waitingFor }, 'binds to vfio-pci wait for functions with lower recorded VFIO numbers to be re-created, so that the kernel hands the same numbers back');
    this.lastWaiting = text;
    return r.writes;
  }

  /**
   * When the binds the last pass left out may go: a bind in flight once it no longer counts as such,
   * binds waiting for lower numbers at the window's end (earlier passes bind them as they come back).
   * Undefined when nothing was left out.
   */
  nextDue(): number | undefined {
    return this.due;
  }

  /**
   * Slices the agent's own writes destroyed (never a held one: the gate refuses that): whatever
   * is created under the same ID later (an on-demand mdev carved again for another claim) is a new
   * device with new numbers, which no saved answer names. A reboot destroys without this call, so
   * its records stay.
   */
  forget(ids: readonly string[]): void {
    const rec = this.checkpoint.vfio();
    let changed = false;
    for (const id of ids) {
      changed ||= id in rec.nodes || id in rec.cdevs;
      delete rec.nodes[id];
      delete rec.cdevs[id];
    }
    if (changed) this.checkpoint.save();
  }

  /** This round's slices, held ones whose device nodes moved marked Unhealthy; the record is kept up to date. */
  check(slices: Slice[], inv: Inventory, held: (id: string) => boolean): Slice[] {
    const r = checkVfioNumbers(this.checkpoint.vfio(), slices, inv, held, this.restoring(this.now()));
    if (r.changed) this.checkpoint.save();
    const text = r.moved.map((m) => `${m.id}: ${m.was.join(',')} -> ${m.now.join(',')}`).join('; ');
    if (text && text !== this.lastMoved) this.log.warn({ moved: r.moved }, "held slices whose device nodes the kernel numbered anew (after a reboot?): listed Unhealthy, since the kubelet's saved answer would open another device");
    this.lastMoved = text;
    return r.slices;
  }
}
