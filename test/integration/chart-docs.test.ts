// docs/configuration.md is generated from the CRDs and the chart's values schema by
// scripts/gen-docs.mjs; its --check mode is the CI drift check. Here: the committed file is current,
// it covers every chart value and CRD field, and --check fails when a source changes.
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../cluster/control-plane.js';

const run = promisify(execFile);

async function genDocs(root: string, ...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(process.execPath, [join(root, 'scripts/gen-docs.mjs'), ...args], { cwd: root });
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, out: e.stderr };
  }
}

test('docs/configuration.md matches crds/ and the chart values (gen-docs --check)', async () => {
  const r = await genDocs(REPO_ROOT, '--check');
  expect(r.out).toContain('docs/configuration.md matches its sources');
  expect(r.code).toBe(0);
});

test('it documents every chart value and every CRD spec field', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs/configuration.md'), 'utf8');
  for (const key of ['`agent.hostPaths.devinfo`', '`kubevirt.managePermittedHostDevices`', '`admissionPolicy.validationActions`', '`serviceMonitor.enabled`', '`cdi.enabled`']) {
    expect(doc).toContain(`| ${key} |`);
  }
  for (const field of ['`spec.carving.mdevType`', '`spec.deviceSelector.interfaceNames`', '`spec.pools[].devices[].pciAddress`', '`status.slices[].allocation.vmi`']) {
    expect(doc).toContain(`| ${field} |`);
  }
  expect(doc).toContain('spec.carving.mdevType is required when spec.carving.mode is Mediated');
});

test('--check fails with a clear message when a source changes', async () => {
  const root = mkdtempSync(join(tmpdir(), 'vio-docs-'));
  for (const dir of ['scripts', 'crds', 'charts', 'docs']) cpSync(join(REPO_ROOT, dir), join(root, dir), { recursive: true });
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
  const schemaFile = join(root, 'charts/virtualio/values.schema.json');
  writeFileSync(schemaFile, readFileSync(schemaFile, 'utf8').replace('pino log level of both programs.', 'pino log level (changed).'));
  const r = await genDocs(root, '--check');
  expect(r.code).toBe(1);
  expect(r.out).toContain('docs/configuration.md is out of date');
  expect((await genDocs(root)).code).toBe(0);
  expect((await genDocs(root, '--check')).code).toBe(0);
});
