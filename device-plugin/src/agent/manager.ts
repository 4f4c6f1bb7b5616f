// The agent's one loop (STYLE P8/P9): plan → scan → carve (never what a pod holds) → slices → diff
// → per-pool device plugin servers → status. Driven by one AbortSignal; triggered by plan changes,
// a rescan timer, filesystem events under the dev and sysfs roots, and PodResources changes.
// Nothing here throws out of the loop: errors are logged, reported in status and retried.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import { WriteBackoff, type BackoffOptions } from '../carving/backoff.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { BlockedChange, CarvingPlan, Inventory, PoolPlan, Slice, VirtualIONodeSpec } from '../model.js';
import type { PluginDirWatcher } from '../kubelet/watcher.js';
import { PoolPlugin, type RegistrationOptions } from '../plugin/pool.js';
import type { PoolSpec } from '../plugin/allocate.js';
import { PodResourcesWatcher, type Holder, type PodLookup } from '../podresources/client.js';
import type { PlanSource } from './plan.js';
import { withOriginals } from '../discovery/original.js';
import { Checkpoint } from './checkpoint.js';
import type { NodeOps, StatusSink } from './ports.js';
import { buildStatus, type Condition, type PoolRegistration } from './status.js';

/** Quiet time after the last filesystem event of a burst before rescanning. */
const FS_QUIET_MS = 50;
/** Longest a burst of filesystem events delays its rescan. */
const FS_MAX_WAIT_MS = 200;

export interface ManagerOptions {
  nodeName: string;
  agentVersion: string;
  ops: NodeOps;
  plan: PlanSource;
  pluginDir: string;
  /** How pool device plugins register with the kubelet (default: kubelet.sock). */
  registration?: RegistrationOptions;
  podResourcesSocket: string;
  devinfoDir: string;
  cdi: { enabled: boolean; dir: string };
  watcher: PluginDirWatcher;
  logger: Logger;
  metrics: AgentMetrics;
  rescanIntervalMs: number;
  /** Folders whose changes trigger a rescan (e.g. <dev-root>/vfio, <sysfs>/bus/pci/devices). */
  watchPaths: string[];
  statusSink?: StatusSink;
  lookupPod?: PodLookup;
  /** Wall clock for condition timestamps. */
  now?: () => Date;
  /** Monotonic clock in ms for carving retry backoff (default performance.now). */
  clock?: () => number;
  /** Backoff of refused carving writes (default 1 s doubling to 5 min). */
  backoff?: BackoffOptions;
  /** PodResources timings (tests and benchmarks shorten them). */
  podResources?: { intervalMs?: number; minGapMs?: number; afterAllocateMs?: number };
  /** The node-local record of served pools, owned PFs and original driver facts (default: in memory only). */
  checkpoint?: Checkpoint;
  /** Set of slice IDs held by prepared DRA claims (holders too, under the same safety rules). */
  extraHolders?: () => ReadonlySet<string>;
  /** Who holds slices through prepared DRA claims, for status allocations (PodResources wins on overlap). */
  extraHolderInfo?: () => ReadonlyMap<string, Holder>;
  /**
   * Registration of the DRA driver, which stands for the device plugin registration of every pool
   * with frontEnd DRA. Absent: this agent does not serve DRA, and such pools report that.
   */
  draRegistration?: () => { registered: boolean; error?: string };
}

function poolSpec(p: PoolPlan): PoolSpec {
  const s: PoolSpec = { name: p.name, resourceName: p.resourceName, class: p.class, mode: p.mode, consumption: p.consumption };
  if (p.policy) s.policy = p.policy;
  return s;
}

/** Which pools a carving write serves: its own tag, else the pools listing the device its path names. */
function poolsOfWrite(w: { path: string; pools?: string[] }, pools: readonly PoolPlan[]): string[] {
  if (w.pools?.length) return w.pools;
  const out = pools.filter((p) => (p.devices ?? []).some((d) => w.path.includes(d.pciAddress))).map((p) => p.name);
  return out.length ? out : [''];
}

/** Same device (and VF range) in two plans of a pool. */
function sameDevice(a: PoolPlan['devices'][number], b: PoolPlan['devices'][number]): boolean {
  return a.pciAddress === b.pciAddress && a.vfFirst === b.vfFirst && a.vfLast === b.vfLast;
}

