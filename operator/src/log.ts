// pino JSON logs in Kubernetes style: constant, capitalized messages; data in fields; errors under `err`.
import pino, { type Logger } from 'pino';

/** The root logger of the operator process, writing JSON lines to stdout. */
export function createLogger(level: string, base: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { component: 'virtualio-operator', ...base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    serializers: { err: pino.stdSerializers.errWithCause },
  });
}
