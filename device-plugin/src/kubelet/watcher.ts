// Watches the kubelet device plugin directory for the signs of a kubelet restart: our sockets
// removed, kubelet.sock (re)created. fs.watch gives the fast path; a cheap periodic stat is the
// fallback (fs.watch can miss events, e.g. when the directory itself is replaced). Listeners are
// level-triggered: they get "something may have changed" and compare identities themselves.
import { watch, statSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../log.js';

/** Identity of a file: inode + change time in ns; undefined when the path is absent. */
export function fileIdentity(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

/** Identity of a unix socket; undefined when absent or not a socket. */
export function socketIdentity(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return st.isSocket() ? `${st.dev}:${st.ino}:${st.ctimeNs}` : undefined;
  } catch {
    return undefined;
  }
}

export interface PluginDirWatcherOptions {
  dir: string;
  logger: Logger;
  signal: AbortSignal;
  /** Stat fallback period (default 250 ms, so a missed event still re-registers within a second). */
  pollMs?: number;
}

/** Notifies listeners of any change in the plugin directory (events, and every poll tick). */
export class PluginDirWatcher {
  readonly kubeletSocket: string;
  private readonly listeners = new Set<() => void>();
  private fsw: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastDirIdentity: string | undefined;

  constructor(private readonly opts: PluginDirWatcherOptions) {
    this.kubeletSocket = join(opts.dir, 'kubelet.sock');
    opts.signal.addEventListener('abort', () => this.close(), { once: true });
  }

  /** Starts watching (idempotent). */
  start(): void {
    if (this.timer || this.opts.signal.aborted) return;
    this.attach();
    this.timer = setInterval(() => this.tick(), this.opts.pollMs ?? 250);
    this.timer.unref();
  }

  /** Registers a listener; returns the function that removes it. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Identity of the current kubelet.sock (undefined when absent). */
  kubeletIdentity(): string | undefined {
    return socketIdentity(this.kubeletSocket);
  }

  private attach(): void {
    this.fsw?.close();
    this.fsw = undefined;
    this.lastDirIdentity = fileIdentity(this.opts.dir);
    try {
      this.fsw = watch(this.opts.dir, { persistent: false }, () => this.emit());
      this.fsw.on('error', (err) => {
        this.opts.logger.debug({ err }, 'plugin dir watch error; relying on polling');
        this.fsw?.close();
        this.fsw = undefined;
      });
    } catch (err) {
      this.opts.logger.debug({ err, dir: this.opts.dir }, 'cannot watch plugin dir yet; polling');
    }
  }

  private tick(): void {
    // Re-attach when the directory was replaced or appeared (the inotify watch would be stale).
    const id = fileIdentity(this.opts.dir);
    if (id !== this.lastDirIdentity || !this.fsw) this.attach();
    this.emit();
  }

  private emit(): void {
    for (const l of this.listeners) {
      try {
        l();
      } catch (err) {
        this.opts.logger.error({ err }, 'plugin dir listener failed');
      }
    }
  }

  /** Stops watching (idempotent). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.fsw?.close();
    this.fsw = undefined;
    this.listeners.clear();
  }
}
