// KubeVirt controller: a single key. With --manage-permitted-host-devices it applies the
// pciHostDevices and mediatedDevices lists of the KubeVirt CR under our field manager. Both lists are
// `x-kubernetes-list-type: atomic` in the CRD that virt-operator installs (checked in KubeVirt
// 1.8.4's generated CRD): server-side apply can only own such a list whole, so the operator applies
// the whole lists (the admin's --extra-permitted-host-devices entries included) and forces that
// ownership. Without the flag it writes nothing (pools report what to add).
//
// Another controller that writes the same lists (the HyperConverged operator, or a GitOps tool
// self-healing a KubeVirt CR that sets them) would otherwise be overwritten at once on every change,
// for ever. So a change of our applied lists by anyone else counts as a round lost: the operator
// re-applies after an exponential backoff (5 s, 10 s, 20 s...), names the other field manager in the
// pools' KubeVirtPermitted condition and in Warning Events, and after `maxRounds` rounds stops
// re-applying until what it wants changes (a pool, a node's inventory) or the other managers no longer
// own the lists (they were taken out of Git, say). The give-up outlives the process: a new operator
// process reads it back from the pools' KubeVirtPermitted=Contested condition (restore()), so a
// restart or a leader change does not start another fight.
import type { Logger } from 'pino';
import { ConditionType, findCondition, Reason } from '../../api/conditions.js';
import type { Pool } from '../../api/types.js';
import type { KubeObject, KubePort } from '../../kube/ports.js';
import { FIELD_MANAGER, KubeVirts, VIRTUALIO_API_VERSION } from '../../kube/resources.js';
import { systemClock, type Clock } from '../../runtime/clock.js';
import type { EventRecorder } from '../../runtime/events.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import type { KubeVirtObject, World } from '../world.js';
import { desiredLists, entryPresent, poolEntries, type KubeVirtContest, type PermittedLists } from './entries.js';

/** The single key of the KubeVirt controller. */
export const KUBEVIRT_KEY = 'kubevirt';

/** The permittedHostDevices object to apply: empty lists are left out (not owned). */
export function permittedHostDevicesBody(lists: PermittedLists): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  if (lists.pciHostDevices.length > 0) out.pciHostDevices = lists.pciHostDevices;
  if (lists.mediatedDevices.length > 0) out.mediatedDevices = lists.mediatedDevices;
  return Object.keys(out).length > 0 ? out : undefined;
}

export interface KubeVirtContestTuning {
  /** Delay before re-applying after the first round lost; doubles per round. Default 5 s. */
  baseMs?: number;
  /** Longest delay between rounds. Default 5 min. */
  maxMs?: number;
  /** Rounds lost before the operator stops re-applying. Default 5. */
  maxRounds?: number;
  /** A round lost longer ago than this is forgotten (the count starts again). Default 1 h. */
  quietMs?: number;
}

interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  fieldsV1?: Record<string, unknown>;
}

/** Field managers other than ours that own either permittedHostDevices list. */
export function listManagers(cr: KubeVirtObject): string[] {
  const managed = ((cr.metadata as { managedFields?: ManagedFieldsEntry[] }).managedFields ?? []);
  const out = new Set<string>();
  for (const m of managed) {
    if (!m.manager || m.manager === FIELD_MANAGER) continue;
    const phd = ((m.fieldsV1?.['f:spec'] as Record<string, unknown> | undefined)?.['f:configuration'] as Record<string, unknown> | undefined)?.['f:permittedHostDevices'] as Record<string, unknown> | undefined;
    if (phd && ('f:pciHostDevices' in phd || 'f:mediatedDevices' in phd)) out.add(m.manager);
  }
  return [...out].sort();
}

/** Every entry of `want` is in `have` (order and other entries do not matter). */
function contains(have: PermittedLists, want: PermittedLists): boolean {
  return want.pciHostDevices.every((e) => have.pciHostDevices.some((x) => jsonEqual(x, e))) &&
    want.mediatedDevices.every((e) => have.mediatedDevices.some((x) => jsonEqual(x, e)));
}

export class KubeVirtReconciler implements Reconciler {
  /** What this process applied last (after a restart the first reconcile always applies). */
  private lastApplied: string | undefined;
  /** The CR's resourceVersion just before and just after our last apply. */
  private rvBefore: string | undefined;
  private rvAfter: string | undefined;
  /** The current round was lost already (counted once). */
  private reverted = false;
  private nextAttemptAt = 0;
  private lastLostAt = 0;
  private contest: KubeVirtContest | undefined;
  private restoreChecked = false;
  private readonly tuning: Required<KubeVirtContestTuning>;

