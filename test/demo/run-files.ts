// Files around a demo run (test/demo/demo.ts): the Prometheus configuration it writes, Debian's
// prometheus when cached, log tails, and removal of earlier runs' folders.
//
// Node runs this file directly (type stripping): it imports only Node built-ins.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { basename, join } from 'node:path';

/**
 * A Prometheus configuration scraping both programs every 5 s, with the labels the chart's
 * ServiceMonitors give (job = the metrics Service's name, node on the agent's target), so the
 * chart's alerts and dashboard queries work on it unchanged. JSON is YAML.
 */
export function prometheusConfig(m: { agent: string; operator: string }, node: string): string {
  return `${JSON.stringify({
    global: { scrape_interval: '5s', evaluation_interval: '5s' },
    scrape_configs: [
      { job_name: 'virtualio-agent-metrics', static_configs: [{ targets: [m.agent], labels: { node } }] },
      { job_name: 'virtualio-operator-metrics', static_configs: [{ targets: [m.operator] }] },
    ],
  }, null, 2)}\n`;
}

/** Debian's prometheus when the tests cached it (test/observability/prometheus.sh), else undefined. */
export function debianPrometheus(cache: string): string | undefined {
  const dir = existsSync(cache) ? readdirSync(cache).find((d) => d.startsWith('prometheus-') && existsSync(join(cache, d, 'usr/bin/prometheus'))) : undefined;
  return dir ? join(cache, dir, 'usr/bin/prometheus') : undefined;
}

/** The last `n` lines of a log file. */
export function tail(file: string, n: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Removes earlier demo run folders whose processes are all gone (in the background). */
export async function removeStaleRuns(demoDir: string, shm: string): Promise<void> {
  const dirs = [
    ...(existsSync(demoDir) ? readdirSync(demoDir).filter((d) => d.startsWith('vio-cp-') || /^host-.*\.tmp-\d+$/.test(d)).map((d) => join(demoDir, d)) : []),
    ...(existsSync(shm) ? readdirSync(shm).filter((d) => /^virtualio-demo-\d+$/.test(d)).map((d) => join(shm, d)) : []),
  ];
  for (const dir of dirs) {
    const tmpOwner = /(?:\.tmp-|^virtualio-demo-)(\d+)$/.exec(basename(dir))?.[1];
    const pids = tmpOwner ? [Number(tmpOwner)] : ['pids', 'demo-pids'].flatMap((f) => {
      try {
        return readFileSync(join(dir, f), 'utf8').split('\n').map(Number).filter((p) => p > 0);
      } catch {
        return [];
      }
    });
    const alive = pids.some((p) => {
      try {
        process.kill(p, 0);
        return true;
      } catch {
        return false;
      }
    });
    if (!alive) await rm(dir, { recursive: true, force: true });
  }
}
