// The chart's CRDs through Helm itself, on a kube-apiserver of this suite's own (the CRDs are
// cluster-scoped; the shared test API server has several releases of the chart, see WITHOUT_CRDS):
// `helm install` creates them from templates/crds/ (generated from crds/ by `npm run gen`), owned by
// the release; `helm upgrade` to a chart whose CRD gained a field puts the field on the server (Helm 3,
// then Helm 4), so a pool may use it; `helm uninstall` keeps both CRDs and every pool
// (helm.sh/resource-policy: keep). Helm's crds/ folder, which the chart used before, is installed once
// and never upgraded, which is why the chart no longer uses it (docs/design-decisions-operator.md, GitOps).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { kubectlAt } from '../support/operator-integration.js';
import { CHART_DIR, chartWithCrdFields, ensureHelm4, helm, packageChart } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(180_000);

const NS = 'vio-crds';
const RELEASE = 'vio-crds';
const CRDS = ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev', 'virtualionodeacks.virtualio.dev'];
let cp: ControlPlane;

const kubectl = (args: string[], input?: string) => input === undefined
  ? kubectlAt(cp.binDir, cp.kubeconfig, args)
  : kubectlAt(cp.binDir, cp.kubeconfig, [...args, '-f', writeTemp(input)]);
async function helmOk(args: string[], binary?: string): Promise<string> {
  const r = await helm(args, { kubeconfig: cp.kubeconfig, binary: binary ?? join(cp.binDir, 'helm') });
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

let tmp: string;
let n = 0;
function writeTemp(text: string): string {
  const f = join(tmp, `obj-${++n}.json`);
  writeFileSync(f, text);
  return f;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- API objects as parsed JSON */
type Any = any;
async function get(kind: string, name: string): Promise<Any> {
  return JSON.parse(await kubectl(['get', kind, name, '-o', 'json']));
}
/** The spec properties of the VirtualIODevice CRD as stored on the server. */
async function poolSpecFields(): Promise<string[]> {
  const crd = await get('crd', CRDS[0]!);
  return Object.keys(crd.spec.versions.find((v: Any) => v.storage).schema.openAPIV3Schema.properties.spec.properties);
}
const pool = (name: string, extra: Record<string, string> = {}) => JSON.stringify({
  apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name },
  spec: { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'SRIOV', count: 4 }, ...extra },
});

const uids: Record<string, string> = {};

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'vio-chart-crds-'));
  cp = await startControlPlane();
});

afterAll(async () => {
  await cp?.stop();
});

test('helm install creates both CRDs from the chart, owned by the release and marked keep', async () => {
  await helmOk(['install', RELEASE, CHART_DIR, '--namespace', NS, '--create-namespace']);
  await waitCrdsEstablished(kubectl, CRDS, 60);
  for (const name of CRDS) {
    const crd = await get('crd', name);
    expect({ name, annotations: crd.metadata.annotations, managedBy: crd.metadata.labels['app.kubernetes.io/managed-by'] }).toEqual({
      name,
      annotations: expect.objectContaining({
        'meta.helm.sh/release-name': RELEASE, 'meta.helm.sh/release-namespace': NS, 'helm.sh/resource-policy': 'keep',
      }),
      managedBy: 'Helm',
    });
    uids[name] = crd.metadata.uid;
  }
  await kubectl(['apply', '--server-side'], pool('crd-keep'));
  uids.pool = (await get('virtualiodevice', 'crd-keep')).metadata.uid;
});

test('helm upgrade to a chart whose CRD gained a field puts the field on the server; a pool may then use it', async () => {
  // Before the upgrade the API server refuses the field (server-side apply knows only declared fields).
  await expect(kubectl(['apply', '--server-side'], pool('crd-new', { upgradeProbe: 'v2' }))).rejects.toThrow(/\.spec\.upgradeProbe: field not declared in schema/);
  expect(await poolSpecFields()).not.toContain('upgradeProbe');
  const next = packageChart(chartWithCrdFields('99.0.0', ['upgradeProbe']), tmp);
  await helmOk(['upgrade', RELEASE, next, '--namespace', NS]);
  expect(await poolSpecFields()).toContain('upgradeProbe');
  await kubectl(['apply', '--server-side'], pool('crd-new', { upgradeProbe: 'v2' }));
  expect((await get('virtualiodevice', 'crd-new')).spec.upgradeProbe).toBe('v2');
  for (const name of CRDS) expect((await get('crd', name)).metadata.uid).toBe(uids[name]);
  expect((await get('virtualiodevice', 'crd-keep')).metadata.uid).toBe(uids.pool);
});

test('helm 4 upgrades the same release to a chart with one more field', async () => {
  const helm4 = ensureHelm4();
  const next = packageChart(chartWithCrdFields('99.0.1', ['upgradeProbe', 'upgradeProbe4']), tmp);
  await helmOk(['upgrade', RELEASE, next, '--namespace', NS], helm4);
  expect(await poolSpecFields()).toEqual(expect.arrayContaining(['upgradeProbe', 'upgradeProbe4']));
  expect((await get('virtualiodevice', 'crd-new')).spec.upgradeProbe).toBe('v2');
});

test('helm uninstall keeps both CRDs and every pool', async () => {
  await helmOk(['uninstall', RELEASE, '--namespace', NS]);
  expect((await kubectl(['-n', NS, 'get', 'deployment,daemonset', '-o', 'name'])).trim()).toBe('');
  for (const name of CRDS) expect((await get('crd', name)).metadata.uid).toBe(uids[name]);
  expect((await get('virtualiodevice', 'crd-keep')).metadata.uid).toBe(uids.pool);
  expect((await get('virtualiodevice', 'crd-new')).spec.upgradeProbe).toBe('v2');
});
