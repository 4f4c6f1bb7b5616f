// Per-write retry backoff for carving: a sysfs write the kernel refused (same path, same value) is
// not tried again until its delay has passed, doubling from `initialMs` up to `maxMs`. Writes of
// other paths or values are unaffected. Time comes from the caller (a monotonic clock in ms).
import type { SysfsWrite } from '../model.js';

/** Options of {@link WriteBackoff}. */
export interface BackoffOptions {
  /** First delay after a failure (default 1 s). */
  initialMs?: number;
  /** Longest delay (default 5 min). */
  maxMs?: number;
}

/** One write waiting for its next attempt. */
export interface DeferredWrite {
  write: SysfsWrite;
  /** The kernel's last refusal. */
  error: string;
  /** Consecutive failures so far. */
  failures: number;
  /** Milliseconds until the next attempt (from the `now` given to {@link WriteBackoff.partition}). */
  retryInMs: number;
}

interface Entry {
  failures: number;
  error: string;
  nextAt: number;
}

const keyOf = (w: SysfsWrite): string => `${w.path}\0${w.value}`;

/**
 * Remembers failed writes by (path, value). {@link partition} splits a plan's writes into those
 * due now and those still backing off; once a write of a `group` is deferred, the later writes of
 * that group are deferred with it (they depend on it). Success of a write forgets it; {@link reset}
 * forgets everything (the plan changed).
 */
export class WriteBackoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly entries = new Map<string, Entry>();

  constructor(opts: BackoffOptions = {}) {
    this.initialMs = opts.initialMs ?? 1000;
    this.maxMs = opts.maxMs ?? 300_000;
  }

  /**
   * Splits `writes` (in order) into `due` and `deferred`. With `prune`, entries for writes that
   * are no longer planned are forgotten (pass the complete plan of a round).
   */
  partition(writes: readonly SysfsWrite[], now: number, prune = false): { due: SysfsWrite[]; deferred: DeferredWrite[] } {
    if (prune) {
      const planned = new Set(writes.map(keyOf));
      for (const k of [...this.entries.keys()]) if (!planned.has(k)) this.entries.delete(k);
    }
    const due: SysfsWrite[] = [];
    const deferred: DeferredWrite[] = [];
    const heldGroups = new Map<string, Entry>();
    for (const write of writes) {
      const e = this.entries.get(keyOf(write));
      if (e && e.nextAt > now) {
        deferred.push({ write, error: e.error, failures: e.failures, retryInMs: e.nextAt - now });
        if (write.group !== undefined && !heldGroups.has(write.group)) heldGroups.set(write.group, e);
        continue;
      }
      const g = write.group !== undefined ? heldGroups.get(write.group) : undefined;
      if (g) continue; // waits behind an earlier write of its group; reported through that write
      due.push(write);
    }
    return { due, deferred };
  }

  /**
   * Records a refusal of `write` at `now`; returns the delay before the next attempt. The errno
   * `code` picks the schedule ({@link errnoClass}): a busy or stuck device is tried again soon
   * (capped at 30 s), a refusal that only a plan or hardware change can cure starts at 30 s.
   */
  failed(write: SysfsWrite, error: string, now: number, code?: string): number {
    const k = keyOf(write);
    const failures = (this.entries.get(k)?.failures ?? 0) + 1;
    const cls = errnoClass(code);
    const first = cls === 'refused' ? Math.max(this.initialMs, 30_000) : this.initialMs;
    const cap = cls === 'busy' ? Math.min(this.maxMs, 30_000) : this.maxMs;
    const delay = Math.min(cap, first * 2 ** Math.min(failures - 1, 30));
    this.entries.set(k, { failures, error, nextAt: now + delay });
    return delay;
  }

  /** Forgets `write` (it succeeded). */
  succeeded(write: SysfsWrite): void {
    this.entries.delete(keyOf(write));
  }

  /** Forgets every failure (the plan changed). */
  reset(): void {
    this.entries.clear();
  }

  /** When the earliest backed-off write becomes due, or undefined when none waits. */
  nextDue(): number | undefined {
    let min: number | undefined;
    for (const e of this.entries.values()) if (min === undefined || e.nextAt < min) min = e.nextAt;
    return min;
  }
}

/**
 * How a failed sysfs write is retried, by errno: `busy` (the device is in use or a write has not
 * returned: EBUSY, EAGAIN, ETIMEDOUT, ESTUCK) soon and often; `refused` (the kernel rejects the
 * value or the operation: EINVAL, EOPNOTSUPP, EPERM, EACCES, EROFS, ENODEV, ENXIO) rarely, since
 * only a plan or hardware change cures it; anything else (EIO, ENOENT, ...) with plain doubling.
 */
export function errnoClass(code: string | undefined): 'busy' | 'refused' | 'other' {
  switch (code) {
    case 'EBUSY':
    case 'EAGAIN':
    case 'ETIMEDOUT':
    case 'ESTUCK':
      return 'busy';
    case 'EINVAL':
    case 'EOPNOTSUPP':
    case 'ENOTSUP':
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
    case 'ENODEV':
    case 'ENXIO':
      return 'refused';
    default:
      return 'other';
  }
}
