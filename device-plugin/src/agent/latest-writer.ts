// Writes the newest of what it is given to the API server, once it differs from what was last
// written; a failed write is retried with backoff (1 s doubling to 30 s), and only the newest value
// is ever retried. The agent's VirtualIONode status and its VirtualIONodeAck both go through it.
import type { Logger } from '../log.js';

export abstract class LatestWriter<T> {
  protected pending: T | undefined;
  /** Key (see key()) of the last value written successfully. */
  protected written = '';
  /** Successful writes (for tests and metrics). */
  writes = 0;
  /** Whether the last write failed. */
  failing = false;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = false;
  private backoffMs = 0;

  constructor(
    protected readonly log: Logger,
    protected readonly signal: AbortSignal,
    /** Wait after a submit (and after a write, before the next) so that bursts coalesce. */
    private readonly debounceMs: number,
    /** What is written, for the retry warning ("VirtualIONode status"). */
    private readonly what: string,
  ) {
    signal.addEventListener('abort', () => this.timer && clearTimeout(this.timer), { once: true });
  }

  /** What identifies a value's content (equal keys: no write). */
  protected abstract key(value: T): string;
  protected abstract write(value: T): Promise<void>;
  /** How long to hold the pending value back before writing it (0: now). */
  protected holdMs(): number {
    return 0;
  }

  /** Forgets what was written (the object was re-created): the next value is written whatever it is. */
  reset(): void {
    this.written = '';
  }

  /** Makes `value` the one to write and schedules the write. */
  protected queue(value: T): void {
    this.pending = value;
    this.schedule(this.debounceMs);
  }

  private schedule(ms: number): void {
    if (this.timer || this.inFlight || this.signal.aborted) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async flush(): Promise<void> {
    const value = this.pending;
    if (value === undefined || this.signal.aborted) return;
    const hold = this.holdMs();
    if (hold > 0) {
      this.schedule(hold);
      return;
    }
    const key = this.key(value);
    if (key === this.written) {
      this.pending = undefined;
      return;
    }
    this.inFlight = true;
    try {
      await this.write(value);
      this.written = key;
      this.writes++;
      this.failing = false;
      this.backoffMs = 0;
      if (this.pending === value) this.pending = undefined;
    } catch (err) {
      this.failing = true;
      this.backoffMs = Math.min(Math.max(1000, this.backoffMs * 2), 30_000);
      this.log.warn({ err: String(err), retryInMs: this.backoffMs }, `cannot write ${this.what}; retrying`);
    } finally {
      this.inFlight = false;
    }
    if (this.pending !== undefined) this.schedule(this.backoffMs || this.debounceMs);
  }
}
