// The runbooks' commands that need the chart's own objects (the operator Deployment, the agent
// DaemonSet and pods, their logs, the metrics Endpoints, a port-forward to an agent, deleting an agent
// pod), run against the chart installed on the real node (test/integration/chart-real-node.test.ts).
// Together with the commands test/integration/observability-prometheus.test.ts runs (`runnable`),
// every command of every runbook runs; test/unit/observability-runbooks.test.ts checks that no command
// is left to neither.
//
// A command is run as a reader of the runbook would type it, with only these changes: placeholders
// filled in; the chart's object names for the release under test (the runbooks assume the release
// `virtualio`); `kubectl port-forward` started in the background on a free local port, which the
// runbook's following `curl localhost:8080` commands use; `| grep` may find nothing (exit 1: the
// runbook looks for lines that are there only when something is wrong), but a failing command before
// it fails the pipe. `kubectl delete pod <agent-pod>` runs last (it replaces the agent pod).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { dirname } from 'node:path';
import { runbookCommands, runnable, substitute, words, type RunbookCommand } from './runbooks.js';

/** curl as the runbooks use it, failing on an HTTP error; node's fetch stands in (no curl needed on the host). */
export const CURL_SHIM = 'curl() { node -e \'const u = process.argv.at(-1); fetch(/^https?:/.test(u) ? u : `http://${u}`).then(async (r) => { process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 22); })\' -- "$@"; }';

/** The commands the real-node suite runs: every one the Prometheus suite does not. */
export function chartRunbookCommands(): RunbookCommand[] {
  const all = runbookCommands().filter((c) => runnable(c.command) === undefined);
  // The agent pod's deletion goes last: it replaces the pod the other commands name.
  return [...all.filter((c) => !isDelete(c.command)), ...all.filter((c) => isDelete(c.command))];
}

const isDelete = (command: string): boolean => words(command).includes('delete');

export interface ChartRunContext {
  /** Placeholder values: node, pool, slice, device, namespace, pod, agent-pod, operator-pod. */
  values: Record<string, string>;
  /** The chart's fullname for the release under test (`<release>-virtualio`, or `virtualio` for release `virtualio`). */
  fullname: string;
  kubeconfig: string;
  /** Folder of kubectl. */
  binDir: string;
  /** A free local port for `kubectl port-forward`. */
  localPort: number;
}

/** The command line as run: placeholders filled, the release's object names, the local port, grep allowed to find nothing. */
export function chartCommandLine(command: string, ctx: ChartRunContext): string {
  const line = substitute(command, ctx.values)
    .replace(/(deploy\/|deploy |deployment |ds |daemonset |endpoints )virtualio-/g, `$1${ctx.fullname}-`)
    .replaceAll('localhost:8080', `localhost:${ctx.localPort}`)
    .replace(/port-forward (\S+) 8080:8080/, `port-forward $1 ${ctx.localPort}:8080`);
  const grep = line.lastIndexOf(' | grep ');
  return grep < 0 ? line : `${line.slice(0, grep)} | { ${line.slice(grep + 3).trim()} || [ $? -eq 1 ]; }`;
}

function env(ctx: ChartRunContext): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${ctx.binDir}:${dirname(process.execPath)}:${process.env.PATH ?? ''}`, KUBECONFIG: ctx.kubeconfig };
}

/** Starts a port-forward in the background; resolves once kubectl says it forwards. */
function portForward(line: string, ctx: ChartRunContext): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', ['-c', `exec ${line}`], { env: env(ctx), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let forwarding = false;
    const timer = setTimeout(() => {
      p.kill('SIGTERM');
      reject(new Error(`no "Forwarding from" within 30 s: ${out.trim()}`));
    }, 30_000);
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('Forwarding from') && !forwarding) {
        forwarding = true;
        clearTimeout(timer);
        // The runbook's next step is `curl localhost:8080/...`: the forward must reach the agent.
        fetch(`http://127.0.0.1:${ctx.localPort}/healthz`, { signal: AbortSignal.timeout(10_000) }).then(
          (r) => {
            if (r.ok) resolve(p);
            else {
              p.kill('SIGTERM');
              reject(new Error(`/healthz through the port-forward: HTTP ${r.status}`));
            }
          },
          (err: unknown) => {
            p.kill('SIGTERM');
            reject(new Error(`/healthz through the port-forward: ${String(err)}`));
          },
        );
      }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`port-forward exited (${code}): ${out.trim()}`));
    });
  });
}

/**
 * Runs the commands in order, runbook by runbook (a port-forward lasts until that runbook's commands
 * are done). Returns what ran and what failed, each with its runbook, line and (for failures) output.
 */
export async function runChartRunbookCommands(commands: RunbookCommand[], ctx: ChartRunContext): Promise<{ ran: string[]; failed: string[] }> {
  const ran: string[] = [];
  const failed: string[] = [];
  let forward: { runbook: string; proc: ChildProcess } | undefined;
  const stopForward = async (): Promise<void> => {
    if (!forward) return;
    const p = forward.proc;
    forward = undefined;
    if (p.exitCode === null) await new Promise((r) => { p.once('exit', r); p.kill('SIGTERM'); });
  };
  try {
    for (const c of commands) {
      if (forward && forward.runbook !== c.runbook) await stopForward();
      const line = chartCommandLine(c.command, ctx);
      if (words(c.command).includes('port-forward')) {
        await stopForward();
        try {
          forward = { runbook: c.runbook, proc: await portForward(line, ctx) };
          ran.push(`${c.runbook}: ${line}`);
        } catch (err) {
          failed.push(`${c.runbook}: ${line}: ${String(err)}`);
        }
        continue;
      }
      const r = spawnSync('bash', ['-o', 'pipefail', '-c', `${CURL_SHIM}\n${line}`], { encoding: 'utf8', timeout: 60_000, env: env(ctx) });
      if (r.status === 0) ran.push(`${c.runbook}: ${line}`);
      else failed.push(`${c.runbook}: ${line}: exit ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`);
    }
  } finally {
    await stopForward();
  }
  return { ran, failed };
}
