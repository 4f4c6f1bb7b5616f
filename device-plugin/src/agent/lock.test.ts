import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { acquireAgentLock, AGENT_LOCK_FILE, type AgentLockHolder } from './lock.js';

const REPO = resolve(import.meta.dirname, '../../..');

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vio-lock-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** The lock code of agents released before hand-over (a frozen copy of be92450's lock.ts). */
const LOCK_BEFORE_HANDOVER = join(REPO, 'test/fixtures/agent-lock/lock-before-handover.ts');

/** A second agent: a child process that takes the lock with the real code (or `lockModule`) and prints "held". */
function childHolder(lockDir: string, lockModule = join(REPO, 'device-plugin/src/agent/lock.ts')): { child: ChildProcess; held: Promise<void> } {
  const script = join(lockDir, 'holder.mjs');
  writeFileSync(script, [
    `import { acquireAgentLock } from ${JSON.stringify(lockModule)};`,
    `await acquireAgentLock(${JSON.stringify(lockDir)}, { identity: { pod: 'agent-old', node: 'n1' } });`,
    "process.stdout.write('held\\n');",
    'setInterval(() => {}, 1000);',
  ].join('\n'));
  const child = spawn(process.execPath, ['--import', join(REPO, 'test/sysfs/ts-hooks.mjs'), script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const held = new Promise<void>((ok, fail) => {
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('held')) ok();
    });
    child.once('exit', (code, sig) => fail(new Error(`holder exited (${code ?? sig})`)));
  });
  return { child, held };
}

