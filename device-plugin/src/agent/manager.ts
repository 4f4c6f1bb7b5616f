// The agent's one loop: scan → ledger → plan → gate → carve → slices → front ends → status. Driven by
// one AbortSignal; triggered by plan changes, a rescan timer, filesystem events under the dev and
// sysfs roots, PodResources changes and Allocate calls. The parts it wires, each a file:
//   ledger.ts (who holds what, durable; "don't know" is held), gate.ts (the one check before a
//   destructive write), carver.ts (plans and applies writes through the gate), retire.ts (what a plan
//   change leaves behind), views.ts (slices served, draining, protected), frontends.ts (device
//   plugin servers), fs-trigger.ts and gone-nodes.ts (events; the health fast path), vfio-numbers.ts
//   (VFIO numbers kept across reboots), status.ts; its options are in manager-options.ts.
// Nothing here throws out of the loop: errors are logged, reported in status and retried.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { Logger } from '../log.js';
import type { Inventory, PoolPlan, Slice, VirtualIONodeSpec } from '../model.js';
import { PodResourcesWatcher, podGoneVia } from '../podresources/client.js';
import { AllocationWindow } from '../podresources/allocation-window.js';
import { withOriginals } from '../discovery/original.js';
import { Carver } from './carver.js';
import { StartupRestore, unrestoredHeld } from './restore.js';
import { VfioNumbers } from './vfio-numbers.js';
import { Checkpoint } from './checkpoint.js';
import { DevicePluginFrontEnd } from './frontends.js';
import { existingIds } from './gate.js';
import { acceptScan } from './inventory-guard.js';
import { KUBELET_CHECKPOINT_FILE, KubeletCheckpointReader } from './kubelet-checkpoint.js';
import { Ledger } from './ledger.js';
import type { MdevCapacity } from '../carving/ondemand.js';
import type { NvmeState } from '../carving/ondemand-nvme.js';
import { afterOnDemand, beforeOnDemand } from './ondemand.js';
import { diffPlans, retire, retiredKey, type Retired } from './retire.js';
import { buildStatus, type Condition, type PoolRegistration } from './status.js';
import { FsTrigger } from './fs-trigger.js';
import { GoneNodes } from './gone-nodes.js';
import { activeIds, allSlices, protectedIds, type ViewInput } from './views.js';
import type { ManagerOptions } from './manager-options.js';

export type { ManagerOptions } from './manager-options.js';

export class AgentManager {
  private readonly log: Logger;
  private readonly podres: PodResourcesWatcher;
  private readonly checkpoint: Checkpoint;
  private readonly ledger: Ledger;
  private readonly carver: Carver;
  private readonly frontEnd: DevicePluginFrontEnd;
  private wantScan = true;
  private wantStatus = false;
  private waker: (() => void) | undefined;
  private lastSpec: VirtualIONodeSpec | undefined;
  private lastGeneration: number | undefined;
  /** The last plan of every pool served here (from the checkpoint until a plan is read). */
  private known = new Map<string, PoolPlan>();
  /** What plan changes left behind and may still have carved slices, by retiredKey. */
  private readonly retired = new Map<string, Retired>();
  private inventory: Inventory = { devices: [] };
  private idsOf: Inventory | undefined;
  private ids = new Set<string>();
  private slices: Slice[] = [];
  private readonly gone: GoneNodes;
  private scanError: string | undefined;
  private lastStatus: VirtualIONodeStatus | undefined;
  private lastStatusText = '';
  private conditions: Condition[] = [];
  private readonly fs: FsTrigger;
  private signal: AbortSignal = new AbortController().signal;
  private wakeTimer: NodeJS.Timeout | undefined;
  /** Start-up: pools wait to register until their held slices are restored (restore.ts). */
  private readonly restore: StartupRestore;
  /** VFIO cdev and group numbers kept across reboots (vfio-numbers.ts). */
  private readonly vfio: VfioNumbers;
  private restoreWake: NodeJS.Timeout | undefined;
  /** IDs listed last round only as held slices that could not be restored (restore.ts). */
  private unrestored = new Set<string>();
  private lastSpecText = '';
  /** On-demand parents' capacity as last learned (from the checkpoint until the first scan). */
  private onDemandCapacity: MdevCapacity = {};
  /** Cycles completed (for tests and logs). */
  cycles = 0;

