// The runbooks (docs/runbooks/) do not rot: one per alert with the same severity and the four
// sections; every shell command in them names things that exist — kubectl resources (our CRDs'
// names and short names), the chart's objects and pod labels (release `virtualio` in
// `virtualio-system`), jsonpath and custom-columns fields in the CRD schemas, the agent's endpoints
// (requested from a real one here), sysfs attributes the agent reads, chart values in `--set`; and
// every metric, alert, chart value and flag the prose names exists. The read-only commands are also
// run against a running cluster by test/integration/observability-prometheus.test.ts.
import { readdirSync, readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import YAML from 'yaml';
import { parseAgentConfig } from '../../device-plugin/src/config.js';
import { createLogger } from '../../device-plugin/src/log.js';
import { createMetrics, serveMetrics } from '../../device-plugin/src/metrics.js';
import { FLAGS as OPERATOR_FLAGS } from '../../operator/src/config.js';
import { LEASE_NAME } from '../../operator/src/kube/resources.js';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { kubectlArgs, runbookCommands, runbookFiles, runbookText, runnable, words } from '../observability/runbooks.js';
import { chartCommandLine, chartRunbookCommands } from '../observability/runbooks-chart.js';
import { CHART_DIR, KSM_METRICS, NAMESPACE, exportedMetricNames, renderChart, renderedRuleGroups, type Rule } from '../observability/tools.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- CRD schemas and rendered manifests are plain JSON trees */
type Any = any;

const crds = ['virtualio.dev_virtualiodevices.yaml', 'virtualio.dev_virtualionodes.yaml'].map((f) => YAML.parse(readFileSync(join(REPO_ROOT, 'crds', f), 'utf8')) as Any);
/** Resource name (plural, singular, short names) → the CRD's schema. */
const crdByName = new Map<string, Any>();
for (const c of crds) {
  const n = c.spec.names;
  for (const name of [n.plural, n.singular, ...(n.shortNames ?? [])]) crdByName.set(name, c.spec.versions[0].schema.openAPIV3Schema);
}
/** Built-in resources the runbooks may name (kubectl's names and short names). */
const CORE = new Map<string, string>([
  ['pods', 'Pod'], ['pod', 'Pod'], ['po', 'Pod'], ['nodes', 'Node'], ['node', 'Node'], ['events', 'Event'], ['lease', 'Lease'], ['leases', 'Lease'],
  ['ds', 'DaemonSet'], ['daemonset', 'DaemonSet'], ['deploy', 'Deployment'], ['deployment', 'Deployment'], ['endpoints', 'Service'], ['svc', 'Service'], ['service', 'Service'],
]);
/** Fields of built-in objects the runbooks read. */
const CORE_FIELDS: Record<string, string[]> = { Node: ['.status.allocatable', '.status.capacity'], Pod: ['.status.phase', '.spec.nodeName'] };
const FIELD_SELECTORS = new Set(['spec.nodeName', 'status.phase', 'involvedObject.kind', 'involvedObject.name']);
/** What the agent serves (checked below against a running metrics server). */
const AGENT_PATHS = ['/metrics', '/status', '/healthz', '/readyz'];
/** The agent's sources: a sysfs attribute a runbook reads on the node must be one the agent reads or writes. */
const agentSource = readdirSync(join(REPO_ROOT, 'device-plugin/src'), { recursive: true, encoding: 'utf8' })
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
  .map((f) => readFileSync(join(REPO_ROOT, 'device-plugin/src', f), 'utf8'))
  .join('\n');
/** Flags of other programs the prose may name. */
const OTHER_FLAGS = new Set(['--root-dir', '--max-old-space-size']);

let chart: Any[];
let alerts: Rule[];
let metrics: Set<string>;
const agentFlags = new Set([...(parseAgentConfig(['--help'], {}, 'h') as { text: string }).text.matchAll(/--([a-z][a-z-]+)/g)].map((m) => `--${m[1]}`));
const operatorFlags = new Set(Object.keys(OPERATOR_FLAGS).map((f) => `--${f}`));
const values = YAML.parse(readFileSync(join(CHART_DIR, 'values.yaml'), 'utf8')) as Any;

beforeAll(async () => {
  chart = renderChart(['--set', 'serviceMonitor.enabled=true']);
  alerts = renderedRuleGroups().flatMap((g) => g.rules).filter((r) => r.alert);
  metrics = await exportedMetricNames();
});

/** The chart object of `kind` named `name` exists (release virtualio). */
function inChart(kind: string, name: string): boolean {
  return chart.some((o) => o.kind === kind && o.metadata.name === name);
}

/** A value path such as agent.hostPaths.kubelet exists in values.yaml. */
function valueExists(path: string): boolean {
  let v: Any = values;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(k in v)) return false;
    v = v[k];
  }
  return true;
}

