import { ManualClock } from './clock.js';
import { WorkQueue } from './workqueue.js';

describe('WorkQueue', () => {
  test('de-duplicates keys added before they are worked', async () => {
    const q = new WorkQueue({ clock: new ManualClock() });
    q.add('a');
    q.add('b');
    q.add('a');
    expect(q.len()).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    expect(q.len()).toBe(0);
  });

  test('never hands out a key that is being worked; re-queues it on done', async () => {
    const q = new WorkQueue({ clock: new ManualClock() });
    q.add('a');
    const k = await q.get();
    expect(k).toBe('a');
    q.add('a'); // changed while being worked
    q.add('b');
    expect(await q.get()).toBe('b'); // not 'a' again
    expect(q.len()).toBe(0);
    q.done('a');
    expect(q.len()).toBe(1);
    expect(await q.get()).toBe('a');
  });

  test('a key added several times while being worked comes back once', async () => {
    const q = new WorkQueue({ clock: new ManualClock() });
    q.add('a');
    await q.get();
    q.add('a');
    q.add('a');
    q.done('a');
    expect(q.len()).toBe(1);
    await q.get();
    q.done('a');
    expect(q.len()).toBe(0);
  });

  test('a waiting get receives the next key', async () => {
    const q = new WorkQueue({ clock: new ManualClock() });
    const p = q.get();
    q.add('x');
    expect(await p).toBe('x');
    expect(q.inFlight()).toBe(1);
  });

  test('backs off per key exponentially and forget resets it (injected clock)', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock, baseDelayMs: 10, maxDelayMs: 50 });
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = clock.now();
      q.addRateLimited('k');
      expect(q.len()).toBe(0);
      // advance 1 ms at a time until the key shows up
      while (q.len() === 0) await clock.advance(1);
      delays.push(clock.now() - before);
      await q.get();
      q.done('k');
    }
    expect(delays).toEqual([10, 20, 40, 50, 50]);
    expect(q.numRequeues('k')).toBe(5);
    q.forget('k');
    expect(q.numRequeues('k')).toBe(0);
    const before = clock.now();
    q.addRateLimited('k');
    while (q.len() === 0) await clock.advance(1);
    expect(clock.now() - before).toBe(10);
  });

  test('backoff of one key does not delay another', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock, baseDelayMs: 1000 });
    q.addRateLimited('slow');
    q.add('fast');
    expect(await q.get()).toBe('fast');
    expect(q.len()).toBe(0);
    await clock.advance(1000);
    expect(await q.get()).toBe('slow');
  });

  test('addAfter keeps the earliest pending time (debounce, not postpone)', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock });
    q.addAfter('k', 100);
    await clock.advance(60);
    q.addAfter('k', 100); // would be at 160; the pending 100 stands
    await clock.advance(40);
    expect(q.len()).toBe(1);
    await q.get();
    q.done('k');
    await clock.advance(100);
    expect(q.len()).toBe(0);
  });

  test('addAfter moves a pending add earlier', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock });
    q.addAfter('k', 1000);
    q.addAfter('k', 10);
    await clock.advance(10);
    expect(q.len()).toBe(1);
    await q.get();
    q.done('k');
    await clock.advance(1000);
    expect(q.len()).toBe(0);
  });

  test('shutDown releases waiting workers and ignores later adds', async () => {
    const clock = new ManualClock();
    const q = new WorkQueue({ clock });
    const p = q.get();
    q.addAfter('later', 10);
    q.shutDown();
    expect(await p).toBeUndefined();
    q.add('x');
    await clock.advance(20);
    expect(q.len()).toBe(0);
    expect(await q.get()).toBeUndefined();
  });

  test('get resolves undefined when its signal aborts', async () => {
    const q = new WorkQueue({ clock: new ManualClock() });
    const ac = new AbortController();
    const p = q.get(ac.signal);
    ac.abort();
    expect(await p).toBeUndefined();
    q.add('a');
    expect(await q.get()).toBe('a');
  });
});
