// An informer: a local cache of one resource kept current by a list-then-watch source (the port's
// listWatch, which keeps no objects of its own), plus:
// * the list in pages (`pageSize` items a call), each item reduced by `transform` as its page
//   arrives, so neither a whole raw list nor a second raw copy of the cache is ever held;
// * restart with exponential backoff after an error (the source stops on any non-410 error);
// * a watchdog: when nothing has arrived for `silenceMs` (no event, bookmark or reconnection), the
//   watch may be silently dead (half-open TCP), so the informer throws the source away and re-lists;
// * deletions noticed on a re-list are delivered like watch deletions;
// * handlers get the previous object too, so they can map both old and new owners to keys.
import type { Logger } from 'pino';
import type { KubeObject, KubePort, ListOptions, ListResult, ListWatchSource, ResourceType } from '../kube/ports.js';
import type { CancelTimer, Clock } from './clock.js';

/** Called for every change: `obj` is undefined on delete, `old` undefined on add. */
export type ChangeHandler<T> = (obj: T | undefined, old: T | undefined) => void;

export interface InformerObserver {
  restarted(resource: string, reason: 'error' | 'silence'): void;
}

export interface InformerOptions<T extends KubeObject = KubeObject> {
  kube: KubePort;
  resource: ResourceType;
  list?: ListOptions;
  clock: Clock;
  log: Logger;
  /** Re-list when no event, bookmark, reconnection or list has arrived for this long. Default 5 minutes. */
  silenceMs?: number;
  /**
   * Items per list call (limit/continue). Default 50, not client-go's 500: a page's text and its
   * parsed objects are the operator's peak memory at a cold start (VirtualIONodes carry their
   * inventories); at 1,000 nodes VmHWM at the cold start went 184 → 161 → 145 MiB for 500 → 100 →
   * 50 (BENCHMARKS.md), for 20 list calls instead of 2.
   */
  pageSize?: number;
  /** First restart delay after an error (doubles up to maxBackoffMs). Default 500 ms. */
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  observer?: InformerObserver;
  /**
   * Reduces each object before it is cached (e.g. keep only Node metadata). Must keep
   * metadata.name, namespace and resourceVersion.
   */
  transform?: (obj: T) => T;
}

export function objectKey(obj: KubeObject): string {
  return obj.metadata.namespace ? `${obj.metadata.namespace}/${obj.metadata.name}` : obj.metadata.name;
}

/**
 * Cache + change notifications for one resource. `run(signal)` keeps it current until the signal
 * aborts. Objects handed out are the cache's own: never mutate them (structuredClone first).
 */
