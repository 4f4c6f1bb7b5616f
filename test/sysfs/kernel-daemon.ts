// The fake kernel as a watcher over a temp sysfs tree, so an UNMODIFIED process (the real agent in
// end-to-end tests) that writes plain files gets kernel behaviour:
//  * write-only trigger attributes (drivers_probe, bind, unbind, new_id, mdev create/remove,
//    vport_create, vport_delete) are turned into FIFOs while the daemon runs; each open-write-close
//    by a writer is one message, so no write is lost even when they come fast;
//  * value attributes (sriov_numvfs, sriov_drivers_autoprobe, driver_override) stay plain files,
//    watched with fs.watch plus a light poll; before a trigger is applied, the value files of the
//    devices it names and those a watcher saw change are checked first, so "driver_override then
//    drivers_probe" is applied in that order.
// A refused write (e.g. sriov_numvfs above sriov_totalvfs) cannot fail the writer's write(2) here:
// the daemon restores the attribute's previous value and reports the error (onError, stderr,
// `<root>/.fake-kernel/errors.log`). A write takes effect when the daemon's queue reaches it, not
// before the writer's write(2) returns as on Linux, so the queue is kept from falling behind (see
// enqueue). Known difference from a real kernel, documented for callers:
// a non-zero → different non-zero sriov_numvfs change is applied as "0 then N" (the write of 0 in
// between may have been coalesced by the watcher). Use FakeKernel.write directly to test refusals.
//
//
// VFIO ownership (vfio.ts): the daemon's kernel is the witness too. A destructive write reaching a
// device a VMM holds is recorded as a violation (`handle.violations`, `<root>/.fake-kernel/
// violations.jsonl`, readViolations(root)); a value attribute such as sriov_numvfs is seen after the
// fact, and recorded then. A write that blocks in the kernel (waiting for the holder to let go) does
// not block the daemon: it is recorded as an event with `blocked: true`, later again with its outcome,
// and writes to other devices go on. The writer's own write(2) cannot block here (the FIFO has taken
// the bytes): a difference from Linux, where the writer sits in D state until the VMM lets go.
// Holding devices:
//  * in-process: `handle.openVfio(group, holder)`, `closeVfio`, `holdVport`, `releaseVport` (or any
//    FakeKernel over the same root: they share the state), or test/sysfs/vmm.ts;
//  * from another process (the CLI daemon serves it; `control: true` in-process): the control socket
//    `<root>/.fake-kernel/control`, whose commands kernel-control.ts documents; `kernelControl(root,
//    line)` sends one command.
//
// In-process:  const k = await startKernel(root, devRoot); ...; await k.stop();
// CLI:         node --import ./test/sysfs/ts-hooks.mjs test/sysfs/kernel-daemon.ts --root <sysfs> --dev-root <dev>
//              prints "ready" on stdout once watching and serving the control socket; violations go
//              to stderr as JSON lines too; SIGTERM/SIGINT stop it (FIFOs become files again).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { constants, openSync, watch, type FSWatcher } from 'node:fs';
import { appendFile, lstat, mkdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { FakeKernel, readAttr } from './kernel.js';
import { CONTROL_REL, serveControl } from './kernel-control.js';
import type { Destroyed, OpenOptions, Violation } from './vfio.js';

export { CONTROL_REL, kernelControl } from './kernel-control.js';

const run = promisify(execFile);

/** One write the daemon applied or refused. */
export interface KernelEvent {
  path: string;
  value: string;
  ok: boolean;
  error?: string;
  /** The kernel is waiting for a VMM to let go of a device this write destroys (a later event has the outcome). */
  blocked?: boolean;
}

/** Options of {@link startKernel}. */
export interface StartKernelOptions {
  /** Called for every refused write. */
  onError?: (e: KernelEvent) => void;
  /** Called for every write applied or refused. */
  onEvent?: (e: KernelEvent) => void;
  /** Safety poll of value files and new trigger files, in ms (default 200). */
  pollMs?: number;
  /** Serve the control socket `<root>/.fake-kernel/control` (default false; the CLI always does). */
  control?: boolean;
}

/** A running kernel daemon. */
export interface KernelHandle {
  readonly kernel: FakeKernel;
  /** Every write seen so far, in order. */
  readonly events: KernelEvent[];
  /** Resolves once everything queued so far has been applied. */
  idle(): Promise<void>;
  /** Work items queued and not finished yet (trigger messages, value checks, polls). */
  pending(): number;
  /** Stops watching and turns the FIFOs back into plain files. Idempotent. */
  stop(): Promise<void>;
  /** See FakeKernel.openVfio / closeVfio / holdVport / releaseVport. */
  openVfio(group: number, holder: string, opts?: OpenOptions): Promise<void>;
  closeVfio(group: number, holder: string): void;
  holdVport(wwpn: string, holder: string): Promise<void>;
  releaseVport(wwpn: string, holder: string): void;
  /** Destructive writes that reached a held device (this process's record of the root). */
  readonly violations: Violation[];
  /** Destructive writes applied. */
  readonly destroyed: Destroyed[];
  /** The control socket's path, when served. */
  readonly control: string | undefined;
}

/** Default contents of value attributes the kernel creates (new VFs). */
const VALUE_DEFAULTS: Record<string, string> = { driver_override: '(null)', sriov_numvfs: '0', sriov_drivers_autoprobe: '1', current_vgpu_type: '0' };

const BDF_G = /[0-9a-f]{4,5}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]/gi;
const BDF_ONE = /^[0-9a-f]{4,5}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;
const UUID_G = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;
const WWN_PAIR_G = /[0-9a-f]{16}:[0-9a-f]{16}/gi;

