// DRA front end: keeps the node's ResourceSlices of driver virtualio.dev equal to the desired pools.
// A pool whose devices changed is rewritten at generation + 1 (every object of it), objects beyond
// its new count are deleted, and pools that left are deleted. Runs on every change and every
// `resyncMs` (the kubelet deletes a node's slices when it starts and when a driver deregisters).
import type { Logger } from '../log.js';
import { resourceSlicesFor, type DraDevice, type PoolContent, type ResourceSliceObject } from './devices.js';

/** What the publisher needs from the API server, for this node's slices of our driver only. */
export interface ResourceSliceStore {
  list(): Promise<ResourceSliceObject[]>;
  create(obj: ResourceSliceObject): Promise<void>;
  /** Replaces the object (metadata.resourceVersion set: optimistic concurrency). */
  update(obj: ResourceSliceObject): Promise<void>;
  remove(name: string): Promise<void>;
  /**
   * Optional: calls `onChange` whenever one of these slices is deleted or changed by someone (the
   * kubelet wipes a node's slices when it starts), until `signal` aborts. Reconnects by itself.
   */
  watch?(onChange: () => void, signal: AbortSignal): Promise<void>;
}

/** What one pass did, for logs and tests. */
export interface SyncResult {
  created: string[];
  updated: string[];
  deleted: string[];
  /** Pool name → generation now published, for pools that were written. */
  generations: Record<string, number>;
}

/** Only what we set: the API server adds fields of its own (e.g. taints[].timeAdded). */
function deviceKey(d: DraDevice): string {
  const attrs = Object.keys(d.attributes).sort().map((k) => [k, d.attributes[k]]);
  const taints = (d.taints ?? []).map((t) => [t.key, t.value ?? '', t.effect]);
  return JSON.stringify([d.name, attrs, taints]);
}

function sameContent(existing: readonly ResourceSliceObject[], wanted: readonly ResourceSliceObject[]): boolean {
  if (existing.length !== wanted.length) return false;
  const gens = new Set(existing.map((e) => e.spec.pool.generation));
  if (gens.size !== 1) return false;
  const byName = new Map(existing.map((e) => [e.metadata.name, e]));
  return wanted.every((w) => {
    const e = byName.get(w.metadata.name);
    if (!e || e.spec.pool.resourceSliceCount !== w.spec.pool.resourceSliceCount) return false;
    const ed = e.spec.devices ?? [];
    return ed.length === w.spec.devices.length && ed.every((d, i) => deviceKey(d) === deviceKey(w.spec.devices[i]!));
  });
}

/**
 * One reconcile pass (exported for tests). `generations` remembers the last generation written per
 * pool across passes, so a pool whose objects someone deleted (the kubelet wipes a node's slices when
 * it starts) comes back at a higher generation, never a lower one a stale cache could prefer.
 */
export async function syncResourceSlices(store: ResourceSliceStore, node: string, desired: readonly PoolContent[], nodeUid?: string, generations?: Map<string, number>): Promise<SyncResult> {
  const result: SyncResult = { created: [], updated: [], deleted: [], generations: {} };
  const existing = await store.list();
  const byPool = new Map<string, ResourceSliceObject[]>();
  for (const e of existing) byPool.set(e.spec.pool.name, [...(byPool.get(e.spec.pool.name) ?? []), e]);
  for (const content of desired) {
    const ex = byPool.get(content.poolName) ?? [];
    byPool.delete(content.poolName);
    const current = ex.length ? Math.max(...ex.map((e) => e.spec.pool.generation)) : 0;
    if (sameContent(ex, resourceSlicesFor(node, content, current, nodeUid))) {
      generations?.set(content.poolName, Math.max(current, generations.get(content.poolName) ?? 0));
      continue;
    }
    const generation = Math.max(current, generations?.get(content.poolName) ?? 0) + 1;
    const wanted = resourceSlicesFor(node, content, generation, nodeUid);
    const exByName = new Map(ex.map((e) => [e.metadata.name, e]));
    for (const w of wanted) {
      const e = exByName.get(w.metadata.name);
      exByName.delete(w.metadata.name);
      if (e) {
        await store.update({ ...w, metadata: { ...w.metadata, ...(e.metadata.resourceVersion ? { resourceVersion: e.metadata.resourceVersion } : {}) } });
        result.updated.push(w.metadata.name);
      } else {
        await store.create(w);
        result.created.push(w.metadata.name);
      }
    }
    for (const name of exByName.keys()) {
      await store.remove(name);
      result.deleted.push(name);
    }
    result.generations[content.pool] = generation;
    generations?.set(content.poolName, generation);
  }
  for (const gone of byPool.values()) {
    for (const e of gone) {
      await store.remove(e.metadata.name);
      result.deleted.push(e.metadata.name);
    }
  }
  return result;
}

export interface PublisherOptions {
  store: ResourceSliceStore;
  node: string;
  nodeUid?: () => Promise<string | undefined>;
  logger: Logger;
  /** Full re-list period (default 30 s). */
  resyncMs?: number;
}

/** Runs {@link syncResourceSlices} whenever the desired pools change, on a timer, and after errors (with backoff). */
export class ResourceSlicePublisher {
  private desired: PoolContent[] | undefined;
  private dirty = false;
  private wake: (() => void) | undefined;
  private readonly log: Logger;
  private readonly generations = new Map<string, number>();
  /** Result of the last successful pass, and the last error (for status and tests). */
  lastResult: SyncResult | undefined;
  lastError: string | undefined;
  passes = 0;

  constructor(private readonly opts: PublisherOptions) {
    this.log = opts.logger.child({ component: 'dra-publisher' });
  }

  /** Sets what should be published; the loop writes it soon. */
  setDesired(pools: PoolContent[]): void {
    this.desired = pools;
    this.dirty = true;
    this.wake?.();
  }

  /** Re-lists and repairs now (e.g. after the kubelet re-registered us: it wipes a node's slices when it starts). */
  kick(): void {
    this.dirty = true;
    this.wake?.();
  }

  async run(signal: AbortSignal): Promise<void> {
    const resync = this.opts.resyncMs ?? 30_000;
    let delay = 500;
    let uid: string | undefined;
    const watching = this.opts.store.watch?.(() => this.kick(), signal).catch((err: unknown) => this.log.warn({ err: String(err) }, 'ResourceSlice watch stopped; re-listing on the timer only'));
    while (!signal.aborted) {
      let wait = resync;
      if (this.desired) {
        this.dirty = false;
        try {
          uid ??= await this.opts.nodeUid?.();
          const r = await syncResourceSlices(this.opts.store, this.opts.node, this.desired, uid, this.generations);
          this.passes++;
          this.lastResult = r;
          this.lastError = undefined;
          delay = 500;
          if (r.created.length || r.updated.length || r.deleted.length) this.log.info({ ...r }, 'ResourceSlices written');
        } catch (err) {
          this.lastError = String(err);
          this.dirty = true;
          wait = delay;
          delay = Math.min(delay * 2, 30_000);
          this.log.warn({ err: String(err), retryInMs: wait }, 'publishing ResourceSlices failed');
        }
      }
      // Another pass at once only when there is something to write: a kick before the first desired
      // state (the kubelet may register us before the agent's first cycle) must not spin.
      if (this.dirty && this.desired && wait === resync) continue;
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, wait);
        function done(): void {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        }
        this.wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
      this.wake = undefined;
    }
    await watching;
  }
}
