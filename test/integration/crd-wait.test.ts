// The race of `kubectl wait --for=condition=Established` with a CRD the API server has just created,
// on the shared integration control plane. Until the naming controller writes its conditions, a new
// CRD has `status.conditions: null`, and kubectl then fails at once instead of waiting (as it fails
// with NotFound on a CRD not created yet). That moment is a few ms on an idle machine; here a
// ValidatingAdmissionPolicy holds it open (it denies status writes to CRDs labelled
// virtualio.dev/crd-wait=hold) so plain kubectl fails every time, and waitCrdsEstablished must wait
// through it. Then the real, unheld race: fresh CRDs waited for as they are created.
import { eventually, kubectl, kubectlOk } from '../support/cluster.js';
import { isNotYetEstablished, waitCrdsEstablished } from '../support/crd-wait.js';

const GROUP = 'crdwait.test';
const HOLD = { 'virtualio.dev/crd-wait': 'hold' };
const run = `${process.pid.toString(36)}${Date.now().toString(36).slice(-4)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const holdPolicy = {
  apiVersion: 'v1', kind: 'List', items: [
    {
      apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingAdmissionPolicy', metadata: { name: 'crd-wait-hold' },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: {
          resourceRules: [{ apiGroups: ['apiextensions.k8s.io'], apiVersions: ['v1'], operations: ['UPDATE'], resources: ['customresourcedefinitions/status'] }],
          objectSelector: { matchLabels: HOLD },
        },
        validations: [{ expression: 'false', message: 'status held by test/integration/crd-wait.test.ts' }],
      },
    },
    {
      apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingAdmissionPolicyBinding', metadata: { name: 'crd-wait-hold' },
      spec: { policyName: 'crd-wait-hold', validationActions: ['Deny'] },
    },
  ],
};

function crd(plural: string, labels: Record<string, string> = {}): string {
  return JSON.stringify({
    apiVersion: 'apiextensions.k8s.io/v1', kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${GROUP}`, labels: { 'virtualio.dev/test': 'crd-wait', ...labels } },
    spec: {
      group: GROUP, scope: 'Cluster', names: { plural, singular: plural, kind: `W${plural}` },
      versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object' } } }],
    },
  });
}
const create = (plural: string, labels?: Record<string, string>) => kubectlOk(['create', '-o', 'json', '-f', '-'], { input: crd(plural, labels) });
const conditions = async (plural: string) => (await kubectlOk(['get', 'crd', `${plural}.${GROUP}`, '-o', 'jsonpath={.status.conditions}'])).trim();
const plainWait = (plural: string, timeout: string) => kubectl(['wait', '--for=condition=Established', `--timeout=${timeout}`, `crd/${plural}.${GROUP}`]);

beforeAll(async () => {
  await kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(holdPolicy) });
});

afterAll(async () => {
  await kubectl(['delete', 'validatingadmissionpolicybinding,validatingadmissionpolicy', 'crd-wait-hold', '--ignore-not-found']);
  await kubectl(['delete', 'crd', '-l', 'virtualio.dev/test=crd-wait', '--wait=false']);
});

test('a CRD without conditions yet: plain kubectl wait fails at once, waitCrdsEstablished waits until it is Established', async () => {
  // A held CRD whose conditions are still null a moment after its create (the policy may take a
  // moment to be enforced; a CRD created before that gets its conditions and is skipped).
  let n = 0;
  const plural = await eventually('a CRD held without conditions', async () => {
    const p = `wheld${run}n${n++}`;
    const created = JSON.parse(await create(p, HOLD)) as { status?: { conditions?: unknown } };
    expect(created.status).toHaveProperty('conditions', null);
    await sleep(300);
    return (await conditions(p)) === 'null' ? p : undefined;
  }, 30_000, 200);

  const t0 = Date.now();
  const plain = await plainWait(plural, '20s');
  expect({ code: plain.code, fast: Date.now() - t0 < 10_000 }).toEqual({ code: 1, fast: true });
  expect(plain.stderr).toContain('.status.conditions accessor error');
  expect(isNotYetEstablished(plain.stderr)).toBe(true);

  const t1 = Date.now();
  const waited = waitCrdsEstablished(kubectlOk, [`${plural}.${GROUP}`], 30);
  await sleep(1500);
  await kubectlOk(['label', 'crd', `${plural}.${GROUP}`, 'virtualio.dev/crd-wait-']); // the naming controller may write now
  await waited;
  expect(Date.now() - t1).toBeGreaterThanOrEqual(1500);
  expect(await conditions(plural)).toMatch(/"type":"Established","status":"True"|"status":"True","type":"Established"/);
});

test('fresh CRDs waited for as they are created: waitCrdsEstablished always passes, plain kubectl wait may not', async () => {
  const plain: string[] = [];
  // Waits started 0..25 ms after the create is started: before it lands, between it and the naming
  // controller's update, or after.
  for (let i = 0; i < 6; i++) {
    const plural = `w${run}r${i}`;
    const [, p] = await Promise.all([
      create(plural),
      sleep(i * 5).then(() => plainWait(plural, '60s')),
      sleep(i * 5).then(() => waitCrdsEstablished(kubectlOk, [`${plural}.${GROUP}`], 60)),
    ]);
    plain.push(p.code === 0 ? 'ok' : p.stderr.trim());
  }
  const failed = plain.filter((p) => p !== 'ok');
  process.stderr.write(`[crd-wait] plain kubectl wait started with the create: ${failed.length}/${plain.length} failed${failed.map((f) => `\n  ${f}`).join('')}\n`);
  for (const f of failed) expect(isNotYetEstablished(f)).toBe(true);
});