/** Walks a schema along a field path (`.status.slices[*].allocation.pod`); undefined when a field is unknown. */
function schemaAt(schema: Any, path: string): Any {
  let s = schema;
  for (const part of path.replace(/\[[^\]]*\]/g, '[]').split('.').filter(Boolean)) {
    const arrays = (part.match(/\[\]/g) ?? []).length;
    const key = part.replace(/\[\]/g, '');
    if (key) {
      if (key === 'metadata' && s?.properties?.metadata === undefined) return {};
      s = s?.properties?.[key] ?? (s?.['x-kubernetes-preserve-unknown-fields'] || s?.additionalProperties ? {} : undefined);
      if (s === undefined) return undefined;
      if (key === 'metadata') return {};
    }
    for (let i = 0; i < arrays; i++) s = s?.items;
  }
  return s;
}

/** The absolute field paths a kubectl jsonpath template reads, with range bodies resolved. */
function jsonpathFields(template: string): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const m of template.matchAll(/\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}/g)) {
    const expr = (m[1] ?? '').trim();
    if (expr === 'end') {
      stack.pop();
      continue;
    }
    if (expr.startsWith('"')) continue; // a literal such as "\t"
    const range = /^range\s+(\S+)$/.exec(expr);
    const path = range ? (range[1] ?? '') : expr;
    const abs = path.startsWith('.') && stack.length > 0 && !/^\.(status|spec|metadata)\b/.test(path) ? `${stack.at(-1)}[]${path}` : path;
    out.push(abs);
    // Filters test fields of the items: [?(@.health!="Healthy")]
    for (const f of path.matchAll(/\[\?\(@(\.[a-zA-Z.]+)/g)) out.push(`${abs.replace(/\[\?\(.*$/, '')}[]${f[1]}`);
    if (range) stack.push(abs.replace(/\[[^\]]*\]$/, ''));
  }
  return out.map((p) => p.replace(/\[\?\([^)]*\)\]/g, '[]'));
}

