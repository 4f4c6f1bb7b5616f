// The Flux recipe of docs/install.md run by Flux's own helm-controller (v1.4.5, built from the Go
// module proxy by `test/gitops/build.sh flux`) against a kube-apiserver of this suite's own, with
// Flux's CRDs from the same module zips:
// * every object of the recipe (GitRepository, HelmRelease, Kustomization), and the HelmRelease with
//   the docs' drift-detection ignore rule for KubeVirt's lists, validate against Flux's CRDs
//   (server-side dry run);
// * the recipe's HelmRelease installs the chart and becomes Ready, taking over CRDs that an earlier
//   chart's crds/ folder left without Helm's ownership metadata; a new chart whose CRD
//   gained a field is upgraded onto the cluster with the field, and the HelmRelease is Ready again.
//
// Stand-ins, because there is no source-controller and no kubelet here:
// * source-controller: helm-controller turns the HelmRelease's `chart.spec` into a HelmChart object
//   and waits for its status.artifact; this suite writes that status itself (observedGeneration,
//   Ready, an artifact URL on a loopback HTTP server serving the packaged chart, and its sha256
//   digest, which helm-controller verifies before loading the chart);
// * no kubelet runs pods, so nothing would ever become ready: the HelmRelease is applied with
//   `install/upgrade.disableWait` and without the helm test (the chart's test Pod is run for real in
//   chart-install.test.ts). Everything else is the recipe's object as written in the docs.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { jest } from '@jest/globals';
import { REPO_ROOT, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { installCrdFiles, kubectlAt, waitUntil } from '../support/operator-integration.js';
import { CHART_DIR, chartWithCrdFields, docYamlBlocks, packageChart, parseObjects } from './chart-support.js';

jest.setTimeout(300_000);

/* eslint-disable @typescript-eslint/no-explicit-any -- API objects as parsed JSON */
type Any = any;

let cp: ControlPlane;
let controller: ChildProcess | undefined;
let server: Server;
let baseUrl: string;
let tmp: string;
const served = new Map<string, Buffer>();
const kubectl = (args: string[]) => kubectlAt(cp.binDir, cp.kubeconfig, args);

function writeJson(name: string, objects: unknown[]): string {
  const f = join(tmp, name);
  writeFileSync(f, objects.map((o) => JSON.stringify(o)).join('\n'));
  return f;
}

async function get(kind: string, name: string, ns?: string): Promise<Any> {
  return JSON.parse(await kubectl(['get', kind, name, ...(ns ? ['-n', ns] : []), '-o', 'json']));
}

// The Flux section's blocks: the recipe, then the HelmRelease snippet for KubeVirt's drift detection.
const [recipe = [], driftSnippet = []] = docYamlBlocks('install.md', '### Flux');
const release = recipe.find((o) => o.kind === 'HelmRelease') as Any;
const releaseNs: string = release.metadata.namespace;
const sourceRef = release.spec.chart.spec.sourceRef;
// helm-controller names the HelmChart it creates <release namespace>-<release name>, in the source's namespace.
const chartName = `${releaseNs}-${release.metadata.name}`;

/**
 * Publishes a packaged chart as source-controller would: serves the .tgz and writes the HelmChart's
 * status (artifact with URL, revision = chart version, sha256 digest; Ready for the current generation).
 */
async function publish(tgz: string, version: string): Promise<void> {
  const body = readFileSync(tgz);
  const path = `helmchart/${sourceRef.namespace}/${chartName}/${basename(tgz)}`;
  served.set(`/${path}`, body);
  const hc = await get('helmchart.source.toolkit.fluxcd.io', chartName, sourceRef.namespace);
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const status = {
    observedGeneration: hc.metadata.generation,
    observedChartName: hc.spec.chart,
    conditions: [{ type: 'Ready', status: 'True', reason: 'ChartPullSucceeded', message: `packaged '${hc.spec.chart}' chart with version '${version}'`,
      lastTransitionTime: now, observedGeneration: hc.metadata.generation }],
    artifact: { path, url: `${baseUrl}/${path}`, revision: version, digest: `sha256:${createHash('sha256').update(body).digest('hex')}`,
      lastUpdateTime: now, size: body.length },
  };
  await kubectl(['patch', 'helmchart.source.toolkit.fluxcd.io', chartName, '-n', sourceRef.namespace, '--subresource=status', '--type=merge',
    '-p', JSON.stringify({ status })]);
}

/** The HelmRelease once it is Ready=True for its generation with `version` deployed. */
async function readyAt(version: string): Promise<Any> {
  return waitUntil(`HelmRelease Ready with chart ${version}`, async () => {
    const hr = await get('helmrelease.helm.toolkit.fluxcd.io', release.metadata.name, releaseNs);
    const ready = (hr.status?.conditions ?? []).find((c: Any) => c.type === 'Ready');
    const deployed = hr.status?.history?.[0];
    return ready?.status === 'True' && hr.status.observedGeneration === hr.metadata.generation && deployed?.chartVersion === version ? hr : undefined;
  }, 180_000, 250);
}

async function poolSpecFields(): Promise<string[]> {
  const crd = await get('crd', 'virtualiodevices.virtualio.dev');
  return Object.keys(crd.spec.versions.find((v: Any) => v.storage).schema.openAPIV3Schema.properties.spec.properties);
}

beforeAll(async () => {
  const built = Object.fromEntries(execFileSync('bash', [join(REPO_ROOT, 'test/gitops/build.sh'), 'flux'], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 15 * 60_000,
  }).trim().split('\n').map((l) => l.split('=') as [string, string]));
  tmp = mkdtempSync(join(tmpdir(), 'vio-flux-'));
  cp = await startControlPlane();
  const crdDir = built['flux-crds']!;
  const files = readdirSync(crdDir).filter((f) => f.endsWith('.yaml')).map((f) => join(crdDir, f));
  await installCrdFiles(cp.binDir, cp.kubeconfig, files, files.map((f) => basename(f, '.yaml').split('_').reverse().join('.')));
  for (const ns of new Set(['flux-system', releaseNs, sourceRef.namespace])) await kubectl(['create', 'namespace', ns]);

  server = createServer((req, res) => {
    const body = served.get(req.url ?? '');
    res.writeHead(body ? 200 : 404).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const log = openSync(join(cp.dir, 'helm-controller.log'), 'a');
  controller = spawn(built['helm-controller']!, [
    '--metrics-addr=127.0.0.1:0', '--health-addr=127.0.0.1:0', '--log-encoding=console', '--log-level=debug',
    // How often a HelmRelease whose source is not ready yet is looked at again (default 30 s).
    '--requeue-dependency=2s',
  ], { env: { ...process.env, KUBECONFIG: cp.kubeconfig, RUNTIME_NAMESPACE: 'flux-system' }, stdio: ['ignore', log, log] });
});

afterAll(async () => {
  if (controller && controller.exitCode === null) {
    const exited = new Promise((r) => controller!.once('exit', r));
    controller.kill('SIGTERM');
    await exited;
  }
  await new Promise((r) => server?.close(r));
  await cp?.stop();
});

test('every object of the Flux recipe in docs/install.md validates against Flux\'s CRDs', async () => {
  expect(recipe.map((o) => o.kind)).toEqual(['GitRepository', 'HelmRelease', 'Kustomization']);
  const out = await kubectl(['apply', '--server-side', '--dry-run=server', '-f', writeJson('recipe.json', recipe)]);
  expect(out).toMatch(/helmrelease.helm.toolkit.fluxcd.io\/virtualio serverside-applied \(server dry run\)/);
});

test('the docs\' drift-detection rule for KubeVirt\'s lists validates in a HelmRelease', async () => {
  const spec = (driftSnippet[0] as Any)?.spec;
  expect(spec?.driftDetection?.ignore?.[0]?.target).toEqual({ kind: 'KubeVirt' });
  const hr = { ...structuredClone(release), metadata: { name: 'kubevirt', namespace: releaseNs }, spec: { ...structuredClone(release.spec), ...spec } };
  const out = await kubectl(['apply', '--server-side', '--dry-run=server', '-f', writeJson('drift.json', [hr])]);
  expect(out).toMatch(/helmrelease.helm.toolkit.fluxcd.io\/kubevirt serverside-applied \(server dry run\)/);
  // The API server checks the fields: a misspelt one is refused, so the dry run above did check the rule.
  const bad = { ...hr, spec: { ...hr.spec, driftDetection: { ...spec.driftDetection, ignore: [{ pathz: ['/spec'] }] } } };
  await expect(kubectl(['apply', '--server-side', '--dry-run=server', '-f', writeJson('drift-bad.json', [bad])])).rejects.toThrow(/pathz/);
});

test('the recipe\'s HelmRelease installs the chart with helm-controller, taking over CRDs without Helm metadata, and becomes Ready', async () => {
  const git = recipe.find((o) => o.kind === 'GitRepository')!;
  // The recipe's HelmRelease, without waiting for pods and without the test Pod: no kubelet here.
  const hr = structuredClone(release);
  hr.spec.install = { ...hr.spec.install, disableWait: true };
  hr.spec.upgrade = { ...hr.spec.upgrade, disableWait: true };
  hr.spec.test = { ...hr.spec.test, enable: false };
  // The CRDs exist already, without Helm's ownership metadata, as an earlier chart's crds/ folder
  // left them (Flux's crds: CreateReplace did that): helm-controller takes them over.
  await installCrdFiles(cp.binDir, cp.kubeconfig, ['virtualiodevices', 'virtualionodes'].map((k) => join(REPO_ROOT, `crds/virtualio.dev_${k}.yaml`)),
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
  const before = (await get('crd', 'virtualiodevices.virtualio.dev')).metadata;
  expect(before.annotations?.['meta.helm.sh/release-name']).toBeUndefined();
  await kubectl(['apply', '--server-side', '-f', writeJson('release.json', [git, hr])]);
  const hc = await waitUntil('the HelmChart helm-controller creates', async () =>
    get('helmchart.source.toolkit.fluxcd.io', chartName, sourceRef.namespace));
  expect(hc.spec).toMatchObject({ chart: release.spec.chart.spec.chart, sourceRef: { kind: 'GitRepository', name: sourceRef.name } });

  const current = (parseObjects(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8'))[0] as Any).version as string;
  await publish(packageChart(CHART_DIR, tmp), current);
  const ready = await readyAt(current);
  expect(ready.status.history[0]).toMatchObject({ chartName: 'virtualio', status: 'deployed' });
  for (const name of ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']) {
    const crd = await get('crd', name);
    expect(crd.metadata.annotations).toMatchObject({ 'meta.helm.sh/release-name': release.metadata.name, 'helm.sh/resource-policy': 'keep' });
  }
  expect((await get('crd', 'virtualiodevices.virtualio.dev')).metadata.uid).toBe(before.uid);
  // The recipe's values reached the release.
  const ds = await get('daemonset', `${release.metadata.name}-agent`, releaseNs);
  expect(ds.spec.template.spec.nodeSelector).toMatchObject(release.spec.values.agent.nodeSelector);
  expect(await poolSpecFields()).not.toContain('upgradeProbe');
});

test('a chart whose CRD gained a field is upgraded onto the cluster, and the HelmRelease is Ready again', async () => {
  const crdUid = (await get('crd', 'virtualiodevices.virtualio.dev')).metadata.uid;
  await publish(packageChart(chartWithCrdFields('99.0.0', ['upgradeProbe']), tmp), '99.0.0');
  const ready = await readyAt('99.0.0');
  expect(ready.status.history.map((h: Any) => h.chartVersion).slice(0, 2)).toEqual(['99.0.0', expect.any(String)]);
  expect(await poolSpecFields()).toContain('upgradeProbe');
  expect((await get('crd', 'virtualiodevices.virtualio.dev')).metadata.uid).toBe(crdUid);
});

test('deleting the HelmRelease uninstalls the release but keeps the CRDs and the pools', async () => {
  await kubectl(['apply', '--server-side', '-f', writeJson('pool.json', [{
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'flux-keep' },
    spec: { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'SRIOV', count: 4 }, upgradeProbe: 'kept' },
  }])]);
  const uids = Object.fromEntries(await Promise.all(['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']
    .map(async (n) => [n, (await get('crd', n)).metadata.uid] as const)));
  await kubectl(['delete', 'helmrelease.helm.toolkit.fluxcd.io', release.metadata.name, '-n', releaseNs, '--wait=true', '--timeout=120s']);
  // helm-controller ran helm uninstall (its finalizer): the release's workloads and storage are gone.
  expect((await kubectl(['-n', releaseNs, 'get', 'deployment,daemonset,secret', '-l', 'owner=helm', '-o', 'name'])).trim()).toBe('');
  expect((await kubectl(['-n', releaseNs, 'get', 'deployment,daemonset', '-o', 'name'])).trim()).toBe('');
  for (const [name, uid] of Object.entries(uids)) expect((await get('crd', name)).metadata.uid).toBe(uid);
  expect((await get('virtualiodevice', 'flux-keep')).spec.upgradeProbe).toBe('kept');
});
