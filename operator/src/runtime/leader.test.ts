import { getEventListeners } from 'node:events';
import pino from 'pino';
import { KubeError } from '../kube/errors.js';
import { FakeKube } from '../../../test/fakes/kube-api.js';
import { flush, ManualClock, sleep } from './clock.js';
import { runLeaderElection, type LeaderElectionResult } from './leader.js';

const log = pino({ level: 'silent' });

/**
 * One replica. Its work, once aborted, takes `stopMs` to finish (Infinity: never, as a hung request
 * would); `failAfterMs` makes the work end by itself (a crash of the controllers).
 */
function candidate(kube: FakeKube, clock: ManualClock, identity: string, leaseDurationMs = 15_000, work: { stopMs?: number; failAfterMs?: number } = {}) {
  const ac = new AbortController();
  const state = { leading: false, terms: 0, working: false, result: undefined as LeaderElectionResult | undefined };
  const done = runLeaderElection({
    kube, namespace: 'virtualio-system', name: 'virtualio-operator', identity, leaseDurationMs, clock, log,
    onStartedLeading: async (signal) => {
      state.leading = true;
      state.working = true;
      state.terms++;
      if (work.failAfterMs !== undefined) {
        await sleep(clock, work.failAfterMs);
        state.working = false;
        throw new Error('controllers crashed');
      }
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
      if (work.stopMs === Infinity) await new Promise(() => undefined);
      if (work.stopMs) await sleep(clock, work.stopMs);
      state.working = false;
    },
    onStoppedLeading: () => {
      state.leading = false;
    },
  }, ac.signal).then((r) => (state.result = r));
  return { state, done, ac };
}

const LEASE = ['virtualio-system', 'virtualio-operator'] as const;

