// DRA front end: keeps the node's ResourceSlices of driver virtualio.dev equal to the desired pools,
// the way the Go resourceslice controller (k8s.io/dynamic-resource-allocation) does. Objects are
// created with `generateName` `<index>-virtualio.dev-<node>-` and matched back by pool and index. A
// pool whose devices changed is rewritten at generation + 1 (every object of it), objects of an
// older generation, without a usable index or beyond its new count are deleted, and pools that left
// are deleted. Runs on every change and every `resyncMs` (the kubelet deletes a node's slices when it
// starts and when a driver deregisters).
//
// Fields the API server drops (device taints where the DRADeviceTaints feature is off, as in
// 1.34–1.35) are detected in what the create or update returns: the publisher then takes what could
// be stored as "the same" for that desired content (no rewrite every pass) and reports the drop,
// and the driver publishes what the API server can hold instead.
import type { Logger } from '../log.js';
import { poolObjects, resourceSliceIndex, resourceSlicesFor, type DraDevice, type PoolContent, type ResourceSliceObject, type SharedCounterSet } from './devices.js';

/** What the publisher needs from the API server, for this node's slices of our driver only. */
export interface ResourceSliceStore {
  list(): Promise<ResourceSliceObject[]>;
  /** Creates the object (`metadata.generateName` set); returns it as stored, when the store can tell. */
  create(obj: ResourceSliceObject): Promise<ResourceSliceObject | void>;
  /** Replaces the object (metadata.resourceVersion set: optimistic concurrency); returns it as stored. */
  update(obj: ResourceSliceObject): Promise<ResourceSliceObject | void>;
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

/**
 * The API server stored an object without some of what we sent (Go: resourceslice.DroppedFieldsError).
 * `features` names the feature gates that are probably off.
 */
export interface DroppedFields {
  /** The virtualio pool. */
  pool: string;
  /** The resource pool (`<node>/<pool>`). */
  poolName: string;
  /** Which object of the pool (its index). */
  index: number;
  features: string[];
}

/** Only what we set: the API server adds fields of its own (e.g. taints[].timeAdded). */
function deviceKey(d: DraDevice): string {
  const attrs = Object.keys(d.attributes ?? {}).sort().map((k) => [k, d.attributes[k]]);
  const taints = (d.taints ?? []).map((t) => [t.key, t.value ?? '', t.effect]);
  const key: unknown[] = [d.name, attrs, taints];
  // On-demand devices only, so that the key of every other device stays what it was.
  if (d.consumesCounters?.length || d.bindingConditions?.length) {
    key.push((d.consumesCounters ?? []).map((c) => [c.counterSet, countersKey(c.counters)]), d.bindingConditions ?? [], d.bindingFailureConditions ?? []);
  }
  return JSON.stringify(key);
}

function countersKey(c: Record<string, { value: string }> | undefined): [string, string][] {
  return Object.keys(c ?? {}).sort().map((k) => [k, String(c![k]!.value)]);
}

/** What one object holds: its devices, or (an object of counter sets) its counters. */
function devicesKey(devices: readonly DraDevice[] | undefined, counters?: readonly SharedCounterSet[]): string {
  if (counters !== undefined) return JSON.stringify(['counters', counters.map((s) => [s.name, countersKey(s.counters)])]);
  return JSON.stringify((devices ?? []).map(deviceKey));
}

function objectKey(o: ResourceSliceObject | { devices?: DraDevice[]; sharedCounters?: SharedCounterSet[] }): string {
  const spec = 'spec' in o ? o.spec : o;
  return devicesKey(spec.devices, spec.sharedCounters);
}

/** The feature gates a stored object suggests are off, given what was sent (Go: DisabledFeatures). */
function droppedFeatures(sent: readonly DraDevice[], stored: readonly DraDevice[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < sent.length && i < stored.length; i++) {
    if ((sent[i]!.taints?.length ?? 0) > (stored[i]!.taints?.length ?? 0)) {
      out.push('DRADeviceTaints');
      break;
    }
  }
  for (let i = 0; i < sent.length && i < stored.length; i++) {
    if ((sent[i]!.consumesCounters?.length ?? 0) > (stored[i]!.consumesCounters?.length ?? 0)) {
      out.push('DRAPartitionableDevices');
      break;
    }
  }
  for (let i = 0; i < sent.length && i < stored.length; i++) {
    if ((sent[i]!.bindingConditions?.length ?? 0) > (stored[i]!.bindingConditions?.length ?? 0)) {
      out.push('DRADeviceBindingConditions');
      break;
    }
  }
  return out.length ? out : ['unknown'];
}

/**
 * What the publisher remembers across passes: the last generation written per pool (a pool whose
 * objects someone deleted — the kubelet wipes a node's slices when it starts — comes back at a
 * higher generation, never a lower one a stale cache could prefer), and, per object, what the API
 * server stored for what we sent when the two differ (dropped fields).
 */
export interface PublisherMemory {
  generations: Map<string, number>;
  /** `<resource pool>\n<index>` → the devices sent and the devices stored (devicesKey). */
  stored: Map<string, { sent: string; stored: string }>;
}

export function newPublisherMemory(): PublisherMemory {
  return { generations: new Map(), stored: new Map() };
}

/** Drops what is remembered about objects `from` and beyond of a pool. */
function forget(mem: PublisherMemory, poolName: string, from: number): void {
  for (const k of mem.stored.keys()) {
    const nl = k.lastIndexOf('\n');
    if (k.slice(0, nl) === poolName && Number(k.slice(nl + 1)) >= from) mem.stored.delete(k);
  }
}

/**
 * One reconcile pass (exported for tests). `memory` (or a bare generations map, as before) carries
 * what {@link PublisherMemory} says across passes; `onDropped` hears of fields the API server dropped.
 */
export async function syncResourceSlices(
  store: ResourceSliceStore, node: string, desired: readonly PoolContent[], nodeUid?: string,
  memory?: PublisherMemory | Map<string, number>, onDropped?: (d: DroppedFields) => void,
): Promise<SyncResult> {
  const mem: PublisherMemory = memory instanceof Map ? { generations: memory, stored: new Map() } : (memory ?? newPublisherMemory());
  const result: SyncResult = { created: [], updated: [], deleted: [], generations: {} };
  const existing = await store.list();
  const byPool = new Map<string, ResourceSliceObject[]>();
  for (const e of existing) byPool.set(e.spec.pool.name, [...(byPool.get(e.spec.pool.name) ?? []), e]);
  for (const content of desired) {
    const ex = byPool.get(content.poolName) ?? [];
    byPool.delete(content.poolName);
    const objects = poolObjects(content);
    const count = objects.length;
    const current = ex.length ? Math.max(...ex.map((e) => e.spec.pool.generation)) : 0;
    // Match existing objects to the desired ones by the index at the front of their names; an
    // older generation, a name without a usable index or a second object for one index is obsolete.
    const matched = new Map<number, ResourceSliceObject>();
    const obsolete: ResourceSliceObject[] = [];
    for (const e of ex) {
      const i = e.metadata.name === undefined ? undefined : resourceSliceIndex(e.metadata.name, count);
      if (e.spec.pool.generation < current || i === undefined || i >= count || matched.has(i)) obsolete.push(e);
      else matched.set(i, e);
    }
    const key = (i: number): string => `${content.poolName}\n${i}`;
    const same = obsolete.length === 0 && matched.size === count && objects.every((body, i) => {
      const e = matched.get(i)!;
      if (e.spec.pool.resourceSliceCount !== count) return false;
      const want = objectKey(body);
      const have = objectKey(e);
      if (have === want) return true;
      const s = mem.stored.get(key(i)); // the API server cannot store what we want: what it stored is "the same"
      return s !== undefined && s.sent === want && s.stored === have;
    });
    if (same) {
      mem.generations.set(content.poolName, Math.max(current, mem.generations.get(content.poolName) ?? 0));
      continue;
    }
    const generation = Math.max(current, mem.generations.get(content.poolName) ?? 0) + 1;
    const wanted = resourceSlicesFor(node, content, generation, nodeUid);
    for (const [i, w] of wanted.entries()) {
      const e = matched.get(i);
      let stored: ResourceSliceObject | void;
      if (e) {
        const { generateName: _g, ...meta } = w.metadata;
        stored = await store.update({ ...w, metadata: { ...meta, name: e.metadata.name!, ...(e.metadata.resourceVersion ? { resourceVersion: e.metadata.resourceVersion } : {}) } });
        result.updated.push(e.metadata.name!);
      } else {
        stored = await store.create(w);
        result.created.push(stored?.metadata.name ?? w.metadata.generateName!);
      }
      if (!stored) continue;
      const sent = objectKey(w);
      const got = objectKey(stored);
      if (sent === got) {
        mem.stored.delete(key(i));
      } else {
        mem.stored.set(key(i), { sent, stored: got });
        onDropped?.({ pool: content.pool, poolName: content.poolName, index: i, features: droppedFeatures(w.spec.devices ?? [], stored.spec.devices ?? []) });
      }
    }
    for (const e of obsolete) {
      await store.remove(e.metadata.name!);
      result.deleted.push(e.metadata.name!);
    }
    forget(mem, content.poolName, count);
    result.generations[content.pool] = generation;
    mem.generations.set(content.poolName, generation);
  }
  for (const [poolName, gone] of byPool) {
    forget(mem, poolName, 0);
    for (const e of gone) {
      await store.remove(e.metadata.name!);
      result.deleted.push(e.metadata.name!);
    }
  }
  return result;
}

export interface PublisherOptions {
  store: ResourceSliceStore;
  node: string;
  nodeUid?: () => Promise<string | undefined>;
  logger: Logger;
  /** The API server stored an object without some fields we sent (reported once per object and content). */
  onDroppedFields?: (d: DroppedFields) => void;
  /** Full re-list period (default 30 s). */
  resyncMs?: number;
}

/** Runs {@link syncResourceSlices} whenever the desired pools change, on a timer, and after errors (with backoff). */
export class ResourceSlicePublisher {
  private desired: PoolContent[] | undefined;
  private dirty = false;
  private wake: (() => void) | undefined;
  private readonly log: Logger;
  private readonly memory = newPublisherMemory();
  /** Result of the last successful pass, and the last error (for status and tests). */
  lastResult: SyncResult | undefined;
  lastError: string | undefined;
  passes = 0;
  /** The last drop reported (status and tests). */
  lastDropped: DroppedFields | undefined;

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
      let failed = false;
      if (this.desired) {
        this.dirty = false;
        try {
          uid ??= await this.opts.nodeUid?.();
          const r = await syncResourceSlices(this.opts.store, this.opts.node, this.desired, uid, this.memory, (d) => {
            this.log.error({ ...d }, `the API server dropped fields of ResourceSlice #${d.index} of pool ${d.poolName}, probably because these features are off: ${d.features.join(', ')}`);
            this.lastDropped = d;
            this.opts.onDroppedFields?.(d);
          });
          this.passes++;
          this.lastResult = r;
          this.lastError = undefined;
          delay = 500;
          if (r.created.length || r.updated.length || r.deleted.length) this.log.info({ ...r }, 'ResourceSlices written');
        } catch (err) {
          this.lastError = String(err);
          this.dirty = true;
          failed = true;
          wait = delay;
          delay = Math.min(delay * 2, 30_000);
          this.log.warn({ err: String(err), retryInMs: wait }, 'publishing ResourceSlices failed');
        }
      }
      // Another pass at once only when there is something to write: a kick before the first desired
      // state (the kubelet may register us before the agent's first cycle) must not spin.
      // (A failed pass waits its backoff even once that has grown to the resync period.)
      if (this.dirty && this.desired && !failed) continue;
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
