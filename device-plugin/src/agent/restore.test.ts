import type { PoolPlan, Slice } from '../model.js';
import { StartupRestore, unrestoredHeld } from './restore.js';

const slice = (id: string, pool: string, health: 'Healthy' | 'Unhealthy', reason?: string): Slice =>
  ({ id, pool, resourceName: `virtualio.dev/${pool}`, kind: 'VF', parent: '0000:81:00.0', deviceNodes: [], health, ...(reason ? { reason } : {}) });

describe('StartupRestore: pools wait to register while a held slice of theirs is not back', () => {
  test('held and unhealthy holds its pool back; free or healthy ones do not; a registered pool never waits', () => {
    const r = new StartupRestore(10_000);
    r.begin(0);
    const slices = [slice('a', 'net', 'Unhealthy', 'VF 0 does not exist'), slice('b', 'gpu', 'Unhealthy', 'x'), slice('c', 'fc', 'Healthy')];
    const giveUp: unknown[] = [];
    expect(r.holdBack(slices, new Set(['a', 'c']), () => false, 5, (m) => giveUp.push(m))).toEqual(new Map([['net', 'held slice a is not restored yet (VF 0 does not exist)']]));
    expect(r.holdBack(slices, new Set(['a']), (p) => p === 'net', 5, (m) => giveUp.push(m))).toEqual(new Map());
    expect(giveUp).toEqual([]);
  });

  test('past the wait every pool registers, and the caller is told once what was still missing', () => {
    const r = new StartupRestore(10_000);
    r.begin(0);
    const told: Map<string, string>[] = [];
    const slices = [slice('a', 'net', 'Unhealthy', 'gone')];
    expect(r.holdBack(slices, new Set(['a']), () => false, 10_000, (m) => told.push(m))).toEqual(new Map());
    expect(r.holdBack(slices, new Set(['a']), () => false, 20_000, (m) => told.push(m))).toEqual(new Map());
    expect(told).toEqual([new Map([['net', 'held slice a is not restored yet (gone)']])]);
  });

  test('the wait counts from the first carving round (begin), not from construction: a slow start does not use it up', () => {
    const r = new StartupRestore(10_000);
    const told: Map<string, string>[] = [];
    const slices = [slice('a', 'net', 'Unhealthy', 'VF 0 does not exist')];
    // 16 s after construction, before the first round: still waiting.
    expect(r.within(16_000)).toBe(true);
    expect(r.holdBack(slices, new Set(['a']), () => false, 16_000, (m) => told.push(m)).size).toBe(1);
    r.begin(16_000);
    r.begin(20_000); // only the first round counts
    expect(r.within(25_999)).toBe(true);
    expect(r.within(26_000)).toBe(false);
    expect(r.holdBack(slices, new Set(['a']), () => false, 25_999, (m) => told.push(m)).size).toBe(1);
    expect(r.holdBack(slices, new Set(['a']), () => false, 26_000, (m) => told.push(m))).toEqual(new Map());
    expect(told).toHaveLength(1);
  });
});

describe('unrestoredHeld: held IDs of a served pool its slices no longer include', () => {
  const pools = [{ name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', devices: [] }] as unknown as PoolPlan[];
  test('listed Unhealthy with the holder and why; IDs of other resources or already listed are left alone', () => {
    const uuid = '355c42c5-ab94-5b9f-b956-3fb1a83eb059';
    const out = unrestoredHeld([slice('x', 'vgpu', 'Healthy')], pools, [uuid, 'x', 'other'], (id) => (id === 'other' ? 'virtualio.dev/net' : 'virtualio.dev/vgpu'), () => 'held by pod vms/vm1');
    expect(out).toEqual([{
      id: uuid, pool: 'vgpu', resourceName: 'virtualio.dev/vgpu', kind: 'Mdev', mdevUuid: uuid, parent: '', deviceNodes: [], health: 'Unhealthy',
      reason: "held by pod vms/vm1, but this node no longer has it and the pool's plan cannot re-create it with the identity it had; it is not served as anything else",
    }]);
  });
});
