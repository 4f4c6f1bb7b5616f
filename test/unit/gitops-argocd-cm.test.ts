// The argocd-cm patch in docs/gitops/argocd/ carries exactly the health Lua next to it (the Lua is
// run the way Argo CD runs it, on real objects, in test/integration/gitops-health.test.ts), and
// docs/install.md names the keys it sets.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';

const dir = join(REPO_ROOT, 'docs/gitops/argocd');

test.each(['VirtualIODevice', 'VirtualIONode'])('argocd-cm.yaml sets resource.customizations.health.virtualio.dev_%s to the .lua file', (kind) => {
  const cm = YAML.parse(readFileSync(join(dir, 'argocd-cm.yaml'), 'utf8')) as { data: Record<string, string> };
  const key = `resource.customizations.health.virtualio.dev_${kind}`;
  expect(cm.data[key]).toBe(readFileSync(join(dir, `virtualio.dev_${kind}.lua`), 'utf8'));
  expect(readFileSync(join(REPO_ROOT, 'docs/install.md'), 'utf8')).toContain(key);
});

test('the Lua uses no library Argo CD leaves out of custom health checks (string, math, io, os)', () => {
  for (const kind of ['VirtualIODevice', 'VirtualIONode']) {
    const lua = readFileSync(join(dir, `virtualio.dev_${kind}.lua`), 'utf8').replace(/--.*$/gm, '');
    expect(lua).not.toMatch(/\b(string|math|io|os)\.|:(format|find|sub|match|gsub|len|lower|upper)\(/);
  }
});