export class Informer<T extends KubeObject> {
  private readonly store = new Map<string, T>();
  private readonly handlers: ChangeHandler<T>[] = [];
  private source: ListWatchSource<T> | undefined;
  private generation = 0;
  private lastActivity = 0;
  private failures = 0;
  private syncedFlag = false;
  private syncedResolve!: () => void;
  private readonly syncedPromise: Promise<void>;
  private signal: AbortSignal | undefined;
  private retryTimer: CancelTimer | undefined;
  private readonly silenceMs: number;
  private readonly baseBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly opts: InformerOptions<T>) {
    this.silenceMs = opts.silenceMs ?? 5 * 60_000;
    this.baseBackoffMs = opts.baseBackoffMs ?? 500;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
    this.syncedPromise = new Promise((r) => (this.syncedResolve = r));
  }

  get resource(): ResourceType {
    return this.opts.resource;
  }

  onChange(handler: ChangeHandler<T>): void {
    this.handlers.push(handler);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.store.get(namespace ? `${namespace}/${name}` : name);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  get size(): number {
    return this.store.size;
  }

  /** True once the first full list has been delivered. */
  get hasSynced(): boolean {
    return this.syncedFlag;
  }

  /** Resolves once the first full list has been delivered. */
  synced(): Promise<void> {
    return this.syncedPromise;
  }

  /** Starts listing and watching; resolves when `signal` aborts and the watch has stopped. */
  async run(signal: AbortSignal): Promise<void> {
    this.signal = signal;
    this.lastActivity = this.opts.clock.now();
    this.startSource();
    const period = Math.max(10, Math.floor(this.silenceMs / 4));
    let cancelWatchdog: CancelTimer | undefined;
    const watchdog = () => {
      if (signal.aborted) return;
      if (this.opts.clock.now() - this.lastActivity >= this.silenceMs) {
        this.opts.log.warn({ resource: this.opts.resource.plural, silenceMs: this.silenceMs }, 'Watch was silent; re-listing');
        this.opts.observer?.restarted(this.opts.resource.plural, 'silence');
        this.lastActivity = this.opts.clock.now();
        this.startSource();
      }
      cancelWatchdog = this.opts.clock.setTimer(period, watchdog);
    };
    cancelWatchdog = this.opts.clock.setTimer(period, watchdog);
    await new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
    cancelWatchdog?.();
    this.retryTimer?.();
    this.generation++;
    await this.source?.stop();
    this.source = undefined;
  }

  /** Replaces the source with a fresh one (which lists first). */
  private startSource(): void {
    const old = this.source;
    const gen = ++this.generation;
    this.retryTimer?.();
    void old?.stop();
    const { kube, resource } = this.opts;
    const src = kube.listWatch<T>(resource, this.opts.list ?? {}, () => this.relist(gen));
    this.source = src;
    src.on('add', (o) => gen === this.generation && this.upsert(o));
    src.on('update', (o) => gen === this.generation && this.upsert(o));
    src.on('delete', (o) => gen === this.generation && this.remove(o));
    src.on('error', (err) => gen === this.generation && this.onError(err, src, gen));
    src.on('connect', () => {
      if (gen === this.generation) this.lastActivity = this.opts.clock.now();
    });
    void src.start().catch((err: unknown) => gen === this.generation && this.onError(err, src, gen));
  }

  /**
   * Lists page by page, reducing each item as its page arrives; then delivers the deletions the list
   * shows and the listed objects (an unchanged resourceVersion delivers nothing). Returns the list's
   * resourceVersion for the source to watch from.
   */
  private async relist(gen: number): Promise<string> {
    const { kube, resource, transform } = this.opts;
    const items: T[] = [];
    let resourceVersion: string | undefined;
    let cont: string | undefined;
    do {
      const page: ListResult<T> = await kube.list<T>(resource, { ...this.opts.list, limit: this.opts.pageSize ?? 50, continue: cont });
      if (gen !== this.generation) return page.resourceVersion;
      this.touch();
      // Every page is read at the first page's resourceVersion; the watch resumes from it.
      resourceVersion ??= page.resourceVersion;
      for (const raw of page.items) items.push(transform ? transform(raw) : raw);
      cont = page.continue || undefined;
    } while (cont);
    const present = new Set(items.map(objectKey));
    for (const [key, old] of [...this.store]) {
      if (!present.has(key)) {
        this.store.delete(key);
        this.emit(undefined, old);
      }
    }
    for (const obj of items) this.put(obj);
    // Resolved once the source has gone on to open its watch, as a caller that waits for the sync
    // (tests, the bench) expects the watch to be open by then.
    if (!this.syncedFlag) {
      setImmediate(() => {
        if (this.syncedFlag) return;
        this.syncedFlag = true;
        this.syncedResolve();
      });
    }
    return resourceVersion ?? '';
  }

  private touch(): void {
    this.lastActivity = this.opts.clock.now();
    this.failures = 0;
  }

  private upsert(raw: T): void {
    this.touch();
    this.put(this.opts.transform ? this.opts.transform(raw) : raw);
  }

  private put(obj: T): void {
    const key = objectKey(obj);
    const old = this.store.get(key);
    if (old && old.metadata.resourceVersion === obj.metadata.resourceVersion) return;
    this.store.set(key, obj);
    this.emit(obj, old);
  }

  private remove(obj: T): void {
    this.touch();
    const key = objectKey(obj);
    const old = this.store.get(key);
    if (!old) return;
    this.store.delete(key);
    this.emit(undefined, old);
  }

  private emit(obj: T | undefined, old: T | undefined): void {
    for (const h of this.handlers) {
      try {
        h(obj, old);
      } catch (err) {
        this.opts.log.error({ err, resource: this.opts.resource.plural }, 'Change handler failed');
      }
    }
  }

  private onError(err: unknown, src: ListWatchSource<T>, gen: number): void {
    if (this.signal?.aborted) return;
    const delay = Math.min(this.baseBackoffMs * 2 ** Math.min(this.failures, 20), this.maxBackoffMs);
    this.failures++;
    this.opts.log.warn({ err, resource: this.opts.resource.plural, delayMs: delay }, 'Watch failed; restarting');
    this.opts.observer?.restarted(this.opts.resource.plural, 'error');
    this.retryTimer?.();
    this.retryTimer = this.opts.clock.setTimer(delay, () => {
      if (gen !== this.generation || this.signal?.aborted) return;
      // Resume from the last resourceVersion; the source re-lists by itself on 410 Gone.
      void src.start().catch((e: unknown) => gen === this.generation && this.onError(e, src, gen));
    });
  }
}
