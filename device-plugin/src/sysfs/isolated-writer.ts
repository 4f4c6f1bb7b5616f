// The production SysfsWriter. Writes run in ONE long-lived helper process (write-child), each on a
// thread of the helper's libuv pool, with a timeout; the agent's event loop and its own thread pool
// never wait on the kernel.
//
// Bounds (what a write that blocks in the kernel may cost):
// - A write that does not return in time leaves its device (lane) "stuck": it costs one parked
//   thread in the helper (tens of KiB), not a process. The lane takes no further write — they fail
//   at once with ESTUCK — until the blocked one returns (then `onUnstuck` fires).
// - At most one write per lane is outstanding; a second write for a busy lane waits for the first.
// - At most `maxStuck` (default 8) writes are outstanding in all; once that many are stuck, writes
//   for other lanes are refused at once with EAGAIN instead of costing anything more. The helper's
//   pool has exactly that many threads, so a queued write never waits behind stuck ones.
// - The helper is started lazily, must say it is ready within `startTimeoutMs`, and must
//   acknowledge every request within the same time; one that does not (or died) is replaced at the
//   next write. At most two helpers exist at once (the current one and one that was given up while
//   a write of it was still in the kernel); past that, writes are refused with EAGAIN.
//
// Shutdown (`close()`) returns at once: pending writes are rejected with ECANCELED, the helper is
// sent SIGKILL and forgotten (never waited for), and neither it nor a stuck write keeps the agent's
// event loop alive.
//
// What a write stuck in D state means for the pod. A write to a device a VMM holds (vfio unbind,
// sriov_numvfs, mdev remove...) waits in vfio_unregister_group_dev() until the VMM lets go; the
// wait is interruptible until the writer gets a signal, then uninterruptible (D state). Nothing in
// user space can end a task in D state: SIGKILL (ours, or the kernel's when the container's init
// exits and its PID namespace is torn down) leaves it in the kernel, and the namespace's init does
// not finish exiting until every task in it is gone. So while such a write is outstanding the agent
// container cannot finish terminating, the pod stays Terminating and a DaemonSet rollout waits on
// that node; only the VMM releasing the device ends it. This writer bounds what such a write costs
// the running agent and never lets it block shutdown of the agent's own code, but the real
// protection is not issuing a destructive write for a device that is held (the planner's gate).
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
  /** How long the helper may take to start, and to acknowledge a request (default 10 s). */
  startTimeoutMs?: number;
  /** Writes outstanding at once, stuck ones included; past it, new lanes are refused (default 8). */
  maxStuck?: number;
  /** How long an idle helper is kept (default 30 s). */
  idleMs?: number;
  /** Called when a stuck write finally returned (the caller should rescan); not after close(). */
  onUnstuck?: (w: StuckWrite, error?: string) => void;
}

/** Helpers alive at once: the current one plus one given up while a write of it was in the kernel. */
const MAX_HELPERS = 2;

interface Helper {
  proc: ChildProcess;
  /** Resolves once the helper said it is ready. */
  ready: Promise<void>;
  /** Takes no more writes (idle, unresponsive, disconnected or closing). */
  retired: boolean;
  /** Fails a start still under way (and stops its timer). */
  abortStart: (e: Error) => void;
}

/** The outstanding write of one lane. */
interface Slot {
  id: number;
  write: StuckWrite;
  /** starting: waiting for the helper; active: issued, clock running; stuck: timed out, still in the kernel. */
  state: 'starting' | 'active' | 'stuck';
  helper?: Helper;
  timer?: NodeJS.Timeout;
  ackTimer?: NodeJS.Timeout;
  resolve: () => void;
  reject: (e: Error) => void;
}

type HelperMessage = { ready?: boolean; ack?: number; id?: number; code?: string; message?: string };

function childScript(): string {
  const js = fileURLToPath(new URL('./write-child.js', import.meta.url));
  if (existsSync(js)) return js;
  return fileURLToPath(new URL('./write-child.ts', import.meta.url)); // running from source (node strips types)
}

function closedError(): SysfsWriteError {
  return new SysfsWriteError('writer closed (shutting down)', 'ECANCELED');
}

function shown(w: StuckWrite): string {
  return `${w.path}=${JSON.stringify(w.value)}`;
}