/** Splits one FIFO message into the writes it holds (two quick writes may arrive as one message). */
export function splitTriggerMessage(file: string, msg: string): string[] {
  const name = path.basename(file);
  const parent = path.basename(path.dirname(path.dirname(file)));
  let re: RegExp | undefined;
  if (name === 'drivers_probe' || name === 'bind' || name === 'unbind') re = BDF_G;
  else if (name === 'create') re = UUID_G;
  else if ((name === 'vport_create' || name === 'vport_delete') && parent === 'fc_host') re = WWN_PAIR_G;
  else if (name === 'new_id' || name === 'remove_id') return msg.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  else return msg.trim() === '' ? [] : [msg.trim()]; // remove / vport_delete: idempotent "1"
  const tokens = msg.match(re) ?? [];
  const rest = msg.replace(re, '').trim();
  return rest === '' ? tokens : [...tokens, rest]; // a leftover goes to the kernel, which refuses it
}

async function readValue(p: string): Promise<string | undefined> {
  return (await readAttr(p))?.trim();
}

/**
 * Starts the fake kernel over `root` (the sysfs tree) and `devRoot` (the /dev tree): from now on,
 * plain file writes into the tree by any process get kernel semantics. See the file header for
 * what differs from a real kernel.
 */
export async function startKernel(root: string, devRoot: string, opts: StartKernelOptions = {}): Promise<KernelHandle> {
  const kernel = new FakeKernel(root, devRoot);
  const events: KernelEvent[] = [];
  const fifos = new Map<string, net.Socket | undefined>();
  const values = new Map<string, { shadow: string; watcher: FSWatcher | undefined }>();
  let chain: Promise<void> = Promise.resolve();
  let queued = 0;
  /** Trigger messages read and not applied yet: while any waits, the tree sync runs after the last. */
  let messages = 0;
  let pollQueued = false;
  let valueCheckQueued = false;
  let stopped = false;
  let firstSync = true;
  const errorLog = path.join(root, '.fake-kernel/errors.log');

  // One queue, in arrival order. A Linux sysfs write takes effect before write(2) returns; here it
  // takes effect when the queue reaches it, so the queue must never fall behind: the safety poll is
  // queued only when none is waiting (a poll slower than its interval once piled up polls without
  // end, and every write waited behind them: on the demo's 230-function tree under load, a vGPU
  // create the agent wrote took effect after 110 s, its rescans never saw it and it wrote the
  // create again and again), and the tree sync after a trigger message runs once a burst is done.
  const enqueue = (fn: () => Promise<void>): Promise<void> => {
    queued++;
    chain = chain.then(fn).catch((err: unknown) => {
      console.error(`[fake-kernel] internal error: ${err instanceof Error ? err.stack : String(err)}`);
    }).finally(() => {
      queued--;
    });
    return chain;
  };

  const record = async (e: KernelEvent): Promise<void> => {
    events.push(e);
    opts.onEvent?.(e);
    if (!e.ok) {
      opts.onError?.(e);
      await mkdir(path.dirname(errorLog), { recursive: true });
      await appendFile(errorLog, `${JSON.stringify(e)}\n`);
    }
  };

  const apply = async (file: string, value: string, alreadyWritten: boolean): Promise<boolean> => {
    const rel = path.relative(root, file);
    let blocked!: () => void;
    const waiting = new Promise<'blocked'>((r) => (blocked = () => r('blocked')));
    const outcome = kernel.write(rel, value, { alreadyWritten, onBlocked: blocked }).then(
      (): KernelEvent => ({ path: rel, value, ok: true }),
      (err: unknown): KernelEvent => ({ path: rel, value, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
    const first = await Promise.race([outcome, waiting]);
    if (first !== 'blocked') {
      await record(first);
      return first.ok;
    }
    // The kernel waits for a VMM to let go: go on with other devices; report the outcome later.
    await record({ path: rel, value, ok: true, blocked: true });
    void outcome.then((e) =>
      enqueue(async () => {
        await record(e);
        await sync();
      }),
    );
    return true;
  };

  /** Applies value files whose content differs from what the kernel last accepted. */
  /** Value files a watcher saw change and no check has read since. */
  const dirty = new Set<string>();

  /**
   * Applies value files whose content differs from what the kernel last accepted: all of them, or
   * those `only` picks (a trigger message's own devices and the ones a watcher saw change: reading
   * all 240 of the demo tree before every message made each cost tens of milliseconds).
   */
  const checkValues = async (only?: (file: string) => boolean): Promise<boolean> => {
    let changed = false;
    for (const [file, st] of values) {
      if (only && !only(file)) continue;
      dirty.delete(file);
      // A test may put a FIFO in place of a value attribute to make writes to it block for real
      // (like a kernel write that never returns); reading it here would consume the write.
      // readAttr does not block on one that turns into a FIFO after the lstat, and does not read it.
      if ((await lstat(file).catch(() => undefined))?.isFIFO()) continue;
      const raw = await readAttr(file);
      if (raw === undefined || raw === '') continue; // gone, or truncated by a write in progress
      const content = raw.trim(); // "\n" alone clears driver_override
      if (content === st.shadow) continue;
      if (await apply(file, content, true)) {
        st.shadow = content === '' ? (VALUE_DEFAULTS[path.basename(file)] ?? '') : content;
      } else {
        await writeFile(file, `${st.shadow}\n`).catch(() => undefined);
      }
      changed = true;
    }
    return changed;
  };

  /**
   * Trigger messages being received (bytes read, their writer not done yet): what each says so far,
   * and a promise settled once it is queued. Two writers of one FIFO in quick succession make one
   * message, which ends only when the second is done, possibly after a probe the process wrote in
   * between (on another FIFO) has ended: see the probe's wait in listen().
   */
  const receiving = new Set<{ file: string; text: () => string; queued: Promise<void> }>();

  const listen = (file: string): void => {
    if (stopped || !fifos.has(file)) return;
    let fd: number;
    try {
      fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
    } catch {
      fifos.delete(file);
      return;
    }
    const sock = new net.Socket({ fd, readable: true, writable: false });
    fifos.set(file, sock);
    const chunks: Buffer[] = [];
    let entry: { file: string; text: () => string; queued: Promise<void> } | undefined;
    let markQueued = (): void => undefined;
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      if (entry) return;
      entry = { file, text: () => Buffer.concat(chunks).toString('utf8').toLowerCase(), queued: new Promise<void>((r) => (markQueued = r)) };
      receiving.add(entry);
    });
    sock.on('error', () => undefined);
    sock.on('end', () => {
      sock.destroy();
      if (entry) receiving.delete(entry);
      const msg = Buffer.concat(chunks).toString('utf8');
      if (!stopped) listen(file);
      messages++;
      const queue = (): void =>
        void enqueue(async () => {
          messages--;
          const tokens = splitTriggerMessage(file, msg);
          // "driver_override then drivers_probe": the named devices' values first, as written. Every
          // PF's sriov_numvfs too (a handful of files): on Linux that write returns only once the VFs
          // and their IOMMU groups exist, so "sriov_numvfs, then an mdev create" numbers the VFs'
          // groups first, whether or not the watcher has seen the value change yet.
          const named = tokens.filter((t) => BDF_ONE.test(t)).map((t) => `/${t.toLowerCase()}/`);
          await checkValues((f) => dirty.has(f) || f.endsWith('/sriov_numvfs') || named.some((n) => f.includes(n)));
          for (const token of tokens) await apply(file, token, false);
          if (messages === 0) await sync();
        });
      // "unbind then drivers_probe" come through two FIFOs, and when both are readable in the same
      // poll the event loop may end the probe's message first: a probe (or bind) is queued one turn
      // later, after any message that ended with it, so it applies after the unbind written before it.
      // An unbind of the same device may also still be arriving (its FIFO's next writer joined its
      // message before the daemon saw the first one end): the probe waits until that message is
      // queued. On Linux the unbind has taken effect before the probe is even written; applied the
      // other way round, the probe finds the device still bound and the device is left driverless.
      if (/\/(drivers_probe|bind)$/.test(file)) {
        setImmediate(() => {
          const named = splitTriggerMessage(file, msg).filter((t) => BDF_ONE.test(t)).map((t) => t.toLowerCase());
          const before = [...receiving].filter((r) => r.file !== file && named.some((n) => r.text().includes(n))).map((r) => r.queued);
          const go = (): void => {
            queue();
            markQueued();
          };
          if (before.length === 0) go();
          else void Promise.all(before).then(go);
        });
      } else {
        queue();
        markQueued();
      }
    });
  };

  const sync = async (): Promise<void> => {
    if (stopped) return;
    const { triggers, values: valueFiles } = await kernel.watchedFiles();
    const wanted = new Set(triggers);
    for (const [file, sock] of fifos) {
      if (!wanted.has(file)) {
        sock?.destroy();
        fifos.delete(file);
      }
    }
    const toFifo: string[] = [];
    for (const file of triggers) {
      if (fifos.has(file)) continue;
      const st = await lstat(file).catch(() => undefined);
      if (!st) continue;
      if (!st.isFIFO()) toFifo.push(file);
    }
    if (toFifo.length > 0) {
      await Promise.all(toFifo.map((f) => rm(f, { force: true })));
      for (let i = 0; i < toFifo.length; i += 200) await run('mkfifo', toFifo.slice(i, i + 200));
    }
    for (const file of triggers) {
      if (!fifos.has(file)) {
        fifos.set(file, undefined);
        listen(file);
      }
    }
    const wantedValues = new Set(valueFiles);
    for (const [file, st] of values) {
      if (!wantedValues.has(file)) {
        st.watcher?.close();
        values.delete(file);
      }
    }
    for (const file of valueFiles) {
      if (values.has(file)) continue;
      if ((await lstat(file).catch(() => undefined))?.isFIFO()) continue; // blocked on purpose, see checkValues
      const shadow = firstSync ? ((await readValue(file)) ?? '') : (VALUE_DEFAULTS[path.basename(file)] ?? '');
      let watcher: FSWatcher | undefined;
      try {
        watcher = watch(file, { persistent: false }, () => {
          dirty.add(file);
          if (valueCheckQueued) return; // the queued check reads every value file when it runs
          valueCheckQueued = true;
          void enqueue(async () => {
            valueCheckQueued = false;
            if (await checkValues((f) => dirty.has(f))) await sync();
          });
        });
        watcher.on('error', () => undefined);
      } catch {
        watcher = undefined;
      }
      values.set(file, { shadow, watcher });
    }
    firstSync = false;
  };

  await enqueue(sync);
  await enqueue(async () => void ((await checkValues()) && (await sync())));
  const timer = setInterval(() => {
    if (pollQueued) return;
    pollQueued = true;
    void enqueue(async () => {
      pollQueued = false;
      await checkValues();
      await sync();
    });
  }, opts.pollMs ?? 200);
  timer.unref();
  const controlFile = opts.control ? path.join(root, CONTROL_REL) : undefined;
  const control = controlFile ? await serveControl(kernel, controlFile) : undefined;

  return {
    kernel,
    events,
    idle: () => chain,
    pending: () => queued,
    openVfio: (group, holder, o) => kernel.openVfio(group, holder, o),
    closeVfio: (group, holder) => kernel.closeVfio(group, holder),
    holdVport: (wwpn, holder) => kernel.holdVport(wwpn, holder),
    releaseVport: (wwpn, holder) => kernel.releaseVport(wwpn, holder),
    violations: kernel.violations,
    destroyed: kernel.destroyed,
    control: controlFile,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      if (control) await new Promise<void>((r) => control.close(() => r()));
      if (controlFile) await rm(controlFile, { force: true });
      await chain;
      for (const st of values.values()) st.watcher?.close();
      values.clear();
      for (const [file, sock] of fifos) {
        sock?.destroy();
        await rm(file, { force: true });
        // Its device may be gone meanwhile (a vport deleted, a VF disabled): then there is nothing to restore.
        await writeFile(file, '').catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        });
      }
      fifos.clear();
    },
  };
}

