// Upgrades on the real kube-apiserver: the previous chart (packaged as 0.1.0 from the first commit
// that added the chart, or from a copy of the working tree when history is shallow) is installed, custom
// resources are created, then the working-tree chart is upgraded over it with Helm 3, again with Helm 4,
// rolled back, and finally uninstalled. The previous chart shipped its CRDs in Helm's crds/ folder, which
// left them without Helm's ownership metadata; the first upgrade takes them over with --take-ownership
// (docs/upgrade.md). The CRDs and every custom resource survive all of it: the chart's CRD templates
// carry helm.sh/resource-policy: keep, so neither the rollback to a chart without them nor the
// uninstall deletes them. chart-crds.test.ts checks that an upgrade changes the CRDs themselves.
import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { kubectlOk } from '../support/cluster.js';
import { CHART_DIR, ensureHelm4, ensureNamespace, helmOk } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(180_000);

const NS = 'vio-upgrade';
const RELEASE = 'vio-upgrade';

interface ReleaseInfo { name: string; revision: string; chart: string; status: string }

/** Packages the previous chart as version 0.1.0 and returns the .tgz path and where it came from. */
function packagePrevious(): { tgz: string; source: string } {
  const work = mkdtempSync(join(tmpdir(), 'vio-prev-chart-'));
  const first = execFileSync('git', ['log', '--diff-filter=A', '--format=%H', '--', 'charts/virtualio/Chart.yaml'], { cwd: REPO_ROOT, encoding: 'utf8' })
    .trim().split('\n').filter(Boolean).pop();
  let source: string;
  if (first) {
    const tar = execFileSync('git', ['archive', '--format=tar', first, 'charts/virtualio'], { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024 });
    execFileSync('tar', ['-x', '-C', work], { input: tar });
    source = `git ${first.slice(0, 12)}`;
  } else {
    cpSync(CHART_DIR, join(work, 'charts/virtualio'), { recursive: true });
    source = 'working-tree copy';
  }
  const chartYaml = join(work, 'charts/virtualio/Chart.yaml');
  writeFileSync(chartYaml, readFileSync(chartYaml, 'utf8').replace(/^version:.*$/m, 'version: 0.1.0'));
  execFileSync(join(process.env.VIO_BIN_DIR ?? '', 'helm'), ['package', join(work, 'charts/virtualio'), '--destination', work], { stdio: 'ignore' });
  const tgz = join(work, 'virtualio-0.1.0.tgz');
  if (!existsSync(tgz)) throw new Error('helm package produced no virtualio-0.1.0.tgz');
  return { tgz, source };
}

async function release(binary?: string): Promise<ReleaseInfo> {
  const list = JSON.parse(await helmOk(['list', '--namespace', NS, '-o', 'json'], binary ? { binary } : {})) as ReleaseInfo[];
  const r = list.find((x) => x.name === RELEASE);
  if (!r) throw new Error(`release ${RELEASE} not listed`);
  return r;
}

async function uid(kind: string, name: string): Promise<string> {
  return (await kubectlOk(['get', kind, name, '-o', 'jsonpath={.metadata.uid}'])).trim();
}

