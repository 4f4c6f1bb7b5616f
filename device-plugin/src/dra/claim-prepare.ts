// The DRA driver's prepare and unprepare of claims (NodePrepareResources / NodeUnprepareResources),
// serialized through one queue: the claim is read with a deadline outside the queue, then checked
// against what is prepared and held elsewhere, its VF network settings applied, its CDI spec and
// metadata written and it is recorded in the checkpoint; unprepare undoes that. Also the restore of
// released VF settings once their VF is free.
import type { Logger } from '../log.js';
import type { ClaimHolders } from './claim-holders.js';
import type { AllocatedClaims } from './claims.js';
import type { DeviceFacts } from './devices.js';
import type { DraDriverOptions, PrepareOutcome } from './driver-options.js';
import {
  cdiSpecForClaim, cdiSpecPath, metadataDocuments, metadataHostPath, planClaim, removeClaimFiles, topRequest, writeAtomic,
  type Checkpoint, type ClaimObject, type ClaimRef, type PreparedClaim, type SliceEntry,
} from './prepare.js';
import { fetchClaimWithin } from './stale-claims.js';
import { claimVfTargets, type VfNetSettings } from './vf-net.js';

/** The driver state prepare and unprepare work on. */
export interface ClaimPrepareContext {
  opts: DraDriverOptions;
  pluginDir: string;
  log: Logger;
  checkpoint: Checkpoint;
  holders: ClaimHolders;
  allocated: AllocatedClaims | undefined;
  vfNet: VfNetSettings | undefined;
  /** The driver's call counters. */
  calls: () => { prepare: number; unprepare: number };
  index: () => ReadonlyMap<string, SliceEntry>;
  facts: () => DeviceFacts;
  /** Resolves true at the agent's first cycle, false after `readyTimeoutMs`. */
  whenReady: () => Promise<boolean>;
  nowMs: () => number;
  preparedSliceIds: () => Set<string>;
  /** Tries to end a checkpoint loss. */
  attemptRecovery: () => void;
}

export class ClaimPreparer {
  private queue: Promise<unknown> = Promise.resolve();
  private vfNetSettling = false;

  constructor(private readonly ctx: ClaimPrepareContext) {}

