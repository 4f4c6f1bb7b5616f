// The port's list-then-watch source over client-node's Watch (adapter side). Unlike client-node's
// ListWatch it keeps no objects: the informer above it holds the only (pruned) copy. It asks for
// bookmarks and follows their resourceVersion, so a resumed watch of a quiet resource starts from a
// recent point rather than one the API server may have compacted away (410, a full re-list).
import type { Watch } from '@kubernetes/client-node';
import type { KubeObject, ListWatchSource, WatchVerb } from './ports.js';

type Callback = (x: never) => void;

/** A watch the server ended sooner than this after it connected counts as a failure (no tight loop). */
const MIN_WATCH_MS = 1000;

export interface WatchSourceOptions {
  path: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Lists (the caller keeps the items) and returns the resourceVersion to watch from. */
  list: () => Promise<string>;
}

const isGone = (err: unknown) => {
  const e = err as { statusCode?: unknown; code?: unknown } | null;
  return e?.statusCode === 410 || e?.code === 410;
};

export class WatchSource<T extends KubeObject> implements ListWatchSource<T> {
  private readonly cbs: Record<string, Callback[]> = { add: [], update: [], delete: [], error: [], connect: [] };
  private rv = '';
  private request: AbortController | undefined;
  private stopped = false;
  /** Bumped by stop() and every (re)start: callbacks of an older watch are ignored. */
  private epoch = 0;

  constructor(private readonly watch: Watch, private readonly opts: WatchSourceOptions) {}

  on(verb: WatchVerb, cb: (obj: T) => void): void;
  on(verb: 'error' | 'connect', cb: (err?: unknown) => void): void;
  on(verb: WatchVerb | 'error' | 'connect', cb: (x: never) => void): void {
    this.cbs[verb]?.push(cb);
  }

  private fire(verb: string, x?: unknown): void {
    for (const cb of [...(this.cbs[verb] ?? [])]) (cb as (y: unknown) => void)(x);
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.epoch++;
    this.request?.abort();
    this.request = undefined;
  }

  private async connect(): Promise<void> {
    this.request?.abort();
    this.request = undefined;
    const epoch = ++this.epoch;
    if (this.stopped) return;
    this.fire('connect');
    if (!this.rv) {
      let rv: string;
      try {
        rv = await this.opts.list();
      } catch (err) {
        if (epoch === this.epoch) this.fire('error', err);
        return;
      }
      if (epoch !== this.epoch || this.stopped) return;
      this.rv = rv;
    }
    const query: Record<string, string> = { resourceVersion: this.rv, allowWatchBookmarks: 'true' };
    if (this.opts.labelSelector) query.labelSelector = this.opts.labelSelector;
    if (this.opts.fieldSelector) query.fieldSelector = this.opts.fieldSelector;
    const connectedAt = Date.now();
    const request = await this.watch.watch(this.opts.path, query,
      (phase: string, obj: T & { code?: number }) => {
        if (epoch === this.epoch) this.onEvent(phase, obj);
      },
      (err: unknown) => {
        if (epoch === this.epoch) this.onDone(err, connectedAt);
      });
    if (epoch === this.epoch) this.request = request;
    else request.abort();
  }

  private onEvent(phase: string, obj: T & { code?: number }): void {
    switch (phase) {
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        this.rv = obj.metadata?.resourceVersion ?? this.rv;
        this.fire(phase === 'ADDED' ? 'add' : phase === 'MODIFIED' ? 'update' : 'delete', obj);
        return;
      case 'BOOKMARK':
        this.rv = obj.metadata?.resourceVersion ?? this.rv;
        this.fire('connect');
        return;
      case 'ERROR':
        // 410 Gone: the resourceVersion was compacted away; the stream ends next and we list again.
        if (obj.code === 410) this.rv = '';
        return;
    }
  }

  private onDone(err: unknown, connectedAt: number): void {
    this.request = undefined;
    if (this.stopped) return;
    if (isGone(err)) this.rv = '';
    else if (err && (err as { name?: unknown }).name !== 'TimeoutError') {
      // client-node's own inactivity timeout (TimeoutError) just reconnects; anything else is the caller's.
      this.fire('error', err);
      return;
    } else if (!err && this.rv && Date.now() - connectedAt < MIN_WATCH_MS) {
      this.fire('error', new Error(`watch ${this.opts.path} ended ${Date.now() - connectedAt} ms after it started`));
      return;
    }
    void this.connect().catch((e: unknown) => this.fire('error', e));
  }
}
