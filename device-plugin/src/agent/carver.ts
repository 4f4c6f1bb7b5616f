// One round of carving: plan the writes that bring the node to the plan (and release what retired
// pools left behind), pass every write through the gate, apply what it lets through, rescan, repeat
// (SR-IOV needs two passes: enable VFs, then bind them). A refused or failed write ends its device's
// round only; other devices proceed. What stands in the way is kept for status.
import { WriteBackoff, type BackoffOptions } from '../carving/backoff.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { BlockedChange, Inventory, PoolPlan, SysfsWrite, VirtualIONodeSpec } from '../model.js';
import { withOriginals } from '../discovery/original.js';
import type { Checkpoint } from './checkpoint.js';
import { gate, type Protection } from './gate.js';
import { isOnDemandNvme, type NvmeState } from '../carving/ondemand-nvme.js';
import type { WantedMdev } from '../carving/ondemand.js';
import type { NodeOps, OnDemandInput } from './ports.js';
import type { Retired } from './retire.js';

/** Which pools a carving write serves: its own tag, else the pools listing the device its path names. */
function poolsOfWrite(w: { path: string; pools?: string[] }, pools: readonly PoolPlan[]): string[] {
  if (w.pools?.length) return w.pools;
  const out = pools.filter((p) => (p.devices ?? []).some((d) => w.path.includes(d.pciAddress))).map((p) => p.name);
  return out.length ? out : [''];
}

const hasOnDemandNvme = (spec: VirtualIONodeSpec): boolean => (spec.pools ?? []).some((p) => isOnDemandNvme(p) && !p.deleting);

/** An mdev create (`.../mdev_supported_types/<type>/create`). */
const isMdevCreate = (w: SysfsWrite): boolean => /\/mdev_supported_types\/[^/]+\/create$/.test(w.path);

/** What one round needs from the agent. */
export interface RoundInput {
  spec: VirtualIONodeSpec;
  /** No plan read yet (the checkpoint's is served): nothing is released. */
  provisional: boolean;
  retired: ReadonlyMap<string, Retired>;
  inventory: Inventory;
  /** IDs never to destroy: held, or (nobody can tell) everything that exists. Asked each pass. */
  protectedIds: (inv: Inventory) => ReadonlySet<string>;
  /** Why one ID must not be destroyed now (the gate's question), or undefined. */
  protection: Protection;
  /** Slice IDs the active plan serves (a retired entry of the same pool never releases them). */
  activeIds: (inv: Inventory) => ReadonlySet<string>;
  /** Marks what a write is about to destroy (Allocate refuses it), and clears it after. */
  fence: (ids: readonly string[], why: string) => void;
  unfence: (ids: readonly string[]) => void;
  /** On-demand pools: the mdevs claims were allocated and the parents' capacity. */
  onDemand?: OnDemandInput;
  /** Why a rescan after writes must not be believed (a broken sysfs), or undefined. */
  suspectScan: (next: Inventory, previous: Inventory) => string | undefined;
  /** Orders (and may hold back for a later pass) a pass's writes: binds in recorded VFIO number order (vfio-numbers.ts). */
  orderBinds?: (writes: SysfsWrite[], inv: Inventory) => SysfsWrite[];
  /** Slices this round's writes destroyed (a write that succeeded and had them as victims). */
  destroyed?: (ids: readonly string[]) => void;
  signal: AbortSignal;
}

export interface RoundResult {
  inventory: Inventory;
  /** Keys of retired entries with nothing left to release or drain. */
  released: string[];
  scanError?: string;
}

export class Carver {
  blocked: BlockedChange[] = [];
  foreign: BlockedChange[] = [];
  errors: { pool: string; message: string }[] = [];
  /** On-demand mdevs (UUID) a claim was allocated that could not be carved, with why (last round). */
  onDemandFailed = new Map<string, string>();
  /** On-demand NVMe pools: the controllers as provisioning last read them (DRA publishes from it). */
  nvmeState: NvmeState = {};
  private foreignText = '';
  private readonly backoff: WriteBackoff;
  /** Which pools the writes of each device (lane) served last: where a stuck write is shown. */
  private readonly lanePools = new Map<string, string[]>();
  /**
   * Functions whose release cleared their driver_override: their original facts are kept until a
   * scan shows them back on the original driver (or gone), so a release the kernel has not finished
   * (no driver yet) is planned again (planUncarve probes it) instead of being taken as done.
   */
  private readonly returning = new Set<string>();