  /**
   * NodePrepareResources for one claim. The ResourceClaim is read first, with a deadline and outside
   * the serialized part; only the check against what is prepared and the state change are serialized
   * with every other call. Before the agent's first cycle the driver waits for it (`readyTimeoutMs`).
   */
  async prepare(ref: ClaimRef): Promise<PrepareOutcome> {
    this.ctx.calls().prepare++;
    const ready = this.ctx.whenReady();
    if (this.ctx.checkpoint.get(ref.uid) && (await ready)) {
      const again = await this.serial(async () => this.answerPrepared(ref));
      if (again) return again;
    }
    let claim: ClaimObject | undefined;
    try {
      claim = await this.fetchClaim(ref);
    } catch (err) {
      const error = `reading ResourceClaim ${ref.namespace}/${ref.name}: ${err instanceof Error ? err.message : String(err)}`;
      this.ctx.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    if (!(await ready)) {
      const error = `the agent has not finished its first scan of the node yet (waited ${this.ctx.opts.readyTimeoutMs ?? 30_000} ms); try again`;
      this.ctx.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    return this.serial(() => this.prepareNow(ref, claim));
  }

  /** NodeUnprepareResources for one claim (serialized with every other call). */
  unprepare(ref: ClaimRef): Promise<string> {
    return this.serial(() => this.unprepareNow(ref));
  }

  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The GET of the claim, abandoned (and aborted) after `claimTimeoutMs`. */
  fetchClaim(ref: ClaimRef): Promise<ClaimObject | undefined> {
    return fetchClaimWithin(this.ctx.opts.getClaim, ref, this.ctx.opts.claimTimeoutMs ?? 10_000);
  }

  private answer(c: PreparedClaim): PrepareOutcome {
    // The top-level request name: the kubelet and KubeVirt match a container's claim by it.
    return { devices: c.devices.map((d) => ({ requestNames: [topRequest(d.request)], poolName: d.pool, deviceName: d.device, cdiDeviceIds: [d.cdiId] })), error: '' };
  }

  /** Idempotent prepare: the recorded answer, files re-written if someone removed them; undefined when not (fully) prepared now. */
  private async answerPrepared(ref: ClaimRef): Promise<PrepareOutcome | undefined> {
    const done = this.ctx.checkpoint.get(ref.uid);
    if (!done || !done.devices.every((d) => this.ctx.index().has(`${d.pool}\n${d.device}`))) return undefined;
    try {
      this.writeFiles(done);
    } catch (err) {
      return { devices: [], error: `re-writing CDI spec or metadata for ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    return this.answer(done);
  }

  /** Why a planned claim must not get its devices: one is prepared for another claim, or held outside DRA. */
  private conflict(plan: PreparedClaim): string | undefined {
    const what = `ResourceClaim ${plan.namespace}/${plan.name}`;
    for (const d of plan.devices) {
      const other = this.ctx.checkpoint.all().find((c) => c.uid !== plan.uid && c.devices.some((x) => x.sliceId === d.sliceId));
      if (other) return `${what}: device ${d.device} (${d.sliceId}) is already prepared for ResourceClaim ${other.namespace}/${other.name} (UID ${other.uid}); not handing it out twice`;
      const pool = this.ctx.index().get(`${d.pool}\n${d.device}`)?.pool.name ?? '';
      const by = this.ctx.holders.heldElsewhere(d.sliceId, pool);
      if (by) return `${what}: device ${d.device} (${d.sliceId}) is held by ${by}; not handing it out twice`;
    }
    return undefined;
  }

  private async prepareNow(ref: ClaimRef, claim: ClaimObject | undefined): Promise<PrepareOutcome> {
    const again = await this.answerPrepared(ref); // a concurrent call for the same claim got here first
    if (again) return again;
    const plan = planClaim(ref, claim, this.ctx.opts.nodeName, this.ctx.index());
    const error = 'error' in plan ? plan.error : this.conflict(plan);
    if (error !== undefined) {
      this.ctx.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error }, 'cannot prepare claim');
      return { devices: [], error };
    }
    if ('error' in plan) return { devices: [], error: plan.error }; // (narrowing only)
    const netError = await this.applyVfNet(ref, claim, plan);
    if (netError) {
      this.ctx.log.warn({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, error: netError }, 'cannot prepare claim');
      return { devices: [], error: netError };
    }
    try {
      this.writeFiles(plan);
      this.ctx.checkpoint.put(plan);
    } catch (err) {
      removeClaimFiles(this.ctx.opts.cdiDir, this.ctx.pluginDir, ref.uid);
      await this.ctx.vfNet?.release(ref.uid, `${ref.namespace}/${ref.name}`);
      await this.ctx.vfNet?.settle(() => true); // prepare did not answer: no VM has these VFs
      return { devices: [], error: `writing CDI spec or metadata for ${ref.namespace}/${ref.name}: ${String(err)}` };
    }
    this.ctx.holders.released.delete(ref.uid);
    this.ctx.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid, devices: plan.devices.map((d) => `${d.request}=${d.sliceId}`) }, 'claim prepared');
    this.ctx.opts.onHoldersChanged?.();
    return this.answer(plan);
  }

  /** The claim's VF network settings applied on the PFs (or why not), before prepare records the claim. */
  private async applyVfNet(ref: ClaimRef, claim: ClaimObject | undefined, plan: PreparedClaim): Promise<string | undefined> {
    const what = `ResourceClaim ${ref.namespace}/${ref.name}`;
    const t = claimVfTargets(plan.devices, this.ctx.index(), claim?.status?.allocation?.devices?.config, this.ctx.vfNet !== undefined);
    if ('error' in t) return `${what}: ${t.error}`;
    if (!this.ctx.vfNet || t.targets.length === 0) return undefined;
    const err = await this.ctx.vfNet.apply(ref.uid, `${ref.namespace}/${ref.name}`, t.targets);
    return err ? `${what}: VF network settings: ${err}` : undefined;
  }

  /** Restores released VF settings whose VF is free (nobody but our claims holds it, no claim prepared on it). */
  settleVfNet(): void {
    const net = this.ctx.vfNet;
    if (!net || this.vfNetSettling) return;
    this.vfNetSettling = true;
    void this.serial(async () => {
      const prepared = this.ctx.preparedSliceIds();
      await net.settle((vf) => !prepared.has(vf) && this.ctx.holders.heldElsewhere(vf, this.ctx.holders.poolOfSlice(vf) ?? '') === undefined);
    }).catch((err: unknown) => this.ctx.log.warn({ err: String(err) }, 'restoring VF network settings failed'))
      .finally(() => {
        this.vfNetSettling = false;
      });
  }

  private writeFiles(c: PreparedClaim): void {
    for (const [req, doc] of metadataDocuments(c, this.ctx.index(), this.ctx.facts())) {
      writeAtomic(metadataHostPath(this.ctx.pluginDir, c.uid, req), `${JSON.stringify(doc)}\n`);
    }
    writeAtomic(cdiSpecPath(this.ctx.opts.cdiDir, c.uid), `${JSON.stringify(cdiSpecForClaim(c, this.ctx.index(), this.ctx.pluginDir), null, 2)}\n`);
  }

  private async unprepareNow(ref: ClaimRef): Promise<string> {
    this.ctx.calls().unprepare++;
    try {
      this.ctx.holders.holders(); // when our claims last held their slices: the ledger's grace period that follows is ours
      removeClaimFiles(this.ctx.opts.cdiDir, this.ctx.pluginDir, ref.uid);
      const had = this.ctx.checkpoint.get(ref.uid);
      const allocated = this.ctx.allocated?.all().get(ref.uid);
      // Still allocated and reserved for the same pods, it holds nothing any more (see preparedHolders).
      this.ctx.holders.released.set(ref.uid, {
        uids: new Set((allocated?.pods ?? []).flatMap((p) => (p.uid ? [p.uid] : []))),
        names: new Set([...(allocated?.pods ?? []).map((p) => p.name), ...(had?.pods ?? [])]),
        at: this.ctx.nowMs(),
      });
      this.ctx.checkpoint.delete(ref.uid);
      if (this.ctx.vfNet) {
        // The kubelet unprepares once the pod's containers are gone (the VM with them); the settings
        // go back only when the ledger also shows the VF free (settleVfNet).
        await this.ctx.vfNet.release(ref.uid, `${ref.namespace}/${ref.name}`);
        const prepared = this.ctx.preparedSliceIds();
        await this.ctx.vfNet.settle((vf) => !prepared.has(vf) && this.ctx.holders.heldElsewhere(vf, this.ctx.holders.poolOfSlice(vf) ?? '') === undefined);
      }
      if (had || allocated) {
        this.ctx.log.info({ claim: `${ref.namespace}/${ref.name}`, uid: ref.uid }, 'claim unprepared');
        this.ctx.opts.onHoldersChanged?.();
      }
      if (this.ctx.checkpoint.unknown) this.ctx.attemptRecovery(); // one claim fewer to re-learn
      return '';
    } catch (err) {
      return `unpreparing ${ref.namespace}/${ref.name}: ${String(err)}`;
    }
  }
}