/** A kernel daemon run as its own process (the CLI), as another process would start it. */
export interface DaemonProcess {
  readonly child: ChildProcess;
  /** Everything it printed on stderr so far. */
  stderr(): string;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
}

/** Starts the CLI daemon over `root`/`devRoot` and resolves once it printed "ready". */
export async function spawnKernelDaemon(root: string, devRoot: string): Promise<DaemonProcess> {
  const repo = path.resolve(import.meta.dirname, '../..');
  const child = spawn(process.execPath, ['--import', './test/sysfs/ts-hooks.mjs', 'test/sysfs/kernel-daemon.ts', '--root', root, '--dev-root', devRoot], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
      child.on('exit', (code) => reject(new Error(`daemon exited ${code}: ${stderr}`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { child, stderr: () => stderr, stop };
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  };
  const root = arg('--root');
  const devRoot = arg('--dev-root');
  if (!root || !devRoot) {
    console.error('usage: kernel-daemon --root <sysfs tree> --dev-root <dev tree>');
    process.exitCode = 2;
    return;
  }
  const handle = await startKernel(path.resolve(root), path.resolve(devRoot), {
    onEvent: (e) => console.error(JSON.stringify(e)),
    control: true,
  });
  handle.kernel.ownership.on('violation', (v: Violation) => console.error(JSON.stringify({ violation: v })));
  const stop = (): void => {
    void handle.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  setInterval(() => undefined, 1 << 30); // keep the process alive; watchers are not persistent
  process.stdout.write('ready\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(process.argv.slice(2));
}
