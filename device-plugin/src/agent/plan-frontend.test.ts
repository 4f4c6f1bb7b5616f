// The plan's frontEnd field: validated like the CRD (standalone plans never pass the API server).
import { validatePlan } from './plan.js';

const base = { name: 'p', resourceName: 'virtualio.dev/p', class: 'Storage', mode: 'Passthrough', consumption: 'HostDevice', devices: [{ pciAddress: '0000:81:00.0' }] };

test.each([
  ['absent', {}, true],
  ['DevicePlugin', { frontEnd: 'DevicePlugin' }, true],
  ['DRA', { frontEnd: 'DRA' }, true],
])('frontEnd %s is accepted', (_n, extra, ok) => {
  expect(validatePlan({ pools: [{ ...base, ...extra }] }).ok).toBe(ok);
});

test('an unknown front end and NPIV through DRA are refused with the field named', () => {
  const bad = validatePlan({ pools: [{ ...base, frontEnd: 'CSI' }] });
  expect(bad).toEqual({ ok: false, message: 'pool p.frontEnd: DevicePlugin or DRA, got "CSI"' });
  const npiv = validatePlan({ pools: [{ ...base, mode: 'NPIV', count: 2, wwnPrefix: 'c05076', frontEnd: 'DRA' }] });
  expect(npiv.ok).toBe(false);
  expect(!npiv.ok && npiv.message).toContain('pool p.frontEnd: NPIV pools cannot use DRA');
});
