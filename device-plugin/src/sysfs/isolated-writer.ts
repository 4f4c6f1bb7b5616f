// The production SysfsWriter: every write runs in a small child process (write-child), one write at
// a time, with a timeout. A write that does not return in time leaves its device "stuck": the
// child that is blocked in the kernel is abandoned (it reports and exits once the kernel lets go),
// a fresh child serves every other device at once, and further writes for the stuck device are
// refused with a clear reason until the blocked one returns. The agent's event loop and Node's
// shared file-operation thread pool never wait on the kernel.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { resolveUnderRoot, type SysfsWriter } from './writer.js';

/** A write that has not returned: its device is reported stuck until it does. */
export interface StuckWrite {
  /** The device (lane) the write was for, e.g. a PCI address. */
  lane: string;
  path: string;
  value: string;
  /** When the write was issued (ms, Date.now()). */
  since: number;
}

/** An errno-carrying error, as node's own fs errors are. */
export class SysfsWriteError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'SysfsWriteError';
  }
}

export interface IsolatedWriterOptions {
  root: string;
  /** How long a write may take before its device is reported stuck (default 5 s). */
  timeoutMs?: number;
  /** How long an idle child is kept (default 30 s). */
  idleMs?: number;
  /** Called when a stuck write finally returned (the caller should rescan). */
  onUnstuck?: (w: StuckWrite, error?: string) => void;
}

interface Pending {
  id: number;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  write: StuckWrite;
}

function childScript(): string {
  const js = fileURLToPath(new URL('./write-child.js', import.meta.url));
  if (existsSync(js)) return js;
  return fileURLToPath(new URL('./write-child.ts', import.meta.url)); // running from source (node strips types)
}

export class IsolatedSysfsWriter implements SysfsWriter {
  private child: ChildProcess | undefined;
  private pending: Pending | undefined;
  private queue: (() => void)[] = [];
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly stuckByLane = new Map<string, { write: StuckWrite; child: ChildProcess }>();
  private closed = false;
  private readonly script = childScript();
  private ready: Promise<ChildProcess> | undefined;

  constructor(private readonly opts: IsolatedWriterOptions) {}

  /** Writes that have not returned, oldest first. */
  stuck(): StuckWrite[] {
    return [...this.stuckByLane.values()].map((s) => s.write).sort((a, b) => a.since - b.since);
  }

  async write(relPath: string, value: string, opts: { lane?: string } = {}): Promise<void> {
    const lane = opts.lane ?? relPath;
    const file = resolveUnderRoot(this.opts.root, relPath);
    const stuck = this.stuckByLane.get(lane);
    if (stuck) {
      const secs = Math.round((Date.now() - stuck.write.since) / 1000);
      throw new SysfsWriteError(`${lane} is stuck: ${stuck.write.path}=${JSON.stringify(stuck.write.value)} has not returned for ${secs} s`, 'ESTUCK');
    }
    if (this.closed) throw new SysfsWriteError('writer closed (shutting down)', 'ECANCELED');
    // One write at a time through the current child: wait for our turn.
    while (this.pending) await new Promise<void>((r) => this.queue.push(r));
    let child: ChildProcess;
    try {
      child = await this.ensureChild();
    } catch (err) {
      this.queue.shift()?.();
      if (this.closed) throw new SysfsWriteError('writer closed (shutting down)', 'ECANCELED');
      throw new SysfsWriteError(`cannot start the sysfs write process: ${(err as Error).message}`, 'EIO');
    }
    return new Promise<void>((resolve, reject) => {
      const id = this.nextId++;
      const write: StuckWrite = { lane, path: relPath, value, since: Date.now() };
      const timeoutMs = this.opts.timeoutMs ?? 5000;
      const timer = setTimeout(() => this.abandon(child, id, timeoutMs), timeoutMs);
      this.pending = { id, resolve, reject, timer, write };
      if (this.idleTimer) clearTimeout(this.idleTimer);
      child.send({ id, file, value });
    });
  }

