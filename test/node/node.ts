// A REAL node for a control plane from test/cluster/control-plane.ts: containerd (built from the Go
// module proxy by build-tools.sh) with Debian's runc, and the real kubelet (build-bins.sh) on it, so
// pods run as real containers with the security context they ask for. Root only.
//
// Networking: pods get their own network namespace on a bridge (Debian's bridge + host-local CNI
// plugins) whose host side holds 10.213.0.1 and the `kubernetes` Service IP 10.0.0.1. netd.mjs
// relays 10.0.0.1:443 to the loopback API server (so in-cluster clients work unchanged: the kubelet
// sets KUBERNETES_SERVICE_HOST=10.0.0.1) and answers DNS for <svc>.<ns>.svc.cluster.local with the
// Service's ready endpoints. IP forwarding is never turned on, so no pod packet can leave the machine.
//
// This machine's workarounds (../../README.md "How it is tested" has the why): containerd's
// restrict_oom_score_adj (no CAP_SYS_RESOURCE here), cgroupfs and failCgroupV1=false (cgroup v1, no
// systemd), a pause image compiled from the Kubernetes source (pause-image.sh; none can be pulled).
// Teardown removes every pod sandbox through CRI (crictl), stops containerd and its shims by PID,
// unmounts what is left under the node's folders and deletes the bridge and the cgroups it made.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { REPO_ROOT, freePort, stopProcess, type ControlPlane } from '../cluster/control-plane.js';
import { acquireMachineLock, canRunKubelet, freshKubeletState, releaseMachineLock } from '../cluster/kubelet.js';

const run = promisify(execFile);

export const NODE_NAME = 'vio-node-1';
export const BRIDGE = 'vio-br0';
export const POD_SUBNET = '10.213.0.0/24';
export const GATEWAY = '10.213.0.1';
/** The `kubernetes` Service's cluster IP (first address of the control plane's service range). */
export const API_SERVICE_IP = '10.0.0.1';
export const PAUSE_IMAGE = 'localhost/pause:local';
const CNI_NET = 'vio-pods';
const CGROUP_ROOT = '/sys/fs/cgroup';
const KUBELET_ROOT = '/var/lib/kubelet';

export interface RealNode {
  readonly name: string;
  readonly dir: string;
  readonly toolsDir: string;
  readonly containerdSocket: string;
  readonly logs: Record<string, string>;
  /** Imports an OCI archive into containerd (namespace k8s.io); resolves with the ms it took. */
  importImage(archive: string): Promise<number>;
  /** crictl against this node's containerd. */
  crictl(args: string[]): Promise<string>;
  /** Last lines of a log, for failure messages. */
  tail(log: string, lines?: number): string;
  stop(): Promise<void>;
}

export interface RealNodeOptions {
  /** OCI archives to import before the kubelet starts. */
  images?: string[];
  /** Extra KubeletConfiguration fields. */
  kubeletConfig?: Record<string, unknown>;
  verbose?: boolean;
}

/** Why a real node cannot run here, or '' when it can. */
export function realNodeSkipReason(): string {
  if (!canRunKubelet()) return 'a real node (containerd, runc, kubelet) needs root on Linux';
  if (!existsSync(join(CGROUP_ROOT, 'memory')) && !existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) return 'no cgroup filesystem';
  return '';
}

/** Builds or finds the node's tools (build-tools.sh) and returns their folder. */
export function ensureNodeTools(verbose = false): string {
  const out = execFileSync('bash', [join(REPO_ROOT, 'test/node/build-tools.sh')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', verbose ? 'inherit' : 'pipe'], maxBuffer: 16 * 1024 * 1024,
  });
  return out.trim().split('\n').pop() ?? '';
}

/** Builds or finds the pause image archive (pause-image.sh). */
export function ensurePauseImage(verbose = false): string {
  const out = execFileSync('bash', [join(REPO_ROOT, 'test/node/pause-image.sh')], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', verbose ? 'inherit' : 'pipe'],
  });
  return out.trim().split('\n').pop() ?? '';
}