  constructor(private readonly opts: ManagerOptions) {
    this.log = opts.logger.child({ component: 'manager' });
    this.checkpoint = opts.checkpoint ?? new Checkpoint(undefined, opts.nodeName, this.log);
    this.known = new Map(this.checkpoint.pools());
    this.onDemandCapacity = this.checkpoint.mdevCapacity();
    for (const r of this.checkpoint.retired()) this.retired.set(retiredKey(r.plan), r);
    const window = new AllocationWindow(); // our Lists stay out of the kubelet's allocations
    this.podres = new PodResourcesWatcher({
      socket: opts.podResourcesSocket,
      window,
      logger: opts.logger,
      metrics: opts.metrics,
      // Holders of every resource this agent has served, not only of today's plan.
      resourceNames: () => this.resourceNames(),
      deviceHere: (id) => this.deviceHere(id),
      onChange: () => this.trigger('podresources'),
      ...(opts.lookupPod ? { lookupPod: opts.lookupPod } : {}),
      ...opts.podResources,
    });
    const kubelet = new KubeletCheckpointReader(opts.kubeletCheckpoint ?? join(opts.pluginDir, KUBELET_CHECKPOINT_FILE));
    const lookup = opts.lookupPod;
    this.ledger = new Ledger({
      ...(opts.ledgerFile ? { file: opts.ledgerFile } : {}),
      node: opts.nodeName,
      logger: opts.logger,
      ...(opts.releaseGraceMs !== undefined ? { graceMs: opts.releaseGraceMs } : {}),
      sources: {
        podResources: () => ({ synced: this.podres.synced, error: this.podres.error, holders: this.podres.holders() }),
        kubeletCheckpoint: () => kubelet.read(),
        dra: () => ({ holders: opts.extraHolderInfo?.() ?? new Map(), unknown: opts.draUnknown?.() }),
        resourceNames: () => this.resourceNames(),
        deviceHere: (id) => this.deviceHere(id),
        ownRecord: () => (this.checkpoint.unknown ? (this.checkpoint.error ?? 'the agent checkpoint is damaged') : undefined),
        nudgeKubelet: () => this.frontEnd.nudgeKubelet(),
        ...(lookup ? { podGone: podGoneVia(lookup) } : {}),
      },
    });
    this.gone = new GoneNodes(opts.devRoot);
    this.fs = new FsTrigger(opts.watchPaths, () => this.trigger('fs'), () => this.clock(), (dir, name) => {
      const node = this.gone.note(dir, name, this.slices);
      if (!node) return;
      this.slices = this.gone.apply(this.slices);
      this.log.warn({ node }, 'device node gone: its slices are Unhealthy until the next cycle says more');
      this.frontEnd.updateHealth(this.slices);
    });
    this.carver = new Carver(opts.ops, this.checkpoint, opts.metrics, this.log, () => this.clock(), opts.backoff);
    this.restore = new StartupRestore(opts.restoreWaitMs ?? 10_000);
    this.vfio = new VfioNumbers(this.checkpoint, this.log, () => this.clock(), opts.restoreWaitMs ?? 10_000);
    this.frontEnd = new DevicePluginFrontEnd({
      pluginDir: opts.pluginDir,
      ...(opts.registration ? { registration: opts.registration } : {}),
      devinfoDir: opts.devinfoDir,
      cdi: opts.cdi,
      watcher: opts.watcher,
      logger: opts.logger,
      metrics: opts.metrics,
      holder: (id) => this.ledger.state(id),
      admit: (pool, resourceName, ids) => {
        const why = this.ledger.refuseAllocate(resourceName, ids);
        if (why) return why;
        this.ledger.granted(resourceName, ids);
        return undefined;
      },
      onAllocated: () => {
        this.podres.kick();
        this.trigger('allocate');
      },
      onStateChange: () => this.trigger('registration'),
      window,
    });
  }

  /** Device IDs that exist on this node (functions, mdevs, vports), as of the last scan. */
  private deviceHere(id: string): boolean {
    if (this.idsOf !== this.inventory) {
      this.idsOf = this.inventory;
      this.ids = existingIds(this.inventory);
    }
    return this.ids.has(id);
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
    const missing = active.filter((p) => !this.frontEnd.plugins.get(p.name)?.state.registered).map((p) => p.name);
    if (missing.length) return { ready: false, reason: `pools not registered: ${missing.join(', ')}` };
    return { ready: true };
  }