describe('leader election', () => {
  test('of two candidates exactly one leads, and renewals keep the other standing by', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a');
    await flush();
    const b = candidate(kube, clock, 'b');
    await clock.advance(3000);
    expect([a.state.leading, b.state.leading]).toEqual([true, false]);
    expect(kube.lease('virtualio-system', 'virtualio-operator')).toMatchObject({ holderIdentity: 'a', leaseDurationSeconds: 15, leaseTransitions: 0 });
    await clock.advance(60_000);
    expect([a.state.leading, b.state.leading]).toEqual([true, false]);
    a.ac.abort();
    b.ac.abort();
    await Promise.all([a.done, b.done]);
  });

  test('a crashed leader (no release) is replaced only after the lease expires, within one lease duration', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    // Leader "a" holds a lease renewed now and then dies without releasing.
    await kube.createLease('virtualio-system', 'virtualio-operator', { holderIdentity: 'a', leaseDurationSeconds: 15, acquireTime: clock.now(), renewTime: clock.now(), leaseTransitions: 0 });
    const b = candidate(kube, clock, 'b');
    await clock.advance(12_000);
    expect(b.state.leading).toBe(false);
    await clock.advance(6_000); // 15 s after b first saw the record, plus one retry period
    expect(b.state.leading).toBe(true);
    expect(kube.lease('virtualio-system', 'virtualio-operator')).toMatchObject({ holderIdentity: 'b', leaseTransitions: 1 });
    b.ac.abort();
    await b.done;
  });

  test('a leader that cannot renew for the renew deadline steps down, then campaigns again', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a');
    await clock.advance(100);
    expect(a.state.leading).toBe(true);
    const undo = kube.inject((op) => (op === 'lease' ? new KubeError('Transient', 0, 'connection refused') : undefined));
    await clock.advance(9000); // < renew deadline (10 s)
    expect(a.state.leading).toBe(true);
    await clock.advance(3000);
    expect(a.state.leading).toBe(false);
    undo();
    await clock.advance(3000);
    expect(a.state.leading).toBe(true);
    expect(a.state.terms).toBe(2);
    a.ac.abort();
    await a.done;
  });

  test('graceful shutdown releases the lease so a standby takes over at its next retry', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a');
    await clock.advance(100);
    const b = candidate(kube, clock, 'b');
    await clock.advance(3000);
    expect(b.state.leading).toBe(false);
    a.ac.abort();
    await a.done;
    expect(kube.lease('virtualio-system', 'virtualio-operator')?.holderIdentity).toBe('');
    await clock.advance(3000);
    expect(b.state.leading).toBe(true);
    b.ac.abort();
    await b.done;
  });

  test('shutdown: the leader keeps (and renews) the lease while its work drains, then releases it', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a', 15_000, { stopMs: 7000 }); // 7 s of in-flight writes
    await clock.advance(100);
    const b = candidate(kube, clock, 'b');
    await clock.advance(3000);
    a.ac.abort();
    const renewedAt = kube.lease(...LEASE)!.renewTime!;
    await clock.advance(6500);
    // Still draining: a holds and renews the lease; b, which retries every 3 s, has not taken it.
    expect(a.state.working).toBe(true);
    expect(kube.lease(...LEASE)).toMatchObject({ holderIdentity: 'a' });
    expect(kube.lease(...LEASE)!.renewTime!).toBeGreaterThan(renewedAt);
    expect(b.state.leading).toBe(false);
    await clock.advance(600);
    expect(a.state.working).toBe(false);
    expect(a.state.result).toEqual({ reason: 'shutdown', drained: true, released: true });
    expect(kube.lease(...LEASE)?.holderIdentity).toBe('');
    await clock.advance(3000);
    expect(b.state.leading).toBe(true);
    b.ac.abort();
    await Promise.all([a.done, b.done]);
  });

  test('shutdown: work that does not stop within the drain budget is given up on, and the lease is not released under it', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a', 15_000, { stopMs: Infinity });
    await clock.advance(100);
    const b = candidate(kube, clock, 'b');
    await clock.advance(3000);
    a.ac.abort();
    await clock.advance(9900);
    expect(a.state.result).toBeUndefined();
    await clock.advance(200); // the default drain budget: 10 s
    expect(a.state.result).toEqual({ reason: 'shutdown', drained: false, released: false });
    expect(a.state.leading).toBe(false);
    // The caller exits; the lease, last renewed during the drain, expires and b takes over then.
    expect(kube.lease(...LEASE)?.holderIdentity).toBe('a');
    expect(b.state.leading).toBe(false);
    await clock.advance(18_000);
    expect(b.state.leading).toBe(true);
    b.ac.abort();
    await b.done;
  });

  test('loss: a leader whose work does not stop before another may lead ends the election (the caller exits) instead of campaigning again', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a', 15_000, { stopMs: Infinity });
    await clock.advance(100);
    kube.inject((op) => (op === 'lease' ? new KubeError('Transient', 0, 'connection refused') : undefined));
    await clock.advance(12_000); // renew deadline 10 s: lost, work told to stop
    expect(a.state.result).toBeUndefined();
    await clock.advance(5000); // lease - renew deadline = 5 s later, the work still runs
    expect(a.state.result).toEqual({ reason: 'lost', drained: false, released: false });
    expect(a.state.terms).toBe(1);
  });

  test('the work ending by itself: the leader steps down, releases the lease and ends the election', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a', 15_000, { failAfterMs: 4000 });
    await clock.advance(100);
    const b = candidate(kube, clock, 'b');
    await clock.advance(4000);
    expect(a.state.result).toEqual({ reason: 'failed', drained: true, released: true });
    expect(a.state.terms).toBe(1);
    await clock.advance(3000);
    expect(b.state.leading).toBe(true);
    b.ac.abort();
    await b.done;
  });

  test('a replacement that starts right after the release may take the lease before the standby: still exactly one leader', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a');
    await clock.advance(100);
    const b = candidate(kube, clock, 'b');
    await clock.advance(1000);
    a.ac.abort();
    await a.done;
    expect(kube.lease(...LEASE)?.holderIdentity).toBe('');
    const c = candidate(kube, clock, 'c'); // campaigns at once; b retries within 3 s
    await clock.advance(3000);
    expect([b.state.leading, c.state.leading]).toEqual([false, true]);
    expect(kube.lease(...LEASE)).toMatchObject({ holderIdentity: 'c', leaseTransitions: 1 });
    await clock.advance(60_000);
    expect([b.state.leading, c.state.leading]).toEqual([false, true]);
    b.ac.abort();
    c.ac.abort();
    await Promise.all([b.done, c.done]);
  });

  test('a long term leaves no timers or listeners behind', async () => {
    const clock = new ManualClock();
    const kube = new FakeKube({ clock });
    const a = candidate(kube, clock, 'a');
    await clock.advance(100);
    const pending = clock.pending;
    const listeners = getEventListeners(a.ac.signal, 'abort').length;
    await clock.advance(60 * 60_000);
    expect(clock.pending).toBeLessThanOrEqual(pending);
    expect(getEventListeners(a.ac.signal, 'abort').length).toBeLessThanOrEqual(listeners);
    a.ac.abort();
    await a.done;
  });
});
