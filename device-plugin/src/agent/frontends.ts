// The device plugin front end: one PoolPlugin (gRPC server registered with the kubelet) per pool
// whose front end is the device plugin, fed with the pool's slices as the kubelet must see them.
// Draining slices, and slices held through another resource or a DRA claim, are advertised Unhealthy
// so the kubelet never hands them out again; the pod holding them keeps them.
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { PoolPlan, Slice, VirtualIONodeSpec } from '../model.js';
import type { PluginDirWatcher } from '../kubelet/watcher.js';
import type { PoolSpec } from '../plugin/allocate.js';
import { PoolPlugin, type RegistrationOptions } from '../plugin/pool.js';
import type { AllocationWindow } from '../podresources/allocation-window.js';
import type { HoldState } from './ledger.js';
import type { Retired } from './retire.js';

export interface FrontEndOptions {
  pluginDir: string;
  registration?: RegistrationOptions;
  devinfoDir: string;
  cdi: { enabled: boolean; dir: string };
  watcher: PluginDirWatcher;
  logger: Logger;
  metrics: AgentMetrics;
  /** Who holds a slice (the ledger). */
  holder: (id: string) => HoldState;
  /** Checked before every Allocate is answered; records the grant when it lets it through. */
  admit: (pool: string, resourceName: string, ids: string[]) => string | undefined;
  onAllocated: () => void;
  onStateChange: () => void;
  /** Keeps the agent's PodResources Lists out of the kubelet's allocations. */
  window?: AllocationWindow;
}

function poolSpec(p: PoolPlan): PoolSpec {
  const s: PoolSpec = { name: p.name, resourceName: p.resourceName, class: p.class, mode: p.mode, consumption: p.consumption };
  if (p.policy) s.policy = p.policy;
  return s;
}

export class DevicePluginFrontEnd {
  readonly plugins = new Map<string, PoolPlugin>();

  constructor(private readonly opts: FrontEndOptions) {}

  /** What the kubelet is told about a slice. */
  advertised(s: Slice): Slice {
    if (s.draining) return { ...s, health: 'Unhealthy', reason: `draining: ${s.draining}` };
    const h = this.opts.holder(s.id);
    if (h.kind === 'held' && h.holder && 'claim' in h.holder) return { ...s, health: 'Unhealthy', reason: `held by ${h.by}` }; // a DRA claim (the pool switched its front end)
    if (h.kind === 'held' && h.holder && h.holder.resourceName !== s.resourceName) return { ...s, health: 'Unhealthy', reason: `held by ${h.by} through ${h.holder.resourceName}` };
    return s;
  }

  /** Starts, updates and stops pool servers to match the plan; a pool with draining slices keeps its server. */
  async sync(spec: VirtualIONodeSpec | undefined, slices: readonly Slice[], retired: ReadonlyMap<string, Retired>, signal: AbortSignal): Promise<void> {
    const wanted = new Map((spec?.pools ?? []).filter((p) => !p.deleting && p.frontEnd !== 'DRA').map((p) => [p.name, p]));
    for (const s of slices) {
      if (!s.draining || wanted.has(s.pool)) continue;
      const plan = [...retired.values()].find((r) => r.plan.name === s.pool)?.plan ?? (spec?.pools ?? []).find((p) => p.name === s.pool);
      if (plan && plan.frontEnd !== 'DRA') wanted.set(s.pool, plan);
    }
    const stops: Promise<void>[] = [];
    for (const [name, plugin] of this.plugins) {
      const w = wanted.get(name);
      if (!w || w.resourceName !== plugin.pool.resourceName) {
        this.opts.logger.info({ pool: name }, 'stopping pool server');
        this.plugins.delete(name);
        stops.push(plugin.stop());
        this.opts.metrics.slices.remove({ pool: name, health: 'Healthy' });
        this.opts.metrics.slices.remove({ pool: name, health: 'Unhealthy' });
      }
    }
    await Promise.all(stops);
    const byPool = new Map<string, Slice[]>();
    for (const s of slices) {
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
          signal,
          admit: this.opts.admit,
          onAllocated: () => this.opts.onAllocated(),
          onStateChange: () => this.opts.onStateChange(),
          ...(this.opts.window ? { window: this.opts.window } : {}),
        });
        this.plugins.set(name, plugin);
        this.opts.logger.info({ pool: name, resourceName: p.resourceName }, 'starting pool server');
      } else {
        plugin.setPool(poolSpec(p));
      }
      const sl = byPool.get(name) ?? [];
      plugin.update(sl);
      plugin.start();
      this.count(name, sl);
    }
  }

  /** Pushes new health of slices already served; starts and stops nothing (the health fast path). */
  updateHealth(slices: readonly Slice[]): void {
    const byPool = new Map<string, Slice[]>();
    for (const s of slices) byPool.set(s.pool, [...(byPool.get(s.pool) ?? []), this.advertised(s)]);
    for (const [name, plugin] of this.plugins) {
      const l = byPool.get(name);
      if (!l) continue;
      plugin.update(l);
      // Counted as sync() counts: a slice turned unhealthy on the fast path shows in
      // virtualio_agent_slice_health_failures_total even when the next cycle repairs it at once.
      this.count(name, l);
    }
  }

  /** The pool's slice gauge (and through it the turned-unhealthy counter), from what the kubelet is told. */
  private count(pool: string, listed: readonly Slice[]): void {
    this.opts.metrics.slices.set({ pool, health: 'Healthy' }, listed.filter((s) => s.health === 'Healthy').length);
    this.opts.metrics.slices.set({ pool, health: 'Unhealthy' }, listed.filter((s) => s.health !== 'Healthy').length);
  }

  /** Has the kubelet rewrite its checkpoint (see PoolPlugin.resend). */
  nudgeKubelet(): void {
    for (const p of this.plugins.values()) p.resend();
  }

  /** Stops serving without withdrawing devices (agent restart or upgrade). */
  async stopKeepingDevices(): Promise<void> {
    await Promise.all([...this.plugins.values()].map((p) => p.stop({ keepDevices: true })));
    this.plugins.clear();
  }
}
