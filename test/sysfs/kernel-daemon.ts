// The fake kernel as a watcher over a temp sysfs tree, so an UNMODIFIED process (the real agent in
// end-to-end tests) that writes plain files gets kernel behaviour:
//  * write-only trigger attributes (drivers_probe, bind, unbind, new_id, mdev create/remove,
//    vport_create, vport_delete) are turned into FIFOs while the daemon runs; each open-write-close
//    by a writer is one message, so no write is lost even when they come fast;
//  * value attributes (sriov_numvfs, sriov_drivers_autoprobe, driver_override) stay plain files,
//    watched with fs.watch plus a light poll; before any trigger is applied, every value file is
//    checked first, so "driver_override then drivers_probe" is applied in that order.
// A refused write (e.g. sriov_numvfs above sriov_totalvfs) cannot fail the writer's write(2) here:
// the daemon restores the attribute's previous value and reports the error (onError, stderr,
// `<root>/.fake-kernel/errors.log`). Known difference from a real kernel, documented for callers:
// a non-zero → different non-zero sriov_numvfs change is applied as "0 then N" (the write of 0 in
// between may have been coalesced by the watcher). Use FakeKernel.write directly to test refusals.
//
// In-process:  const k = await startKernel(root, devRoot); ...; await k.stop();
// CLI:         node --import ./test/sysfs/ts-hooks.mjs test/sysfs/kernel-daemon.ts --root <sysfs> --dev-root <dev>
//              prints "ready" on stdout once watching; SIGTERM/SIGINT stop it (FIFOs become files again).
import { execFile } from 'node:child_process';
import { constants, openSync, watch, type FSWatcher } from 'node:fs';
import { appendFile, lstat, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { FakeKernel } from './kernel.js';

const run = promisify(execFile);

/** One write the daemon applied or refused. */
export interface KernelEvent {
  path: string;
  value: string;
  ok: boolean;
  error?: string;
}

/** Options of {@link startKernel}. */
export interface StartKernelOptions {
  /** Called for every refused write. */
  onError?: (e: KernelEvent) => void;
  /** Called for every write applied or refused. */
  onEvent?: (e: KernelEvent) => void;
  /** Safety poll of value files and new trigger files, in ms (default 200). */
  pollMs?: number;
}

/** A running kernel daemon. */
export interface KernelHandle {
  readonly kernel: FakeKernel;
  /** Every write seen so far, in order. */
  readonly events: KernelEvent[];
  /** Resolves once everything queued so far has been applied. */
  idle(): Promise<void>;
  /** Stops watching and turns the FIFOs back into plain files. Idempotent. */
  stop(): Promise<void>;
}

/** Default contents of value attributes the kernel creates (new VFs). */
const VALUE_DEFAULTS: Record<string, string> = { driver_override: '(null)', sriov_numvfs: '0', sriov_drivers_autoprobe: '1' };

const BDF_G = /[0-9a-f]{4,5}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]/gi;
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
  try {
    return (await readFile(p, 'utf8')).trim();
  } catch {
    return undefined;
  }
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
  let stopped = false;
  let firstSync = true;
  const errorLog = path.join(root, '.fake-kernel/errors.log');

  const enqueue = (fn: () => Promise<void>): Promise<void> => {
    chain = chain.then(fn).catch((err: unknown) => {
      console.error(`[fake-kernel] internal error: ${err instanceof Error ? err.stack : String(err)}`);
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
    try {
      await kernel.write(rel, value, { alreadyWritten });
      await record({ path: rel, value, ok: true });
      return true;
    } catch (err) {
      await record({ path: rel, value, ok: false, error: err instanceof Error ? err.message : String(err) });
      return false;
    }
  };

  /** Applies value files whose content differs from what the kernel last accepted. */
  const checkValues = async (): Promise<boolean> => {
    let changed = false;
    for (const [file, st] of values) {
      // A test may put a FIFO in place of a value attribute to make writes to it block for real
      // (like a kernel write that never returns); reading it here would consume the write.
      if ((await lstat(file).catch(() => undefined))?.isFIFO()) continue;
      const raw = await readFile(file, 'utf8').catch(() => undefined);
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
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', () => undefined);
    sock.on('end', () => {
      sock.destroy();
      const msg = Buffer.concat(chunks).toString('utf8');
      if (!stopped) listen(file);
      void enqueue(async () => {
        await checkValues();
        for (const token of splitTriggerMessage(file, msg)) await apply(file, token, false);
        await sync();
      });
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
        watcher = watch(file, { persistent: false }, () => void enqueue(async () => void ((await checkValues()) && (await sync()))));
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
    void enqueue(async () => {
      await checkValues();
      await sync();
    });
  }, opts.pollMs ?? 200);
  timer.unref();

  return {
    kernel,
    events,
    idle: () => chain,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await chain;
      for (const st of values.values()) st.watcher?.close();
      values.clear();
      for (const [file, sock] of fifos) {
        sock?.destroy();
        await rm(file, { force: true });
        await writeFile(file, '');
      }
      fifos.clear();
    },
  };
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
  });
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
