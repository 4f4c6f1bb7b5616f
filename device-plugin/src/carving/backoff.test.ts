import type { SysfsWrite } from '../model.js';
import { WriteBackoff } from './backoff.js';

const w = (path: string, value: string, group?: string): SysfsWrite => ({ path, value, why: 'test', ...(group ? { group } : {}) });

describe('WriteBackoff', () => {
  test('delays double from 1 s up to 5 min; success forgets', () => {
    const b = new WriteBackoff();
    const x = w('a/sriov_numvfs', '4');
    const delays: number[] = [];
    let now = 0;
    for (let i = 0; i < 12; i++) {
      delays.push(b.failed(x, 'EBUSY', now));
      now += delays.at(-1) ?? 0;
    }
    expect(delays).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000]);
    b.succeeded(x);
    expect(b.partition([x], now).due).toEqual([x]);
    expect(b.nextDue()).toBeUndefined();
  });

  test('keyed by path and value; a deferred write holds back the rest of its group, other writes proceed', () => {
    const b = new WriteBackoff();
    const first = w('pf/sriov_numvfs', '0', 'pf');
    b.failed(first, 'EBUSY', 0);
    const plan = [first, w('pf/sriov_numvfs', '8', 'pf'), w('other/x', '1', 'other'), w('free', 'y')];
    const at500 = b.partition(plan, 500);
    expect(at500.due.map((x) => x.path)).toEqual(['other/x', 'free']);
    expect(at500.deferred).toEqual([{ write: first, error: 'EBUSY', failures: 1, retryInMs: 500 }]);
    expect(b.partition([w('pf/sriov_numvfs', '2', 'pf')], 500).due).toHaveLength(1); // another value is another write
    expect(b.partition(plan, 1000).due).toEqual(plan);
    expect(b.nextDue()).toBe(1000);
  });

  test('reset and pruning forget failures', () => {
    const b = new WriteBackoff({ initialMs: 10, maxMs: 40 });
    const x = w('p', '1');
    b.failed(x, 'E', 0);
    b.partition([w('q', '1')], 1, true);
    expect(b.partition([x], 1).due).toEqual([x]);
    b.failed(x, 'E', 0);
    b.reset();
    expect(b.partition([x], 1).due).toEqual([x]);
  });
});