  constructor(
    private readonly ops: NodeOps,
    private readonly checkpoint: Checkpoint,
    private readonly metrics: AgentMetrics,
    private readonly log: Logger,
    private readonly clock: () => number,
    backoff?: BackoffOptions,
  ) {
    this.backoff = new WriteBackoff(backoff);
  }

  /** A new plan: refused writes are tried again at once. */
  resetBackoff(): void {
    this.backoff.reset();
  }

  /** When the earliest backed-off write is due, or undefined. */
  nextDue(): number | undefined {
    return this.backoff.nextDue();
  }

  async round(inp: RoundInput): Promise<RoundResult> {
    const { spec, provisional, ops } = { ...inp, ops: this.ops };
    let inventory = inp.inventory;
    const errors: { pool: string; message: string }[] = [];
    const released = new Set<string>();
    const odFailed = new Map<string, string>();
    let scanError: string | undefined;
    // mdev creates the kernel answered EEXIST this round: the mdev is there, our inventory is behind.
    const exists = new Set<string>();
    const allPools = (): PoolPlan[] => [...(spec.pools ?? []), ...[...inp.retired.values()].map((r) => r.plan)];
    await this.provision(spec, inventory, inp.protectedIds(inventory), inp.signal, inp.onDemand); // e.g. free an NVMe primary's flexible resources before its VFs exist
    for (let pass = 0; pass < 4 && !inp.signal.aborted; pass++) {
      this.settleReturning(inventory);
      const held = inp.protectedIds(inventory);
      const owned = this.checkpoint.ownedPfs();
      const writes: SysfsWrite[] = [];
      const blocked: BlockedChange[] = [];
      const foreign: BlockedChange[] = [];
      const releasing = new Set<SysfsWrite>();
      try {
        const main = ops.planCarving(spec, inventory, held, owned, inp.onDemand);
        writes.push(...main.writes);
        blocked.push(...main.blocked);
        for (const f of main.failed ?? []) odFailed.set(f.uuid, f.reason);
        foreign.push(...(main.foreign ?? []));
        if (!provisional) {
          const active = inp.activeIds(inventory);
          const keep = new Set([...held, ...active]);
          const leaving: [string | undefined, PoolPlan][] = [...(spec.pools ?? []).filter((p) => p.deleting).map((p): [undefined, PoolPlan] => [undefined, p]), ...[...inp.retired].map(([k, r]): [string, PoolPlan] => [k, r.plan])];
          // Functions moved off their driver carry what it was (a release probes one left with none back
          // to it); built only when a pool is leaving, not on every pass of every cycle.
          const withRecord = leaving.length === 0 ? inventory : { ...inventory, devices: withOriginals(inventory.devices, Object.fromEntries(this.checkpoint.originals())) };
          for (const [key, p] of leaving) {
            // What the active plan still serves is never released by a retired entry of the same pool.
            // The checkpoint's vGPU type tables: after a restart a busy GPU no longer lists a held type's name.
            const u = ops.planUncarve(p, spec, withRecord, keep, owned, this.checkpoint.mdevCapacity());
            const stillHeld = (u.held ?? []).filter((id) => !active.has(id));
            for (const w of u.writes) releasing.add(w);
            writes.push(...u.writes);
            // Held slices of a retired pool are draining, not blocked: shown on the slice and the pool.
            if (key === undefined) blocked.push(...u.blocked);
            if (key !== undefined && u.writes.length === 0 && stillHeld.length === 0) released.add(key);
          }
        }
      } catch (err) {
        errors.push({ pool: '', message: `carving plan failed: ${String(err)}` });
        this.log.error({ err }, 'carving plan failed');
        break;
      }
      for (const st of ops.stuckWrites?.() ?? []) {
        const secs = Math.round((Date.now() - st.since) / 1000);
        for (const pool of this.lanePools.get(st.lane) ?? ['']) {
          blocked.push({ pool, device: st.lane, reason: `stuck: ${st.path}=${JSON.stringify(st.value)} has not returned for ${secs} s (the device is probably held open, e.g. by a VM); other devices proceed` });
        }
      }
      // One write per path and value a pass (a retired entry and the active plan may both plan it).
      const deduped = writes.filter((w, i) => writes.findIndex((x) => x.path === w.path && x.value === w.value && (x.group ?? '') === (w.group ?? '')) === i);
      const unique = inp.orderBinds ? inp.orderBinds(deduped, inventory) : deduped;
      const originals = this.checkpoint.originals();
      const verdict = gate(unique, inventory, inp.protection, (addr, driver) => originals.get(addr)?.driver === driver);
      for (const r of verdict.refused) {
        for (const pool of poolsOfWrite(r.write, allPools())) blocked.push({ pool, device: r.victim, reason: `${r.write.path}=${JSON.stringify(r.write.value.trim())} refused: it would destroy ${r.victim}, ${r.why}` });
        this.metrics.carvingOperations.inc({ result: 'refused' });
      }
      if (verdict.refused.length) this.log.warn({ refused: verdict.refused.map((r) => `${r.write.path}=${r.write.value.trim()} (${r.victim}: ${r.why})`) }, 'safety gate refused writes');
      this.blocked = blocked;
      this.noteForeign(foreign);
      if (pass === 0) for (let i = 0; i < blocked.length; i++) this.metrics.carvingOperations.inc({ result: 'blocked' });
      const now = this.clock();
      const { due, deferred } = this.backoff.partition(verdict.allowed.map((a) => a.write), now, pass === 0);
      if (pass === 0) {
        for (const d of deferred) {
          for (const pool of poolsOfWrite(d.write, allPools())) {
            errors.push({ pool, message: `${d.write.path}=${d.write.value}: ${d.error} (failed ${d.failures} time(s); next try in ${Math.ceil(d.retryInMs / 1000)} s)` });
          }
        }
      }
      if (due.length === 0) break;
      for (const w of due) this.lanePools.set(w.group ?? w.path, poolsOfWrite(w, allPools()));
      this.recordIntent(due, inventory);
      const victims = [...new Set(verdict.allowed.filter((a) => due.includes(a.write)).flatMap((a) => a.victims))];
      this.log.info({ pass, writes: due.map((w) => `${w.path}=${w.value} (${w.why})`), ...(victims.length ? { destroys: victims } : {}), ...(deferred.length ? { backingOff: deferred.length } : {}) }, 'carving');
      inp.fence(victims, 'being re-carved or released');
      let results;
      try {
        results = await ops.applyCarving({ writes: due, blocked }, inp.signal);
      } finally {
        inp.unfence(victims);
      }
      this.recordDone(results, releasing);
      if (victims.length > 0 && inp.destroyed) {
        // A remove the kernel answers ENOENT to found the device gone already: destroyed all the same.
        const done = new Set(results.filter((r) => !r.error || (r.code === 'ENOENT' && r.write.path.endsWith('/remove'))).map((r) => r.write));
        const gone = verdict.allowed.filter((a) => done.has(a.write)).flatMap((a) => a.victims);
        if (gone.length > 0) inp.destroyed([...new Set(gone)]);
      }
      let failed = false;
      let rescan = false;
      const after = this.clock();
      for (const res of results) {
        // EEXIST on an mdev create: the kernel has that mdev and our inventory does not show it yet
        // (it was created by an earlier write whose effect the last scan missed). Not a failure to
        // retry: scan again and plan from what is there. Refused again after that rescan, the scan
        // does not see what the kernel has, and it is a failure (backed off, reported) like any.
        const eexist = res.error !== undefined && res.code === 'EEXIST' && isMdevCreate(res.write);
        const key = `${res.write.path}\n${res.write.value}`;
        if (eexist && !exists.has(key)) {
          exists.add(key);
          this.backoff.succeeded(res.write);
          this.metrics.carvingOperations.inc({ result: 'ok' });
          this.log.info({ path: res.write.path, value: res.write.value }, 'the mdev exists already; rescanning');
          rescan = true;
          continue;
        }
        const r = eexist ? { ...res, error: `${res.error} (the kernel has mdev ${res.write.value.trim()}, but a rescan does not show it under its parent)` } : res;
        this.metrics.carvingOperations.inc({ result: r.error ? (r.skipped ? 'skipped' : 'error') : 'ok' });
        if (!r.error) this.backoff.succeeded(r.write);
        // EEXIST: the mdev is there already (a repeated create); not a failure of the claim.
        if (r.error && r.code !== 'EEXIST' && r.write.path.endsWith('/create') && inp.onDemand?.wanted.has(r.write.value)) {
          this.onDemandFailedWrite(odFailed, r.write.value, r.write.path, r.error);
        }
        // On-demand vGPU profile: the driver refused the type a claim's VF was to get.
        const typed = /^bus\/pci\/devices\/([^/]+)\/nvidia\/current_vgpu_type$/.exec(r.write.path)?.[1];
        if (r.error && typed && r.write.value !== '0' && inp.onDemand?.wanted.get(typed)?.vgpuType !== undefined) {
          odFailed.set(typed, `the driver refused vGPU type ${r.write.value} on VF ${typed}: ${r.error}`);
        }
        if (r.error && !r.skipped) {
          failed = true;
          const delay = this.backoff.failed(r.write, r.error, after, r.code);
          for (const pool of poolsOfWrite(r.write, allPools())) errors.push({ pool, message: `${r.write.path}=${r.write.value}: ${r.error} (next try in ${Math.ceil(delay / 1000)} s)` });
          this.log.error({ path: r.write.path, value: r.write.value, error: r.error, code: r.code, retryInMs: delay }, 'carving write failed');
        }
      }
      if (!rescan && !results.some((r) => !r.error)) break; // nothing was written: the inventory is unchanged, no rescan
      try {
        const next = await ops.scan();
        const suspect = inp.suspectScan(next, inventory);
        if (suspect) {
          scanError = suspect;
          break;
        }
        inventory = next;
      } catch (err) {
        scanError = `sysfs scan failed: ${String(err)}`;
        break;
      }
      // A failed write ends this round's writes of its device only (its group was skipped); the
      // other devices' follow-up passes (e.g. binding the VFs just enabled) still run.
      if (failed && results.every((r) => r.error)) break;
    }
    this.settleReturning(inventory);
    errors.push(...(await this.provision(spec, inventory, inp.protectedIds(inventory), inp.signal, inp.onDemand, odFailed)));
    this.errors = errors;
    this.onDemandFailed = odFailed;
    return { inventory, released: [...released], ...(scanError ? { scanError } : {}) };
  }