/**
 * The plan without its deleting pools: their slices come from drainingSlices only (held ones, kept
 * draining), never also as ordinary slices (that listed a held slice twice, and a released one as
 * an unhealthy slice that "does not exist").
 */
function servingSpec(spec: VirtualIONodeSpec): VirtualIONodeSpec {
  return (spec.pools ?? []).some((p) => p.deleting) ? { ...spec, pools: (spec.pools ?? []).filter((p) => !p.deleting) } : spec;
}

/** A pool (or the part of it) that left the plan, with why. */
interface Retired {
  plan: PoolPlan;
  why: string;
}

export class AgentManager {
  private readonly log: Logger;
  private readonly plugins = new Map<string, PoolPlugin>();
  private readonly podres: PodResourcesWatcher;
  private readonly checkpoint: Checkpoint;
  private wantScan = true;
  private wantStatus = false;
  private waker: (() => void) | undefined;
  private lastSpec: VirtualIONodeSpec | undefined;
  private lastGeneration: number | undefined;
  /** The last plan of every pool served here (from the checkpoint until a plan is read). */
  private known = new Map<string, PoolPlan>();
  /** Pools, or devices of pools, that left the plan and may still have carved slices. */
  private readonly retired = new Map<string, Retired>();
  private inventory: Inventory = { devices: [] };
  private slices: Slice[] = [];
  private blocked: BlockedChange[] = [];
  private foreign: BlockedChange[] = [];
  private foreignText = '';
  private carvingErrors: { pool: string; message: string }[] = [];
  private scanError: string | undefined;
  private lastStatus: VirtualIONodeStatus | undefined;
  private lastStatusText = '';
  private conditions: Condition[] = [];
  private readonly fsWatchers = new Map<string, FSWatcher>();
  private debounce: NodeJS.Timeout | undefined;
  private burstStart: number | undefined;
  private signal: AbortSignal = new AbortController().signal;
  private readonly backoff: WriteBackoff;
  private backoffTimer: NodeJS.Timeout | undefined;
  private lastSpecText = '';
  /** Which pools the writes of each device (lane) served last: where a stuck write is shown. */
  private readonly lanePools = new Map<string, string[]>();
  /** Cycles completed (for tests and logs). */
  cycles = 0;

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.logger.child({ component: 'manager' });
    this.backoff = new WriteBackoff(opts.backoff);
    this.checkpoint = opts.checkpoint ?? new Checkpoint(undefined, opts.nodeName, this.log);
    this.known = new Map(this.checkpoint.pools());
    for (const r of this.checkpoint.retired()) this.retired.set(r.plan.name, r);
    this.podres = new PodResourcesWatcher({
      socket: opts.podResourcesSocket,
      logger: opts.logger,
      metrics: opts.metrics,
      // Holders of every resource this agent has served, not only of today's plan.
      resourceNames: () => this.resourceNames(),
      onChange: () => this.trigger('podresources'),
      ...(opts.lookupPod ? { lookupPod: opts.lookupPod } : {}),
      ...opts.podResources,
    });
  }

  private resourceNames(): Set<string> {
    const out = new Set<string>();
    for (const p of this.lastSpec?.pools ?? []) out.add(p.resourceName);
    for (const p of this.known.values()) out.add(p.resourceName);
    for (const r of this.retired.values()) out.add(r.plan.resourceName);
    return out;
  }

  /** /readyz: a plan is loaded and every pool of it is registered with the kubelet. */
  readiness(): { ready: boolean; reason?: string } {
    const state = this.opts.plan.current();
    if (!this.lastSpec) return { ready: false, reason: state.kind === 'ok' ? 'plan not applied yet' : state.message };
    const active = (this.lastSpec.pools ?? []).filter((p) => !p.deleting && p.frontEnd !== 'DRA');
    const missing = active.filter((p) => !this.plugins.get(p.name)?.state.registered).map((p) => p.name);
    if (missing.length) return { ready: false, reason: `pools not registered: ${missing.join(', ')}` };
    return { ready: true };
  }

  /** The last status built (also served at /status). */
  status(): VirtualIONodeStatus | undefined {
    return this.lastStatus;
  }

  /** The slices as last built (draining ones included), for other front ends (DRA). */
  currentSlices(): readonly Slice[] {
    return this.slices;
  }

  /** Asks the loop for a rescan ('scan'-like reasons) or only a status refresh. */
  trigger(reason: 'plan' | 'timer' | 'fs' | 'podresources' | 'registration' | 'allocate'): void {
    if (reason === 'registration') this.wantStatus = true;
    else this.wantScan = true;
    if (reason === 'podresources') this.wantScan = true; // carving may be unblocked
    this.waker?.();
  }

  /**
   * Runs until `signal` aborts, then stops serving WITHOUT withdrawing the devices: the kubelet
   * keeps a vanished plugin's devices (as unhealthy) for its grace period, so an agent restart or
   * upgrade never drops the node's capacity and running pods keep their CDI specs and device-info
   * files. Only a pool that is really gone sends an empty list.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.signal = signal;
    const planRun = this.opts.plan.run(signal, () => this.trigger('plan')).catch((err: unknown) => this.log.error({ err }, 'plan source failed'));
    const podresRun = this.podres.run(signal);
    this.opts.watcher.start();
    const timer = setInterval(() => this.trigger('timer'), this.opts.rescanIntervalMs);
    this.attachWatches();
    try {
      while (!signal.aborted) {
        if (!this.wantScan && !this.wantStatus) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              this.waker = undefined;
              signal.removeEventListener('abort', done);
              resolve();
            };
            this.waker = done;
            signal.addEventListener('abort', done, { once: true });
          });
          continue;
        }
        try {
          if (this.wantScan) {
            this.wantScan = false;
            this.wantStatus = false;
            await this.cycle();
          } else {
            this.wantStatus = false;
            this.publishStatus();
          }
        } catch (err) {
          this.log.error({ err }, 'agent cycle failed; retrying on the next trigger');
          this.scanError = `agent cycle failed: ${String(err)}`;
        }
      }
    } finally {
      clearInterval(timer);
      if (this.debounce) clearTimeout(this.debounce);
      if (this.backoffTimer) clearTimeout(this.backoffTimer);
      for (const w of this.fsWatchers.values()) w.close();
      this.fsWatchers.clear();
      this.opts.ops.close?.();
      await Promise.all([...this.plugins.values()].map((p) => p.stop({ keepDevices: true })));
      this.plugins.clear();
      this.checkpoint.save();
      await Promise.all([planRun, podresRun]);
      this.log.info('agent stopped');
    }
  }

  /** fs.watch on each watched folder that exists; re-tried on every cycle for folders that appear later. */
  private attachWatches(): void {
    for (const path of this.opts.watchPaths) {
      if (this.fsWatchers.has(path)) continue;
      try {
        const w = watch(path, { persistent: false }, () => this.fsEvent());
        w.on('error', () => {
          w.close();
          this.fsWatchers.delete(path);
        });
        this.fsWatchers.set(path, w);
      } catch {
        /* not there (yet); the rescan timer covers it */
      }
    }
  }

  /**
   * Coalesces a burst of filesystem events into one rescan: fires 50 ms after the last event, and
   * at most 200 ms after the first one of the burst.
   */
  private fsEvent(): void {
    const now = this.clock();
    this.burstStart ??= now;
    if (this.debounce) clearTimeout(this.debounce);
    const wait = Math.max(0, Math.min(FS_QUIET_MS, this.burstStart + FS_MAX_WAIT_MS - now));
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.burstStart = undefined;
      this.trigger('fs');
    }, wait);
  }

  /**
   * Takes a new plan: whatever a pool had in the last known plan (or the checkpoint) and no longer
   * has is retired, to be released where no pod holds it and kept draining where one does.
   */
  private applyPlan(spec: VirtualIONodeSpec): void {
    const next = new Map((spec.pools ?? []).map((p) => [p.name, p]));
    for (const [name, old] of this.known) {
      const cur = next.get(name);
      if (!cur || cur.mode !== old.mode || cur.resourceName !== old.resourceName) {
        this.retire(old, old.devices, cur ? `pool ${name} changed its mode or resource name` : `pool ${name} is no longer in this node's plan`);
        continue;
      }
      const gone = old.devices.filter((d) => !cur.devices.some((c) => sameDevice(c, d)));
      if (gone.length > 0) this.retire(old, gone, `device no longer selected by pool ${name}`);
    }
    // Devices back in the plan of their pool are no longer retired.
    for (const [name, r] of [...this.retired]) {
      const cur = next.get(name);
      if (!cur || cur.mode !== r.plan.mode || cur.resourceName !== r.plan.resourceName) continue;
      const left = r.plan.devices.filter((d) => !cur.devices.some((c) => sameDevice(c, d)));
      if (left.length === 0) this.retired.delete(name);
      else this.retired.set(name, { ...r, plan: { ...r.plan, devices: left } });
    }
    this.known = new Map(next);
    for (const name of this.checkpoint.pools().keys()) if (!next.has(name)) this.checkpoint.deletePool(name);
    for (const p of next.values()) this.checkpoint.setPool(p);
    this.checkpoint.setRetired([...this.retired.values()]);
    this.checkpoint.save();
  }

  private retire(plan: PoolPlan, devices: PoolPlan['devices'], why: string): void {
    const prev = this.retired.get(plan.name);
    const merged = prev && prev.plan.mode === plan.mode && prev.plan.resourceName === plan.resourceName ? [...prev.plan.devices] : [];
    for (const d of devices) if (!merged.some((m) => sameDevice(m, d))) merged.push(d);
    this.retired.set(plan.name, { plan: { ...plan, devices: merged, deleting: false }, why });
    this.log.info({ pool: plan.name, devices: devices.map((d) => d.pciAddress), why }, 'retiring: released where no pod holds it, kept draining where one does');
  }

  /** The plan to serve: the last valid one, or (no plan known yet) the pools of the checkpoint. */
  private effectiveSpec(): { spec: VirtualIONodeSpec | undefined; provisional: boolean } {
    if (this.lastSpec) return { spec: this.lastSpec, provisional: false };
    if (this.known.size > 0) return { spec: { pools: [...this.known.values()] }, provisional: true };
    return { spec: undefined, provisional: true };
  }

  private async cycle(): Promise<void> {
    this.cycles++;
    const state = this.opts.plan.current();
    if (state.kind === 'ok') {
      const specText = JSON.stringify(state.spec);
      if (specText !== this.lastSpecText) {
        this.backoff.reset(); // a new plan: refused writes are tried again at once
        this.applyPlan(state.spec);
      }
      this.lastSpecText = specText;
      this.lastSpec = state.spec;
      this.lastGeneration = state.generation;
    }
    const ops = this.opts.ops;
    try {
      this.inventory = await ops.scan();
      this.scanError = undefined;
    } catch (err) {
      this.scanError = `sysfs scan failed: ${String(err)}`;
      this.log.error({ err }, 'sysfs scan failed; keeping the last inventory');
    }
    const { spec, provisional } = this.effectiveSpec();
    if (spec) {
      await this.reportBreakage(spec);
      await this.converge(spec, provisional);
      try {
        this.slices = this.buildAllSlices(spec);
      } catch (err) {
        this.log.error({ err }, 'building slices failed; keeping the last slices');
        this.scanError = `building slices failed: ${String(err)}`;
      }
    } else {
      this.slices = [];
    }
    this.attachWatches();
    await this.syncPools(spec);
    this.publishStatus();
    this.log.debug({ cycle: this.cycles, slices: this.slices.length, unhealthy: this.slices.filter((s) => s.health !== 'Healthy').length }, 'cycle done');
  }

  /** The plan's slices (health carried over from the last round) plus the draining ones; may throw. */
  private buildAllSlices(spec: VirtualIONodeSpec): Slice[] {
    return [...this.opts.ops.buildSlices(servingSpec(spec), this.inventory, this.slices.filter((s) => !s.draining)), ...this.drainingSlices(spec)];
  }

  /**
   * Slices of retired and deleting pools that still exist and are held (or, while the kubelet has
   * not said who holds what, every one that exists): they stay listed, marked draining.
   */
  private drainingSlices(spec: VirtualIONodeSpec): Slice[] {
    const leaving: Retired[] = [
      ...(spec.pools ?? []).filter((p) => p.deleting).map((p) => ({ plan: { ...p, deleting: false }, why: `pool ${p.name} is being deleted` })),
      ...this.retired.values(),
    ];
    if (leaving.length === 0) return [];
    let built: Slice[];
    try {
      built = this.opts.ops.buildSlices({ pools: leaving.map((r) => r.plan) }, this.inventory);
    } catch (err) {
      this.log.error({ err }, 'building draining slices failed');
      return this.slices.filter((s) => s.draining);
    }
    const whyOf = new Map(leaving.map((r) => [r.plan.name, r.why]));
    const synced = this.podres.synced;
    const holders = this.podres.holders();
    const extra = this.opts.extraHolders?.() ?? new Set<string>();
    const out: Slice[] = [];
    for (const s of built) {
      if (s.health !== 'Healthy' && s.reason?.includes('not found')) continue; // gone: nothing to keep
      const h = holders.get(s.id);
      if (synced && !h && !extra.has(s.id)) continue;
      const who = h ? `held by ${h.vmi ? `VM ${h.vmi} (pod ${h.namespace}/${h.pod})` : `pod ${h.namespace}/${h.pod}`}` : extra.has(s.id) ? 'held by a prepared DRA claim' : 'kept until the kubelet says who holds it';
      out.push({ ...s, draining: `${whyOf.get(s.pool) ?? 'left the plan'}; ${who}; released once its pod is gone` });
    }
    return out;
  }

  /**
   * Tells the kubelet at once when served slices broke (Healthy → Unhealthy), before carving repairs
   * what it can (e.g. re-binds a VF someone unbound): the kubelet then sees Unhealthy → Healthy
   * instead of never learning about the outage.
   */
  private async reportBreakage(spec: VirtualIONodeSpec): Promise<void> {
    if (this.slices.length === 0) return;
    let now: Slice[];
    try {
      now = this.buildAllSlices(spec);
    } catch {
      return;
    }
    const was = new Map(this.slices.map((s) => [s.id, s.health]));
    const broke = now.filter((s) => s.health !== 'Healthy' && was.get(s.id) === 'Healthy');
    if (broke.length === 0) return;
    this.log.warn({ slices: broke.map((s) => `${s.id}: ${s.reason ?? 'unhealthy'}`) }, 'slices became unhealthy');
    this.slices = now;
    await this.syncPools(spec);
  }

  /**
   * Slice IDs that must not be destroyed: the kubelet's holders (of every resource ever served
   * here) and prepared DRA claims, or, while PodResources has not answered yet, every slice that
   * exists, of every pool known, retired or active.
   */
  private heldIds(spec: VirtualIONodeSpec): Set<string> {
    const extra = this.opts.extraHolders?.() ?? new Set<string>();
    if (this.podres.synced) return new Set([...this.podres.holders().keys(), ...extra]);
    let existing: Slice[];
    try {
      existing = this.opts.ops.buildSlices({ pools: [...(spec.pools ?? []), ...[...this.retired.values()].map((r) => r.plan)] }, this.inventory);
    } catch {
      existing = this.slices;
    }
    return new Set([...existing, ...this.slices].map((s) => s.id).concat([...extra]));
  }

  /**
   * Records, before any write, what a restart must know: the PFs whose VF count we are about to
   * set (ours from now on) and the driver/netdev facts of functions we are about to move.
   */
  private recordIntent(writes: readonly CarvingPlan['writes'][number][]): void {
    const devices = new Map(this.inventory.devices.map((d) => [d.pciAddress, d]));
    for (const w of writes) {
      const m = /^bus\/pci\/devices\/([^/]+)\/(sriov_numvfs|driver_override)$/.exec(w.path);
      if (!m) continue;
      const [, addr, attr] = m as unknown as [string, string, string];
      if (attr === 'sriov_numvfs' && w.value !== '0') this.checkpoint.ownPf(addr, w.pools ?? []);
      if (attr === 'driver_override' && w.value.trim() !== '') {
        const d = devices.get(addr);
        if (d?.driver && d.driver !== w.value) {
          const names = (d as { netdevs?: { name: string }[] }).netdevs?.map((n) => n.name);
          this.checkpoint.rememberOriginal(addr, { driver: d.driver, ...(names?.length ? { interfaceNames: names } : {}) });
        }
      }
    }
    this.checkpoint.save();
  }

  /** After writes: PFs released to zero VFs are no longer ours; returned functions forget their record. */
  private recordDone(results: readonly { write: CarvingPlan['writes'][number]; error?: string }[], releasing: ReadonlySet<CarvingPlan['writes'][number]>): void {
    for (const r of results) {
      if (r.error || !releasing.has(r.write)) continue;
      const m = /^bus\/pci\/devices\/([^/]+)\/(sriov_numvfs|driver_override)$/.exec(r.write.path);
      if (!m) continue;
      if (m[2] === 'sriov_numvfs' && r.write.value === '0') this.checkpoint.disownPf(m[1] as string);
      if (m[2] === 'driver_override' && r.write.value.trim() === '') this.checkpoint.forgetOriginal(m[1] as string);
    }
    this.checkpoint.save();
  }

  /**
   * Plans and applies carving until nothing is left to write (SR-IOV needs two passes: enable VFs,
   * then bind them once a scan sees them), at most 4 passes per cycle; stops early on a failed write.
   * While the plan is provisional (none read yet; the checkpoint's is served) nothing is released.
   */
  private async converge(spec: VirtualIONodeSpec, provisional: boolean): Promise<void> {
    const ops = this.opts.ops;
    const errors: { pool: string; message: string }[] = [];
    const allPools = (): PoolPlan[] => [...(spec.pools ?? []), ...[...this.retired.values()].map((r) => r.plan)];
    await this.provision(spec); // e.g. free an NVMe primary's flexible resources before its VFs exist
    for (let pass = 0; pass < 4 && !this.signal.aborted; pass++) {
      const allocated = this.heldIds(spec);
      const owned = this.checkpoint.ownedPfs();
      const writes: CarvingPlan['writes'] = [];
      const blocked: BlockedChange[] = [];
      const foreign: BlockedChange[] = [];
      const released: string[] = [];
      const releasing = new Set<CarvingPlan['writes'][number]>();
      try {
        const main = ops.planCarving(spec, this.inventory, allocated, owned);
        writes.push(...main.writes);
        blocked.push(...main.blocked);
        foreign.push(...(main.foreign ?? []));
        if (!provisional) {
          const leaving = [...(spec.pools ?? []).filter((p) => p.deleting), ...[...this.retired.values()].map((r) => r.plan)];
          for (const p of leaving) {
            const u = ops.planUncarve(p, spec, this.inventory, allocated, owned);
            for (const w of u.writes) releasing.add(w);
            writes.push(...u.writes);
            // Held slices of a retired pool are draining, not blocked: shown on the slice and the pool.
            if (!this.retired.has(p.name)) blocked.push(...u.blocked);
            if (u.writes.length === 0 && (u.held ?? []).length === 0 && this.retired.has(p.name)) released.push(p.name);
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
      this.blocked = blocked;
      this.noteForeign(foreign);
      if (released.length > 0) {
        for (const name of released) {
          this.retired.delete(name);
          this.log.info({ pool: name }, 'pool released');
        }
        this.checkpoint.setRetired([...this.retired.values()]);
        this.checkpoint.save();
      }
      if (pass === 0) for (let i = 0; i < blocked.length; i++) this.opts.metrics.carvingOperations.inc({ result: 'blocked' });
      const now = this.clock();
      const { due, deferred } = this.backoff.partition(writes, now, pass === 0);
      if (pass === 0) {
        for (const d of deferred) {
          for (const pool of poolsOfWrite(d.write, allPools())) {
            errors.push({ pool, message: `${d.write.path}=${d.write.value}: ${d.error} (failed ${d.failures} time(s); next try in ${Math.ceil(d.retryInMs / 1000)} s)` });
          }
        }
      }
      if (due.length === 0) break;
      for (const w of due) this.lanePools.set(w.group ?? w.path, poolsOfWrite(w, allPools()));
      this.recordIntent(due);
      this.log.info({ pass, writes: due.map((w) => `${w.path}=${w.value} (${w.why})`), ...(deferred.length ? { backingOff: deferred.length } : {}) }, 'carving');
      const results = await ops.applyCarving({ writes: due, blocked }, this.signal);
      this.recordDone(results, releasing);
      let failed = false;
      const after = this.clock();
      for (const r of results) {
        this.opts.metrics.carvingOperations.inc({ result: r.error ? (r.skipped ? 'skipped' : 'error') : 'ok' });
        if (!r.error) this.backoff.succeeded(r.write);
        if (r.error && !r.skipped) {
          failed = true;
          const delay = this.backoff.failed(r.write, r.error, after, r.code);
          for (const pool of poolsOfWrite(r.write, allPools())) {
            errors.push({ pool, message: `${r.write.path}=${r.write.value}: ${r.error} (next try in ${Math.ceil(delay / 1000)} s)` });
          }
          this.log.error({ path: r.write.path, value: r.write.value, error: r.error, code: r.code, retryInMs: delay }, 'carving write failed');
        }
      }
      if (!results.some((r) => !r.error)) break; // nothing was written: the inventory is unchanged, no rescan
      try {
        this.inventory = await ops.scan();
      } catch (err) {
        this.scanError = `sysfs scan failed: ${String(err)}`;
        break;
      }
      // A failed write ends this round's writes of its device only (its group was skipped); the
      // other devices' follow-up passes (e.g. binding the VFs just enabled) still run.
      if (failed && results.every((r) => r.error)) break;
    }
    errors.push(...(await this.provision(spec)));
    this.carvingErrors = errors;
    this.scheduleRetry();
  }

  /** Device provisioning beyond sysfs (NVMe secondary controllers); its problems become pool errors. */
  private async provision(spec: VirtualIONodeSpec): Promise<{ pool: string; message: string }[]> {
    if (!this.opts.ops.provision || this.signal.aborted) return [];
    try {
      return (await this.opts.ops.provision(spec, this.inventory, this.heldIds(spec))).map((p) => ({ pool: p.pool, message: p.reason }));
    } catch (err) {
      this.log.error({ err }, 'provisioning failed');
      return [{ pool: '', message: `provisioning failed: ${String(err)}` }];
    }
  }

  private clock(): number {
    return (this.opts.clock ?? (() => performance.now()))();
  }

  /** Wakes the loop when the earliest backed-off write is due (the rescan timer may be much slower). */
  private scheduleRetry(): void {
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = undefined;
    const at = this.backoff.nextDue();
    if (at === undefined || this.signal.aborted) return;
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      this.trigger('timer');
    }, Math.max(0, at - this.clock()) + 5);
    this.backoffTimer.unref();
  }

  /** Keeps what carving left alone (not ours) for status, and logs it once each time it changes. */
  private noteForeign(foreign: BlockedChange[]): void {
    this.foreign = foreign;
    const text = foreign.map((f) => `${f.pool}/${f.device}: ${f.reason}`).join('\n');
    if (text === this.foreignText) return;
    this.foreignText = text;
    if (foreign.length > 0) this.log.warn({ foreign: foreign.map((f) => `${f.pool}/${f.device}: ${f.reason}`) }, 'devices hold mdevs/vports virtualio did not create; left alone');
  }

  /**
   * What the kubelet is told about a slice: draining slices, and slices the kubelet reports as
   * held through another resource, are advertised Unhealthy so they are never allocated again;
   * the pod holding them keeps them (the kubelet never takes a device from a running pod).
   */
  private advertised(s: Slice): Slice {
    if (s.draining) return { ...s, health: 'Unhealthy', reason: `draining: ${s.draining}` };
    const h = this.podres.holders().get(s.id);
    if (h && h.resourceName !== s.resourceName) return { ...s, health: 'Unhealthy', reason: `held by pod ${h.namespace}/${h.pod} through ${h.resourceName}` };
    return s;
  }

  private async syncPools(spec: VirtualIONodeSpec | undefined): Promise<void> {
    const wanted = new Map((spec?.pools ?? []).filter((p) => !p.deleting && p.frontEnd !== 'DRA').map((p) => [p.name, p]));
    // A pool that left the plan keeps its device plugin while it has draining slices.
    for (const s of this.slices) {
      if (!s.draining || wanted.has(s.pool)) continue;
      const plan = this.retired.get(s.pool)?.plan ?? (spec?.pools ?? []).find((p) => p.name === s.pool);
      if (plan && plan.frontEnd !== 'DRA') wanted.set(s.pool, plan);
    }
    const stops: Promise<void>[] = [];
    for (const [name, plugin] of this.plugins) {
      const w = wanted.get(name);
      if (!w || w.resourceName !== plugin.pool.resourceName) {
        this.log.info({ pool: name }, 'stopping pool server');
        this.plugins.delete(name);
        stops.push(plugin.stop());
        this.opts.metrics.slices.remove({ pool: name, health: 'Healthy' });
        this.opts.metrics.slices.remove({ pool: name, health: 'Unhealthy' });
      }
    }
    await Promise.all(stops);
    const byPool = new Map<string, Slice[]>();
    for (const s of this.slices) {
      const l = byPool.get(s.pool) ?? [];
      l.push(this.advertised(s));
      byPool.set(s.pool, l);
    }
    for (const [name, p] of wanted) {
      let plugin = this.plugins.get(name);
      if (!plugin) {
        plugin = new PoolPlugin({
          pool: poolSpec(p),
          pluginDir: this.opts.pluginDir,
          ...(this.opts.registration ? { registration: this.opts.registration } : {}),
          devinfoDir: this.opts.devinfoDir,
          cdi: this.opts.cdi,
          watcher: this.opts.watcher,
          logger: this.opts.logger,
          metrics: this.opts.metrics,
          signal: this.signal,
          onAllocated: () => this.podres.kick(),
          onStateChange: () => this.trigger('registration'),
        });
        this.plugins.set(name, plugin);
        this.log.info({ pool: name, resourceName: p.resourceName }, 'starting pool server');
      } else {
        plugin.setPool(poolSpec(p));
      }
      const sl = byPool.get(name) ?? [];
      plugin.update(sl);
      plugin.start();
      this.opts.metrics.slices.set({ pool: name, health: 'Healthy' }, sl.filter((s) => s.health === 'Healthy').length);
      this.opts.metrics.slices.set({ pool: name, health: 'Unhealthy' }, sl.filter((s) => s.health !== 'Healthy').length);
    }
  }

  /** PodResources holders plus DRA claim holders (status counts both as allocated). */
  private statusHolders(): ReadonlyMap<string, Holder> {
    const extra = this.opts.extraHolderInfo?.();
    if (!extra || extra.size === 0) return this.podres.holders();
    return new Map([...extra, ...this.podres.holders()]);
  }

  private publishStatus(): void {
    const state = this.opts.plan.current();
    const registration = new Map<string, PoolRegistration>([...this.plugins].map(([n, p]) => [n, p.state]));
    for (const p of this.lastSpec?.pools ?? []) {
      if (p.frontEnd !== 'DRA') continue;
      const dra = this.opts.draRegistration?.();
      registration.set(p.name, dra ? { ...dra, ...(dra.registered ? { via: 'DRA' as const } : {}) } : { registered: false, error: 'this agent does not serve DRA pools (start it with --dra; chart: agent.dra.enabled)' });
    }
    const { spec } = this.effectiveSpec();
    const active = new Set((spec?.pools ?? []).map((p) => p.name));
    const draining = [...this.retired.values()]
      .filter((r) => !active.has(r.plan.name) && this.slices.some((s) => s.pool === r.plan.name && s.draining))
      .map((r) => ({ ...r.plan, deleting: false }));
    // No usable plan: with a last plan, it is served and the reason shown; without one, nothing is removed.
    const planError = state.kind !== 'ok' && (this.lastSpec !== undefined || state.kind === 'error') ? state.message : undefined;
    const status = buildStatus({
      ...(this.lastGeneration !== undefined ? { generation: this.lastGeneration } : {}),
      agentVersion: this.opts.agentVersion,
      pools: spec?.pools ?? [],
      drainingPools: draining,
      ...(planError ? { planError } : {}),
      ...(state.kind === 'none' && this.lastSpec === undefined ? { noPlanReason: state.message } : {}),
      planLoaded: this.lastSpec !== undefined,
      // Functions moved off their driver carry what they were before (selectors match on it).
      inventory: { ...this.inventory, devices: withOriginals(this.inventory.devices, Object.fromEntries(this.checkpoint.originals())) },
      ...(this.scanError ? { scanError: this.scanError } : {}),
      slices: this.slices,
      holders: this.statusHolders(),
      registration,
      blocked: this.blocked,
      foreign: this.foreign,
      carvingErrors: this.carvingErrors,
      ...(this.podres.error ? { podResourcesError: this.podres.error } : {}),
      ...(this.checkpoint.error ? { checkpointError: this.checkpoint.error } : {}),
      previous: this.conditions,
      now: (this.opts.now ?? (() => new Date()))(),
    });
    this.conditions = status.conditions ?? [];
    const text = createHash('sha1').update(JSON.stringify(status)).digest('hex'); // keep a digest, not a second copy
    this.lastStatus = status;
    if (text === this.lastStatusText) return;
    this.lastStatusText = text;
    this.opts.statusSink?.(status);
  }
}
