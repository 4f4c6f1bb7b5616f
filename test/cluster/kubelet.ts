// A real kubelet (built by build-bins.sh) on a fake CRI runtime (test/cluster/fakecri), registered to
// a control plane from control-plane.ts as node "127.0.0.1". It needs root: the kubelet's device
// plugin directory is hard-coded to /var/lib/kubelet/device-plugins. The fake runtime records every
// CreateContainer request (env, devices, mounts) as JSON lines in `records`.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, stopProcess, type ControlPlane } from './control-plane.ts';

export const KUBELET_NODE_NAME = '127.0.0.1';
export const DEVICE_PLUGIN_DIR = '/var/lib/kubelet/device-plugins';

export interface Kubelet {
  readonly nodeName: string;
  readonly rootDir: string;
  /** PodResources API socket. */
  readonly podResourcesSocket: string;
  /** JSON-lines file of CreateContainer requests seen by the fake runtime. */
  readonly records: string;
  readonly logs: Record<string, string>;
  /** Every CreateContainer request so far. */
  createdContainers(): ContainerRecord[];
  /** Stops the kubelet only (the fake runtime keeps its state) and starts it again. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface ContainerRecord {
  podName: string;
  podNamespace: string;
  podUid: string;
  container: string;
  envs: Record<string, string>;
  devices: { container_path?: string; host_path?: string; permissions?: string }[] | null;
  mounts: unknown[] | null;
  cdiDevices: { name?: string }[] | null;
  annotations: Record<string, string> | null;
}

export interface KubeletOptions {
  /** Extra KubeletConfiguration fields. */
  config?: Record<string, unknown>;
  verbose?: boolean;
}

/** True when this process may run a real kubelet (root on Linux). */
export function canRunKubelet(): boolean {
  return process.platform === 'linux' && process.getuid?.() === 0;
}

/** The describe title suffix of a suite that needs a real kubelet: why it is skipped, when it is. */
export function kubeletSkipReason(): string {
  return canRunKubelet() ? '' : ' (skipped: a real kubelet needs root on Linux)';
}