  /** A claim's mdev create the kernel refused: the claim's failure condition says why. */
  private onDemandFailedWrite(failed: Map<string, string>, uuid: string, path: string, error: string): void {
    const type = /mdev_supported_types\/([^/]+)\/create$/.exec(path)?.[1] ?? '?';
    failed.set(uuid, `the kernel refused to create mdev ${uuid} of type ${type}: ${error}`);
  }

  /** Device provisioning beyond sysfs (NVMe secondary controllers); its problems become pool errors. */
  private async provision(spec: VirtualIONodeSpec, inventory: Inventory, held: ReadonlySet<string>, signal: AbortSignal, onDemand?: OnDemandInput, failed?: Map<string, string>): Promise<{ pool: string; message: string }[]> {
    if (!this.ops.provision || signal.aborted) return [];
    try {
      // On-demand NVMe pools: a controller is sized only after its claim is recorded (durably).
      const nvme = onDemand && hasOnDemandNvme(spec) ? { wanted: new Map([...onDemand.wanted].filter(([, w]) => w.queues !== undefined)), ours: onDemand.ours ?? new Set<string>(), record: (vf: string, w: WantedMdev) => this.recordNvme(vf, w) } : undefined;
      const r = await this.ops.provision(spec, inventory, held, nvme);
      if (r.nvme || nvme) this.nvmeState = r.nvme ?? {};
      for (const f of r.failed ?? []) failed?.set(f.uuid, f.reason);
      return r.problems.map((p) => ({ pool: p.pool, message: p.reason }));
    } catch (err) {
      this.log.error({ err }, 'provisioning failed');
      return [{ pool: '', message: `provisioning failed: ${String(err)}` }];
    }
  }

