// Shared by the observability suites (test/unit/observability-*.test.ts, test/integration/
// observability-prometheus.test.ts): Debian's Prometheus and promtool (cached by prometheus.sh),
// the chart rendered with helm (no cluster needed), its PrometheusRule as a Prometheus rule file,
// and the dashboard.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { createMetrics } from '../../device-plugin/src/metrics.js';
import { OperatorMetrics } from '../../operator/src/metrics.js';
import { REPO_ROOT, ensureBinaries } from '../cluster/control-plane.js';

export const CHART_DIR = join(REPO_ROOT, 'charts/virtualio');
export const DASHBOARD_FILE = join(CHART_DIR, 'files/dashboards/virtualio.json');
export const RULES_SOURCE = join(CHART_DIR, 'files/prometheus-rules.yaml');
export const RUNBOOK_DIR = join(REPO_ROOT, 'docs/runbooks');
/** Release and namespace the promtool tests expect (job and Deployment names follow from them). */
export const RELEASE = 'virtualio';
export const NAMESPACE = 'virtualio-system';

/** Where prometheus and promtool are, or why they cannot be had (the suites then report themselves skipped). */
export function prometheusTools(): { bin: string } | { skip: string } {
  const r = spawnSync('bash', [join(REPO_ROOT, 'test/observability/prometheus.sh')], { encoding: 'utf8', timeout: 600_000 });
  const bin = r.stdout.trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !bin) return { skip: `Debian's prometheus package could not be had: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim().split('\n').pop()}` };
  return { bin };
}

/** `helm template` of the working-tree chart; returns the objects. */
export function renderChart(args: string[] = []): Record<string, unknown>[] {
  const helm = join(ensureBinaries(), 'helm');
  const out = execFileSync(helm, ['template', RELEASE, CHART_DIR, '--namespace', NAMESPACE, ...args], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, HELM_CACHE_HOME: '/tmp/vio-helm/cache', HELM_CONFIG_HOME: '/tmp/vio-helm/config', HELM_DATA_HOME: '/tmp/vio-helm/data' },
  });
  return YAML.parseAllDocuments(out).map((d) => d.toJS() as Record<string, unknown> | null).filter((o): o is Record<string, unknown> => !!o);
}

export interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
export interface RuleGroup {
  name: string;
  rules: Rule[];
}

/** The groups of the PrometheusRule the chart renders (with the monitoring API present) and `extra` values. */
export function renderedRuleGroups(extra: string[] = []): RuleGroup[] {
  const objs = renderChart(['--api-versions', 'monitoring.coreos.com/v1', ...extra]);
  const pr = objs.filter((o) => o.kind === 'PrometheusRule');
  if (pr.length !== 1) throw new Error(`expected one PrometheusRule, got ${pr.length}`);
  return (pr[0] as { spec: { groups: RuleGroup[] } }).spec.groups;
}

export interface DashboardTarget {
  expr: string;
  refId: string;
  legendFormat?: string;
}
export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  targets?: DashboardTarget[];
}
export interface Dashboard {
  uid: string;
  title: string;
  panels: DashboardPanel[];
  templating: { list: { name: string; type: string; query: string | { query: string }; allValue?: string }[] };
}

export function dashboard(): Dashboard {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8')) as Dashboard;
}

/**
 * A panel query as Grafana sends it with "All" selected: template variables become their all
 * value, `$__rate_interval` and `$__interval` the given window.
 */
export function expandQuery(expr: string, window = '1m'): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range/g, window)
    .replace(/\$(node|pool)\b/g, '.*');
}

/** Every metric name a PromQL expression or text mentions (identifiers that start with virtualio_, kube_, or `up`). */
export function metricNames(text: string): string[] {
  return [...new Set([...text.matchAll(/\b(virtualio_[a-z0-9_]+|kube_[a-z0-9_]+)\b/g)].map((m) => m[1] as string))].sort();
}

/** Every metric name the agent and the operator export (histograms and counters with their series suffixes). */
export async function exportedMetricNames(): Promise<Set<string>> {
  const out = new Set<string>();
  const agent = createMetrics({ processMetrics: true });
  const op = new OperatorMetrics({ defaultMetrics: true });
  for (const r of [agent.registry, op.registry]) {
    for (const m of await r.getMetricsAsJSON()) {
      out.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(`${m.name}${s}`);
    }
  }
  return out;
}

/** kube-state-metrics series the alerts read (docs/observability.md: they need it). */
export const KSM_METRICS: ReadonlySet<string> = new Set(['kube_pod_container_resource_requests', 'kube_pod_status_phase', 'kube_deployment_status_replicas_available', 'kube_deployment_spec_replicas']);
