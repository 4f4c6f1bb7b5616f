import pino from 'pino';
import { KubeError } from '../kube/errors.js';
import { FakeKube } from '../../../test/fakes/kube-api.js';
import type { KubeObject } from '../kube/ports.js';
import { VirtualIODevices } from '../kube/resources.js';
import { flush, ManualClock } from './clock.js';
import { Informer } from './informer.js';

const log = pino({ level: 'silent' });
const obj = (name: string): KubeObject & Record<string, unknown> => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec: { class: 'NIC' } });

async function seeded(names: string[], opts: Parameters<typeof setup>[0] = {}) {
  const clock = new ManualClock();
  const kube = new FakeKube({ clock });
  for (const n of names) await kube.create(VirtualIODevices, obj(n));
  return setup({ ...opts, clock, kube });
}

function setup(opts: { silenceMs?: number; pageSize?: number; transform?: (o: KubeObject) => KubeObject; clock?: ManualClock; kube?: FakeKube } = {}) {
  const clock = opts.clock ?? new ManualClock();
  const kube = opts.kube ?? new FakeKube({ clock });
  const restarts: string[] = [];
  const inf = new Informer<KubeObject>({
    kube, resource: VirtualIODevices, clock, log, silenceMs: opts.silenceMs ?? 60_000, baseBackoffMs: 100, maxBackoffMs: 400,
    pageSize: opts.pageSize, transform: opts.transform,
    observer: { restarted: (_r, reason) => restarts.push(reason) },
  });
  const seen: string[] = [];
  inf.onChange((o, old) => seen.push(`${o ? (old ? 'update' : 'add') : 'delete'}:${(o ?? old)?.metadata.name}`));
  const ac = new AbortController();
  const run = inf.run(ac.signal);
  return { clock, kube, inf, seen, restarts, stop: async () => { ac.abort(); await run; } };
}

describe('Informer', () => {
  test('lists, then follows the watch', async () => {
    const t = setup();
    await t.kube.create(VirtualIODevices, obj('a'));
    await t.inf.synced();
    await t.kube.create(VirtualIODevices, obj('b'));
    await t.kube.delete(VirtualIODevices, 'a');
    await flush();
    expect(t.seen).toEqual(['add:a', 'add:b', 'delete:a']);
    expect(t.inf.list().map((o) => o.metadata.name)).toEqual(['b']);
    await t.stop();
    expect(t.kube.watchCount()).toBe(0);
  });

  test('restarts a failed watch with backoff and resumes without losing events', async () => {
    const t = setup();
    await t.inf.synced();
    // The next two restarts fail (list/watch errors), then the API recovers.
    let failing = 2;
    t.kube.failWatches();
    const undo = t.kube.inject((op) => (op === 'list' && failing-- > 0 ? new KubeError('Transient', 0, 'connection refused') : undefined));
    await t.kube.create(VirtualIODevices, obj('during-outage'));
    await flush();
    expect(t.kube.watchCount()).toBe(0);
    expect(t.seen).toEqual([]);
    // Resume from the last resourceVersion: no list needed, so the injected list failures do not apply.
    await t.clock.advance(100);
    expect(t.seen).toEqual(['add:during-outage']);
    expect(t.restarts).toEqual(['error']);
    expect(t.kube.watchCount()).toBe(1);
    undo();
    await t.stop();
  });

  test('a silent watch is replaced by a fresh list; deletions seen on the re-list are delivered', async () => {
    const t = setup({ silenceMs: 1000 });
    await t.kube.create(VirtualIODevices, obj('a'));
    await t.kube.create(VirtualIODevices, obj('b'));
    await t.inf.synced();
    t.kube.silenceWatches();
    await t.kube.delete(VirtualIODevices, 'a');
    await t.kube.create(VirtualIODevices, obj('c'));
    await flush();
    expect(t.inf.list().map((o) => o.metadata.name).sort()).toEqual(['a', 'b']); // events lost
    await t.clock.advance(1000);
    expect(t.restarts).toEqual(['silence']);
    expect(t.inf.list().map((o) => o.metadata.name).sort()).toEqual(['b', 'c']);
    expect(t.seen).toEqual(['add:a', 'add:b', 'delete:a', 'add:c']);
    expect(t.kube.watchCount()).toBe(1);
    await t.stop();
  });

  test('lists in pages, reducing each item as it arrives, and re-lists the same way', async () => {
    const names = ['a', 'b', 'c', 'd', 'e'];
    const reduced: string[] = [];
    const t = await seeded(names, {
      silenceMs: 1000, pageSize: 2,
      transform: (o) => {
        reduced.push(o.metadata.name);
        return { metadata: { name: o.metadata.name, resourceVersion: o.metadata.resourceVersion } };
      },
    });
    await t.inf.synced();
    expect(t.kube.listCalls).toBe(3); // 2 + 2 + 1
    expect(reduced).toEqual(names);
    expect(t.inf.list().map((o) => o.metadata.name)).toEqual(names);
    expect(t.inf.get('a')).toEqual({ metadata: { name: 'a', resourceVersion: expect.any(String) } });
    expect(t.seen).toEqual(names.map((n) => `add:${n}`));
    // A re-list after silence pages again; an unchanged object is neither reduced twice into a change nor re-delivered.
    t.kube.silenceWatches();
    await t.kube.delete(VirtualIODevices, 'c');
    await flush();
    await t.clock.advance(1000);
    expect(t.kube.listCalls).toBe(5); // 2 + 2
    expect(t.inf.list().map((o) => o.metadata.name)).toEqual(['a', 'b', 'd', 'e']);
    expect(t.seen.slice(names.length)).toEqual(['delete:c']);
    await t.stop();
  });

  test('a reconnection keeps a quiet watch from being taken for a dead one', async () => {
    const t = setup({ silenceMs: 1000 });
    await t.inf.synced();
    const lists = t.kube.listCalls;
    // Nothing changes for 5 silence periods, but the source reconnects (a server-side watch timeout,
    // a bookmark) every 500 ms: no re-list.
    for (let i = 0; i < 10; i++) {
      t.kube.failWatches(undefined, new KubeError('Transient', 0, 'watch ended'));
      await t.clock.advance(500);
    }
    expect(t.restarts.filter((r) => r === 'silence')).toEqual([]);
    expect(t.kube.listCalls).toBe(lists);
    await t.stop();
  });

  test('re-list failures are retried with growing delays', async () => {
    const t = setup({ silenceMs: 1000 });
    await t.inf.synced();
    let lists = 0;
    const undo = t.kube.inject((op) => {
      if (op !== 'list') return undefined;
      lists++;
      return new KubeError('Transient', 503, 'unavailable');
    });
    t.kube.silenceWatches();
    await t.clock.advance(1000); // watchdog → fresh source → list fails (1)
    expect(lists).toBe(1);
    await t.clock.advance(100); // retry after 100 → fails (2)
    expect(lists).toBe(2);
    await t.clock.advance(150); // next delay is 200: nothing yet
    expect(lists).toBe(2);
    await t.clock.advance(50); // → (3)
    expect(lists).toBe(3);
    undo();
    await t.clock.advance(400); // the next retry lists successfully and watches again
    expect(t.kube.watchCount()).toBe(1);
    await t.kube.create(VirtualIODevices, obj('x'));
    await flush();
    expect(t.inf.get('x')).toBeDefined();
    await t.stop();
  });
});
