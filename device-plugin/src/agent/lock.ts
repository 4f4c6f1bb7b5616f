// One agent per node: a lock on `<state folder>/agent.lock`, held for the life of the process.
//
// Two agents on one node (a DaemonSet rolling update with surge, or a stray second install) would
// each rewrite the checkpoint, carve the same PFs and answer the kubelet for the same pools. The
// pods share the state folder (a hostPath) but not a PID namespace, so the lock cannot name a PID
// and check it. Node has no flock(2) and the runtime image has no flock(1), so the lock is a unix
// socket whose liveness the kernel keeps:
//
// - the holder listens on its own socket file and hard-links it to `agent.lock` (link() fails when
//   the name exists, so exactly one of two racing agents gets it);
// - a connection to `agent.lock` reaches the holder's listening socket (across containers, like the
//   kubelet's plugin sockets); the holder answers with who it is and keeps the connection open;
// - when the holder exits in any way, SIGKILL included, the kernel closes its socket: the waiters'
//   connections end (they retry at once), and a connect to the left-over file is refused: a stale
//   lock, replaced (rename over it) by the first waiter that finds it so;
// - no heartbeat and no timeout: a holder whose event loop is busy for a minute still holds it.
//
// Hand-over (a DaemonSet rolling update with surge, docs/design-decisions.md): a waiter started with
// `requestHandover` writes one line `{"handover":true,...}` on its connection; a holder started with
// `onHandoverRequest` is told once, gets its devices off its hands (see main.ts) and releases the lock,
// which ends the waiter's connection so it takes the lock at once. Holders without the option ignore
// the line; waiters without it never send it (two agents of one install keep waiting for each other).
// A holder that accepts requests says so in its greeting (`"handsOver":true`). The lock protocol
// before hand-over (be92450, tested with a frozen copy) greets without it and ignores the request,
// so a waiter knows from the first line, with no timeout, that nobody will answer: it tells its
// caller (`onHolderCannotHandOver`) and keeps waiting for the lock to be released.
//
// Two waiters that both find the same stale lock could both rename over it; the last rename wins.
// Each checks after a short settle time, and the holder keeps checking that `agent.lock` is still
// its socket: a loser goes back to waiting, a holder that lost it is told (`onLost`).
import { randomBytes } from 'node:crypto';
import { linkSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const AGENT_LOCK_FILE = 'agent.lock';
const OWN_PREFIX = '.agent.lock.';
const OWN_SUFFIX = '.sock';
const TAKE_SUFFIX = '.take';
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH = 107;

/** Who holds the lock, as the holder tells a waiter. */
export interface AgentLockHolder {
  pid: number;
  hostname: string;
  node?: string;
  pod?: string;
  /** When it took the lock (ISO time; before that, when it started waiting). */
  since: string;
  /** Set by a holder that accepts hand-over requests; absent in the protocol before hand-over. */
  handsOver?: boolean;
}

export interface AgentLockOptions {
  /**
   * Called when this agent starts waiting and whenever the holder it waits for changes; `holder`
   * is undefined when the holder did not say who it is (yet).
   */
  onWait?: (message: string, holder: AgentLockHolder | undefined) => void;
  /** Called once the lock is held (after a wait or not). */
  onAcquired?: (message: string) => void;
  /**
   * Called when, while held, `agent.lock` no longer is this agent's socket (removed or replaced by
   * someone): another agent may be running. Default: SIGTERM to this process (a graceful stop that
   * keeps every device; the restarted agent waits for the lock).
   */
  onLost?: (message: string) => void;
  /** Aborting while waiting rejects with the signal's reason. */
  signal?: AbortSignal;
  /** What the holder tells waiters besides pid, hostname and time (e.g. node and pod name). */
  identity?: { node?: string; pod?: string };
  /** While waiting, ask the holder to hand the node over (it must have been started with `onHandoverRequest`). */
  requestHandover?: boolean;
  /**
   * While holding, called (once) when a waiter asks for the node: the holder gets its devices off its
   * hands and releases the lock. Without it, requests are ignored.
   */
  onHandoverRequest?: (from: AgentLockHolder | undefined) => void;
  /**
   * While waiting with `requestHandover`, called once per holder whose greeting says it does not
   * accept requests (an agent of a version before hand-over, or one started without it): it will
   * keep the lock until it stops. Waiting goes on; the lock is taken once that holder releases it.
   */
  onHolderCannotHandOver?: (message: string, holder: AgentLockHolder) => void;
  /** Retry interval while waiting, besides the immediate retry when the holder goes (default 2 s). */
  pollMs?: number;
  /** After taking over a stale lock, wait this long and check it is still ours (default 250 ms). */
  settleMs?: number;
  /** While held, check this often that the lock is still ours (default 5 s). */
  checkMs?: number;
}

export interface AgentLock {
  /** `<dir>/agent.lock`. */
  readonly path: string;
  /** Gives the lock up (idempotent). Also done on process exit; a killed process loses it with its socket. */
  release(): Promise<void>;
}

type Probe = { kind: 'held'; socket: Socket } | { kind: 'stale' } | { kind: 'absent' } | { kind: 'error'; message: string };

/** Connects to the lock; 'held' keeps the connection open (it ends when the holder goes). */
function probe(path: string): Promise<Probe> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    const done = (p: Probe) => {
      s.removeAllListeners('connect');
      s.removeAllListeners('error');
      resolve(p);
    };
    s.once('connect', () => {
      done({ kind: 'held', socket: s });
      s.on('error', () => s.destroy()); // ECONNRESET when the holder dies: 'close' follows
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      s.destroy();
      if (err.code === 'ECONNREFUSED') done({ kind: 'stale' });
      else if (err.code === 'ENOENT') done({ kind: 'absent' });
      else done({ kind: 'error', message: `${err.code ?? ''} ${err.message}`.trim() });
    });
  });
}