export class IsolatedSysfsWriter implements SysfsWriter {
  private readonly timeoutMs: number;
  private readonly startTimeoutMs: number;
  private readonly maxStuck: number;
  private readonly script = childScript();
  /** The outstanding write of each lane (starting, active or stuck). */
  private readonly lanes = new Map<string, Slot>();
  private readonly byId = new Map<number, Slot>();
  /** Helpers that have not exited (the current one last). */
  private readonly helpers = new Set<Helper>();
  private current: Helper | undefined;
  private waiters: (() => void)[] = [];
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly opts: IsolatedWriterOptions) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.startTimeoutMs = opts.startTimeoutMs ?? 10_000;
    this.maxStuck = Math.max(1, Math.floor(opts.maxStuck ?? 8));
  }

  /** Writes that have not returned, oldest first. */
  stuck(): StuckWrite[] {
    return [...this.lanes.values()]
      .filter((s) => s.state === 'stuck')
      .map((s) => s.write)
      .sort((a, b) => a.since - b.since);
  }

  /** Process ids of the helpers that have not exited (at most two). */
  helperPids(): number[] {
    return [...this.helpers].map((h) => h.proc.pid).filter((p): p is number => p !== undefined);
  }

  async write(relPath: string, value: string, opts: { lane?: string } = {}): Promise<void> {
    const lane = opts.lane ?? relPath;
    const file = resolveUnderRoot(this.opts.root, relPath);
    // Wait for this lane's outstanding write and for a free slot; refuse at once what cannot proceed.
    for (;;) {
      if (this.closed) throw closedError();
      const held = this.lanes.get(lane);
      if (held?.state === 'stuck') {
        const secs = Math.round((Date.now() - held.write.since) / 1000);
        throw new SysfsWriteError(`${lane} is stuck: ${shown(held.write)} has not returned for ${secs} s`, 'ESTUCK');
      }
      if (!held) {
        const stuck = this.stuck();
        if (stuck.length >= this.maxStuck) {
          throw new SysfsWriteError(
            `${stuck.length} sysfs writes are stuck, the most this agent keeps outstanding (${stuck.map((s) => s.lane).join(', ')}); ` +
              `no write for ${lane} is issued until one of them returns`,
            'EAGAIN',
          );
        }
        if (this.lanes.size < this.maxStuck) break;
      }
      await new Promise<void>((r) => this.waiters.push(r));
    }
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    return new Promise<void>((resolve, reject) => {
      const slot: Slot = { id: this.nextId++, write: { lane, path: relPath, value, since: Date.now() }, state: 'starting', resolve, reject };
      this.lanes.set(lane, slot);
      this.byId.set(slot.id, slot);
      this.issue(slot, file).catch((err: unknown) => this.finish(slot, err instanceof Error ? err : new Error(String(err))));
    });
  }

  /**
   * Returns at once and never waits on the kernel: rejects pending writes with ECANCELED, sends
   * the helpers SIGKILL without waiting for them, and lets go of them so the agent can exit.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    for (const slot of [...this.lanes.values()]) if (slot.state !== 'stuck') this.finish(slot, closedError());
    for (const h of this.helpers) this.retire(h, true);
    this.wake();
  }

  /** Starts the write in the helper, once the helper is ready. */
  private async issue(slot: Slot, file: string): Promise<void> {
    let helper: Helper;
    try {
      helper = this.ensureHelper();
      await helper.ready;
    } catch (err) {
      if (this.closed) throw closedError();
      throw err instanceof SysfsWriteError ? err : new SysfsWriteError(`cannot start the sysfs write helper: ${(err as Error).message}`, 'EIO');
    }
    if (this.byId.get(slot.id) !== slot) return; // settled meanwhile (closed)
    if (helper.retired) throw new SysfsWriteError('the sysfs write helper went away before the write was issued', 'EIO');
    slot.helper = helper;
    slot.state = 'active';
    slot.write.since = Date.now();
    slot.timer = setTimeout(() => this.timedOut(slot), this.timeoutMs);
    slot.ackTimer = setTimeout(() => {
      // The helper's event loop did not answer: it is gone or hung; the write was not issued.
      this.retire(helper, true);
      this.finish(slot, new SysfsWriteError(`the sysfs write helper did not acknowledge ${shown(slot.write)} within ${this.startTimeoutMs} ms; it was replaced`, 'EIO'));
    }, this.startTimeoutMs);
    helper.proc.send({ id: slot.id, file, value: slot.write.value }, (err) => {
      if (err) this.finish(slot, new SysfsWriteError(`cannot reach the sysfs write helper: ${err.message}`, 'EIO'));
    });
  }

  /** The write did not return in time: its lane is stuck until it does; other lanes proceed. */
  private timedOut(slot: Slot): void {
    if (slot.state !== 'active' || this.byId.get(slot.id) !== slot) return;
    slot.state = 'stuck'; // its acknowledgement timer keeps running: a helper that never answered is replaced
    slot.reject(
      new SysfsWriteError(`${shown(slot.write)} did not return within ${this.timeoutMs < 1000 ? `${this.timeoutMs} ms` : `${Math.round(this.timeoutMs / 1000)} s`}; ${slot.write.lane} is reported stuck until it does`, 'ETIMEDOUT'),
    );
    this.wake();
  }

  /**
   * The write ended (the kernel returned, the helper exited, or we gave up on it): frees its lane.
   * A caller still waiting gets the outcome; a stuck write is reported through `onUnstuck`.
   */
  private finish(slot: Slot, err: Error | undefined): void {
    if (this.byId.get(slot.id) !== slot) return;
    this.byId.delete(slot.id);
    if (this.lanes.get(slot.write.lane) === slot) this.lanes.delete(slot.write.lane);
    if (slot.timer) clearTimeout(slot.timer);
    if (slot.ackTimer) clearTimeout(slot.ackTimer);
    if (slot.state === 'stuck') {
      if (!this.closed) this.opts.onUnstuck?.(slot.write, err ? (err instanceof SysfsWriteError ? `${err.code}: ${err.message}` : err.message) : undefined);
    } else if (err) {
      slot.reject(err);
    } else {
      slot.resolve();
    }
    this.wake();
    this.scheduleIdle();
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The current helper, started if needed (lazily; a dead or unresponsive one is replaced). */
  private ensureHelper(): Helper {
    if (this.current && !this.current.retired) return this.current;
    if (this.helpers.size >= MAX_HELPERS) {
      throw new SysfsWriteError(
        `${this.helpers.size} sysfs write helpers have not exited (a write of a replaced helper is still in the kernel); not starting another`,
        'EAGAIN',
      );
    }
    const proc = fork(this.script, [], {
      execArgv: ['--max-semi-space-size=1', '--max-old-space-size=16'],
      // One pool thread per write this writer keeps outstanding, so stuck writes never queue others.
      env: { ...process.env, UV_THREADPOOL_SIZE: String(this.maxStuck) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      serialization: 'json',
    });
    // Neither the helper nor its channel keeps the agent alive; a pending write's timer does.
    proc.unref();
    proc.channel?.unref();
    let onReady: (() => void) | undefined;
    let onFail: ((e: Error) => void) | undefined;
    const helper: Helper = {
      proc,
      retired: false,
      ready: new Promise<void>((resolve, reject) => {
        onReady = resolve;
        onFail = reject;
      }),
      abortStart: (e) => onFail?.(e),
    };
    helper.ready.catch(() => undefined); // observed by every issue(); this keeps an unused one quiet
    const startTimer = setTimeout(() => {
      onFail?.(new Error(`it did not start within ${this.startTimeoutMs} ms`));
      this.retire(helper, true);
    }, this.startTimeoutMs);
    void helper.ready.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    );
    proc.on('message', (m: HelperMessage) => {
      if (m.ready) onReady?.();
      else if (m.ack !== undefined) {
        const slot = this.byId.get(m.ack);
        if (slot?.ackTimer) clearTimeout(slot.ackTimer);
      } else if (m.id !== undefined) {
        const slot = this.byId.get(m.id);
        if (slot && slot.helper === helper) this.finish(slot, m.code ? new SysfsWriteError(m.message ?? m.code, m.code) : undefined);
      }
    });
    proc.on('error', (err) => {
      onFail?.(err);
      if (proc.pid === undefined) this.helpers.delete(helper); // never started: no exit event follows
      this.retire(helper, true);
    });
    proc.on('disconnect', () => {
      onFail?.(new Error('it closed its channel'));
      helper.retired = true;
      if (this.current === helper) this.current = undefined;
    });
    proc.on('exit', (code, sig) => {
      const how = `${sig ?? code ?? '?'}`;
      onFail?.(new Error(`it exited (${how}) before it was ready`));
      helper.retired = true;
      this.helpers.delete(helper);
      if (this.current === helper) this.current = undefined;
      // Only now is none of its writes in the kernel any more.
      for (const slot of [...this.byId.values()]) {
        if (slot.helper === helper) this.finish(slot, new SysfsWriteError(`the sysfs write helper exited (${how}) before the write returned`, 'EIO'));
      }
      this.wake();
    });
    this.helpers.add(helper);
    this.current = helper;
    return helper;
  }

  /**
   * Takes the helper out of service. `kill`: SIGKILL it (unresponsive, or shutting down), never
   * waiting for it; otherwise close its channel and let it exit by itself (idle).
   */
  private retire(helper: Helper, kill: boolean): void {
    helper.retired = true;
    helper.abortStart(new Error('it was stopped before it was ready'));
    if (this.current === helper) this.current = undefined;
    if (helper.proc.connected) helper.proc.disconnect();
    if (kill && helper.proc.exitCode === null && helper.proc.signalCode === null) helper.proc.kill('SIGKILL');
    this.wake();
  }

  /** Stops the helper after `idleMs` without an outstanding write (a stuck write keeps it). */
  private scheduleIdle(): void {
    if (this.closed || this.lanes.size > 0 || !this.current) return;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.lanes.size === 0 && this.current) this.retire(this.current, false);
    }, this.opts.idleMs ?? 30_000);
    this.idleTimer.unref();
  }
}
