// Runs the REAL agent process, as the image ships it (`node dist/image/agent/main.js`, the bundle of
// scripts/bundle.mjs), for end-to-end tests and benchmarks. `ensureAgentBuilt()` runs `npm run
// build`'s two steps (tsc, then the bundle) when the bundle is missing or older than any agent source
// (a lock folder keeps parallel test files from building at once), so `npm test` needs no global
// setup and no prior `npm run build`.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = HERE.includes(join('dist', 'test')) ? resolve(HERE, '../../..') : resolve(HERE, '../..');
export const AGENT_MAIN = join(REPO, 'dist/image/agent/main.js');
/** The operator as the image ships it; `ensureAgentBuilt()` builds it too (one build makes both bundles). */
export const OPERATOR_MAIN = join(REPO, 'dist/image/operator/main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = join(dir, e);
    const st = statSync(p);
    if (st.isDirectory()) newest = Math.max(newest, newestMtime(p));
    else if (e.endsWith('.ts') && !e.endsWith('.test.ts')) newest = Math.max(newest, st.mtimeMs);
  }
  return newest;
}

/** True when dist/ lacks the agent or is older than its sources (agent, protos, CRD types, the operator's planner). */
export function agentBuildIsStale(): boolean {
  if (!existsSync(AGENT_MAIN)) return true;
  const built = statSync(AGENT_MAIN).mtimeMs;
  const src = Math.max(newestMtime(join(REPO, 'device-plugin/src')), newestMtime(join(REPO, 'proto')), newestMtime(join(REPO, 'crds/generated')),
    // The agent compiles in the operator's planner (local planning).
    newestMtime(join(REPO, 'operator/src')));
  return src > built;
}

/** Builds dist/ when stale; returns the agent entrypoint. Throws with tsc's output when no entrypoint results. */
export async function ensureAgentBuilt(): Promise<string> {
  if (!agentBuildIsStale()) return AGENT_MAIN;
  const lock = join(REPO, 'dist', '.agent-build.lock');
  mkdirSync(join(REPO, 'dist'), { recursive: true });
  for (let i = 0; ; i++) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      // Someone else builds; wait for them (a lock older than 5 minutes is stale).
      try {
        if (Date.now() - statSync(lock).mtimeMs > 300_000) rmdirSync(lock);
      } catch {
        /* gone */
      }
      await new Promise((r) => setTimeout(r, 500));
      if (!agentBuildIsStale()) return AGENT_MAIN;
      if (i > 600) throw new Error('timed out waiting for another agent build');
    }
  }
  try {
    if (!agentBuildIsStale()) return AGENT_MAIN;
    const r = spawnSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'tsconfig.build.json')], { cwd: REPO, encoding: 'utf8' });
    // tsc emits even with type errors elsewhere in the tree; only a missing entrypoint is fatal here.
    const b = spawnSync(process.execPath, [join(REPO, 'scripts/bundle.mjs')], { cwd: REPO, encoding: 'utf8' });
    if (!existsSync(AGENT_MAIN) || agentBuildIsStale()) throw new Error(`agent build failed (tsc exit ${r.status}, bundle exit ${b.status}):\n${r.stdout}\n${r.stderr}\n${b.stderr}`);
    if (r.status !== 0) console.warn(`tsc reported errors (dist was still emitted):\n${r.stdout.slice(0, 4000)}`);
    return AGENT_MAIN;
  } finally {
    rmdirSync(lock);
  }
}

/** One pino log line of the agent. */
export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export class AgentProcess {
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  metricsUrl: string | undefined;
  exitCode: number | null | undefined;
  private readonly exited: Promise<number | null>;
  private buffer = '';

  readonly proc: ChildProcess;

  constructor(proc: ChildProcess) {
    this.proc = proc;
    proc.stdout?.setEncoding('utf8');
    proc.stdout?.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        try {
          const obj = JSON.parse(line) as LogLine;
          this.logs.push(obj);
          if (obj.msg === 'metrics endpoint listening') {
            const a = obj.address as { address: string; port: number; family: string };
            this.metricsUrl = `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
          }
        } catch {
          this.stderr.push(`stdout: ${line}`);
        }
      }
    });
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (c: string) => this.stderr.push(c));
    this.exited = new Promise((res) =>
      proc.on('exit', (code) => {
        this.exitCode = code;
        res(code);
      }),
    );
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  /** Waits for a log line matching `pred` (polling the collected lines). */
  async waitForLog(what: string, pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.logs.find(pred);
      if (hit) return hit;
      if (!this.alive) throw new Error(`agent exited (${this.exitCode}) while waiting for ${what}\n${this.tail()}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n${this.tail()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** GET on the metrics server. */
  async get(path: string): Promise<{ status: number; text: string }> {
    if (!this.metricsUrl) await this.waitForLog('metrics endpoint', () => this.metricsUrl !== undefined);
    const res = await fetch(`${this.metricsUrl}${path}`);
    return { status: res.status, text: await res.text() };
  }

  /** The last 40 log lines and stderr, for failure messages. */
  tail(): string {
    return [...this.logs.slice(-40).map((l) => JSON.stringify(l)), ...this.stderr.slice(-20)].join('\n');
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.alive) this.proc.kill(signal);
    return this.exited;
  }
}

/** Starts the built agent with `args` (add `--metrics-address 127.0.0.1:0` to get a free port). */
export async function startAgent(args: string[], env: Record<string, string> = {}): Promise<AgentProcess> {
  const main = await ensureAgentBuilt();
  if (!args.includes('--state-dir')) {
    // The checkpoint goes beside the test's sysfs tree (never the machine's /var/lib/virtualio), so a
    // restarted agent of the same test finds it and two tests never share one.
    const i = args.indexOf('--sysfs-root');
    const root = i >= 0 ? args[i + 1] : undefined;
    if (root) args = [...args, '--state-dir', join(dirname(root), 'agent-state')];
  }
  const proc = spawn(process.execPath, [main, ...args], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new AgentProcess(proc);
}