const currentVersion = (YAML.parse(readFileSync(join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { version: string }).version;
const uids: Record<string, string> = {};

beforeAll(async () => {
  await ensureNamespace(NS);
  const prev = packagePrevious();
  process.stderr.write(`[chart-upgrade] previous chart from ${prev.source}\n`);
  await helmOk(['install', RELEASE, prev.tgz, '--namespace', NS]);
  await waitCrdsEstablished(kubectlOk, ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev'], 60);
  // Custom resources created between the two versions, as an admin and the components would.
  await kubectlOk(['apply', '--server-side', '-f', '-'], {
    input: [
      { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'upgrade-keep' },
        spec: { class: 'Storage', deviceSelector: { vendorIDs: ['144d'] }, carving: { mode: 'SRIOV', count: 4 } } },
      { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'upgrade-node' },
        spec: { pools: [{ name: 'upgrade-keep', resourceName: 'virtualio.dev/upgrade-keep', class: 'Storage', mode: 'SRIOV',
          consumption: 'HostDevice', count: 4, devices: [{ pciAddress: '0000:5e:00.0' }] }] } },
    ].map((o) => JSON.stringify(o)).join('\n'),
  });
  await kubectlOk(['patch', 'virtualionode', 'upgrade-node', '--subresource=status', '--type=merge', '-p', '{"status":{"agentVersion":"0.1.0"}}']);
  uids.device = await uid('virtualiodevice', 'upgrade-keep');
  uids.node = await uid('virtualionode', 'upgrade-node');
  uids.crdDevices = await uid('crd', 'virtualiodevices.virtualio.dev');
  uids.crdNodes = await uid('crd', 'virtualionodes.virtualio.dev');
});

async function expectEverythingKept(): Promise<void> {
  expect(await uid('virtualiodevice', 'upgrade-keep')).toBe(uids.device);
  expect(await uid('virtualionode', 'upgrade-node')).toBe(uids.node);
  expect(await uid('crd', 'virtualiodevices.virtualio.dev')).toBe(uids.crdDevices);
  expect(await uid('crd', 'virtualionodes.virtualio.dev')).toBe(uids.crdNodes);
  const node = JSON.parse(await kubectlOk(['get', 'virtualionode', 'upgrade-node', '-o', 'json']));
  expect(node.spec.pools[0].name).toBe('upgrade-keep');
  expect(node.status.agentVersion).toBe('0.1.0');
}

test('the previous chart (0.1.0) is installed', async () => {
  expect(await release()).toMatchObject({ chart: 'virtualio-0.1.0', revision: '1', status: 'deployed' });
});

test('helm 3 upgrades to the working-tree chart and takes over its CRDs; CRDs and custom resources survive', async () => {
  await helmOk(['upgrade', RELEASE, CHART_DIR, '--namespace', NS, '--take-ownership']);
  expect(await release()).toMatchObject({ chart: `virtualio-${currentVersion}`, revision: '2', status: 'deployed' });
  await expectEverythingKept();
  const ds = JSON.parse(await kubectlOk(['-n', NS, 'get', 'daemonset', `${RELEASE}-virtualio-agent`, '-o', 'json']));
  expect(ds.metadata.labels['helm.sh/chart']).toBe(`virtualio-${currentVersion}`);
  await kubectlOk(['get', 'validatingadmissionpolicy', `${RELEASE}-virtualio-virtualionode-writers`]);
  for (const crd of ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']) {
    const meta = JSON.parse(await kubectlOk(['get', 'crd', crd, '-o', 'json'])).metadata;
    expect({ crd, release: meta.annotations['meta.helm.sh/release-name'], policy: meta.annotations['helm.sh/resource-policy'] })
      .toEqual({ crd, release: RELEASE, policy: 'keep' });
  }
});

test('helm 4 takes over the Helm 3 release, upgrades and rolls back; custom resources survive', async () => {
  const helm4 = ensureHelm4();
  await helmOk(['upgrade', RELEASE, CHART_DIR, '--namespace', NS, '--set', 'logLevel=debug'], { binary: helm4 });
  expect(await release(helm4)).toMatchObject({ chart: `virtualio-${currentVersion}`, revision: '3', status: 'deployed' });
  const dep = JSON.parse(await kubectlOk(['-n', NS, 'get', 'deployment', `${RELEASE}-virtualio-operator`, '-o', 'json']));
  expect(dep.spec.template.spec.containers[0].args).toContain('--log-level=debug');
  await helmOk(['rollback', RELEASE, '1', '--namespace', NS], { binary: helm4 });
  expect(await release(helm4)).toMatchObject({ chart: 'virtualio-0.1.0', revision: '4', status: 'deployed' });
  await expectEverythingKept();
});

test('uninstall removes the workloads but keeps the CRDs and the custom resources', async () => {
  await helmOk(['uninstall', RELEASE, '--namespace', NS]);
  expect((await kubectlOk(['-n', NS, 'get', 'deployment,daemonset', '-o', 'name'])).trim()).toBe('');
  await expectEverythingKept();
});