describe('agent lock', () => {
  test('a second acquirer waits, is told who holds it, and gets it once the first releases it', async () => {
    const first = await acquireAgentLock(dir, { identity: { pod: 'agent-a', node: 'n1' } });
    const waits: { message: string; holder: AgentLockHolder | undefined }[] = [];
    let got = false;
    const second = acquireAgentLock(dir, { pollMs: 60_000, onWait: (message, holder) => waits.push({ message, holder }) }).then((l) => {
      got = true;
      return l;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(got).toBe(false);
    expect(waits).toHaveLength(1);
    expect(waits[0]?.holder).toMatchObject({ pid: process.pid, pod: 'agent-a', node: 'n1' });
    expect(waits[0]?.message).toContain(`another virtualio agent holds the node's agent lock ${join(dir, AGENT_LOCK_FILE)}: pid ${process.pid} (pod agent-a, node n1`);
    const t0 = Date.now();
    await first.release();
    const lock = await second; // at once (the holder's connection closed), not after pollMs
    expect(Date.now() - t0).toBeLessThan(5000);
    await lock.release();
    expect(existsSync(join(dir, AGENT_LOCK_FILE))).toBe(false);
    expect(readdirSync(dir)).toEqual([]);
  });

  test('the lock of an agent killed with SIGKILL is stale and taken over', async () => {
    const { child, held } = childHolder(dir);
    try {
      await held;
      const waits: string[] = [];
      let got = false;
      const mine = acquireAgentLock(dir, { pollMs: 60_000, onWait: (m) => waits.push(m) }).then((l) => {
        got = true;
        return l;
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(got).toBe(false);
      expect(waits[0]).toMatch(/pid \d+ \(pod agent-old, node n1/);
      const t0 = Date.now();
      child.kill('SIGKILL');
      const lock = await mine;
      expect(Date.now() - t0).toBeLessThan(10_000); // not after pollMs
      expect(waits.at(-1)).toBe(`took over the stale agent lock ${join(dir, AGENT_LOCK_FILE)} (its holder is gone)`);
      await lock.release();
      // The killed agent's socket file is swept once someone holds the lock; nothing else is left.
      await new Promise((r) => setTimeout(r, 100));
      expect(readdirSync(dir).filter((n) => n !== 'holder.mjs')).toEqual([]);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a lock file nobody listens behind (left by an agent killed before this one started) is taken over at once', async () => {
    // What a SIGKILL leaves: the socket file, and no listener behind it.
    const path = join(dir, AGENT_LOCK_FILE);
    const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((ok) => child.stdout?.once('data', () => ok()));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(path)).toBe(true);
    const messages: string[] = [];
    const lock = await acquireAgentLock(dir, { onWait: (m) => messages.push(m), settleMs: 10 });
    expect(messages).toEqual([`took over the stale agent lock ${path} (its holder is gone)`]);
    await lock.release();
    expect(readdirSync(dir)).toEqual([]);
  });

  test('a holder whose lock is replaced under it is told', async () => {
    const lost: string[] = [];
    const lock = await acquireAgentLock(dir, { checkMs: 20, onLost: (m) => lost.push(m) });
    rmSync(join(dir, AGENT_LOCK_FILE));
    await new Promise((r) => setTimeout(r, 100));
    expect(lost).toEqual([`the node's agent lock ${join(dir, AGENT_LOCK_FILE)} is no longer held by this agent (removed or replaced): another agent may be running`]);
    await lock.release();
  });

  test('waiting stops when the signal aborts', async () => {
    const first = await acquireAgentLock(dir);
    const ac = new AbortController();
    const second = acquireAgentLock(dir, { signal: ac.signal, pollMs: 60_000 });
    await new Promise((r) => setTimeout(r, 100));
    ac.abort(new Error('shutting down'));
    await expect(second).rejects.toThrow('shutting down');
    await first.release();
    expect(readdirSync(dir)).toEqual([]);
  });

  test('hand-over: a waiter that asks is named to a holder that accepts, once; the holder releases and the waiter holds it', async () => {
    const asked: (AgentLockHolder | undefined)[] = [];
    const held: { lock?: Awaited<ReturnType<typeof acquireAgentLock>> } = {};
    held.lock = await acquireAgentLock(dir, {
      identity: { pod: 'agent-old', node: 'n1' },
      onHandoverRequest: (from) => {
        asked.push(from);
        void held.lock?.release();
      },
    });
    const waits: string[] = [];
    const second = await acquireAgentLock(dir, { identity: { pod: 'agent-new', node: 'n1' }, pollMs: 60_000, requestHandover: true, onWait: (m) => waits.push(m) });
    expect(asked).toEqual([expect.objectContaining({ pod: 'agent-new', node: 'n1', pid: process.pid })]);
    expect(waits[0]).toMatch(/pod agent-old.*asked it to hand the node over/);
    await second.release();
  });

  test('hand-over: a holder without onHandoverRequest ignores the request (the waiter keeps waiting); a waiter without requestHandover never asks', async () => {
    const asked: unknown[] = [];
    const first = await acquireAgentLock(dir, { identity: { pod: 'agent-a' } });
    const ac = new AbortController();
    const second = acquireAgentLock(dir, { requestHandover: true, pollMs: 50, signal: ac.signal });
    await new Promise((r) => setTimeout(r, 300));
    ac.abort(new Error('gave up'));
    await expect(second).rejects.toThrow('gave up');
    await first.release();

    const holder = await acquireAgentLock(dir, { onHandoverRequest: (from) => asked.push(from) });
    const ac2 = new AbortController();
    const plain = acquireAgentLock(dir, { pollMs: 50, signal: ac2.signal });
    await new Promise((r) => setTimeout(r, 300));
    ac2.abort(new Error('gave up'));
    await expect(plain).rejects.toThrow('gave up');
    expect(asked).toEqual([]);
    await holder.release();
  });

  test('hand-over from an agent before hand-over: the old holder ignores the request, the waiter knows from its greeting at once, stays a standby and takes the lock once the old one stops', async () => {
    const { child, held } = childHolder(dir, LOCK_BEFORE_HANDOVER);
    try {
      await held;
      const silent: { message: string; holder: AgentLockHolder }[] = [];
      let got = false;
      const t0 = Date.now();
      let toldAfterMs = -1;
      const mine = acquireAgentLock(dir, {
        identity: { pod: 'agent-new', node: 'n1' }, requestHandover: true, pollMs: 100,
        onHolderCannotHandOver: (message, holder) => {
          toldAfterMs = Date.now() - t0;
          silent.push({ message, holder });
        },
      }).then((l) => {
        got = true;
        return l;
      });
      // Re-asked every 100 ms for a second: told once, about that one holder, and the lock stays theirs.
      await new Promise((r) => setTimeout(r, 1000));
      expect(got).toBe(false);
      expect(silent).toHaveLength(1);
      expect(silent[0]?.holder).toMatchObject({ pod: 'agent-old', node: 'n1', pid: child.pid });
      expect(silent[0]?.holder.handsOver).toBeUndefined();
      expect(silent[0]?.message).toContain('it does not accept hand-over requests (a version before hand-over, or started without --handover); waiting until it stops');
      // The first greeting decides it (no timeout waited for): well under the 1 s greeting read limit.
      expect(toldAfterMs).toBeGreaterThanOrEqual(0);
      process.stdout.write(`old-protocol holder recognised after ${toldAfterMs} ms\n`);
      // The old agent stops (the DaemonSet deletes its pod once the standby is Ready): the lock is ours.
      child.kill('SIGTERM');
      const lock = await mine;
      await lock.release();
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('a waiter with requestHandover is not told "cannot hand over" by a holder that accepts; the greeting says so', async () => {
    const greetings: (AgentLockHolder | undefined)[] = [];
    const silent: unknown[] = [];
    const held: { lock?: Awaited<ReturnType<typeof acquireAgentLock>> } = {};
    held.lock = await acquireAgentLock(dir, { onHandoverRequest: () => void held.lock?.release() });
    const lock = await acquireAgentLock(dir, { requestHandover: true, pollMs: 60_000, onWait: (_m, h) => greetings.push(h), onHolderCannotHandOver: (m) => silent.push(m) });
    expect(greetings[0]?.handsOver).toBe(true);
    expect(silent).toEqual([]);
    await lock.release();
  });
});