function launch(bin: string, args: string[], logFile: string): ChildProcess {
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

const LOCK = '/var/lib/kubelet/.virtualio-test-lock';

/**
 * One kubelet per machine: its device plugin directory is fixed. Test files that run a kubelet take
 * this lock (a directory holding the owner's PID) and wait for each other; a lock whose owner is
 * gone is taken over.
 */
export async function acquireMachineLock(timeoutMs: number): Promise<void> {
  mkdirSync('/var/lib/kubelet', { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK);
      writeFileSync(join(LOCK, 'pid'), String(process.pid));
      return;
    } catch {
      let owner = 0;
      try { owner = Number(readFileSync(join(LOCK, 'pid'), 'utf8')); } catch { /* being written */ }
      let alive = false;
      if (owner > 0) { try { process.kill(owner, 0); alive = true; } catch { alive = false; } }
      if (owner > 0 && !alive) rmSync(LOCK, { recursive: true, force: true });
      else if (owner === 0 && Date.now() - (statSync(LOCK, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 10_000) rmSync(LOCK, { recursive: true, force: true });
    }
    if (Date.now() > deadline) throw new Error(`another test holds the kubelet lock ${LOCK}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * What a new node's kubelet finds in its root: no pod, device or claim state of the node before it.
 * Every test file runs its own API server and Node, but /var/lib/kubelet is the machine's: a kubelet
 * that inherited the previous file's pods (allocated_pods_state, the device manager's checkpoint)
 * reported them as holding devices, and the next agent rightly kept those slices out of DRA (seen in
 * a CI-like run: dra-agent-e2e after kubelet-e2e). Pod folders are left alone (the real-node harness
 * unmounts and removes them itself; a recursive delete must never cross a mount).
 */
export function freshKubeletState(root = '/var/lib/kubelet'): void {
  for (const f of ['allocated_pods_state', 'actuated_pods_state', 'dra_manager_state', 'dra_health_state', 'cpu_manager_state', 'memory_manager_state', 'device-plugins/kubelet_internal_checkpoint']) {
    rmSync(join(root, f), { force: true });
  }
  for (const d of ['plugins', 'plugins_registry', 'checkpoints']) rmSync(join(root, d), { recursive: true, force: true });
}

export function releaseMachineLock(): void {
  rmSync(join(LOCK, 'pid'), { force: true });
  try { rmdirSync(LOCK); } catch { /* not ours or gone */ }
}

/** Starts the fake CRI and the kubelet; resolves when the Node reports Ready. */
export async function startKubelet(cp: ControlPlane, opts: KubeletOptions = {}): Promise<Kubelet> {
  if (!canRunKubelet()) throw new Error('a real kubelet needs root on Linux');
  await acquireMachineLock(15 * 60_000);
  freshKubeletState();
  const say = (m: string) => { if (opts.verbose) process.stderr.write(`[kubelet] ${m}\n`); };
  const dir = join(cp.dir, 'kubelet');
  const rootDir = '/var/lib/kubelet';
  const criSocket = join(dir, 'cri.sock');
  const records = join(dir, 'containers.jsonl');
  mkdirSync(dir, { recursive: true });
  mkdirSync(DEVICE_PLUGIN_DIR, { recursive: true });
  writeFileSync(records, '');
  const logs = { fakecri: join(dir, 'fakecri.log'), kubelet: join(dir, 'kubelet.log') };

  const kubeconfig = cp.kubeconfigFor(`system:node:${KUBELET_NODE_NAME}`, ['system:nodes']);
  const healthzPort = await freePort();
  const config = {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: '127.0.0.1',
    port: await freePort(),
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort,
    containerRuntimeEndpoint: `unix://${criSocket}`,
    cgroupDriver: 'cgroupfs',
    cgroupsPerQOS: false,
    enforceNodeAllocatable: ['none'],
    failCgroupV1: false,
    failSwapOn: false,
    makeIPTablesUtilChains: false,
    localStorageCapacityIsolation: false,
    protectKernelDefaults: false,
    resolvConf: '',
    evictionHard: { 'memory.available': '0%', 'nodefs.available': '0%', 'imagefs.available': '0%' },
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: cp.caFile } },
    authorization: { mode: 'AlwaysAllow' },
    staticPodPath: '',
    syncFrequency: '5s',
    nodeStatusUpdateFrequency: '2s',
    ...(opts.config ?? {}),
  };
  const configFile = join(dir, 'kubelet.yaml');
  writeFileSync(configFile, JSON.stringify(config, null, 2));

  say(`starting fake CRI on ${criSocket}`);
  const cri = launch(join(cp.binDir, 'fakecri'), [`--socket=${criSocket}`, `--record=${records}`], logs.fakecri);
  for (let i = 0; i < 100 && !existsSync(criSocket); i++) await new Promise((r) => setTimeout(r, 50));

  let kubelet: ChildProcess | undefined;
  const startKubeletProcess = async () => {
    say('starting kubelet');
    kubelet = launch(join(cp.binDir, 'kubelet'), [
      `--config=${configFile}`, `--kubeconfig=${kubeconfig}`, `--hostname-override=${KUBELET_NODE_NAME}`,
      `--root-dir=${rootDir}`, '--v=2',
    ], logs.kubelet);
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (kubelet.exitCode !== null) throw new Error(`kubelet exited with code ${kubelet.exitCode}; log: ${logs.kubelet}`);
      try {
        const out = execFileSync(join(cp.binDir, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'get', 'node', KUBELET_NODE_NAME,
          '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        if (out.trim() === 'True') break;
      } catch { /* not registered yet */ }
      if (Date.now() > deadline) throw new Error(`node ${KUBELET_NODE_NAME} not Ready after 120 s; log: ${logs.kubelet}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    say('node Ready');
  };
  try {
    await startKubeletProcess();
  } catch (err) {
    await stopProcess(kubelet);
    await stopProcess(cri);
    releaseMachineLock();
    throw err;
  }

  return {
    nodeName: KUBELET_NODE_NAME,
    rootDir,
    podResourcesSocket: join(rootDir, 'pod-resources', 'kubelet.sock'),
    records,
    logs,
    createdContainers() {
      return readFileSync(records, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ContainerRecord);
    },
    async restart() {
      await stopProcess(kubelet);
      await startKubeletProcess();
    },
    async stop() {
      await stopProcess(kubelet);
      await stopProcess(cri);
      rmSync(join(DEVICE_PLUGIN_DIR, 'kubelet.sock'), { force: true });
      releaseMachineLock();
    },
  };
}
