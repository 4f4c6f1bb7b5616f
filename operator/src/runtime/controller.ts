// Runs a reconciler over a work queue with N async workers until the signal aborts.
import type { Logger } from 'pino';
import { isKubeError } from '../kube/errors.js';
import type { Clock } from './clock.js';
import { TerminalError, type Reconciler } from './result.js';
import type { WorkQueue } from './workqueue.js';

/** What the controller reports per reconcile (for metrics). */
export interface ControllerObserver {
  reconciled(controller: string, seconds: number, outcome: 'success' | 'requeue' | 'error' | 'terminal', errorKind?: string): void;
}

export interface ControllerOptions {
  name: string;
  queue: WorkQueue;
  reconciler: Reconciler;
  /** Concurrent workers; one key is never worked by two of them. */
  workers: number;
  clock: Clock;
  log: Logger;
  observer?: ControllerObserver;
}

/**
 * Works keys until `signal` aborts; then stops taking keys, waits for in-flight reconciles and
 * shuts the queue down. Errors: a TerminalError forgets the key; a KubeError Conflict or any other
 * error re-adds it with per-key backoff; `requeueAfterMs` re-adds it after that delay.
 */
export async function runController(opts: ControllerOptions, signal: AbortSignal): Promise<void> {
  const { name, queue, reconciler, clock, log, observer } = opts;
  const onAbort = () => queue.shutDown();
  signal.addEventListener('abort', onAbort, { once: true });
  const worker = async () => {
    for (;;) {
      const key = await queue.get(signal);
      if (key === undefined) return;
      const started = clock.now();
      const seconds = () => (clock.now() - started) / 1000;
      try {
        const result = await reconciler.reconcile(key, signal);
        queue.forget(key);
        if (result.requeueAfterMs !== undefined && result.requeueAfterMs >= 0) {
          queue.addAfter(key, result.requeueAfterMs);
          observer?.reconciled(name, seconds(), 'requeue');
        } else {
          observer?.reconciled(name, seconds(), 'success');
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof TerminalError) {
          queue.forget(key);
          observer?.reconciled(name, seconds(), 'terminal', 'Terminal');
          log.error({ err, key }, 'Reconcile failed permanently');
        } else {
          const kind = isKubeError(err) ? err.kind : 'Internal';
          const retries = queue.numRequeues(key);
          queue.addRateLimited(key);
          observer?.reconciled(name, seconds(), 'error', kind);
          // Optimistic-concurrency conflicts are routine; log them quietly.
          if (kind === 'Conflict') log.debug({ err, key, retries }, 'Reconcile hit a conflict; retrying');
          else log.warn({ err, key, retries }, 'Reconcile failed; retrying with backoff');
        }
      } finally {
        queue.done(key);
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, opts.workers) }, worker));
  } finally {
    signal.removeEventListener('abort', onAbort);
    queue.shutDown();
  }
}