  /** Resource names of the pools served to the kubelet now (a hand-over detaches them). */
  servedResourceNames(): string[] {
    return [...this.frontEnd.plugins.values()].map((p) => p.pool.resourceName);
  }

  /** The last status built (also served at /status). */
  status(): VirtualIONodeStatus | undefined {
    return this.lastStatus;
  }

  /** The slices as last built (draining ones included), for other front ends (DRA). */
  currentSlices(): readonly Slice[] {
    return this.slices;
  }

  /** Who holds a slice, for other front ends (DRA prepare refuses what another holder has). */
  holderOf(id: string): ReturnType<Ledger['state']> {
    return this.ledger.state(id);
  }

  /**
   * Asks the loop for a rescan ('scan'-like reasons) or only a status refresh. An Allocate changes
   * who holds what (the ledger, which status reads), not the node: a full scan after each one made
   * a burst of Allocates queue behind sysfs reads (on an emulated guest a scan costs more than the
   * call). The PodResources List it kicks triggers a cycle if the kubelet's answer changed.
   */
  trigger(reason: 'plan' | 'timer' | 'fs' | 'podresources' | 'registration' | 'allocate'): void {
    if (reason === 'registration' || reason === 'allocate') this.wantStatus = true;
    else this.wantScan = true;
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
    this.fs.attach();
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
      if (this.wakeTimer) clearTimeout(this.wakeTimer);
      this.fs.close();
      this.opts.ops.close?.();
      await this.frontEnd.stopKeepingDevices();
      this.checkpoint.save();
      await Promise.all([planRun, podresRun]);
      this.log.info('agent stopped');
    }
  }

  /**
   * Takes a new plan: whatever a pool's devices carved under the last known plan (or the checkpoint)
   * and no longer carve is retired, to be released where nobody holds it and kept draining where
   * someone does.
   */
  private applyPlan(spec: VirtualIONodeSpec): void {
    const next = new Map((spec.pools ?? []).map((p) => [p.name, p]));
    for (const r of diffPlans(this.known, next, this.retired)) {
      retire(this.retired, r.plan, r.devices, r.why);
      this.log.info({ pool: r.plan.name, devices: r.devices.map((d) => d.pciAddress), why: r.why }, 'retiring: released where nobody holds it, kept draining where someone does');
    }
    this.known = new Map(next);
    for (const name of this.checkpoint.pools().keys()) if (!next.has(name)) this.checkpoint.deletePool(name);
    for (const p of next.values()) this.checkpoint.setPool(p);
    this.checkpoint.setRetired([...this.retired.values()]);
    this.checkpoint.save();
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
        this.carver.resetBackoff();
        this.applyPlan(state.spec);
      }
      this.lastSpecText = specText;
      this.lastSpec = state.spec;
      this.lastGeneration = state.generation;
    }
    try {
      this.acceptInventory(await this.opts.ops.scan());
    } catch (err) {
      this.scanError = `sysfs scan failed: ${String(err)}`;
      this.log.error({ err }, 'sysfs scan failed; keeping the last inventory');
    }
    await this.ledger.refresh();
    // A damaged checkpoint is "don't know" until every other source of holders answers again.
    if (this.checkpoint.unknown && !this.ledger.unknown({ ignoreCheckpoint: true })) {
      this.log.warn({ lost: this.checkpoint.lost }, 'holders known again from the kubelet: the damaged checkpoint no longer blocks releases');
      this.checkpoint.markRecovered();
      this.checkpoint.save();
    }
    const { spec, provisional } = this.effectiveSpec();
    const onDemand = spec ? beforeOnDemand(spec, this.inventory, this.checkpoint, this.opts.onDemandWanted?.() ?? new Map(), (this.opts.now ?? (() => new Date()))()) : undefined;
    if (onDemand) this.onDemandCapacity = onDemand.capacity;
    if (spec) {
      await this.reportBreakage(spec);
      this.restore.begin(this.clock());
      const r = await this.carver.round({
        spec,
        provisional,
        retired: this.retired,
        inventory: this.inventory,
        protectedIds: (inv) => protectedIds(this.view(), this.ledger.heldIds(), this.effectiveSpec().spec, inv),
        protection: (id) => this.protection(id),
        activeIds: (inv) => activeIds(this.view(), spec, inv),
        fence: (ids, why) => this.ledger.fence(ids, why),
        unfence: (ids) => this.ledger.unfence(ids),
        ...(onDemand ? { onDemand } : {}),
        suspectScan: (next, prev) => {
          const v = acceptScan(prev.devices.length > 0 ? prev : undefined, next);
          return v.ok ? undefined : v.reason;
        },
        orderBinds: (writes, inv) => this.vfio.order(writes, inv),
        destroyed: (ids) => this.vfio.forget(ids),
        signal: this.signal,
      });
      this.inventory = r.inventory; // accepted pass by pass (suspectScan)
      if (r.scanError) this.scanError = r.scanError;
      if (r.released.length > 0) {
        for (const key of r.released) {
          this.log.info({ pool: this.retired.get(key)?.plan.name }, 'retired slices released');
          this.retired.delete(key);
        }
        this.checkpoint.setRetired([...this.retired.values()]);
        this.checkpoint.save();
      }
      if (onDemand) afterOnDemand(this.inventory, this.checkpoint, onDemand.wanted, this.carver.nvmeState);
      try {
        this.slices = this.gone.apply(this.buildAllSlices(spec));
      } catch (err) {
        this.log.error({ err }, 'building slices failed; keeping the last slices');
        this.scanError = `building slices failed: ${String(err)}`;
      }
    } else {
      this.slices = [];
    }
    this.fs.attach();
    await this.frontEnd.sync(this.withoutUnrestored(spec), this.slices, this.retired, this.signal);
    this.publishStatus();
    this.scheduleWake();
    this.log.debug({ cycle: this.cycles, slices: this.slices.length, unhealthy: this.slices.filter((s) => s.health !== 'Healthy').length }, 'cycle done');
  }

  /** On-demand state for the DRA front end: the parents' capacity, and why claimed mdevs could not be carved. */
  onDemandState(): { capacity: MdevCapacity; failed: ReadonlyMap<string, string>; nvme: NvmeState } {
    return { capacity: this.onDemandCapacity, failed: this.carver.onDemandFailed, nvme: this.carver.nvmeState };
  }

  /**
   * Takes a scan as the node's inventory unless it looks like a broken sysfs (no PCI function at all
   * where there were some, or where the plan names some): then the last one stays and status says why.
   */
  private acceptInventory(next: Inventory): void {
    const { spec } = this.effectiveSpec();
    const expected = [...(spec?.pools ?? []), ...[...this.retired.values()].map((r) => r.plan)].flatMap((p) => p.devices.map((d) => d.pciAddress));
    const v = acceptScan(this.inventory.devices.length > 0 ? this.inventory : undefined, next, { expected });
    if (v.ok) {
      this.inventory = next;
      this.scanError = undefined;
    } else {
      this.scanError = v.reason;
      this.log.error(v.reason);
    }
  }

  /** Why a slice must not be destroyed now: someone holds it, or nobody can tell. */
  private protection(id: string): string | undefined {
    const s = this.ledger.state(id);
    if (s.kind === 'held') return `held by ${s.by}`;
    const unknown = this.ledger.unknown();
    return unknown ? `nobody can tell who holds it (${unknown})` : undefined;
  }

  /** The inputs of the slice views (views.ts) as of now. */
  private view(): ViewInput {
    return { ops: this.opts.ops, inventory: this.inventory, retired: this.retired, previous: this.slices, holder: (id) => this.ledger.state(id), unknown: this.ledger.unknown(), capacity: this.onDemandCapacity };
  }

  private buildAllSlices(spec: VirtualIONodeSpec): Slice[] {
    // Held IDs listed last time only because they could not be restored are not "previous slices that
    // vanished" (those keep their old facts): they are worked out again below.
    const view = this.view();
    const all = allSlices({ ...view, previous: view.previous.filter((s) => !this.unrestored.has(s.id)) }, spec);
    const by = (id: string): string => {
      const s = this.ledger.state(id);
      return s.kind === 'held' ? `held by ${s.by}` : 'held';
    };
    const extra = unrestoredHeld(all, spec.pools ?? [], this.ledger.heldIds(), (id) => this.ledger.resourceOf(id), by);
    this.unrestored = new Set(extra.map((s) => s.id));
    return this.vfio.check([...all, ...extra], this.inventory, (id) => this.ledger.state(id).kind === 'held');
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
      now = this.gone.apply(this.buildAllSlices(spec));
    } catch {
      return;
    }
    const was = new Map(this.slices.map((s) => [s.id, s.health]));
    const broke = now.filter((s) => s.health !== 'Healthy' && was.get(s.id) === 'Healthy');
    if (broke.length === 0) return;
    this.log.warn({ slices: broke.map((s) => `${s.id}: ${s.reason ?? 'unhealthy'}`) }, 'slices became unhealthy');
    this.slices = now;
    await this.frontEnd.sync(spec, this.slices, this.retired, this.signal);
  }

  private clock(): number {
    return (this.opts.clock ?? (() => performance.now()))();
  }

  /** The plan minus the pools held back until their held slices are restored (restore.ts). */
  private withoutUnrestored(spec: VirtualIONodeSpec | undefined): VirtualIONodeSpec | undefined {
    if (!spec) return spec;
    const back = this.restore.holdBack(this.slices, this.ledger.heldIds(), (pool) => this.frontEnd.plugins.has(pool), this.clock(), (missing) => {
      this.log.warn({ missing: Object.fromEntries(missing) }, 'registering pools whose held slices could not all be restored: those are listed Unhealthy with the reason');
    });
    if (back.size === 0) return spec;
    this.log.info({ pools: Object.fromEntries(back) }, 'not registering pools until their held slices are restored');
    if (!this.restoreWake) {
      this.restoreWake = setTimeout(() => {
        this.restoreWake = undefined;
        this.trigger('timer');
      }, this.restore.recheckMs());
      this.restoreWake.unref();
    }
    return { ...spec, pools: (spec.pools ?? []).filter((p) => !back.has(p.name)) };
  }

  /** Wakes the loop when the earliest backed-off or deferred write is due or a held slice may be released. */
  private scheduleWake(): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = undefined;
    if (this.signal.aborted) return;
    const release = this.slices.some((s) => s.draining) || this.carver.blocked.length > 0 ? this.ledger.nextRelease() : undefined;
    const until = (at: number | undefined, now: number): number | undefined => (at !== undefined ? at - now : undefined);
    const waits = [until(this.carver.nextDue(), this.clock()), until(this.vfio.nextDue(), this.clock()), until(release, Date.now())].filter((x): x is number => x !== undefined);
    if (waits.length === 0) return;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = undefined;
      this.trigger('timer');
    }, Math.max(0, Math.min(...waits)) + 5);
    this.wakeTimer.unref();
  }

  private publishStatus(): void {
    const state = this.opts.plan.current();
    const registration = new Map<string, PoolRegistration>([...this.frontEnd.plugins].map(([n, p]) => [n, p.state]));
    for (const p of this.lastSpec?.pools ?? []) {
      if (p.frontEnd !== 'DRA') continue;
      const dra = this.opts.draRegistration?.();
      registration.set(p.name, dra ? { ...dra, ...(dra.registered ? { via: 'DRA' as const } : {}) } : { registered: false, error: 'this agent does not serve DRA pools (start it with --dra; chart: agent.dra.enabled)' });
    }
    const { spec } = this.effectiveSpec();
    const active = new Set((spec?.pools ?? []).map((p) => p.name));
    const draining = [...this.retired.values()]
      .filter((r, i, all) => !active.has(r.plan.name) && this.slices.some((s) => s.pool === r.plan.name && s.draining) && all.findIndex((x) => x.plan.name === r.plan.name) === i)
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
      holders: this.ledger.holders(),
      carvings: this.checkpoint.carvings(),
      registration,
      blocked: this.carver.blocked,
      foreign: this.carver.foreign,
      carvingErrors: this.carver.errors,
      ...(this.podres.error ? { podResourcesError: this.podres.error } : {}),
      ...(this.ledger.unknown() ? { holdersUnknown: this.ledger.unknown() as string } : {}),
      ...(this.checkpoint.error ? { checkpointError: this.checkpoint.error } : {}),
      previous: this.conditions,
      now: (this.opts.now ?? (() => new Date()))(),
    });
    this.conditions = status.conditions ?? [];
    // Local planning: the plan this report was made on (also the agent's previous plan when it plans again).
    if (this.opts.reportPlan) status.localPlan = { pools: spec?.pools ?? [] };
    const text = createHash('sha1').update(JSON.stringify(status)).digest('hex'); // keep a digest, not a second copy
    this.lastStatus = status;
    if (text === this.lastStatusText) return;
    this.lastStatusText = text;
    this.opts.statusSink?.(status);
  }
}
