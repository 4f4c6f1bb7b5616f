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
import { PoolPlugin } from '../plugin/pool.js';
import type { PoolSpec } from '../plugin/allocate.js';
import { PodResourcesWatcher, type PodLookup } from '../podresources/client.js';
import type { PlanSource } from './plan.js';
import type { NodeOps, StatusSink } from './ports.js';
import { buildStatus, type Condition } from './status.js';

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
}

function poolSpec(p: PoolPlan): PoolSpec {
  const s: PoolSpec = { name: p.name, resourceName: p.resourceName, class: p.class, mode: p.mode, consumption: p.consumption };
  if (p.policy) s.policy = p.policy;
  return s;
}

/** Which pool a carving write belongs to: the pool listing the device its path names. */
function poolOfPath(path: string, pools: readonly PoolPlan[]): string {
  for (const p of pools) for (const d of p.devices ?? []) if (path.includes(d.pciAddress)) return p.name;
  return '';
}

export class AgentManager {
  private readonly log: Logger;
  private readonly plugins = new Map<string, PoolPlugin>();
  private readonly podres: PodResourcesWatcher;
  private wantScan = true;
  private wantStatus = false;
  private waker: (() => void) | undefined;
  private lastSpec: VirtualIONodeSpec | undefined;
  private lastGeneration: number | undefined;
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
  /** Cycles completed (for tests and logs). */
  cycles = 0;

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.logger.child({ component: 'manager' });
    this.backoff = new WriteBackoff(opts.backoff);
    this.podres = new PodResourcesWatcher({
      socket: opts.podResourcesSocket,
      logger: opts.logger,
      metrics: opts.metrics,
      resourceNames: () => new Set((this.lastSpec?.pools ?? []).map((p) => p.resourceName)),
      onChange: () => this.trigger('podresources'),
      ...(opts.lookupPod ? { lookupPod: opts.lookupPod } : {}),
      ...opts.podResources,
    });
  }

  /** /readyz: a plan is loaded and every pool of it is registered with the kubelet. */
  readiness(): { ready: boolean; reason?: string } {
    const state = this.opts.plan.current();
    if (!this.lastSpec) return { ready: false, reason: state.kind === 'ok' ? 'plan not applied yet' : state.message };
    const active = (this.lastSpec.pools ?? []).filter((p) => !p.deleting);
    const missing = active.filter((p) => !this.plugins.get(p.name)?.state.registered).map((p) => p.name);
    if (missing.length) return { ready: false, reason: `pools not registered: ${missing.join(', ')}` };
    return { ready: true };
  }

  /** The last status built (also served at /status). */
  status(): VirtualIONodeStatus | undefined {
    return this.lastStatus;
  }

  /** Asks the loop for a rescan ('scan'-like reasons) or only a status refresh. */
  trigger(reason: 'plan' | 'timer' | 'fs' | 'podresources' | 'registration' | 'allocate'): void {
    if (reason === 'registration') this.wantStatus = true;
    else this.wantScan = true;
    if (reason === 'podresources') this.wantScan = true; // carving may be unblocked
    this.waker?.();
  }

  /** Runs until `signal` aborts, then stops every pool (empty lists, sockets and files removed). */
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
      await Promise.all([...this.plugins.values()].map((p) => p.stop()));
      this.plugins.clear();
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

  private async cycle(): Promise<void> {
    this.cycles++;
    const state = this.opts.plan.current();
    if (state.kind === 'ok') {
      // Pools that left the plan are released (uncarved where no pod holds them).
      const next = new Set((state.spec.pools ?? []).map((p) => p.name));
      for (const p of this.lastSpec?.pools ?? []) if (!next.has(p.name)) this.releasing.set(p.name, p);
      const specText = JSON.stringify(state.spec);
      if (specText !== this.lastSpecText) this.backoff.reset(); // a new plan: refused writes are tried again at once
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
    const spec = this.lastSpec;
    if (spec) {
      await this.reportBreakage(spec);
      await this.converge(spec);
      try {
        this.slices = ops.buildSlices(spec, this.inventory, this.slices);
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

  /**
   * Tells the kubelet at once when served slices broke (Healthy → Unhealthy), before carving repairs
   * what it can (e.g. re-binds a VF someone unbound): the kubelet then sees Unhealthy → Healthy
   * instead of never learning about the outage.
   */
  private async reportBreakage(spec: VirtualIONodeSpec): Promise<void> {
    if (this.slices.length === 0) return;
    let now: Slice[];
    try {
      now = this.opts.ops.buildSlices(spec, this.inventory, this.slices);
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

  /** Pools removed from the plan that may still have carved slices (their last known plan). */
  private readonly releasing = new Map<string, PoolPlan>();

  /**
   * Slice IDs that must not be destroyed: the kubelet's holders, or, while PodResources has not
   * answered yet, every slice that exists (including those of pools being released).
   */
  private heldIds(spec: VirtualIONodeSpec): Set<string> {
    if (this.podres.synced) return new Set(this.podres.holders().keys());
    let existing: Slice[];
    try {
      existing = this.opts.ops.buildSlices({ pools: [...(spec.pools ?? []), ...this.releasing.values()] }, this.inventory);
    } catch {
      existing = this.slices;
    }
    return new Set([...existing, ...this.slices].map((s) => s.id));
  }

  /**
   * Plans and applies carving until nothing is left to write (SR-IOV needs two passes: enable VFs,
   * then bind them once a scan sees them), at most 4 passes per cycle; stops early on a failed write.
   */
  private async converge(spec: VirtualIONodeSpec): Promise<void> {
    const ops = this.opts.ops;
    const active = new Set((spec.pools ?? []).map((p) => p.name));
    for (const name of [...this.releasing.keys()]) if (active.has(name)) this.releasing.delete(name);
    const errors: { pool: string; message: string }[] = [];
    for (let pass = 0; pass < 4 && !this.signal.aborted; pass++) {
      const allocated = this.heldIds(spec);
      const writes: CarvingPlan['writes'] = [];
      const blocked: BlockedChange[] = [];
      const foreign: BlockedChange[] = [];
      const released: string[] = [];
      try {
        const main = ops.planCarving(spec, this.inventory, allocated);
        writes.push(...main.writes);
        blocked.push(...main.blocked);
        foreign.push(...(main.foreign ?? []));
        const leaving = [...(spec.pools ?? []).filter((p) => p.deleting), ...this.releasing.values()];
        for (const p of leaving) {
          const u = ops.planUncarve(p, spec, this.inventory, allocated);
          writes.push(...u.writes);
          blocked.push(...u.blocked);
          if (u.writes.length === 0 && (u.held ?? []).length === 0 && this.releasing.has(p.name)) released.push(p.name);
        }
      } catch (err) {
        errors.push({ pool: '', message: `carving plan failed: ${String(err)}` });
        this.log.error({ err }, 'carving plan failed');
        break;
      }
      this.blocked = blocked;
      this.noteForeign(foreign);
      for (const name of released) {
        this.releasing.delete(name);
        this.log.info({ pool: name }, 'pool released');
      }
      if (pass === 0) for (let i = 0; i < blocked.length; i++) this.opts.metrics.carvingOperations.inc({ result: 'blocked' });
      const now = this.clock();
      const { due, deferred } = this.backoff.partition(writes, now, pass === 0);
      if (pass === 0) {
        for (const d of deferred) {
          errors.push({
            pool: poolOfPath(d.write.path, [...(spec.pools ?? []), ...this.releasing.values()]),
            message: `${d.write.path}=${d.write.value}: ${d.error} (failed ${d.failures} time(s); next try in ${Math.ceil(d.retryInMs / 1000)} s)`,
          });
        }
      }
      if (due.length === 0) break;
      this.log.info({ pass, writes: due.map((w) => `${w.path}=${w.value} (${w.why})`), ...(deferred.length ? { backingOff: deferred.length } : {}) }, 'carving');
      const results = await ops.applyCarving({ writes: due, blocked }, this.signal);
      let failed = false;
      const after = this.clock();
      for (const r of results) {
        this.opts.metrics.carvingOperations.inc({ result: r.error ? (r.skipped ? 'skipped' : 'error') : 'ok' });
        if (!r.error) this.backoff.succeeded(r.write);
        if (r.error && !r.skipped) {
          failed = true;
          const delay = this.backoff.failed(r.write, r.error, after);
          errors.push({ pool: poolOfPath(r.write.path, [...(spec.pools ?? []), ...this.releasing.values()]), message: `${r.write.path}=${r.write.value}: ${r.error} (next try in ${Math.ceil(delay / 1000)} s)` });
          this.log.error({ path: r.write.path, value: r.write.value, error: r.error, retryInMs: delay }, 'carving write failed');
        }
      }
      if (!results.some((r) => !r.error)) break; // nothing was written: the inventory is unchanged, no rescan
      try {
        this.inventory = await ops.scan();
      } catch (err) {
        this.scanError = `sysfs scan failed: ${String(err)}`;
        break;
      }
      if (failed) break;
    }
    this.carvingErrors = errors;
    this.scheduleRetry();
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

  private async syncPools(spec: VirtualIONodeSpec | undefined): Promise<void> {
    const wanted = new Map((spec?.pools ?? []).filter((p) => !p.deleting).map((p) => [p.name, p]));
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
      l.push(s);
      byPool.set(s.pool, l);
    }
    for (const [name, p] of wanted) {
      let plugin = this.plugins.get(name);
      if (!plugin) {
        plugin = new PoolPlugin({
          pool: poolSpec(p),
          pluginDir: this.opts.pluginDir,
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

  private publishStatus(): void {
    const state = this.opts.plan.current();
    const registration = new Map([...this.plugins].map(([n, p]) => [n, p.state]));
    const status = buildStatus({
      ...(this.lastGeneration !== undefined ? { generation: this.lastGeneration } : {}),
      agentVersion: this.opts.agentVersion,
      pools: this.lastSpec?.pools ?? [],
      ...(state.kind === 'error' ? { planError: state.message } : {}),
      planLoaded: this.lastSpec !== undefined,
      inventory: this.inventory,
      ...(this.scanError ? { scanError: this.scanError } : {}),
      slices: this.slices,
      holders: this.podres.holders(),
      registration,
      blocked: this.blocked,
      foreign: this.foreign,
      carvingErrors: this.carvingErrors,
      ...(this.podres.error ? { podResourcesError: this.podres.error } : {}),
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
