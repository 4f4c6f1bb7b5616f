import { intern, internedCount } from './intern.js';

test('equal values share one frozen copy; the value passed in is left unfrozen; a distinct value gets its own', () => {
  const a = { pciAddress: '0000:3b:00.0', sriov: { vfs: ['0000:3b:00.2'] } };
  const b = structuredClone(a);
  const x = intern(a);
  expect(intern(b)).toBe(x);
  expect(x).toEqual(a);
  expect(x).not.toBe(a);
  expect(Object.isFrozen(x) && Object.isFrozen(x.sriov) && Object.isFrozen(x.sriov.vfs)).toBe(true);
  expect(Object.isFrozen(a) || Object.isFrozen(a.sriov.vfs)).toBe(false);
  expect(() => (x.sriov.vfs as string[]).push('0000:3b:00.3')).toThrow(/not extensible/);
  const before = internedCount();
  expect(intern({ ...a, pciAddress: '0000:3c:00.0' })).not.toBe(x);
  expect(internedCount()).toBe(before + 1);
});
