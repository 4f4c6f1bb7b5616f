// A work queue of keys in the client-go mould: it de-duplicates (a key added many times before it
// is worked is worked once), it is stingy (a key is never handed to two workers at once; a key
// added while being worked is queued again when `done` is called), and it backs off per key.
import type { CancelTimer, Clock } from './clock.js';

export interface WorkQueueOptions {
  clock: Clock;
  /** First retry delay after a failure (doubles per consecutive failure). Default 5 ms. */
  baseDelayMs?: number;
  /** Longest retry delay. Default 5 minutes. */
  maxDelayMs?: number;
}

/**
 * De-duplicating, per-key rate-limited work queue. Not thread-safe in the Go sense, but safe for
 * any number of async workers on one event loop.
 */
export class WorkQueue {
  private readonly clock: Clock;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  /** Keys ready to be handed out, in insertion order. */
  private readonly ready = new Set<string>();
  /** Keys that need work (ready or waiting for their worker to call done). */
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { at: number; cancel: CancelTimer }>();
  private readonly failures = new Map<string, number>();
  private waiters: ((key: string | undefined) => void)[] = [];
  private closed = false;

  constructor(opts: WorkQueueOptions) {
    this.clock = opts.clock;
    this.baseDelayMs = opts.baseDelayMs ?? 5;
    this.maxDelayMs = opts.maxDelayMs ?? 5 * 60_000;
  }

  /** Marks `key` as needing work. A no-op when it already waits or after shutdown. */
  add(key: string): void {
    if (this.closed || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    this.push(key);
  }

  /**
   * Adds `key` after `ms`. When the key already has an earlier pending delayed add, that one
   * stands (so repeated calls debounce rather than postpone forever).
   */
  addAfter(key: string, ms: number): void {
    if (this.closed) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.clock.now() + ms;
    const pending = this.delayed.get(key);
    if (pending && pending.at <= at) return;
    pending?.cancel();
    const cancel = this.clock.setTimer(ms, () => {
      this.delayed.delete(key);
      this.add(key);
    });
    this.delayed.set(key, { at, cancel });
  }

  /** Adds `key` after its backoff: base × 2^(failures so far), capped. */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.addAfter(key, this.backoffFor(n));
  }

  /** The delay the n-th consecutive failure (0-based) waits. */
  backoffFor(n: number): number {
    return Math.min(this.baseDelayMs * 2 ** Math.min(n, 40), this.maxDelayMs);
  }

  /** Clears the failure count of `key` (call after a success). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  /** Consecutive failures recorded for `key`. */
  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /**
   * Waits for the next key and marks it as being processed. Resolves undefined once the queue is
   * shut down or `signal` aborts. Every key received must be passed to `done`.
   */
  get(signal?: AbortSignal): Promise<string | undefined> {
    if (this.closed || signal?.aborted) return Promise.resolve(undefined);
    const key = this.take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => {
      const waiter = (k: string | undefined) => {
        signal?.removeEventListener('abort', onAbort);
        resolve(k);
      };
      const onAbort = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(undefined);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Ends the processing of `key`; if it was added meanwhile it goes back into the queue. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.closed) this.push(key);
  }

  /** Keys waiting to be worked (not counting delayed adds or keys being worked). */
  len(): number {
    return this.ready.size;
  }

  /** Keys being worked right now. */
  inFlight(): number {
    return this.processing.size;
  }

  /** Stops the queue: waiting `get` calls resolve undefined, delayed adds are cancelled. */
  shutDown(): void {
    this.closed = true;
    for (const d of this.delayed.values()) d.cancel();
    this.delayed.clear();
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) w(undefined);
  }

  get isShutDown(): boolean {
    return this.closed;
  }

  private push(key: string): void {
    const w = this.waiters.shift();
    if (w) {
      this.dirty.delete(key);
      this.processing.add(key);
      w(key);
    } else {
      this.ready.add(key);
    }
  }

  private take(): string | undefined {
    const it = this.ready.values().next();
    if (it.done) return undefined;
    const key = it.value;
    this.ready.delete(key);
    this.dirty.delete(key);
    this.processing.add(key);
    return key;
  }
}