/** The holder's first line on a connection (undefined if it does not answer within `ms`). */
function readHolder(s: Socket, ms: number): Promise<AgentLockHolder | undefined> {
  return new Promise((resolve) => {
    let buf = '';
    const finish = (h: AgentLockHolder | undefined) => {
      clearTimeout(timer);
      s.removeListener('data', onData);
      s.removeListener('end', onEnd);
      resolve(h);
    };
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0 && buf.length < 4096) return;
      try {
        const h = JSON.parse(buf.slice(0, nl < 0 ? undefined : nl)) as AgentLockHolder;
        finish(typeof h.pid === 'number' ? h : undefined);
      } catch {
        finish(undefined);
      }
    };
    const onEnd = () => finish(undefined);
    const timer = setTimeout(() => finish(undefined), ms);
    s.on('data', onData);
    s.once('end', onEnd);
  });
}

/** Resolves when the connection ends, after `ms`, or when `signal` aborts. */
function until(s: Socket, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      s.removeListener('close', finish);
      signal?.removeEventListener('abort', finish);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    s.once('close', finish);
    s.resume(); // drain anything else the holder sends, so 'close' comes
    signal?.addEventListener('abort', finish, { once: true });
  });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function describe(h: AgentLockHolder | undefined): string {
  if (!h) return 'an agent that did not say who it is';
  const where = [h.pod ? `pod ${h.pod}` : '', h.node ? `node ${h.node}` : '', `host ${h.hostname}`].filter(Boolean).join(', ');
  return `pid ${h.pid} (${where}; holding it since ${h.since})`;
}

function inode(path: string): number | undefined {
  try {
    return lstatSync(path).ino;
  } catch {
    return undefined;
  }
}

/**
 * Takes the agent lock in `dir` (created if missing), waiting while another live agent holds it:
 * until that agent releases it or dies (its lock is then stale and taken over). Resolves once held.
 */