  constructor(private readonly deps: {
    kube: KubePort; world: World; log: Logger; clock?: Clock; events?: EventRecorder;
    tuning?: KubeVirtContestTuning;
    /** Called when the contest state changes (pools' KubeVirtPermitted conditions read it). */
    onContestChange?: () => void;
  }) {
    const t = deps.tuning ?? {};
    this.tuning = { baseMs: t.baseMs ?? 5_000, maxMs: t.maxMs ?? 5 * 60_000, maxRounds: t.maxRounds ?? 5, quietMs: t.quietMs ?? 60 * 60_000 };
  }

  async reconcile(): Promise<Result> {
    const { world } = this.deps;
    const clock = this.deps.clock ?? systemClock;
    const settings = world.kubevirtSettings;
    if (!settings.manage || !world.kubevirt.installed) return done;
    const cr = world.kubevirtObject();
    // Never create the KubeVirt CR: apply would, so only patch one that exists.
    if (!cr) return done;
    const index = world.poolIndex();
    const entries = world.prepared().ordered.flatMap((p) => poolEntries(p, index.get(p.name)?.nodes ?? []));
    const desired = desiredLists(entries, settings.extra);
    const current = world.kubevirtView().current;
    const body = permittedHostDevicesBody(desired);
    // A list we do not apply is left to whoever else set it, so only the applied ones must match;
    // a list we stop applying must be applied away once (SSA removes fields we owned).
    const applied = JSON.stringify(body ?? null);
    const matches = (desired.pciHostDevices.length === 0 || jsonEqual(current.pciHostDevices, desired.pciHostDevices)) &&
      (desired.mediatedDevices.length === 0 || jsonEqual(current.mediatedDevices, desired.mediatedDevices));
    if (this.lastApplied !== applied) {
      // What we want changed (or this process never applied): apply now, whatever happened before.
      return this.apply(body, applied, desired, cr);
    }
    // Our entries all there, others' added (HyperConverged carrying ours among its own): no fight.
    if (matches || contains(current, desired)) return done;
    if (this.contest?.gaveUp) {
      // The controllers we gave up against no longer own the lists: try again from scratch.
      const owners = listManagers(cr);
      if (this.contest.managers.length === 0 || owners.some((m) => this.contest?.managers.includes(m))) return done;
      this.setContest(undefined);
      return this.apply(body, applied, desired, cr);
    }
    const rv = cr.metadata.resourceVersion;
    // Our own write not in the cache yet: its event will queue this key again.
    if (rv === this.rvBefore || rv === this.rvAfter) return done;
    const now = clock.now();
    if (!this.reverted) {
      this.reverted = true;
      await this.lost(cr, now);
    }
    if (this.contest?.gaveUp) return done;
    if (now < this.nextAttemptAt) return { requeueAfterMs: this.nextAttemptAt - now };
    return this.apply(body, applied, desired, cr);
  }

  /**
   * Takes over the give-up of an earlier operator process, which lives on in the pools' status: call
   * once the caches and the KubeVirt CR are synced, before any pool status is written. Some pool says
   * KubeVirtPermitted=Contested and someone else still writes the lists, which lack our entries: the contest is restored as given up against those managers. When what we want is what
   * the pools' status.kubevirtEntries recorded, nothing is applied (the last process had stopped);
   * when it changed meanwhile, the first reconcile applies it once, as for a new wish after a give-up
   * (one more round lost gives up again). Only the first call of a process does anything.
   */
  restore(): void {
    if (this.restoreChecked) return;
    this.restoreChecked = true;
    const { world, log } = this.deps;
    const cr = world.kubevirtObject();
    if (!world.kubevirtSettings.manage || !cr || this.lastApplied !== undefined || this.contest) return;
    const pools = world.prepared().ordered;
    if (!pools.some((p) => findCondition(p.pool.status?.conditions, ConditionType.KubeVirtPermitted)?.reason === Reason.Contested)) return;
    // Someone else still writes the lists: a field manager owns them, or (no managedFields to tell)
    // they hold entries. Lists gone with their owner mean the contender left: apply as usual.
    const managers = listManagers(cr);
    const current = world.kubevirtView().current;
    if (managers.length === 0 && current.pciHostDevices.length === 0 && current.mediatedDevices.length === 0) return;
    const index = world.poolIndex();
    const perPool = pools.map((p) => ({ p, entries: poolEntries(p, index.get(p.name)?.nodes ?? []) }));
    const desired = desiredLists(perPool.flatMap((x) => x.entries), world.kubevirtSettings.extra);
    if (contains(current, desired)) return;
    const sameWish = perPool.every(({ p, entries }) => jsonEqual(p.pool.status?.kubevirtEntries ?? [], entries));
    const { maxRounds } = this.tuning;
    this.lastLostAt = (this.deps.clock ?? systemClock).now();
    this.setContest({ rounds: maxRounds, managers, gaveUp: true, maxRounds });
    if (sameWish) {
      this.lastApplied = JSON.stringify(permittedHostDevicesBody(desired) ?? null);
      this.rvBefore = this.rvAfter = cr.metadata.resourceVersion;
      this.reverted = true;
    }
    log.warn({ kubevirt: `${world.kubevirtSettings.namespace}/${world.kubevirtSettings.name}`, managers, sameWish },
      sameWish ? 'Kept the give-up on permittedHostDevices of an earlier operator process; not re-applying'
        : 'Found the give-up on permittedHostDevices of an earlier operator process; applying the changed entries once');
  }