  /** The claim an NVMe VF's controller is about to be sized for, saved before the first command. */
  private recordNvme(vf: string, w: WantedMdev): void {
    this.checkpoint.recordCarving(vf, { pool: w.pool, namespace: w.namespace, claim: w.name, uid: w.uid, since: new Date(this.clock()).toISOString() });
    this.checkpoint.save();
  }

  /**
   * Records, before any write, what a restart must know: the PFs whose VF count we are about to
   * set (ours from now on) and the driver/netdev facts of functions we are about to move.
   */
  private recordIntent(writes: readonly SysfsWrite[], inventory: Inventory): void {
    const devices = new Map(inventory.devices.map((d) => [d.pciAddress, d]));
    for (const w of writes) {
      const m = /^bus\/pci\/devices\/([^/]+)\/(sriov_numvfs|driver_override)$/.exec(w.path);
      if (!m) continue;
      const [, addr, attr] = m as unknown as [string, string, string];
      if (attr === 'sriov_numvfs' && w.value !== '0') this.checkpoint.ownPf(addr, w.pools ?? []);
      if (attr === 'driver_override' && w.value.trim() !== '') {
        const d = devices.get(addr);
        if (d?.driver && d.driver !== w.value) {
          const names = d.netdevs?.map((n) => n.name);
          this.checkpoint.rememberOriginal(addr, { driver: d.driver, ...(names?.length ? { interfaceNames: names } : {}) });
        }
      }
    }
    this.checkpoint.save();
  }

