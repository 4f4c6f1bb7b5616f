// pino JSON logs in Kubernetes style: constant, capitalized messages; data in fields; errors under `err`.
import pino, { type Logger } from 'pino';

/**
 * The root logger of the operator process, writing JSON lines to stdout synchronously, as the
 * agent's does. pino's default destination writes asynchronously and flushes the rest at exit; a
 * line whose write was still in flight then landed after later ones ("Released leader Lease" after
 * "Stopped virtualio operator", operator-failover in CI).
 */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { component: 'virtualio-operator', ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.errWithCause },
  }, pino.destination({ dest: 1, sync: true }));
}
