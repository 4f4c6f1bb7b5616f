// Tenancy controller: one key per pool. A pool with spec.tenancy gets its ValidatingAdmissionPolicy
// and binding (policy.ts) through server-side apply under virtualio-operator, owned by the pool; a
// pool without it (or a pool that is gone) has them deleted. Both are watched by label, so one
// deleted or changed by anyone is ensured again. The outcome goes to the pool's TenancyEnforced
// condition (through the status controller) and, when writing fails, to a Warning Event.
import type { Logger } from 'pino';
import type { KubeObject, KubePort, ResourceType } from '../../kube/ports.js';
import { FIELD_MANAGER, VIRTUALIO_API_VERSION } from '../../kube/resources.js';
import type { EventRecorder } from '../../runtime/events.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import type { World } from '../world.js';
import { AdmissionPolicies, AdmissionPolicyBindings, desiredBinding, desiredPolicy, poolOfTenancyObject, tenancyPolicyName } from './policy.js';

/** What the pool's TenancyEnforced condition says. */
export interface TenancyOutcome {
  enforced: boolean;
  reason: 'PolicyInForce' | 'PolicyWriteFailed';
  message: string;
}

/** Every field of `want` is in `have` with the same value (the API server adds defaults of its own). */
export function contains(have: unknown, want: unknown): boolean {
  if (Array.isArray(want)) {
    return Array.isArray(have) && have.length === want.length && want.every((w, i) => contains(have[i], w));
  }
  if (want !== null && typeof want === 'object') {
    if (have === null || typeof have !== 'object' || Array.isArray(have)) return false;
    const h = have as Record<string, unknown>;
    return Object.entries(want as Record<string, unknown>).every(([k, v]) => contains(h[k], v));
  }
  return have === want;
}

/** Spec, our labels and the owner (by UID: a re-created pool has a new one) are as desired. */
function upToDate(current: KubeObject & { spec?: unknown }, body: KubeObject & Record<string, unknown>): boolean {
  const owners = current.metadata.ownerReferences ?? [];
  const want = body.metadata.ownerReferences?.[0];
  return contains(current.spec, body.spec) && contains(current.metadata.labels ?? {}, body.metadata.labels ?? {}) &&
    owners.some((o) => o.uid === want?.uid) && !owners.some((o) => o.kind === want?.kind && o.uid !== want?.uid);
}

export class TenancyReconciler implements Reconciler {
  constructor(private readonly deps: {
    kube: KubePort; world: World; events: EventRecorder; log: Logger;
    /** The watched policies and bindings (by label): a pool without spec.tenancy costs no API call. */
    cached: (res: ResourceType, name: string) => KubeObject | undefined;
    /** Called when a pool's outcome changed (its status is to be written again). */
    onOutcomeChange: (pool: string) => void;
  }) {}

  async reconcile(name: string): Promise<Result> {
    const { world } = this.deps;
    const pool = world.pools.get(name);
    const tenancy = pool?.spec.tenancy;
    if (!pool || !tenancy) {
      this.setOutcome(name, undefined);
      await this.remove(name);
      return done;
    }
    try {
      // Policy first: a binding to a policy that does not exist yet does nothing.
      await this.ensure(AdmissionPolicies, desiredPolicy(pool, tenancy));
      await this.ensure(AdmissionPolicyBindings, desiredBinding(pool));
    } catch (err) {
      const message = `Cannot write ValidatingAdmissionPolicy ${tenancyPolicyName(name)}, so spec.tenancy is not enforced: ${(err as Error).message}`;
      this.setOutcome(name, { enforced: false, reason: 'PolicyWriteFailed', message });
      await this.deps.events.record({ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', metadata: pool.metadata }, 'Warning', 'PolicyWriteFailed', message);
      throw err;
    }
    this.setOutcome(name, {
      enforced: true, reason: 'PolicyInForce',
      message: `ValidatingAdmissionPolicy ${tenancyPolicyName(name)} refuses pods and claims for the pool in namespaces spec.tenancy does not grant`,
    });
    return done;
  }

  private setOutcome(pool: string, outcome: TenancyOutcome | undefined): void {
    const prev = this.deps.world.tenancy.get(pool);
    if (outcome) this.deps.world.tenancy.set(pool, outcome);
    else this.deps.world.tenancy.delete(pool);
    if (prev?.enforced !== outcome?.enforced || prev?.message !== outcome?.message) this.deps.onOutcomeChange(pool);
  }

  private async ensure(res: ResourceType, body: KubeObject & Record<string, unknown>): Promise<void> {
    const { kube, log } = this.deps;
    const current = await kube.get<KubeObject & { spec?: unknown }>(res, body.metadata.name);
    if (current && upToDate(current, body)) return;
    await kube.apply(res, body, { fieldManager: FIELD_MANAGER, force: true });
    log.info({ pool: poolOfTenancyObject(body), [res.kind]: body.metadata.name }, current ? `Updated ${res.kind}` : `Created ${res.kind}`);
  }

  /** Deletes the pool's binding, then its policy, when they are ours (labelled with the pool). */
  private async remove(pool: string): Promise<void> {
    const { kube, log, cached } = this.deps;
    for (const res of [AdmissionPolicyBindings, AdmissionPolicies]) {
      const name = tenancyPolicyName(pool);
      const current = cached(res, name);
      if (!current || poolOfTenancyObject(current) !== pool) continue;
      await kube.delete(res, name);
      log.info({ pool, [res.kind]: name }, `Deleted ${res.kind} (pool has no spec.tenancy or is gone)`);
    }
  }
}
