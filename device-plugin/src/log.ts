// The agent's logger: pino JSON lines on stdout. Modules get child loggers with a `component` field.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** True when `level` is a pino level name. */
export function isLogLevel(level: string): level is LevelWithSilent {
  return LEVELS.includes(level);
}

/**
 * Creates the root logger. `destination` defaults to stdout (fd 1) with synchronous writes so that
 * the last lines before a shutdown are never lost.
 */
export function createLogger(level: LevelWithSilent, destination?: NodeJS.WritableStream): Logger {
  const dest = destination ?? pino.destination({ dest: 1, sync: true });
  return pino({ level, base: { app: 'virtualio-agent' }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