export async function acquireAgentLock(dir: string, opts: AgentLockOptions = {}): Promise<AgentLock> {
  const lockPath = join(dir, AGENT_LOCK_FILE);
  const ownPath = join(dir, `${OWN_PREFIX}${randomBytes(6).toString('hex')}${OWN_SUFFIX}`);
  if (Buffer.byteLength(ownPath) > MAX_SOCKET_PATH) throw new Error(`state folder path too long for the agent lock socket (${ownPath}: over ${MAX_SOCKET_PATH} bytes)`);
  mkdirSync(dir, { recursive: true });
  const pollMs = opts.pollMs ?? 2000;
  const signal = opts.signal;

  // Our socket: answers every connection with who we are and keeps it open while we hold the lock.
  const identity: AgentLockHolder = {
    pid: process.pid, hostname: hostname(), ...opts.identity, since: new Date().toISOString(), ...(opts.onHandoverRequest ? { handsOver: true } : {}),
  };
  const conns = new Set<Socket>();
  let holding = false;
  let handoverAsked = false;
  const server: Server = createServer((c) => {
    conns.add(c);
    c.on('close', () => conns.delete(c));
    c.on('error', () => c.destroy());
    c.write(`${JSON.stringify(identity)}\n`);
    let buf = '';
    c.on('data', (d: Buffer) => {
      buf = (buf + d.toString('utf8')).slice(-4096);
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let req: (Partial<AgentLockHolder> & { handover?: unknown }) | undefined;
      try {
        req = JSON.parse(line) as typeof req;
      } catch {
        return;
      }
      if (req?.handover !== true || !holding || handoverAsked || !opts.onHandoverRequest) return;
      handoverAsked = true;
      opts.onHandoverRequest(typeof req.pid === 'number' ? (req as AgentLockHolder) : undefined);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(ownPath, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  server.unref();
  const ownIno = inode(ownPath);
  const cleanupSync = () => {
    if (ownIno !== undefined && inode(lockPath) === ownIno) rmSync(lockPath, { force: true });
    rmSync(ownPath, { force: true });
  };
  const giveUp = async () => {
    process.removeListener('exit', cleanupSync);
    cleanupSync();
    for (const c of conns) c.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  process.once('exit', cleanupSync);

  let lastHolder = '';
  let waited = false;
  let silentHolder = '';
  try {
    for (;;) {
      if (signal?.aborted) throw signal.reason ?? new Error('aborted');
      // 1. Free: link() creates the name only if nobody has it.
      try {
        linkSync(ownPath, lockPath);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const p = await probe(lockPath);
      if (p.kind === 'absent') continue; // released meanwhile
      if (p.kind === 'held') {
        const h = await readHolder(p.socket, 1000);
        const canAsk = opts.requestHandover && h?.handsOver === true;
        if (canAsk) p.socket.write(`${JSON.stringify({ handover: true, ...identity })}\n`);
        const msg = `another virtualio agent holds the node's agent lock ${lockPath}: ${describe(h)}; ` + (canAsk
          ? 'asked it to hand the node over; waiting until it has'
          : opts.requestHandover && h
            ? 'it does not accept hand-over requests (a version before hand-over, or started without --handover); waiting until it stops'
            : 'waiting until it stops (during a DaemonSet rolling update with surge the old agent holds it until it exits)');
        // No greeting: a holder that is busy, or one that is exiting right now (a connect can still
        // land in the backlog of a dying listener and then hang): ask again soon.
        if (msg !== lastHolder && (h || !lastHolder)) {
          lastHolder = msg;
          waited = true;
          opts.onWait?.(msg, h);
        }
        if (opts.requestHandover && h && !canAsk && silentHolder !== `${h.pid}@${h.hostname}@${h.since}`) {
          silentHolder = `${h.pid}@${h.hostname}@${h.since}`;
          opts.onHolderCannotHandOver?.(msg, h);
        }
        await until(p.socket, h ? pollMs : Math.min(pollMs, 1000), signal);
        p.socket.destroy();
        continue;
      }
      if (p.kind === 'error') {
        const msg = `cannot tell whether another agent holds ${lockPath} (${p.message}); waiting`;
        if (msg !== lastHolder) {
          lastHolder = msg;
          waited = true;
          opts.onWait?.(msg, undefined);
        }
        await sleep(pollMs, signal);
        continue;
      }
      // 2. Stale: nobody listens behind the name. Replace it atomically, then make sure we kept it.
      const tmp = join(dir, `${OWN_PREFIX}${randomBytes(6).toString('hex')}${TAKE_SUFFIX}`);
      try {
        linkSync(ownPath, tmp);
        renameSync(tmp, lockPath);
      } catch (err) {
        rmSync(tmp, { force: true });
        throw err;
      }
      await sleep(opts.settleMs ?? 250, signal);
      if (inode(lockPath) === ownIno) {
        opts.onWait?.(`took over the stale agent lock ${lockPath} (its holder is gone)`, undefined);
        break;
      }
    }
  } catch (err) {
    await giveUp();
    throw err;
  }

  identity.since = new Date().toISOString();
  holding = true;
  sweepDeadSockets(dir, ownPath);
  opts.onAcquired?.(`holding the node's agent lock ${lockPath}${waited ? ' after waiting for another agent' : ''}`);
  let released = false;
  const check = setInterval(() => {
    if (released || inode(lockPath) === ownIno) return;
    clearInterval(check);
    const msg = `the node's agent lock ${lockPath} is no longer held by this agent (removed or replaced): another agent may be running`;
    if (opts.onLost) opts.onLost(msg);
    else {
      console.error(msg);
      process.kill(process.pid, 'SIGTERM');
    }
  }, opts.checkMs ?? 5000);
  check.unref();
  return {
    path: lockPath,
    async release() {
      if (released) return;
      released = true;
      clearInterval(check);
      await giveUp();
    },
  };
}

/** Removes own-socket files of agents that are gone (connect refused); live ones are waiting agents. */
function sweepDeadSockets(dir: string, ownPath: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(OWN_PREFIX)) continue;
    const p = join(dir, n);
    if (p === ownPath) continue;
    if (n.endsWith(TAKE_SUFFIX)) {
      // Left by an agent killed in the middle of a takeover (a live one renames it within milliseconds).
      try {
        if (Date.now() - lstatSync(p).ctimeMs > 60_000) rmSync(p, { force: true });
      } catch {
        /* gone meanwhile */
      }
      continue;
    }
    if (!n.endsWith(OWN_SUFFIX)) continue;
    void probe(p).then((r) => {
      if (r.kind === 'held') r.socket.destroy();
      if (r.kind === 'stale') rmSync(p, { force: true });
    });
  }
}