  /** Kills every child, including abandoned ones still blocked in the kernel. */
  close(): void {
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (this.pending) this.settle(this.pending.id, new SysfsWriteError('writer closed (shutting down)', 'ECANCELED'));
    this.child?.kill('SIGKILL');
    this.child = undefined;
    for (const s of this.stuckByLane.values()) s.child.kill('SIGKILL');
    for (const q of this.queue.splice(0)) q();
  }

  /** The current helper, started if needed; resolves once it said it is ready (startup is not write time). */
  private ensureChild(): Promise<ChildProcess> {
    if (this.child && this.child.connected) return this.ready ?? Promise.resolve(this.child);
    const child = fork(this.script, [], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'json' });
    this.ready = new Promise<ChildProcess>((resolve, reject) => {
      const onMsg = (m: { ready?: boolean }): void => {
        if (!m.ready) return;
        child.off('message', onMsg);
        child.off('exit', onExit);
        resolve(child);
      };
      const onExit = (code: number | null, sig: string | null): void => reject(new Error(`exited (${sig ?? code ?? '?'}) before it was ready`));
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
    child.on('message', (m: { id: number; code?: string; message?: string; ready?: boolean }) => {
      if (!m.ready) this.onMessage(child, m);
    });
    child.on('exit', (code, sig) => {
      if (this.child === child) this.child = undefined;
      if (this.pending && this.child === undefined && !this.isAbandoned(child)) {
        this.settle(this.pending.id, new SysfsWriteError(`sysfs write process exited (${sig ?? code ?? '?'})`, 'EIO'));
      }
      for (const [lane, s] of this.stuckByLane) {
        if (s.child === child) {
          this.stuckByLane.delete(lane);
          this.opts.onUnstuck?.(s.write, `write process exited (${sig ?? code ?? '?'}) before the write returned`);
        }
      }
    });
    child.on('error', () => undefined);
    this.child = child;
    return this.ready;
  }

  private isAbandoned(child: ChildProcess): boolean {
    for (const s of this.stuckByLane.values()) if (s.child === child) return true;
    return false;
  }

  private onMessage(child: ChildProcess, m: { id: number; code?: string; message?: string }): void {
    for (const [lane, s] of this.stuckByLane) {
      if (s.child !== child) continue;
      // A write we gave up on returned: the device is no longer stuck; the child is done.
      this.stuckByLane.delete(lane);
      child.disconnect();
      this.opts.onUnstuck?.(s.write, m.code ? `${m.code}: ${m.message ?? ''}` : undefined);
      return;
    }
    if (this.pending?.id !== m.id) return;
    this.settle(m.id, m.code ? new SysfsWriteError(m.message ?? m.code, m.code) : undefined);
  }

  private settle(id: number, err: Error | undefined): void {
    const p = this.pending;
    if (!p || p.id !== id) return;
    clearTimeout(p.timer);
    this.pending = undefined;
    if (err) p.reject(err);
    else p.resolve();
    this.queue.shift()?.();
    if (!this.pending && !this.closed) {
      if (this.idleTimer) clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => {
        if (!this.pending && this.child) {
          this.child.disconnect();
          this.child = undefined;
        }
      }, this.opts.idleMs ?? 30_000);
      this.idleTimer.unref();
    }
  }

  /** The write did not return in time: report its device stuck and give the next write a new child. */
  private abandon(child: ChildProcess, id: number, timeoutMs: number): void {
    const p = this.pending;
    if (!p || p.id !== id) return;
    this.stuckByLane.set(p.write.lane, { write: p.write, child });
    if (this.child === child) this.child = undefined;
    this.settle(id, new SysfsWriteError(`${p.write.path}=${JSON.stringify(p.write.value)} did not return within ${Math.round(timeoutMs / 1000)} s; ${p.write.lane} is reported stuck until it does`, 'ETIMEDOUT'));
  }
}
