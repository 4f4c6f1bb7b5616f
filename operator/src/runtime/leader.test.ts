import pino from 'pino';
import { KubeError } from '../kube/errors.js';
import { FakeKube } from '../kube/fake.js';
import { flush, ManualClock } from './clock.js';
import { runLeaderElection } from './leader.js';

const log = pino({ level: 'silent' });

function candidate(kube: FakeKube, clock: ManualClock, identity: string, leaseDurationMs = 15_000) {
  const ac = new AbortController();
  const state = { leading: false, terms: 0 };
  const done = runLeaderElection({
    kube, namespace: 'virtualio-system', name: 'virtualio-operator', identity, leaseDurationMs, clock, log,
    onStartedLeading: async (signal) => {
      state.leading = true;
      state.terms++;
      await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
    },
    onStoppedLeading: () => {
      state.leading = false;
    },
  }, ac.signal);
  return { state, done, ac };
}

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
});
