import type { Watch } from '@kubernetes/client-node';
import type { KubeObject } from './ports.js';
import { WatchSource } from './watch-source.js';

type Cb = (phase: string, obj: unknown) => void;
type Done = (err: unknown) => void;

/** client-node's Watch reduced to what WatchSource calls: records every watch request. */
function stubWatch() {
  const calls: { query: Record<string, string>; cb: Cb; done: Done; aborted: boolean }[] = [];
  const watch = {
    async watch(_path: string, query: Record<string, string>, cb: Cb, done: Done) {
      const call = { query, cb, done, aborted: false };
      calls.push(call);
      const ac = new AbortController();
      ac.signal.addEventListener('abort', () => (call.aborted = true));
      return ac;
    },
  };
  return { watch: watch as unknown as Watch, calls };
}

const obj = (name: string, rv: string): KubeObject => ({ metadata: { name, resourceVersion: rv } });
const tick = () => new Promise((r) => setImmediate(r));

describe('WatchSource', () => {
  test('lists once, watches with bookmarks, and resumes from the last bookmark without listing', async () => {
    const { watch, calls } = stubWatch();
    let lists = 0;
    const src = new WatchSource<KubeObject>(watch, { path: '/apis/x/v1/things', labelSelector: 'a=b', list: async () => `${++lists * 100}` });
    const seen: string[] = [];
    src.on('add', (o) => seen.push(`add:${o.metadata.name}`));
    src.on('update', (o) => seen.push(`update:${o.metadata.name}`));
    src.on('delete', (o) => seen.push(`delete:${o.metadata.name}`));
    let connects = 0;
    src.on('connect', () => connects++);
    await src.start();
    expect(calls[0]?.query).toEqual({ resourceVersion: '100', allowWatchBookmarks: 'true', labelSelector: 'a=b' });
    calls[0]?.cb('ADDED', obj('a', '101'));
    calls[0]?.cb('MODIFIED', obj('a', '102'));
    calls[0]?.cb('BOOKMARK', { metadata: { resourceVersion: '150' } });
    expect(connects).toBe(2); // the connection and the bookmark
    calls[0]?.cb('DELETED', obj('a', '151'));
    calls[0]?.cb('BOOKMARK', { metadata: { resourceVersion: '200' } });
    expect(seen).toEqual(['add:a', 'update:a', 'delete:a']);
    // client-node's inactivity timeout: reconnect from the bookmark, no list.
    calls[0]?.done(Object.assign(new Error('timeout'), { name: 'TimeoutError' }));
    await tick();
    expect(calls[1]?.query.resourceVersion).toBe('200');
    expect(lists).toBe(1);
    await src.stop();
    expect(calls[1]?.aborted).toBe(true);
  });

  test('410 Gone lists again; any other failure is reported and the source stops', async () => {
    const { watch, calls } = stubWatch();
    let lists = 0;
    const src = new WatchSource<KubeObject>(watch, { path: '/api/v1/nodes', list: async () => `${++lists * 100}` });
    const errors: unknown[] = [];
    src.on('error', (e) => errors.push(e));
    await src.start();
    calls[0]?.cb('ERROR', { code: 410 });
    calls[0]?.done(null);
    await tick();
    expect(lists).toBe(2);
    expect(calls[1]?.query.resourceVersion).toBe('200');
    calls[1]?.done(Object.assign(new Error('Gone'), { statusCode: 410 }));
    await tick();
    expect(lists).toBe(3);
    calls[2]?.done(Object.assign(new Error('Forbidden'), { statusCode: 403 }));
    await tick();
    expect(errors).toHaveLength(1);
    expect(calls).toHaveLength(3);
    // The caller restarts: from the last resourceVersion, without a list.
    await src.start();
    expect(calls[3]?.query.resourceVersion).toBe('300');
    expect(lists).toBe(3);
    // A watch the server ends at once is a failure, not a reason to reconnect in a loop.
    calls[3]?.done(null);
    await tick();
    expect(errors).toHaveLength(2);
    expect(calls).toHaveLength(4);
    await src.stop();
  });
});
