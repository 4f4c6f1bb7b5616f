// Helpers for the operator's integration suites against a real kube-apiserver: kubectl from the
// built binaries, CRD installation, an agent-like status writer, and the built operator as a child
// process. Paths come in as arguments (no environment reads here).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { VioNode } from '../../operator/src/api/types.js';
import { isKubeError } from '../../operator/src/kube/errors.js';
import type { KubeObject, KubePort, ResourceType } from '../../operator/src/kube/ports.js';
import { AGENT_FIELD_MANAGER, VIRTUALIO_API_VERSION, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { waitCrdsEstablished } from './crd-wait.js';

const run = promisify(execFile);

/** Runs kubectl; throws with its stderr when it fails. */
export async function kubectlAt(binDir: string, kubeconfig: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(join(binDir, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`kubectl ${args.join(' ')}: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** Applies CRD files server-side and waits until each is Established. */
export async function installCrdFiles(binDir: string, kubeconfig: string, files: string[], names: string[]): Promise<void> {
  for (const f of files) await kubectlAt(binDir, kubeconfig, ['apply', '--server-side', '--force-conflicts', '-f', f]);
  await waitCrdsEstablished((args) => kubectlAt(binDir, kubeconfig, args), names, 60);
}

/** Polls until `check` returns something truthy; throws after `timeoutMs` with the last error. */
export async function waitUntil<T>(what: string, check: () => Promise<T | undefined | false | null> | T | undefined | false | null, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * A user's edit of an object (`kubectl edit`): read it, change it, replace it; read and change it
 * again when someone wrote it in between (409 Conflict: the operator's status and finalizer writes
 * change its resourceVersion too). Returns what the API server stored.
 */
export async function editObject<T extends KubeObject>(kube: KubePort, res: ResourceType, name: string, edit: (cur: T) => T): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const cur = await kube.get<T>(res, name);
    if (!cur) throw new Error(`${res.plural}/${name} not found`);
    try {
      return await kube.replace<T>(res, edit(cur));
    } catch (err) {
      if (!isKubeError(err, 'Conflict') || attempt >= 20) throw err;
    }
  }
}

/** Writes a VirtualIONode's status as the node's agent does (SSA, field manager virtualio-agent). */
export async function writeAgentStatus(kube: KubePort, node: string, status: NonNullable<VioNode['status']>): Promise<void> {
  await kube.apply(VirtualIONodes, { apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIONode', metadata: { name: node }, status },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
}

/** The built operator, as the image ships it (dist/image/operator/main.js), running as a child process. */
export interface OperatorProcess {
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Resolves with the exit code (or signal name). */
  readonly exited: Promise<number | string>;
  /** SIGTERM (graceful) or SIGKILL (crash). */
  kill(signal: 'SIGTERM' | 'SIGKILL'): Promise<number | string>;
}

export function spawnOperator(opts: { repoRoot: string; nodeBin: string; args: string[]; logFile: string; nodeArgs?: string[]; env?: Record<string, string> }): OperatorProcess {
  const child = spawn(opts.nodeBin, [...(opts.nodeArgs ?? []), join(opts.repoRoot, 'dist/image/operator/main.js'), ...opts.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const exited = new Promise<number | string>((r) => child.once('exit', (code, sig) => r(code ?? sig ?? -1)));
  return {
    child, logFile: opts.logFile, exited,
    async kill(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
