// One watch request of the agent, ended by the API server on a schedule rather than by silence.
//
// client-node's Watch aborts a request that has carried no byte for 30 s and reports that as an
// error. A watch on quiet objects (one VirtualIONode, the cluster's ResourceClaims at night) is
// silent for longer than that, so every watch ended in an "error" every 30 s and the agent listed
// again: three requests per watch every 30 s on every node, where one per minute does. Here the
// server closes the watch after `timeoutSeconds` (jittered, as client-go's reflector does, so the
// nodes of a cluster do not re-watch in step), which is a normal end the caller resumes from the
// last resourceVersion it saw, and the client's silence limit is set above that, so only a
// connection that really went dead is reported as an error.
import { Watch, type KubeConfig } from '@kubernetes/client-node';

/** Server-side lifetime of one watch request: 60–90 s. */
export const WATCH_SECONDS_MIN = 60;
const WATCH_SECONDS_JITTER = 30;
/** Silence after which the client gives up on a watch: past the server's end plus a margin. */
export const WATCH_SILENCE_LIMIT_MS = (WATCH_SECONDS_MIN + WATCH_SECONDS_JITTER + 30) * 1000;

export interface WatchEvent {
  type: string;
  object: unknown;
}

export interface WatchTiming {
  /** The server's end of the request (query parameter `timeoutSeconds`). */
  timeoutSeconds: number;
  /** Silence after which the client gives up. */
  silenceLimitMs: number;
}

const defaultTiming = (): WatchTiming => ({ timeoutSeconds: WATCH_SECONDS_MIN + Math.floor(Math.random() * WATCH_SECONDS_JITTER), silenceLimitMs: WATCH_SILENCE_LIMIT_MS });

/**
 * Runs one watch request until the server ends it (resolves undefined), it fails (resolves the
 * error) or `signal` aborts it (resolves undefined). `params` are the watch's query parameters;
 * `timeoutSeconds` is added.
 */
export function watchOnce(
  kc: KubeConfig,
  path: string,
  params: Record<string, string | boolean | undefined>,
  onEvent: (type: string, obj: unknown) => void,
  signal: AbortSignal,
  timing: WatchTiming = defaultTiming(),
): Promise<unknown> {
  const w = new Watch(kc);
  // client-node declares the silence limit private; watch.test.ts fails if a new version renames it.
  (w as unknown as { requestTimeoutMs: number }).requestTimeoutMs = timing.silenceLimitMs;
  const { timeoutSeconds } = timing;
  return new Promise<unknown>((resolve) => {
    let ctl: AbortController | undefined;
    const stop = (): void => ctl?.abort();
    signal.addEventListener('abort', stop, { once: true });
    const done = (err: unknown): void => {
      signal.removeEventListener('abort', stop);
      resolve(signal.aborted ? undefined : (err ?? undefined));
    };
    w.watch(path, { ...params, timeoutSeconds }, (type: string, obj: unknown) => onEvent(type, obj), done).then((c) => {
      ctl = c;
      if (signal.aborted) c.abort();
    }, done);
  });
}
