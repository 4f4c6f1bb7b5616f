// Helpers for the chart, policy, examples and image suites: the built helm binary, rendering the chart
// into objects, ServiceAccount tokens from the real TokenRequest API, and raw API requests made with
// such a token (so the request is authenticated exactly as an in-cluster agent's would be).
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { clusterEnv, kubectlOk } from '../support/cluster.js';

const run = promisify(execFile);

/** The chart under test (the working tree). */
export const CHART_DIR = join(REPO_ROOT, 'charts/virtualio');

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Where helm runs: another binary (Helm 4) and another API server (a suite's own control plane). */
export interface HelmOptions {
  binary?: string;
  kubeconfig?: string;
}

/** Runs the built helm against the test cluster (or opts.kubeconfig); never throws on a non-zero exit. */
export async function helm(args: string[], opts: HelmOptions = {}): Promise<ExecResult> {
  const binary = opts.binary ?? join(process.env.VIO_BIN_DIR ?? clusterEnv().binDir, 'helm');
  const kubeconfig = opts.kubeconfig ?? clusterEnv().kubeconfig;
  try {
    const { stdout, stderr } = await run(binary, [...args, '--kubeconfig', kubeconfig], {
      maxBuffer: 64 * 1024 * 1024,
      // helm keeps its caches and repository config out of the user's home.
      env: { ...process.env, HELM_CACHE_HOME: '/tmp/vio-helm/cache', HELM_CONFIG_HOME: '/tmp/vio-helm/config', HELM_DATA_HOME: '/tmp/vio-helm/data' },
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** helm that must succeed. */
export async function helmOk(args: string[], opts: HelmOptions = {}): Promise<string> {
  const r = await helm(args, opts);
  if (r.code !== 0) throw new Error(`helm ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** A Kubernetes object as parsed from YAML. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/** Parses a multi-document YAML stream into objects, skipping empty documents. */
export function parseObjects(text: string): KubeObject[] {
  return YAML.parseAllDocuments(text).map((d) => d.toJS() as KubeObject | null).filter((o): o is KubeObject => !!o && typeof o === 'object');
}

/** `helm template` of the working-tree chart with `--set`-style values; returns the objects. */
export async function renderChart(release: string, namespace: string, set: string[] = [], extra: string[] = []): Promise<KubeObject[]> {
  const args = ['template', release, CHART_DIR, '--namespace', namespace, ...set.flatMap((s) => ['--set', s]), ...extra];
  return parseObjects(await helmOk(args));
}

/** The one object of a kind (and name suffix, when given); throws when it is not exactly one. */
export function only(objects: KubeObject[], kind: string, nameSuffix = ''): KubeObject {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
  if (found.length !== 1) throw new Error(`expected one ${kind} *${nameSuffix}, found ${found.map((o) => o.metadata.name).join(', ') || 'none'}`);
  return found[0]!;
}

/** Issues a ServiceAccount token with the TokenRequest API, optionally bound to a Pod. */
export async function tokenFor(namespace: string, serviceAccount: string, boundPod?: { name: string; uid: string }): Promise<string> {
  const body = {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: {
      audiences: [],
      expirationSeconds: 3600,
      ...(boundPod ? { boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: boundPod.name, uid: boundPod.uid } } : {}),
    },
  };
  const out = await kubectlOk(['create', '--raw', `/api/v1/namespaces/${namespace}/serviceaccounts/${serviceAccount}/token`, '-f', '-'], {
    input: JSON.stringify(body),
  });
  const token = (JSON.parse(out) as { status?: { token?: string } }).status?.token;
  if (!token) throw new Error(`TokenRequest for ${namespace}/${serviceAccount} returned no token: ${out}`);
  return token;
}

export interface ApiResponse {
  status: number;
  body: { message?: string; [key: string]: unknown };
}

/** One request to the test API server authenticated by a bearer token (no client certificate). */
export function apiRequest(token: string, method: string, path: string, payload?: unknown, contentType = 'application/json'): Promise<ApiResponse> {
  const env = clusterEnv();
  const caFile = join(process.env.VIO_CP_DIR ?? '', 'ca.crt');
  const data = payload === undefined ? undefined : JSON.stringify(payload);
  return new Promise((resolve, reject) => {
    const req = request(`${env.server}${path}`, {
      method,
      ca: readFileSync(caFile),
      headers: {
        Authorization: `Bearer ${token}`,
        Accept: 'application/json',
        ...(data === undefined ? {} : { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(data) }),
      },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let body: ApiResponse['body'];
        try {
          body = JSON.parse(text) as ApiResponse['body'];
        } catch {
          body = { message: text };
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * `--set crds.install=false`, for the suites that install the chart on the shared test API server. The
 * CRDs are cluster-scoped, so one release owns them (as in a real cluster, where a second release of
 * the chart sets the same value); these suites apply crds/ themselves (installCrds) and render the chart
 * without them. chart-crds.test.ts installs and upgrades the CRDs through the chart on its own API server.
 */
export const WITHOUT_CRDS = ['--set', 'crds.install=false'];

/** Creates a namespace if it does not exist (namespaces are never deleted: there is no namespace controller). */
export async function ensureNamespace(name: string): Promise<void> {
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }) });
}

/** Helm 4 release the chart is also checked with (built from the Go module proxy like helm 3). */
export const HELM4_VERSION = '4.2.4';

/**
 * Returns a Helm 4 binary: $VIO_HELM4_BIN, or the cached build in $VIO_BIN_CACHE/helm4-v<version>/helm,
 * building it there with `go install` on first use (a few minutes; cached afterwards).
 */
export function ensureHelm4(): string {
  if (process.env.VIO_HELM4_BIN && existsSync(process.env.VIO_HELM4_BIN)) return process.env.VIO_HELM4_BIN;
  const dir = join(process.env.VIO_BIN_CACHE ?? join(homedir(), '.cache/virtualio'), `helm4-v${HELM4_VERSION}`);
  const bin = join(dir, 'helm');
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    execFileSync('go', ['install', '-trimpath', '-ldflags', `-s -w -X helm.sh/helm/v4/internal/version.version=v${HELM4_VERSION}`,
      `helm.sh/helm/v4/cmd/helm@v${HELM4_VERSION}`], {
      env: { ...process.env, GOBIN: dir, GOTOOLCHAIN: 'local', GOFLAGS: '-mod=mod' }, stdio: ['ignore', 'ignore', 'pipe'], timeout: 30 * 60_000,
    });
  }
  return bin;
}

/**
 * The folder of KubeVirt's CRDs, generated from KubeVirt's Go modules by test/kubevirt/crds.sh
 * (built into the cache on first use). Never hand-written.
 */
export function kubevirtCrdDir(): string {
  const out = execFileSync('bash', [join(REPO_ROOT, 'test/kubevirt/crds.sh')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30 * 60_000, maxBuffer: 16 * 1024 * 1024,
  });
  const dir = out.trim().split('\n').pop() ?? '';
  if (!existsSync(join(dir, 'kubevirts.kubevirt.io.yaml'))) throw new Error(`test/kubevirt/crds.sh gave no KubeVirt CRDs (said: ${dir})`);
  return dir;
}

function helmBinary(): string {
  return join(process.env.VIO_BIN_DIR ?? clusterEnv().binDir, 'helm');
}

/**
 * The chart's CRDs as `helm template` renders them (what Argo CD and Flux apply), one file per CRD in a
 * new folder; returns the folder.
 */
export function renderedChartCrds(): string {
  const out = mkdtempSync(join(tmpdir(), 'vio-chart-crds-'));
  for (const f of readdirSync(join(CHART_DIR, 'templates/crds'))) {
    writeFileSync(join(out, f), execFileSync(helmBinary(), ['template', 'crds', CHART_DIR, '--show-only', `templates/crds/${f}`], { encoding: 'utf8' }));
  }
  return out;
}

/**
 * A copy of the working-tree chart as chart version `version` whose VirtualIODevice CRD gained the
 * optional string fields spec.<field> for each of `fields` (a later release that extends the API);
 * returns the chart folder.
 */
export function chartWithCrdFields(version: string, fields: string[]): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'vio-next-chart-')), 'virtualio');
  cpSync(CHART_DIR, dir, { recursive: true });
  const chartYaml = join(dir, 'Chart.yaml');
  writeFileSync(chartYaml, readFileSync(chartYaml, 'utf8').replace(/^version:.*$/m, `version: ${version}`));
  const file = join(dir, 'templates/crds/virtualio.dev_virtualiodevices.yaml');
  const lines = readFileSync(file, 'utf8').split('\n');
  const spec = lines.indexOf('            spec:', lines.findIndex((l) => l.trim() === 'openAPIV3Schema:'));
  const props = lines.indexOf('              properties:', spec);
  if (spec < 0 || props < 0) throw new Error(`no openAPIV3Schema.properties.spec.properties in ${file}`);
  lines.splice(props + 1, 0, ...fields.map((f) => `                ${f}: {type: string, description: added in chart ${version}}`));
  writeFileSync(file, lines.join('\n'));
  return dir;
}

/** `helm package` of a chart folder into `dest`; returns the .tgz path. */
export function packageChart(chartDir: string, dest: string): string {
  const out = execFileSync(helmBinary(), ['package', chartDir, '--destination', dest], { encoding: 'utf8' });
  const tgz = out.trim().split(' ').pop() ?? '';
  if (!tgz.endsWith('.tgz') || !existsSync(tgz)) throw new Error(`helm package ${chartDir} said: ${out}`);
  return tgz;
}

/**
 * The ```yaml blocks under a heading of a file in docs/ (up to the next heading of the same or a
 * higher level), each parsed into its objects. Snippets indented inside a list item parse as well.
 */
export function docYamlBlocks(file: string, heading: string): KubeObject[][] {
  const lines = readFileSync(join(REPO_ROOT, 'docs', file), 'utf8').split('\n');
  const start = lines.indexOf(heading);
  if (start < 0) throw new Error(`docs/${file} has no heading "${heading}"`);
  const level = heading.indexOf(' ');
  // Headings outside code blocks only: a YAML comment line looks like one.
  let fenced = false;
  const endAt = lines.findIndex((l, i) => {
    if (/^ *```/.test(l)) fenced = !fenced;
    return i > start && !fenced && /^#+ /.test(l) && l.indexOf(' ') <= level;
  });
  const section = lines.slice(start, endAt < 0 ? undefined : endAt).join('\n');
  return [...section.matchAll(/^ *```yaml\n([\s\S]*?)^ *```/gm)].map((m) => parseObjects(m[1]!));
}
