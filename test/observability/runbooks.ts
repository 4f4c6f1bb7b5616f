// The runbooks' shell commands (docs/runbooks/*.md, ```sh blocks), for the tests that keep them from
// rotting: test/unit/observability-runbooks.test.ts checks every command against what exists
// (kubectl resources and the chart's objects, jsonpath fields in the CRDs, the agent's endpoints,
// metric names, chart values, flags); test/integration/observability-prometheus.test.ts runs the
// read-only ones against a running cluster. Placeholders are <node>, <pool>, <slice>, <device>,
// <namespace>, <pod>, <agent-pod>, <operator-pod>.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RUNBOOK_DIR } from './tools.js';

export interface RunbookCommand {
  runbook: string;
  command: string;
}

/** The runbook files: one per alert, plus README.md (the index). */
export function runbookFiles(): string[] {
  return readdirSync(RUNBOOK_DIR).filter((f) => f.endsWith('.md')).sort();
}

export function runbookText(file: string): string {
  return readFileSync(join(RUNBOOK_DIR, file), 'utf8');
}

/** Every command of every ```sh block (continuation lines joined, comments and blank lines left out). */
export function runbookCommands(): RunbookCommand[] {
  const out: RunbookCommand[] = [];
  for (const f of runbookFiles()) {
    for (const block of runbookText(f).matchAll(/```sh\n([\s\S]*?)```/g)) {
      const lines = (block[1] ?? '').replace(/\\\n\s*/g, ' ').split('\n');
      for (const l of lines) {
        const c = l.trim();
        if (c && !c.startsWith('#')) out.push({ runbook: f.replace(/\.md$/, ''), command: c });
      }
    }
  }
  return out;
}

/** kubectl verbs that only read. */
const READ_VERBS = new Set(['get', 'describe']);
/** Resources a test cluster without the chart has (our CRDs, Nodes, Leases, Events, Pods listed by label). */
const CLUSTER_RESOURCES = new Set(['viod', 'viodev', 'virtualiodevice', 'virtualiodevices', 'vion', 'vionode', 'virtualionode', 'virtualionodes', 'nodes', 'node', 'lease', 'leases', 'events', 'pods', 'pod']);

/** The words of a command line, with single-quoted parts kept whole (quotes removed). */
export function words(command: string): string[] {
  return [...command.matchAll(/'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? '');
}

/**
 * How a test runs a command, or undefined when it only checks it: `kubectl` for read-only kubectl
 * commands on resources a cluster without the chart installed has (named chart objects such as
 * deploy/virtualio-operator and pods' logs are checked, not run), `agent` for the agent's endpoints
 * (curl localhost:8080, after the runbook's port-forward), `host` for reads of sysfs and /dev/vfio.
 */
export function runnable(command: string): 'kubectl' | 'agent' | 'host' | undefined {
  const w = words(command);
  if (w[0] === 'curl') return command.includes('localhost:8080/') ? 'agent' : undefined;
  if (['readlink', 'ls', 'cat'].includes(w[0] ?? '')) return w.slice(1).every((a) => a.startsWith('-') || /^\/(sys|dev\/vfio)\b/.test(a)) ? 'host' : undefined;
  if (w[0] !== 'kubectl') return undefined;
  const args = kubectlArgs(w);
  if (!READ_VERBS.has(args.verb)) return undefined;
  if (/<(agent|operator)-pod>/.test(command)) return undefined;
  const kinds = args.resource.split(',').map((r) => r.split('/')[0] ?? '');
  if (!kinds.every((k) => CLUSTER_RESOURCES.has(k))) return undefined;
  // A named Pod or Lease of the chart does not exist without it; the Lease the operator takes does.
  if ((kinds[0] === 'pods' || kinds[0] === 'pod') && args.name && !args.name.startsWith('<')) return undefined;
  return 'kubectl';
}

/** verb, resource and name of a kubectl command line, its namespace and its other flags. */
export function kubectlArgs(w: string[]): { verb: string; resource: string; name?: string; namespace?: string; flags: string[] } {
  const rest: string[] = [];
  const flags: string[] = [];
  let namespace: string | undefined;
  for (let i = 1; i < w.length; i++) {
    const a = w[i] as string;
    if (a === '|' || a === '&&' || a === ';') break;
    if (a === '-n' || a === '--namespace') {
      namespace = w[++i];
    } else if (a.startsWith('-')) {
      flags.push(a);
      // Flags with a separate value.
      if (['-o', '-l', '--field-selector', '--since', '--image', '--for', '--timeout', '-c', '--container'].includes(a)) flags.push(w[++i] ?? '');
    } else {
      rest.push(a);
    }
  }
  const [verb = '', resource = '', name] = rest;
  return { verb, resource, ...(name !== undefined ? { name } : {}), ...(namespace !== undefined ? { namespace } : {}), flags };
}

/** The command with its placeholders replaced. */
export function substitute(command: string, values: Record<string, string>): string {
  return command.replace(/<([a-z-]+)>/g, (m, k: string) => values[k] ?? m);
}
