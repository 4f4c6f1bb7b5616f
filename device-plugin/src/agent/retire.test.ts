import type { PoolPlan } from '../model.js';
import { carvingChange, diffPlans, retire, retiredKey, type Retired } from './retire.js';

const base: PoolPlan = { name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', mdevType: 'nvidia-222', count: 4, devices: [{ pciAddress: '0000:5e:00.0' }] };

describe('retire', () => {
  test.each([
    ['count lowered', { count: 2 }, /lowered its count from 4 to 2/],
    ['mdevType changed', { mdevType: 'nvidia-223' }, /mdev type from nvidia-222 to nvidia-223/],
    ['wwnPrefix changed', { wwnPrefix: 'c05077' }, /WWN prefix/],
    ['mode changed', { mode: 'Passthrough' as const }, /mode or resource name/],
    ['resource name changed', { resourceName: 'virtualio.dev/x' }, /mode or resource name/],
  ])('%s: the old carving of every device is retired (drains what is held)', (_n, edit, why) => {
    const cur = { ...base, ...edit };
    expect(carvingChange(base, cur)).toMatch(why);
    const retired = new Map<string, Retired>();
    const out = diffPlans(new Map([['vgpu', base]]), new Map([['vgpu', cur]]), retired);
    expect(out).toHaveLength(1);
    expect(out[0]?.plan).toBe(base);
  });

  test('count raised or policy changed retires nothing', () => {
    expect(carvingChange(base, { ...base, count: 8 })).toBeUndefined();
    expect(diffPlans(new Map([['vgpu', base]]), new Map([['vgpu', { ...base, policy: 'Spread' }]]), new Map())).toStrictEqual([]);
  });

  test('two edits of one pool drain side by side; the old carving coming back ends its retirement', () => {
    const retired = new Map<string, Retired>();
    const lowered = { ...base, count: 2 };
    for (const r of diffPlans(new Map([['vgpu', base]]), new Map([['vgpu', lowered]]), retired)) retire(retired, r.plan, r.devices, r.why);
    const retyped = { ...lowered, mdevType: 'nvidia-223' };
    for (const r of diffPlans(new Map([['vgpu', lowered]]), new Map([['vgpu', retyped]]), retired)) retire(retired, r.plan, r.devices, r.why);
    expect([...retired.keys()]).toStrictEqual([retiredKey(base), retiredKey(lowered)]);
    diffPlans(new Map([['vgpu', retyped]]), new Map([['vgpu', base]]), retired);
    expect([...retired.keys()]).toStrictEqual([retiredKey(lowered)]);
  });

  test('a device leaving the pool is retired alone', () => {
    const two = { ...base, devices: [{ pciAddress: '0000:5e:00.0' }, { pciAddress: '0000:5f:00.0' }] };
    const out = diffPlans(new Map([['vgpu', two]]), new Map([['vgpu', base]]), new Map());
    expect(out.map((r) => r.devices)).toStrictEqual([[{ pciAddress: '0000:5f:00.0' }]]);
  });
});