  /** Another manager changed the lists after our apply: one more round lost. */
  private async lost(cr: KubeVirtObject, now: number): Promise<void> {
    const { log, world } = this.deps;
    const { baseMs, maxMs, maxRounds, quietMs } = this.tuning;
    const prev = this.contest && now - this.lastLostAt <= quietMs ? this.contest.rounds : 0;
    const rounds = prev + 1;
    this.lastLostAt = now;
    const managers = listManagers(cr);
    const gaveUp = rounds >= maxRounds;
    this.nextAttemptAt = now + Math.min(baseMs * 2 ** (rounds - 1), maxMs);
    this.setContest({ rounds, managers, gaveUp, maxRounds });
    const ref = `${world.kubevirtSettings.namespace}/${world.kubevirtSettings.name}`;
    const who = managers.length > 0 ? managers.join(', ') : 'an unknown field manager';
    if (gaveUp) {
      log.warn({ kubevirt: ref, managers, rounds }, 'Another controller keeps changing permittedHostDevices; stopped re-applying');
    } else {
      log.warn({ kubevirt: ref, managers, rounds, retryInMs: this.nextAttemptAt - now }, 'Another controller changed permittedHostDevices; re-applying after a backoff');
    }
    const message = gaveUp
      ? `Another controller (${who}) keeps changing spec.configuration.permittedHostDevices of KubeVirt ${ref}; the operator stopped re-applying its entries after ${rounds} rounds (see the KubeVirtPermitted condition)`
      : `Another controller (${who}) keeps changing spec.configuration.permittedHostDevices of KubeVirt ${ref}; the operator re-applies its entries with backoff`;
    await this.recordOnPools(gaveUp ? 'PermittedHostDevicesContested' : 'PermittedHostDevicesReverted', message);
  }

  private async apply(body: Record<string, unknown> | undefined, applied: string, desired: PermittedLists, cr: KubeVirtObject): Promise<Result> {
    const { kube, world, log } = this.deps;
    const settings = world.kubevirtSettings;
    const result = await kube.apply<KubeObject>(KubeVirts, {
      apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt',
      metadata: { name: settings.name, namespace: settings.namespace },
      ...(body ? { spec: { configuration: { permittedHostDevices: body } } } : {}),
    }, { fieldManager: FIELD_MANAGER, force: true });
    if (this.contest?.gaveUp) {
      // A new wish gets its chance, but a controller that undid the last ones is not fought for
      // long: one more round lost gives up again.
      this.setContest({ ...this.contest, gaveUp: false, rounds: this.tuning.maxRounds - 1 });
    }
    this.lastApplied = applied;
    this.rvBefore = cr.metadata.resourceVersion;
    this.rvAfter = result.metadata.resourceVersion;
    this.reverted = false;
    log.info({
      kubevirt: `${settings.namespace}/${settings.name}`,
      pciHostDevices: desired.pciHostDevices.length, mediatedDevices: desired.mediatedDevices.length,
    }, 'Applied KubeVirt permittedHostDevices');
    return done;
  }

  private setContest(c: KubeVirtContest | undefined): void {
    this.contest = c;
    this.deps.world.kubevirt.contest = c;
    if (!c) this.lastLostAt = 0;
    this.deps.onContestChange?.();
  }

  /** A Warning Event on every pool whose entries the KubeVirt CR lacks right now. */
  private async recordOnPools(reason: string, message: string): Promise<void> {
    const { world, events } = this.deps;
    if (!events) return;
    const index = world.poolIndex();
    const view = world.kubevirtView();
    for (const p of world.prepared().ordered) {
      const missing = poolEntries(p, index.get(p.name)?.nodes ?? []).filter((e) => !entryPresent(e, view.current));
      if (missing.length === 0) continue;
      const pool: Pool = p.pool;
      await events.record({ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', metadata: pool.metadata }, 'Warning', reason, message);
    }
  }
}