describe('runbooks', () => {
  test('one per alert, with its severity and the sections Meaning, Impact, Diagnosis, Mitigation; the index lists them all', () => {
    const files = runbookFiles().filter((f) => f !== 'README.md');
    expect(files.map((f) => f.replace(/\.md$/, '')).sort()).toEqual(alerts.map((a) => a.alert).sort());
    const index = runbookText('README.md');
    const overview = readFileSync(join(REPO_ROOT, 'docs/observability.md'), 'utf8');
    for (const a of alerts) {
      const text = runbookText(`${a.alert}.md`);
      const sections = [...text.matchAll(/^(#{1,2}) (.+)$/gm)].map((m) => `${m[1]} ${m[2]}`);
      expect({ alert: a.alert, sections }).toEqual({ alert: a.alert, sections: [`# ${a.alert}`, '## Meaning', '## Impact', '## Diagnosis', '## Mitigation'] });
      expect(text).toContain(`Severity: ${a.labels?.severity}`);
      expect(index).toContain(`| [${a.alert}](${a.alert}.md) | ${a.labels?.severity} |`);
      expect(overview).toContain(`| ${a.alert} | ${a.labels?.severity} |`);
      expect(runbookCommands().filter((c) => c.runbook === a.alert).length).toBeGreaterThanOrEqual(3);
    }
  });

  test('every kubectl command names resources, chart objects, labels, fields and selectors that exist', () => {
    const problems: string[] = [];
    const podLabels = chart.filter((o) => o.kind === 'DaemonSet' || o.kind === 'Deployment').flatMap((o) => Object.entries(o.spec.template.metadata.labels as Record<string, string>).map(([k, v]) => `${k}=${v}`));
    for (const { runbook, command } of runbookCommands().filter((c) => c.command.startsWith('kubectl '))) {
      const bad = (why: string): void => void problems.push(`${runbook}: ${command}: ${why}`);
      const w = words(command);
      const a = kubectlArgs(w);
      if (a.namespace && ![NAMESPACE, 'default', '<namespace>'].includes(a.namespace)) bad(`namespace ${a.namespace}`);
      const target = ['logs', 'port-forward'].includes(a.verb) ? a.resource : a.verb === 'rollout' ? (a.name ?? '') : a.resource;
      if (['get', 'describe', 'delete'].includes(a.verb)) {
        for (const r of a.resource.split(',')) {
          const [kind = '', name] = r.split('/');
          if (!crdByName.has(kind) && !CORE.has(kind)) bad(`unknown resource ${kind}`);
          const named = name ?? a.name;
          const k = CORE.get(kind);
          if (named && !named.startsWith('<') && k && ['DaemonSet', 'Deployment', 'Service'].includes(k) && !inChart(k, named)) bad(`no ${k} ${named} in the chart`);
          if (named && !named.startsWith('<') && k === 'Lease' && named !== LEASE_NAME) bad(`the operator's Lease is ${LEASE_NAME}`);
        }
      } else if (['logs', 'port-forward'].includes(a.verb) || (a.verb === 'rollout' && a.resource === 'restart')) {
        const [kind = '', name = ''] = target.split('/');
        if (!target.startsWith('<')) {
          const k = CORE.get(kind);
          if (!k || !inChart(k, name)) bad(`no ${kind}/${name} in the chart`);
        }
        if (a.verb === 'port-forward' && !/ \d+:8080$/.test(command)) bad('port-forward to the metrics port 8080');
      } else {
        bad(`verb ${a.verb}`);
      }
      for (let i = 0; i < a.flags.length; i++) {
        const f = a.flags[i] as string;
        const v = a.flags[i + 1] ?? '';
        if (f === '-l' && !v.split(',').every((l) => podLabels.includes(l))) bad(`no pod of the chart has the labels ${v}`);
        if (f === '--field-selector' && !v.split(',').every((s) => FIELD_SELECTORS.has(s.split('=')[0] ?? ''))) bad(`field selector ${v}`);
        if (f === '-o' && (v.startsWith('jsonpath=') || v.startsWith('custom-columns='))) {
          const kind = a.resource.split('/')[0] ?? '';
          const schema = crdByName.get(kind);
          const fields = v.startsWith('jsonpath=') ? jsonpathFields(v.slice('jsonpath='.length)) : v.slice('custom-columns='.length).split(',').map((c) => c.split(':')[1] ?? '');
          for (const field of fields) {
            if (schema ? schemaAt(schema, field) === undefined : !(CORE_FIELDS[CORE.get(kind) ?? ''] ?? []).includes(field)) bad(`no field ${field} in ${kind}`);
          }
        }
      }
    }
    expect(problems).toEqual([]);
  });

  test('every agent endpoint a runbook asks for is served by the agent, and what it greps for exists', async () => {
    const m = createMetrics({ processMetrics: true });
    const ac = new AbortController();
    const server = await serveMetrics({ host: '127.0.0.1', port: 0, metrics: m, readiness: () => ({ ready: true }), status: () => ({ conditions: [] }), logger: createLogger('error'), signal: ac.signal });
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const problems: string[] = [];
      for (const { runbook, command } of runbookCommands().filter((c) => c.command.startsWith('curl '))) {
        const path = /localhost:8080(\/[a-z]*)/.exec(command)?.[1];
        if (!path || !AGENT_PATHS.includes(path)) {
          problems.push(`${runbook}: ${command}: not one of the agent's endpoints`);
          continue;
        }
        const res = await fetch(`${base}${path}`);
        if (res.status !== 200) problems.push(`${runbook}: ${command}: ${res.status}`);
        const grep = /\| grep (\S+)$/.exec(command)?.[1];
        if (grep && !metrics.has(grep)) problems.push(`${runbook}: ${command}: no metric ${grep}`);
      }
      expect(problems).toEqual([]);
    } finally {
      ac.abort();
      server.close();
    }
  });

  test('commands on the node read sysfs attributes the agent reads; helm --set names values that exist; only known tools', () => {
    const problems: string[] = [];
    for (const { runbook, command } of runbookCommands()) {
      const w = words(command);
      const tool = w[0] ?? '';
      if (!['kubectl', 'curl', 'readlink', 'ls', 'cat', 'helm'].includes(tool)) problems.push(`${runbook}: ${command}: unknown tool ${tool}`);
      if (['readlink', 'ls', 'cat'].includes(tool)) {
        if (runnable(command) !== 'host') problems.push(`${runbook}: ${command}: reads something other than /sys or /dev/vfio`);
        for (const p of w.slice(1).filter((x) => x.startsWith('/sys/'))) {
          const attr = p.split('/').pop() ?? '';
          if (!attr.startsWith('<') && !['drivers', 'devices'].includes(attr) && !agentSource.includes(`'${attr}'`)) problems.push(`${runbook}: ${command}: the agent never reads ${attr}`);
        }
      }
      if (tool === 'helm') {
        for (let i = 0; i < w.length; i++) if (w[i] === '--set' && !valueExists((w[i + 1] ?? '').split('=')[0] ?? '')) problems.push(`${runbook}: ${command}: no value ${w[i + 1]}`);
      }
    }
    expect(problems).toEqual([]);
  });

  test('every metric, alert, chart value, flag and link the runbooks and docs/observability.md name exists', () => {
    const problems: string[] = [];
    const alertNames = new Set(alerts.map((a) => a.alert));
    const docs = [...runbookFiles().map((f) => ({ name: f, text: runbookText(f), dir: 'docs/runbooks' })), { name: 'observability.md', text: readFileSync(join(REPO_ROOT, 'docs/observability.md'), 'utf8'), dir: 'docs' }];
    for (const { name, text, dir } of docs) {
      for (const m of text.matchAll(/\b(virtualio_[a-z0-9_]+|kube_[a-z0-9_]+)\b/g)) {
        const n = m[1] as string;
        if (n.endsWith('_') || n.startsWith('virtualio_dev_')) continue; // a family (virtualio_agent_process_*), a resource label value
        if (!metrics.has(n) && !KSM_METRICS.has(n)) problems.push(`${name}: metric ${n}`);
      }
      for (const m of text.matchAll(/\bVirtualIO[A-Z][A-Za-z]+\b/g)) {
        if (!alertNames.has(m[0]) && !['VirtualIODevice', 'VirtualIONode'].includes(m[0])) problems.push(`${name}: alert ${m[0]}`);
      }
      for (const m of text.matchAll(/`((?:agent|operator|prometheusRule|grafanaDashboard|serviceMonitor|kubevirt|cdi|admissionPolicy)\.[a-zA-Z.]+[a-zA-Z])(?:=[^`]*)?`/g)) {
        if (!valueExists(m[1] as string)) problems.push(`${name}: chart value ${m[1]}`);
      }
      for (const m of text.matchAll(/`(--[a-z][a-z-]*)`/g)) {
        const f = m[1] as string;
        if (!agentFlags.has(f) && !operatorFlags.has(f) && !OTHER_FLAGS.has(f)) problems.push(`${name}: flag ${f}`);
      }
      for (const m of text.matchAll(/\]\(([^)#]+\.md)\)/g)) {
        const target = join(REPO_ROOT, dir, m[1] as string);
        try {
          readFileSync(target);
        } catch {
          problems.push(`${name}: link ${m[1]}`);
        }
      }
    }
    expect(problems).toEqual([]);
  });

  test('every command runs in a suite: the Prometheus one (reads) or the real-node one (the chart\'s objects), as the reader types it', () => {
    const chart = chartRunbookCommands();
    const byProm = runbookCommands().filter((c) => runnable(c.command) !== undefined);
    expect(chart.length + byProm.length).toBe(runbookCommands().length);
    expect(chart.length).toBeGreaterThan(20);
    // The deletion of the agent pod goes last; nothing else changes anything.
    expect(chart.map((c) => c.command).filter((c) => / (delete|patch|edit|apply|scale|rollout|label|annotate) /.test(c))).toEqual([chart.at(-1)?.command]);
    const ctx = { values: { 'agent-pod': 'vio-virtualio-agent-x1', node: 'n1' }, fullname: 'vio-virtualio', kubeconfig: '', binDir: '', localPort: 41234 };
    expect(chartCommandLine('kubectl -n virtualio-system logs deploy/virtualio-operator --since=1h | grep -iE \'leader|lease\'', ctx))
      .toBe('kubectl -n virtualio-system logs deploy/vio-virtualio-operator --since=1h | { grep -iE \'leader|lease\' || [ $? -eq 1 ]; }');
    expect(chartCommandLine('kubectl -n virtualio-system port-forward <agent-pod> 8080:8080', ctx)).toBe('kubectl -n virtualio-system port-forward vio-virtualio-agent-x1 41234:8080');
    expect(chartCommandLine('kubectl -n virtualio-system get ds virtualio-agent', ctx)).toBe('kubectl -n virtualio-system get ds vio-virtualio-agent');
    // The operator's Lease keeps its name whatever the release.
    expect(chartCommandLine('kubectl -n virtualio-system get lease virtualio-operator -o yaml', ctx)).toBe('kubectl -n virtualio-system get lease virtualio-operator -o yaml');
  });
});
