// The reconcile contract (controller-runtime's, in TypeScript): reconcile(key, signal) → Result.
// Success with no requeue forgets the key's backoff; `requeueAfterMs` polls; a thrown error backs
// off per key; a TerminalError is logged and not retried until the key is added again.

export interface Result {
  /** Reconcile the key again after this many milliseconds (for polling external state). */
  requeueAfterMs?: number;
}

export const done: Result = Object.freeze({});

/** An error that retrying cannot fix (e.g. an invalid spec); the key is not requeued. */
export class TerminalError extends Error {
  override readonly name = 'TerminalError';
}

/** Reconciles one key to the desired state. Must be idempotent and level-based. */
export interface Reconciler {
  reconcile(key: string, signal: AbortSignal): Promise<Result>;
}
