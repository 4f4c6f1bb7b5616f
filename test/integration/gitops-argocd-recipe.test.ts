// The Argo CD recipes of docs/install.md against Argo CD's own CRDs (Application and AppProject from
// the argo-cd v3.5.8 module zip, copied by `test/gitops/build.sh argocd-crds`) on the real API server:
// the Application validates (server-side dry run), so does an Application carrying the docs'
// ignoreDifferences rules for KubeVirt's lists, and the argocd-cm patch applies to an argocd-cm
// ConfigMap with the health Lua. There is no Argo CD controller here: what Argo CD then does with
// them (health, sync, ignore) is tested with its Lua runtime in gitops-health.test.ts and with its
// field manager in gitops-operator.test.ts.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { kubectlOk } from '../support/cluster.js';
import { docYamlBlocks, ensureNamespace } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(120_000);

/* eslint-disable @typescript-eslint/no-explicit-any -- API objects as parsed JSON */
type Any = any;

const [recipe = [], ignoreSnippet = []] = docYamlBlocks('install.md', '### Argo CD');
const application = recipe[0] as Any;
let tmp: string;

function writeJson(name: string, objects: unknown[]): string {
  const f = join(tmp, name);
  writeFileSync(f, objects.map((o) => JSON.stringify(o)).join('\n'));
  return f;
}
const dryRun = (name: string, objects: unknown[]) =>
  kubectlOk(['apply', '--server-side', '--dry-run=server', '--field-manager=argocd-recipe-test', '-f', writeJson(name, objects)]);

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'vio-argocd-'));
  const out = execFileSync('bash', [join(REPO_ROOT, 'test/gitops/build.sh'), 'argocd-crds'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10 * 60_000 });
  const dir = out.trim().split('\n').pop()!.replace(/^argocd-crds=/, '');
  for (const f of readdirSync(dir)) await kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', join(dir, f)]);
  await waitCrdsEstablished(kubectlOk, ['applications.argoproj.io', 'appprojects.argoproj.io'], 60);
  await ensureNamespace(application?.metadata?.namespace ?? 'argocd');
});

test('the Application of the recipe validates against Argo CD\'s Application CRD', async () => {
  expect(recipe.map((o) => o.kind)).toEqual(['Application']);
  expect(await dryRun('app.json', [application])).toMatch(/application.argoproj.io\/virtualio serverside-applied \(server dry run\)/);
  // The schema is enforced, so the dry run above means something: a misspelt field is refused.
  const bad = { ...application, spec: { ...application.spec, syncPolicy: { ...application.spec.syncPolicy, automatd: {} } } };
  await expect(dryRun('bad.json', [bad])).rejects.toThrow(/automatd/);
});

test('an Application carrying the docs\' ignoreDifferences rules for KubeVirt\'s lists validates', async () => {
  const spec = (ignoreSnippet[0] as Any)?.spec;
  expect(spec?.ignoreDifferences?.map((r: Any) => r.kind)).toEqual(['KubeVirt', 'KubeVirt']);
  const app = { ...structuredClone(application), metadata: { ...application.metadata, name: 'kubevirt' },
    spec: { ...structuredClone(application.spec), ignoreDifferences: spec.ignoreDifferences,
      syncPolicy: { ...application.spec.syncPolicy, syncOptions: [...application.spec.syncPolicy.syncOptions, ...spec.syncPolicy.syncOptions] } } };
  expect(await dryRun('kubevirt-app.json', [app])).toMatch(/application.argoproj.io\/kubevirt serverside-applied \(server dry run\)/);
});

test('the argocd-cm patch installs both health checks into an argocd-cm ConfigMap', async () => {
  const ns = application.metadata.namespace;
  await kubectlOk(['apply', '--server-side', '-f', writeJson('cm.json', [{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'argocd-cm', namespace: ns } }])]);
  // The command docs/install.md gives.
  await kubectlOk(['-n', ns, 'patch', 'configmap', 'argocd-cm', '--patch-file', join(REPO_ROOT, 'docs/gitops/argocd/argocd-cm.yaml')]);
  const cm = JSON.parse(await kubectlOk(['-n', ns, 'get', 'configmap', 'argocd-cm', '-o', 'json']));
  for (const kind of ['VirtualIODevice', 'VirtualIONode']) {
    expect(cm.data[`resource.customizations.health.virtualio.dev_${kind}`]).toBe(readFileSync(join(REPO_ROOT, `docs/gitops/argocd/virtualio.dev_${kind}.lua`), 'utf8'));
  }
});
