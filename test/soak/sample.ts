// What the churn soaks read from OUTSIDE the processes they watch (test/soak/churn.ts: the agent on
// a fake kubelet; test/soak/kubelet-churn.ts: the agent and the operator replicas on a real kubelet),
// and the statistics they print: /proc readers, a Prometheus text reader, the agent's ledger, and
// percentile and slope.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { pct } from '../bench/lib.js';
import { REPO } from '../fakes/agent-process.js';

export { pct };

/** The V8 flags the Helm chart gives a component (values.yaml <component>.nodeOptions): what ships. */
export function chartNodeOptions(component: 'agent' | 'operator'): string {
  const values = YAML.parse(readFileSync(join(REPO, 'charts/virtualio/values.yaml'), 'utf8')) as Record<string, { nodeOptions?: string } | undefined>;
  return values?.[component]?.nodeOptions ?? '';
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Entries of `dir` (files and, when `recursive`, the files under its folders); 0 when it is missing. */
export function count(dir: string, recursive = false): number {
  let n = 0;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (recursive && statSync(p).isDirectory()) n += count(p, true);
    else n++;
  }
  return n;
}

/** Open fds of `pid` and how many of them are sockets. */
export function fdsOf(pid: number): { fds: number; sockets: number } {
  const dir = `/proc/${pid}/fd`;
  let fds = 0;
  let sockets = 0;
  for (const fd of readdirSync(dir)) {
    try {
      const l = readlinkSync(join(dir, fd));
      fds++;
      if (l.startsWith('socket:')) sockets++;
    } catch {
      /* closed meanwhile */
    }
  }
  return { fds, sockets };
}

/** VmRSS and its anonymous part (heaps, malloc arenas), KiB. */
export function rssOf(pid: number): { rssKiB: number; rssAnonKiB: number } {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? Number.NaN);
  return { rssKiB: kib('VmRSS'), rssAnonKiB: kib('RssAnon') };
}

/**
 * The first sample of metric `name` in Prometheus text whose labels include every `labels` pair
 * (NaN when there is none).
 */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)`, 'gm'))) {
    const have = (m[1] ?? '').split(',');
    if (want.every((w) => have.includes(w))) return Number(m[2]);
  }
  return Number.NaN;
}

/** Entries of the agent's ledger file, whatever its shape (an array, or an object of arrays/maps). */
export function ledgerEntries(stateDir: string): number {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(join(stateDir, 'agent-ledger.json'), 'utf8'));
  } catch {
    return 0;
  }
  const size = (x: unknown): number => (Array.isArray(x) ? x.length : x && typeof x === 'object' ? Object.keys(x).length : 0);
  if (Array.isArray(doc)) return doc.length;
  if (doc && typeof doc === 'object') {
    const o = doc as Record<string, unknown>;
    for (const k of ['entries', 'holds', 'grants', 'allocations', 'slices']) if (k in o) return size(o[k]);
  }
  return size(doc);
}

export function fileSize(p: string): number {
  try {
    return statSync(p).size;
  } catch {
    return 0;
  }
}

/** Least-squares slope of y over x. */
export function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return Number.NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += ((xs[i] as number) - mx) * ((ys[i] as number) - my);
    den += ((xs[i] as number) - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** p99 of the first and of the last tenth of `xs` (in their order), ms rounded to 0.01. */
export function p99FirstLastTenth(xs: readonly number[]): { first: number; last: number } {
  const tenth = Math.max(1, Math.floor(xs.length / 10));
  const r = (x: number): number => Math.round(x * 100) / 100;
  return { first: r(pct(xs.slice(0, tenth), 99)), last: r(pct(xs.slice(-tenth), 99)) };
}
