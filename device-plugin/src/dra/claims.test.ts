// The allocated-claims tracker (claims.ts) against a fake list/watch: what counts as "allocated
// here", watch events, re-list after an expired watch, and the staleness rule (unknown only before
// the first successful list).
import { silentLogger } from '../log.js';
import { AllocatedClaims, allocatedHere, type ClaimEventType, type ClaimListWatch } from './claims.js';
import type { ClaimObject } from './prepare.js';

const NODE = 'worker-1';

function claim(uid: string, results: { pool: string; device: string; driver?: string }[], pods: string[] = [], rv = '1'): ClaimObject & { metadata: { resourceVersion: string } } {
  return {
    metadata: { name: `c-${uid}`, namespace: 'vms', uid, resourceVersion: rv },
    status: {
      allocation: { devices: { results: results.map((r) => ({ request: 'r', driver: r.driver ?? 'virtualio.dev', pool: r.pool, device: r.device })) } },
      reservedFor: pods.map((p) => ({ resource: 'pods', name: p, uid: `uid-${p}` })),
    },
  };
}

/** A scripted API server: list answers (or errors) in turn; each watch runs until the test ends it. */
class FakeSource implements ClaimListWatch {
  lists: ({ items: ClaimObject[]; resourceVersion: string } | Error)[] = [];
  listCalls = 0;
  watches: { rv: string; emit: (t: ClaimEventType, o: unknown) => void; end: (err?: unknown) => void }[] = [];
  async list(): Promise<{ items: ClaimObject[]; resourceVersion: string }> {
    this.listCalls++;
    const next = this.lists.length > 1 ? this.lists.shift()! : this.lists[0];
    if (!next) throw new Error('no list scripted');
    if (next instanceof Error) throw next;
    return structuredClone(next);
  }
  watch(rv: string, onEvent: (t: ClaimEventType, o: unknown) => void, signal: AbortSignal): Promise<unknown> {
    return new Promise((resolve) => {
      const end = (err?: unknown): void => resolve(err);
      signal.addEventListener('abort', () => end(), { once: true });
      this.watches.push({ rv, emit: onEvent, end });
    });
  }
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (ok()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('allocatedHere: only our driver\'s results on this node, with the pods it is reserved for', () => {
  expect(allocatedHere(claim('u1', [{ pool: 'worker-1/gpu', device: 'fn-0000-3b-00-0' }, { pool: 'worker-2/gpu', device: 'fn-0000-3b-00-0' }, { pool: 'worker-1/x', device: 'y', driver: 'gpu.example.com' }], ['virt-launcher-a']), NODE)).toEqual({
    uid: 'u1', namespace: 'vms', name: 'c-u1', devices: [{ request: 'r', pool: 'worker-1/gpu', device: 'fn-0000-3b-00-0' }], pods: [{ name: 'virt-launcher-a', uid: 'uid-virt-launcher-a' }],
  });
  expect(allocatedHere(claim('u2', [{ pool: 'worker-2/gpu', device: 'd' }]), NODE)).toBeUndefined();
  expect(allocatedHere({ metadata: { name: 'c', namespace: 'vms', uid: 'u3' } }, NODE)).toBeUndefined();
  // A pool name that only starts like ours is another node's ("worker-10/...").
  expect(allocatedHere(claim('u4', [{ pool: 'worker-10/gpu', device: 'd' }]), NODE)).toBeUndefined();
});

describe('AllocatedClaims', () => {
  let src: FakeSource;
  let ctl: AbortController;
  let tracker: AllocatedClaims;
  let changes: number;
  let running: Promise<void>;

  function start(): void {
    ctl = new AbortController();
    changes = 0;
    tracker = new AllocatedClaims({ source: src, node: NODE, logger: silentLogger(), onChange: () => changes++, minRelistMs: 5, maxBackoffMs: 20 });
    running = tracker.run(ctl.signal);
  }

  beforeEach(() => {
    src = new FakeSource();
  });
  afterEach(async () => {
    ctl.abort();
    await running;
  });

  test('list, then watch from its version: added, modified (deallocated), deleted', async () => {
    src.lists = [{ items: [claim('u1', [{ pool: 'worker-1/gpu', device: 'a' }]), claim('u9', [{ pool: 'worker-2/gpu', device: 'a' }])], resourceVersion: '10' }];
    start();
    await until('the watch', () => src.watches.length === 1);
    expect(src.watches[0]!.rv).toBe('10');
    expect([...tracker.all().keys()]).toEqual(['u1']);
    expect(tracker.unknown()).toBeUndefined();
    const w = src.watches[0]!;
    w.emit('ADDED', claim('u2', [{ pool: 'worker-1/gpu', device: 'b' }], ['p2'], '11'));
    expect([...tracker.all().keys()].sort()).toEqual(['u1', 'u2']);
    const before = changes;
    w.emit('MODIFIED', claim('u9', [{ pool: 'worker-2/gpu', device: 'c' }], [], '12')); // another node's: no change
    expect(changes).toBe(before);
    w.emit('MODIFIED', { metadata: { name: 'c-u1', namespace: 'vms', uid: 'u1', resourceVersion: '13' }, status: {} });
    w.emit('DELETED', claim('u2', [{ pool: 'worker-1/gpu', device: 'b' }], [], '14'));
    expect(tracker.all().size).toBe(0);
    expect(changes).toBe(before + 2);
    // A watch the server ends normally resumes from the last version seen, without a list.
    w.emit('BOOKMARK', { metadata: { resourceVersion: '20' } });
    w.end();
    await until('the second watch', () => src.watches.length === 2);
    expect(src.watches[1]!.rv).toBe('20');
    expect(src.listCalls).toBe(1);
  });

  test('an expired watch (ERROR event) lists again', async () => {
    src.lists = [
      { items: [], resourceVersion: '10' },
      { items: [claim('u1', [{ pool: 'worker-1/gpu', device: 'a' }])], resourceVersion: '30' },
    ];
    start();
    await until('the watch', () => src.watches.length === 1);
    src.watches[0]!.emit('ERROR', { kind: 'Status', code: 410, message: 'too old resource version' });
    src.watches[0]!.end();
    await until('the re-list and its watch', () => src.watches.length === 2);
    expect(src.listCalls).toBe(2);
    expect(src.watches[1]!.rv).toBe('30');
    expect([...tracker.all().keys()]).toEqual(['u1']);
  });

  test('unknown until the first list succeeds; afterwards a failing API server leaves the last set in use', async () => {
    src.lists = [new Error('connect ECONNREFUSED'), new Error('connect ECONNREFUSED'), { items: [claim('u1', [{ pool: 'worker-1/gpu', device: 'a' }])], resourceVersion: '5' }, new Error('connect ECONNREFUSED')];
    start();
    await until('a failed list', () => src.listCalls >= 1);
    expect(tracker.unknown()).toMatch(/^ResourceClaims not listed yet \(listing ResourceClaims: Error: connect ECONNREFUSED\)/);
    await until('the watch', () => src.watches.length === 1);
    expect(tracker.unknown()).toBeUndefined();
    src.watches[0]!.end(new Error('stream reset'));
    await until('more failed lists', () => src.listCalls >= 5);
    expect(tracker.unknown()).toBeUndefined();
    expect(tracker.lastError).toContain('ECONNREFUSED');
    expect([...tracker.all().keys()]).toEqual(['u1']);
  });
});
