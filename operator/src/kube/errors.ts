// API errors classified at the boundary into a small union (STYLE P10). The adapter and the fake
// throw only KubeError; reconcilers switch on `kind`.

export type KubeErrorKind = 'NotFound' | 'Conflict' | 'AlreadyExists' | 'Forbidden' | 'Invalid' | 'Gone' | 'Transient';

/** An API call that failed, with its HTTP status code (0 for transport errors). */
export class KubeError extends Error {
  override readonly name = 'KubeError';
  // Plain fields, not parameter properties: scripts and the benchmarks run this file with Node's
  // type stripping (test/support/operator-integration.ts imports it), which has no transform for those.
  readonly kind: KubeErrorKind;
  readonly code: number;
  constructor(kind: KubeErrorKind, code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.code = code;
  }
}

/**
 * Maps an HTTP status (and the Status reason when known) to an error kind. 409 is AlreadyExists for
 * a create, Conflict otherwise; 5xx, 429 and transport failures (code 0) are Transient.
 */
export function classifyStatus(code: number, reason?: string): KubeErrorKind {
  switch (code) {
    case 404:
      return 'NotFound';
    case 409:
      return reason === 'AlreadyExists' ? 'AlreadyExists' : 'Conflict';
    case 401:
    case 403:
      return 'Forbidden';
    case 400:
    case 422:
      return 'Invalid';
    case 410:
      return 'Gone';
    default:
      return 'Transient';
  }
}

export function isKubeError(err: unknown, kind?: KubeErrorKind): err is KubeError {
  return err instanceof KubeError && (kind === undefined || err.kind === kind);
}
