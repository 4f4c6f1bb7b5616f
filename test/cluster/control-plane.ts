// A real local control plane for tests and the demo: etcd + kube-apiserver (and optionally
// kube-scheduler) built from the upstream Go modules by build-bins.sh, listening on free loopback
// ports, with a client-certificate admin kubeconfig. Processes are stopped by PID; their logs stay
// in the run directory so a failing test can print them.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface ControlPlane {
  /** Run directory: certificates, kubeconfigs, data and logs. */
  readonly dir: string;
  readonly binDir: string;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Admin (system:masters) kubeconfig. */
  readonly kubeconfig: string;
  readonly caFile: string;
  /** Log files by component name. */
  readonly logs: Record<string, string>;
  /** Issues a client certificate kubeconfig for a user and groups, signed by the cluster CA. */
  kubeconfigFor(user: string, groups?: string[]): string;
  /** Stops and restarts kube-apiserver on the same port and data (for recovery tests). */
  restartApiserver(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Also run kube-scheduler (pods without nodeName get scheduled). */
  scheduler?: boolean;
  /**
   * Also run kube-controller-manager (Deployments, DaemonSets, ReplicaSets, default ServiceAccounts,
   * kube-root-ca.crt) and keep the ServiceAccount admission plugin on, so pods get their tokens as on
   * a real cluster. Needs kube-controller-manager in the bin folder (build-bins.sh builds it).
   */
  controllerManager?: boolean;
  /** Extra kube-apiserver flags. */
  apiserverArgs?: string[];
  /** Extra kube-scheduler flags (benchmarks raise its client rate limit). */
  schedulerArgs?: string[];
  /** Parent folder for the run directory (default: the OS temp dir). */
  parentDir?: string;
  /** Print progress lines to stderr. */
  verbose?: boolean;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** Repository root, from test/cluster or dist/test/cluster. */
export const REPO_ROOT = HERE.includes(join('dist', 'test')) ? resolve(HERE, '../../..') : resolve(HERE, '../..');

/**
 * Builds (first time) or finds the cached Kubernetes, etcd and helm binaries and returns their
 * folder. Honours VIO_BIN_DIR to skip the build script entirely.
 */
export function ensureBinaries(opts: { verbose?: boolean } = {}): string {
  if (process.env.VIO_BIN_DIR && existsSync(join(process.env.VIO_BIN_DIR, 'kube-apiserver'))) {
    return process.env.VIO_BIN_DIR;
  }
  const out = execFileSync('bash', [join(REPO_ROOT, 'test/cluster/build-bins.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', opts.verbose ? 'inherit' : 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
  const bin = out.trim().split('\n').pop() ?? '';
  if (!existsSync(join(bin, 'kube-apiserver'))) throw new Error(`build-bins.sh did not produce binaries (said: ${bin})`);
  process.env.VIO_BIN_DIR = bin;
  return bin;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Creates a CA, the apiserver serving cert, the service-account key pair and an admin client cert. */
function makePki(dir: string): void {
  openssl(dir, ['req', '-x509', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '7', '-subj', '/CN=virtualio-test-ca']);
  // 10.0.0.1: the `kubernetes` Service's cluster IP (first address of --service-cluster-ip-range), which
  // in-cluster clients dial, as on a real cluster.
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,DNS:kubernetes.default.svc,IP:127.0.0.1,IP:::1,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n');
  signCert(dir, 'apiserver', '/CN=localhost', 'server.ext');
  openssl(dir, ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'sa.key']);
  openssl(dir, ['pkey', '-in', 'sa.key', '-pubout', '-out', 'sa.pub']);
}

function signCert(dir: string, name: string, subject: string, extFile?: string): void {
  openssl(dir, ['req', '-nodes', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  if (!extFile) {
    extFile = `${name}.ext`;
    writeFileSync(join(dir, extFile), 'extendedKeyUsage=clientAuth\n');
  }
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '7', '-out', `${name}.crt`, '-extfile', extFile]);
}

function writeKubeconfig(file: string, server: string, dir: string, name: string): void {
  const b64 = (f: string) => readFileSync(join(dir, f)).toString('base64');
  writeFileSync(file, [
    'apiVersion: v1', 'kind: Config', 'clusters:', '- name: local', '  cluster:',
    `    server: ${server}`, `    certificate-authority-data: ${b64('ca.crt')}`,
    'users:', `- name: ${name}`, '  user:', `    client-certificate-data: ${b64(`${name}.crt`)}`,
    `    client-key-data: ${b64(`${name}.key`)}`,
    'contexts:', '- name: local', '  context:', '    cluster: local', `    user: ${name}`,
    'current-context: local', '',
  ].join('\n'), { mode: 0o600 });
}

/** GET an https URL against the cluster CA; resolves with the status code and body. */
export function httpsGet(url: string, caFile: string, timeoutMs = 2000): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = request(url, { ca: readFileSync(caFile), timeout: timeoutMs }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
    req.end();
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, proc?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`${what}: process exited with code ${proc.exitCode}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function launch(bin: string, args: string[], logFile: string): ChildProcess {
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

/** Stops a child by PID: SIGTERM, then SIGKILL after a grace period. */
export async function stopProcess(child: ChildProcess | undefined, graceMs = 5000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts etcd and kube-apiserver (and kube-scheduler when asked); resolves once /readyz is ok.
 * Ports come from freePort(), which only knows they were free a moment ago: when another suite
 * running in parallel takes one first (etcd or the apiserver logs "address already in use"), the
 * whole start is tried again with new ports, up to three times.
 */
export async function startControlPlane(opts: StartOptions = {}): Promise<ControlPlane> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startControlPlaneOnce(opts);
    } catch (err) {
      const dir = err instanceof ControlPlaneStartError ? err.dir : undefined;
      const lostPort = dir !== undefined && readdirSync(dir).some((f) => f.endsWith('.log') && readFileSync(join(dir, f), 'utf8').includes('address already in use'));
      if (!lostPort || attempt >= 3) throw err;
      process.stderr.write(`[control-plane] a port was taken between choosing and binding it (logs in ${dir}); starting again with new ports\n`);
    }
  }
}

class ControlPlaneStartError extends Error {
  readonly dir: string;
  constructor(dir: string, cause: unknown) {
    super(`control plane failed to start; logs in ${dir}`, { cause });
    this.dir = dir;
  }
}

async function startControlPlaneOnce(opts: StartOptions): Promise<ControlPlane> {
  const say = (m: string) => { if (opts.verbose) process.stderr.write(`[control-plane] ${m}\n`); };
  const binDir = ensureBinaries({ verbose: opts.verbose });
  const parent = opts.parentDir ?? tmpdir();
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, 'vio-cp-'));
  makePki(dir);
  signCert(dir, 'admin', '/O=system:masters/CN=virtualio-admin');
  // What the API server shows a kubelet (logs, exec, port-forward); kubelets trust the same CA.
  signCert(dir, 'kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client');

  const [etcdPort, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
  const server = `https://127.0.0.1:${apiPort}`;
  const logs: Record<string, string> = {
    etcd: join(dir, 'etcd.log'), 'kube-apiserver': join(dir, 'kube-apiserver.log'),
  };
  const kubeconfig = join(dir, 'admin.kubeconfig');
  writeKubeconfig(kubeconfig, server, dir, 'admin');

  say(`starting etcd on 127.0.0.1:${etcdPort}`);
  const etcd = launch(join(binDir, 'etcd'), [
    `--data-dir=${join(dir, 'etcd-data')}`, '--name=virtualio-test',
    `--listen-client-urls=http://127.0.0.1:${etcdPort}`, `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeer}`, `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeer}`,
    `--initial-cluster=virtualio-test=http://127.0.0.1:${etcdPeer}`,
    '--unsafe-no-fsync=true', '--quota-backend-bytes=4294967296', '--log-level=warn',
  ], logs.etcd!);

  const apiserverArgs = [
    `--etcd-servers=http://127.0.0.1:${etcdPort}`, '--bind-address=127.0.0.1', `--secure-port=${apiPort}`,
    '--advertise-address=127.0.0.1',
    `--tls-cert-file=${join(dir, 'apiserver.crt')}`, `--tls-private-key-file=${join(dir, 'apiserver.key')}`,
    `--client-ca-file=${join(dir, 'ca.crt')}`,
    `--service-account-issuer=${server}`, `--service-account-key-file=${join(dir, 'sa.pub')}`,
    `--service-account-signing-key-file=${join(dir, 'sa.key')}`, '--service-cluster-ip-range=10.0.0.0/24',
    '--authorization-mode=Node,RBAC', '--allow-privileged=true',
    ...(opts.controllerManager ? [] : ['--disable-admission-plugins=ServiceAccount']),
    '--endpoint-reconciler-type=none',
    `--kubelet-client-certificate=${join(dir, 'kubelet-client.crt')}`, `--kubelet-client-key=${join(dir, 'kubelet-client.key')}`,
    '--kubelet-preferred-address-types=InternalIP',
    ...(opts.apiserverArgs ?? []),
  ];
  let apiserver: ChildProcess | undefined;
  let scheduler: ChildProcess | undefined;
  let controllerManager: ChildProcess | undefined;
  const startApiserver = async () => {
    say(`starting kube-apiserver on ${server}`);
    apiserver = launch(join(binDir, 'kube-apiserver'), apiserverArgs, logs['kube-apiserver']!);
    await waitFor('kube-apiserver /readyz', async () => (await httpsGet(`${server}/readyz`, join(dir, 'ca.crt'))).status === 200, 90_000, apiserver);
  };

  try {
    await waitFor('etcd', async () => {
      const r = await fetch(`http://127.0.0.1:${etcdPort}/health`);
      return r.ok;
    }, 30_000, etcd);
    await startApiserver();
    if (opts.scheduler) {
      logs['kube-scheduler'] = join(dir, 'kube-scheduler.log');
      scheduler = launch(join(binDir, 'kube-scheduler'), [
        `--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--bind-address=127.0.0.1', `--secure-port=${await freePort()}`,
        ...(opts.schedulerArgs ?? []),
      ], logs['kube-scheduler']);
    }
    if (opts.controllerManager) {
      logs['kube-controller-manager'] = join(dir, 'kube-controller-manager.log');
      controllerManager = launch(join(binDir, 'kube-controller-manager'), [
        `--kubeconfig=${kubeconfig}`, '--leader-elect=false', '--bind-address=127.0.0.1', `--secure-port=${await freePort()}`,
        `--root-ca-file=${join(dir, 'ca.crt')}`, `--service-account-private-key-file=${join(dir, 'sa.key')}`,
        '--use-service-account-credentials=false', '--controllers=*,-nodeipam,-cloud-node-lifecycle',
        '--concurrent-deployment-syncs=2', '--concurrent-replicaset-syncs=2', '--concurrent-daemonset-syncs=2',
      ], logs['kube-controller-manager']);
    }
  } catch (err) {
    await stopProcess(controllerManager);
    await stopProcess(scheduler);
    await stopProcess(apiserver);
    await stopProcess(etcd);
    throw new ControlPlaneStartError(dir, err);
  }
  say('ready');

  const pidFile = join(dir, 'pids');
  const writePids = () => writeFileSync(pidFile, [etcd.pid, apiserver?.pid, scheduler?.pid, controllerManager?.pid].filter(Boolean).join('\n'));
  writePids();

  return {
    dir, binDir, server, kubeconfig, caFile: join(dir, 'ca.crt'), logs,
    kubeconfigFor(user: string, groups: string[] = []) {
      const name = user.replace(/[^A-Za-z0-9_.-]/g, '_');
      const subject = [...groups.map((g) => `/O=${g}`), `/CN=${user}`].join('');
      signCert(dir, name, subject);
      const file = join(dir, `${name}.kubeconfig`);
      writeKubeconfig(file, server, dir, name);
      return file;
    },
    async restartApiserver() {
      await stopProcess(apiserver);
      await startApiserver();
      writePids();
    },
    async stop() {
      await stopProcess(controllerManager);
      await stopProcess(scheduler);
      await stopProcess(apiserver);
      await stopProcess(etcd);
      // etcd's data is most of the folder; its logs and kubeconfigs stay for a failed run's reader.
      rmSync(join(dir, 'etcd-data'), { recursive: true, force: true });
    },
  };
}