function launch(bin: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv): ChildProcess {
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number, proc?: ChildProcess, log?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && proc.exitCode !== null) throw new Error(`${what}: process exited with code ${proc.exitCode}${log ? `; log: ${log}` : ''}`);
    if (await Promise.resolve().then(check).catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not after ${timeoutMs} ms${log ? `; log: ${log}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Mount points at or under `prefix`, deepest first. */
function mountsUnder(prefix: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === prefix || m.startsWith(`${prefix}/`))
    .sort((a, b) => b.length - a.length);
}

function unmountAll(prefix: string): void {
  for (const m of mountsUnder(prefix)) {
    try { execFileSync('umount', ['-l', m], { stdio: 'ignore' }); } catch { /* already gone */ }
  }
}

/** Processes whose command line contains every needle, by PID. */
function pidsWith(...needles: string[]): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (needles.every((n) => cmd.includes(n))) out.push(Number(d));
    } catch { /* gone */ }
  }
  return out;
}

/** Removes empty cgroup folders named `name` (and below) in every v1 hierarchy. */
function removeCgroups(name: string): void {
  if (!existsSync(CGROUP_ROOT)) return;
  for (const h of readdirSync(CGROUP_ROOT)) {
    const top = join(CGROUP_ROOT, h, name);
    if (!existsSync(top)) continue;
    const rm = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rm(join(d, e.name));
      try { rmdirSync(d); } catch { /* busy or gone */ }
    };
    rm(top);
  }
}

/** Starts containerd and the kubelet as node NODE_NAME; resolves when the Node is Ready. */
export async function startRealNode(cp: ControlPlane, opts: RealNodeOptions = {}): Promise<RealNode> {
  const reason = realNodeSkipReason();
  if (reason) throw new Error(reason);
  const say = (m: string) => { if (opts.verbose) process.stderr.write(`[node] ${m}\n`); };
  const tools = ensureNodeTools(opts.verbose);
  const pause = ensurePauseImage(opts.verbose);
  await acquireMachineLock(15 * 60_000);
  freshKubeletState();

  const dir = join(cp.dir, 'node');
  const root = join(dir, 'containerd-root');
  const state = join(dir, 'containerd-state');
  const cniConf = join(dir, 'cni');
  const cniData = join(dir, 'cni-ipam');
  const socket = join(dir, 'containerd.sock');
  for (const d of [dir, root, state, cniConf, cniData]) mkdirSync(d, { recursive: true });
  const logs: Record<string, string> = {
    containerd: join(dir, 'containerd.log'), kubelet: join(dir, 'kubelet.log'), netd: join(dir, 'netd.log'),
  };
  const env = { ...process.env, PATH: `${tools}:${process.env.PATH ?? ''}` };
  const crictlArgs = ['--runtime-endpoint', `unix://${socket}`, '--image-endpoint', `unix://${socket}`, '--timeout', '30s'];
  const crictl = async (args: string[]) => (await run(join(tools, 'crictl'), [...crictlArgs, ...args], { env, maxBuffer: 16 * 1024 * 1024 })).stdout;
  const ctr = (args: string[]) => run(join(tools, 'ctr'), ['--address', socket, '-n', 'k8s.io', ...args], { env, maxBuffer: 16 * 1024 * 1024 });

  let containerd: ChildProcess | undefined;
  let kubelet: ChildProcess | undefined;
  let netd: ChildProcess | undefined;
  let bridgeMade = false;

  const teardown = async () => {
    await stopProcess(kubelet, 10_000);
    if (containerd && containerd.exitCode === null) {
      // Every sandbox through CRI: containers stopped, CNI DEL (veth, IP lease), netns unmounted.
      await crictl(['rmp', '--all', '--force']).catch((err: unknown) => say(`crictl rmp: ${String(err)}`));
      await crictl(['rm', '--all', '--force']).catch(() => undefined);
    }
    await stopProcess(containerd, 10_000);
    // Shims of this containerd (they outlive it by design) and anything they still run.
    for (const pid of pidsWith('containerd-shim-runc-v2', socket)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await stopProcess(netd);
    unmountAll(state);
    unmountAll(root);
    // The image layers and container state (hundreds of MiB per node); the logs beside them stay.
    rmSync(state, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
    for (const m of mountsUnder(join(KUBELET_ROOT, 'pods'))) {
      try { execFileSync('umount', ['-l', m], { stdio: 'ignore' }); } catch { /* gone */ }
    }
    rmSync(join(KUBELET_ROOT, 'pods'), { recursive: true, force: true });
    removeCgroups('k8s.io');
    if (bridgeMade) {
      try { ip(['link', 'del', BRIDGE]); } catch { /* gone */ }
    }
    releaseMachineLock();
  };

  try {
    // ---- pod network ------------------------------------------------------------------------------
    try { ip(['link', 'del', BRIDGE]); } catch { /* not left over */ }
    ip(['link', 'add', BRIDGE, 'type', 'bridge']);
    bridgeMade = true;
    ip(['addr', 'add', `${GATEWAY}/24`, 'dev', BRIDGE]);
    ip(['addr', 'add', `${API_SERVICE_IP}/32`, 'dev', BRIDGE]);
    ip(['link', 'set', BRIDGE, 'up']);
    writeFileSync(join(cniConf, '10-vio-pods.conflist'), JSON.stringify({
      cniVersion: '1.0.0', name: CNI_NET,
      plugins: [
        {
          // isGateway false: the bridge plugin would turn on IP forwarding; the host side address is
          // ours (above) and the pods' default route points at it.
          type: 'bridge', bridge: BRIDGE, isGateway: false, ipMasq: false, hairpinMode: true,
          ipam: {
            type: 'host-local', dataDir: cniData,
            ranges: [[{ subnet: POD_SUBNET, gateway: GATEWAY, rangeStart: '10.213.0.10', rangeEnd: '10.213.0.250' }]],
            routes: [{ dst: '0.0.0.0/0', gw: GATEWAY }],
          },
        },
        { type: 'loopback' },
      ],
    }, null, 2));

    const apiPort = Number(new URL(cp.server).port);
    say(`netd: ${API_SERVICE_IP}:443 → 127.0.0.1:${apiPort}, DNS on ${GATEWAY}:53`);
    netd = spawn(process.execPath, [join(REPO_ROOT, 'test/node/netd.mjs'),
      '--relay', `${API_SERVICE_IP}:443=127.0.0.1:${apiPort}`, '--dns', `${GATEWAY}:53`, '--api', cp.server,
      '--ca', cp.caFile, '--cert', join(cp.dir, 'admin.crt'), '--key', join(cp.dir, 'admin.key')],
    { stdio: ['ignore', 'pipe', 'pipe'] });
    netd.stderr?.pipe(createWriteStream(logs.netd!, { flags: 'a' }));
    const netdProc = netd;
    await new Promise<void>((res, rej) => {
      const rl = createInterface({ input: netdProc.stdout! });
      rl.once('line', (l) => (l === 'ready' ? res() : rej(new Error(`netd said: ${l}`))));
      netdProc.once('exit', (code) => rej(new Error(`netd exited with code ${code}; log: ${logs.netd}`)));
    });

    // ---- containerd -------------------------------------------------------------------------------
    const config = [
      // Version 3 (containerd migrates it in memory): in version 4 the [grpc] address moved to a plugin.
      'version = 3',
      'imports = []',
      `root = ${JSON.stringify(root)}`,
      `state = ${JSON.stringify(state)}`,
      '[grpc]', `  address = ${JSON.stringify(socket)}`,
      '[ttrpc]', `  address = ${JSON.stringify(`${socket}.ttrpc`)}`,
      '[plugins."io.containerd.cri.v1.images"]', '  snapshotter = "overlayfs"',
      '[plugins."io.containerd.cri.v1.images".pinned_images]', `  sandbox = ${JSON.stringify(PAUSE_IMAGE)}`,
      '[plugins."io.containerd.cri.v1.runtime"]',
      // No CAP_SYS_RESOURCE on this machine: runc cannot lower oom_score_adj below containerd's own.
      '  restrict_oom_score_adj = true',
      '  netns_mounts_under_state_dir = true',
      '[plugins."io.containerd.cri.v1.runtime".containerd]', '  default_runtime_name = "runc"',
      '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]', '  runtime_type = "io.containerd.runc.v2"',
      '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]',
      `  BinaryName = ${JSON.stringify(execFileSync('bash', ['-c', 'command -v runc'], { encoding: 'utf8' }).trim())}`,
      '  SystemdCgroup = false',
      '[plugins."io.containerd.cri.v1.runtime".cni]', '  bin_dirs = ["/usr/lib/cni"]', `  conf_dir = ${JSON.stringify(cniConf)}`,
      '  max_conf_num = 1',
      '',
    ].join('\n');
    const configFile = join(dir, 'containerd.toml');
    writeFileSync(configFile, config);
    say('starting containerd');
    containerd = launch(join(tools, 'containerd'), ['--config', configFile, '--address', socket, '--log-level', 'info'], logs.containerd!, env);
    await waitFor('containerd socket', async () => { await ctr(['version']); return true; }, 60_000, containerd, logs.containerd);

    const importImage = async (archive: string): Promise<number> => {
      const t = Date.now();
      await ctr(['images', 'import', archive]);
      return Date.now() - t;
    };
    await importImage(pause);
    for (const img of opts.images ?? []) await importImage(img);

    // ---- kubelet ----------------------------------------------------------------------------------
    const kubeconfig = cp.kubeconfigFor(`system:node:${NODE_NAME}`, ['system:nodes']);
    mkdirSync('/var/lib/kubelet/device-plugins', { recursive: true });
    const kubeletConfig = {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      address: '127.0.0.1',
      port: await freePort(),
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort: await freePort(),
      containerRuntimeEndpoint: `unix://${socket}`,
      imageServiceEndpoint: `unix://${socket}`,
      cgroupDriver: 'cgroupfs',
      cgroupsPerQOS: false,
      enforceNodeAllocatable: [],
      failCgroupV1: false,
      failSwapOn: false,
      makeIPTablesUtilChains: false,
      localStorageCapacityIsolation: false,
      protectKernelDefaults: false,
      clusterDNS: [GATEWAY],
      clusterDomain: 'cluster.local',
      resolvConf: '',
      evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'imagefs.available': '0%' },
      authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: cp.caFile } },
      authorization: { mode: 'AlwaysAllow' },
      serializeImagePulls: false,
      syncFrequency: '5s',
      nodeStatusUpdateFrequency: '2s',
      fileCheckFrequency: '5s',
      ...(opts.kubeletConfig ?? {}),
    };
    const kubeletFile = join(dir, 'kubelet.yaml');
    writeFileSync(`${kubeletFile}.tmp`, JSON.stringify(kubeletConfig, null, 2));
    renameSync(`${kubeletFile}.tmp`, kubeletFile);
    say('starting kubelet');
    kubelet = launch(join(cp.binDir, 'kubelet'), [
      `--config=${kubeletFile}`, `--kubeconfig=${kubeconfig}`, `--hostname-override=${NODE_NAME}`,
      '--node-ip=127.0.0.1', `--root-dir=${KUBELET_ROOT}`, '--v=2',
    ], logs.kubelet!, env);
    await waitFor(`node ${NODE_NAME} Ready`, async () => {
      const { stdout } = await run(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'get', 'node', NODE_NAME,
        '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
      return stdout.trim() === 'True';
    }, 120_000, kubelet, logs.kubelet);
    say('node Ready');
    // The kubelet refuses a loopback --node-ip (validateNodeIP) and so publishes no address; the API
    // server then cannot reach it for `kubectl logs`, `exec` or `port-forward`. The address it listens
    // on is written into the Node's status instead (its NodeAddress setter fails before it would
    // replace the list, so the address stays); the control plane connects to it with its kubelet
    // client certificate.
    await run(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'patch', 'node', NODE_NAME, '--subresource=status', '--type=merge',
      '-p', JSON.stringify({ status: { addresses: [{ type: 'InternalIP', address: '127.0.0.1' }] } })]);

    return {
      name: NODE_NAME, dir, toolsDir: tools, containerdSocket: socket, logs,
      importImage, crictl,
      tail(log: string, lines = 40) {
        try { return readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n'); } catch { return ''; }
      },
      stop: teardown,
    };
  } catch (err) {
    await teardown();
    throw err;
  }
}
