// Helpers for integration tests that run against the real control plane started by the jest global
// setup (test/jest/global-setup.ts): kubectl from the built binaries, our CRDs, and waiting.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { waitCrdsEstablished } from './crd-wait.js';

const run = promisify(execFile);

export interface ClusterEnv {
  kubeconfig: string;
  server: string;
  binDir: string;
}

/** The control plane of the integration global setup; throws a clear error outside it. */
export function clusterEnv(): ClusterEnv {
  const { VIO_KUBECONFIG: kubeconfig, VIO_APISERVER: server, VIO_BIN_DIR: binDir } = process.env;
  if (!kubeconfig || !server || !binDir) {
    throw new Error('no control plane: run this suite in the jest "integration" project (its global setup starts one)');
  }
  return { kubeconfig, server, binDir };
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Which kubectl and cluster: defaults to the global setup's; a private control plane passes its own. */
export interface KubectlOptions {
  input?: string;
  kubeconfig?: string;
  binDir?: string;
}

/** Runs the built kubectl against the test cluster; never throws on a non-zero exit. */
export async function kubectl(args: string[], opts: KubectlOptions = {}): Promise<KubectlResult> {
  const binDir = opts.binDir ?? clusterEnv().binDir;
  const kubeconfig = opts.kubeconfig ?? clusterEnv().kubeconfig;
  const child = run(join(binDir, 'kubectl'), ['--kubeconfig', kubeconfig, ...args], {
    maxBuffer: 32 * 1024 * 1024,
  });
  if (opts.input !== undefined) {
    child.child.stdin?.end(opts.input);
  }
  try {
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** kubectl that must succeed; throws with kubectl's stderr otherwise. */
export async function kubectlOk(args: string[], opts: KubectlOptions = {}): Promise<string> {
  const r = await kubectl(args, opts);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Applies virtualio's CRDs (server-side) and waits until they are Established. Idempotent. */
export async function installCrds(): Promise<void> {
  await kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', join(REPO_ROOT, 'crds')]);
  await waitCrdsEstablished(kubectlOk, ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev', 'virtualionodeacks.virtualio.dev'], 60);
}

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * Waits until the Node has no taint `match` accepts (default: node.kubernetes.io/not-ready), taking
 * off the not-ready taint its first status may leave: no node lifecycle controller runs here.
 */
export async function untaintedNode(kubectl: (args: string[]) => Promise<string>, node: string, match: (key: string) => boolean = (k) => k === 'node.kubernetes.io/not-ready'): Promise<void> {
  await eventually('node without the not-ready taint', async () => {
    const n = JSON.parse(await kubectl(['get', 'node', node, '-o', 'json'])) as { spec: { taints?: { key: string }[] } };
    if (!(n.spec.taints ?? []).some((t) => match(t.key))) return true;
    await kubectl(['taint', 'node', node, 'node.kubernetes.io/not-ready-']).catch(() => '');
    return undefined;
  }, 60_000, 250);
}