  /** After writes: PFs released to zero VFs are no longer ours; returned functions forget their record once back (settleReturning). */
  private recordDone(results: readonly { write: SysfsWrite; error?: string }[], releasing: ReadonlySet<SysfsWrite>): void {
    for (const r of results) {
      if (r.error || !releasing.has(r.write)) continue;
      const m = /^bus\/pci\/devices\/([^/]+)\/(sriov_numvfs|driver_override)$/.exec(r.write.path);
      if (!m) continue;
      if (m[2] === 'sriov_numvfs' && r.write.value === '0') this.checkpoint.disownPf(m[1] as string);
      if (m[2] === 'driver_override' && r.write.value.trim() === '') this.returning.add(m[1] as string);
    }
    this.checkpoint.save();
  }

  /**
   * Forgets the original facts of returned functions a scan shows back on their original driver. An
   * absent one keeps them (it may be mid-rebind, or hidden by a bad scan), as settledOriginals does.
   */
  private settleReturning(inventory: Inventory): void {
    if (this.returning.size === 0) return;
    const originals = this.checkpoint.originals();
    const devices = new Map(inventory.devices.map((d) => [d.pciAddress, d]));
    let changed = false;
    for (const addr of this.returning) {
      const dev = devices.get(addr);
      const facts = originals.get(addr);
      if (facts && (!dev || (dev.driver ?? '') !== (facts.driver ?? ''))) continue;
      this.returning.delete(addr);
      if (facts) {
        this.checkpoint.forgetOriginal(addr);
        changed = true;
      }
    }
    if (changed) this.checkpoint.save();
  }

  /** Keeps what carving left alone (not ours) for status, and logs it once each time it changes. */
  private noteForeign(foreign: BlockedChange[]): void {
    this.foreign = foreign;
    const text = foreign.map((f) => `${f.pool}/${f.device}: ${f.reason}`).join('\n');
    if (text === this.foreignText) return;
    this.foreignText = text;
    if (foreign.length > 0) this.log.warn({ foreign: foreign.map((f) => `${f.pool}/${f.device}: ${f.reason}`) }, 'devices hold mdevs/vports virtualio did not create; left alone');
  }
}
