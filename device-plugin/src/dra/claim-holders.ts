// Which slices our DRA claims hold, for the agent's ledger and for prepare: claims prepared here and
// claims the scheduler allocated here and not prepared yet, minus claims the kubelet released; and who
// else holds a slice (`heldElsewhere`), where a nameless hold that follows one of our claims (the
// ledger's grace period) still counts as ours. Keeps the memory that needs: when our claims last held
// each slice, since when each pool is a DRA pool, released claims, and (pool, device) → slice.
import type { PoolPlan, Slice } from '../model.js';
import type { AllocatedClaim } from './claims.js';
import type { DraHoldState, PreparedHolder } from './driver-options.js';
import type { PreparedClaim, SliceEntry } from './prepare.js';

/** What the holders are derived from (the driver's current state). */
export interface HoldersSource {
  nowMs: () => number;
  holderOf: ((sliceId: string) => DraHoldState) | undefined;
  recentHoldMs: number;
  index: () => ReadonlyMap<string, SliceEntry>;
  slices: () => readonly Slice[];
  pools: () => readonly PoolPlan[];
  /** Claims allocated here, undefined without a claim list/watch. */
  allocated: () => ReadonlyMap<string, AllocatedClaim> | undefined;
  prepared: () => readonly PreparedClaim[];
  isPrepared: (uid: string) => boolean;
  /** An on-demand device not carved yet. */
  onDemandLookup: (pools: readonly PoolPlan[], pool: string, device: string) => { sliceId: string; resourceName?: string } | undefined;
}

export class ClaimHolders {
  /** (resource pool, device) → slice, from every index seen: allocated claims name devices, the ledger protects IDs. */
  private readonly idByDevice = new Map<string, { sliceId: string; resourceName?: string }>();
  /** Slice ID → when one of our claims last held it, and in which pool. */
  private readonly lastOurs = new Map<string, { at: number; pool: string }>();
  /** DRA pool → since when it has been one (without a break). */
  private readonly draSince = new Map<string, number>();
  /** Claim UID → the pods it was reserved for when the kubelet unprepared it (no longer a holder while that is all). */
  readonly released = new Map<string, { uids: Set<string>; names: Set<string>; at: number }>();

  constructor(private readonly src: HoldersSource) {}

  /** A cycle's bookkeeping: DRA pools now, the devices of the new index, memories that aged out. */
  noteCycle(dra: ReadonlySet<string>, now: number): void {
    for (const p of dra) if (!this.draSince.has(p)) this.draSince.set(p, now);
    for (const p of [...this.draSince.keys()]) if (!dra.has(p)) this.draSince.delete(p);
    if (this.idByDevice.size > 8192) this.idByDevice.clear();
    for (const [k, e] of this.src.index()) this.idByDevice.set(k, { sliceId: e.slice.id, resourceName: e.pool.resourceName });
    const recent = this.src.recentHoldMs;
    for (const [id, o] of this.lastOurs) if (now - o.at >= recent) this.lastOurs.delete(id);
    for (const [uid, r] of this.released) if (now - r.at >= recent && !this.src.allocated()?.has(uid)) this.released.delete(uid);
  }

  /**
   * Who holds `sliceId` if not one of our claims, per the agent's ledger, or undefined. A hold
   * that names no holder is our claim's grace period when one of our claims held the slice
   * recently in a pool that has stayed a DRA pool since (no device plugin could have handed it out).
   */
  heldElsewhere(sliceId: string, pool: string): string | undefined {
    const h = this.src.holderOf?.(sliceId);
    if (!h || h.kind === 'free') return undefined;
    if (h.holder?.claim) return undefined; // one of our claims: prepare checks which one
    if (!h.holder) {
      const o = this.lastOurs.get(sliceId);
      const since = this.draSince.get(pool);
      if (o && o.pool === pool && since !== undefined && since <= o.at && this.src.nowMs() - o.at < this.src.recentHoldMs) return undefined;
    }
    return h.by;
  }

  /** Who holds each slice through one of our claims (see DraDriver.preparedHolders); stamps when. */
  holders(): Map<string, PreparedHolder> {
    const out = new Map<string, PreparedHolder>();
    for (const c of this.src.allocated()?.values() ?? []) {
      if (this.src.isPrepared(c.uid) || this.isReleased(c)) continue;
      for (const d of c.devices) {
        const m = this.lookup(d.pool, d.device);
        if (m) out.set(m.sliceId, { resourceName: m.resourceName ?? '', namespace: c.namespace, pod: c.pods[0]?.name ?? `claim/${c.name}`, container: '', claim: c.name });
      }
    }
    for (const c of this.src.prepared()) {
      for (const d of c.devices) {
        out.set(d.sliceId, { resourceName: d.resourceName ?? '', namespace: c.namespace, pod: c.pods?.[0] ?? `claim/${c.name}`, container: '', claim: c.name });
      }
    }
    const now = this.src.nowMs();
    for (const id of out.keys()) {
      const pool = this.poolOfSlice(id);
      if (pool) this.lastOurs.set(id, { at: now, pool });
    }
    return out;
  }

  poolOfSlice(id: string): string | undefined {
    for (const e of this.src.index().values()) if (e.slice.id === id) return e.pool.name;
    return this.src.slices().find((s) => s.id === id)?.pool;
  }

  lookup(pool: string, device: string): { sliceId: string; resourceName?: string } | undefined {
    const e = this.src.index().get(`${pool}\n${device}`);
    if (e) return { sliceId: e.slice.id, resourceName: e.pool.resourceName };
    // An on-demand device not carved yet: its mdev UUID is in its name, and it is held from allocation on.
    return this.idByDevice.get(`${pool}\n${device}`) ?? this.src.onDemandLookup(this.src.pools(), pool, device);
  }

  isReleased(c: AllocatedClaim): boolean {
    const r = this.released.get(c.uid);
    if (!r) return false;
    return c.pods.every((p) => (p.uid !== undefined && r.uids.has(p.uid)) || ((p.uid === undefined || r.uids.size === 0) && r.names.has(p.name)));
  }
}
