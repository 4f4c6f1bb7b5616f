// waitCrdsEstablished against a scripted kubectl: the not-yet-ready failures of `kubectl wait` on a
// new CRD are retried within the caller's deadline, any other failure is thrown at once.
import { isNotYetEstablished, waitCrdsEstablished } from '../support/crd-wait.js';

const ACCESSOR = 'kubectl wait ... failed (1): error: .status.conditions accessor error: <nil> is of the type <nil>, expected []interface{}';
const NOT_FOUND = 'kubectl wait ... failed (1): Error from server (NotFound): customresourcedefinitions.apiextensions.k8s.io "foos.x.test" not found';

/** A kubectl that fails with each of `failures` in turn, then succeeds; records its arguments. */
function scripted(failures: string[]) {
  const calls: string[][] = [];
  const kubectl = async (args: string[]): Promise<string> => {
    calls.push(args);
    const f = failures.shift();
    if (f !== undefined) throw new Error(f);
    return 'condition met\n';
  };
  return { kubectl, calls };
}

test('the conditions-not-set-yet and NotFound failures of a new CRD are retried until kubectl waits', async () => {
  const { kubectl, calls } = scripted([NOT_FOUND, ACCESSOR, ACCESSOR]);
  await waitCrdsEstablished(kubectl, ['foos.x.test', 'crd/bars.x.test'], 60, 1);
  expect(calls).toHaveLength(4);
  expect(calls[0]).toEqual(['wait', '--for=condition=Established', '--timeout=60s', 'crd/foos.x.test', 'crd/bars.x.test']);
  // Each retry gets what is left of the overall deadline, never more.
  for (const c of calls) expect(Number(/^--timeout=(\d+)s$/.exec(c[2]!)![1])).toBeLessThanOrEqual(60);
});

test('any other kubectl failure is thrown as it is, without a retry', async () => {
  const other = 'kubectl wait ... failed (1): error: timed out waiting for the condition on customresourcedefinitions/foos.x.test';
  const { kubectl, calls } = scripted([other, other]);
  await expect(waitCrdsEstablished(kubectl, ['foos.x.test'], 60, 1)).rejects.toThrow(other);
  expect(calls).toHaveLength(1);
});

test('a CRD that never gets its conditions fails at the deadline with kubectl\'s error', async () => {
  const { kubectl, calls } = scripted(Array.from({ length: 1000 }, () => ACCESSOR));
  const t0 = Date.now();
  await expect(waitCrdsEstablished(kubectl, ['foos.x.test'], 1, 20)).rejects.toThrow(/crd\/foos\.x\.test not Established within 1s: .*accessor error/);
  expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
  expect(Date.now() - t0).toBeLessThan(5000);
  expect(calls.length).toBeGreaterThan(5);
  expect(calls.every((c) => c[2] === '--timeout=1s')).toBe(true);
});

test('only the not-yet-ready failures count as such', () => {
  expect([ACCESSOR, NOT_FOUND].map(isNotYetEstablished)).toEqual([true, true]);
  expect(isNotYetEstablished(new Error('error: timed out waiting for the condition'))).toBe(false);
  expect(isNotYetEstablished(new Error('Error from server (Forbidden): customresourcedefinitions.apiextensions.k8s.io is forbidden'))).toBe(false);
});
