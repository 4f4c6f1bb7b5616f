// Issue 10's fault matrix: "a slice that the kubelet has allocated to a pod that still exists is never
// destroyed, unbound, re-carved or handed to someone else". Everything is real except the hardware:
// a private control plane, the REAL kubelet (on the fake CRI), the REAL operator process planning from
// VirtualIODevice objects and node labels, and the REAL agent process (cluster mode; standalone for
// the plan-file row) on the fake sysfs kernel daemon. A VM-shaped pod (virt-launcher-like) holds one
// slice of every mode: an SR-IOV VF, an mdev, a passthrough GPU (its audio function goes along in
// its IOMMU group) and an NPIV vport. Each row: baseline → VM → assert held → fault → assert held →
// pod deleted → assert released as the plan then in force says. "Held" means: the slice exists, is on
// vfio-pci (its mdev/vport exists), its /dev/vfio node is there, the kubelet's own PodResources API
// lists it, and VirtualIONode.status names the VM holding it.
// Needs root (the kubelet's device plugin folder is fixed); without root the suite says it is skipped.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, createWriteStream, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, readSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { jest } from '@jest/globals';
import type { ListPodResourcesResponse__Output } from '../../proto/generated/podresources/v1/ListPodResourcesResponse.js';
import { loadPodResourcesApi } from '../../proto/load.js';
import { REPO_ROOT, startControlPlane, stopProcess, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, canRunKubelet, kubeletSkipReason, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { ensureAgentBuilt, startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel, connectX6, emulexFc, gpuWithAudio, mdevGpu, type FunctionSpec } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk } from '../support/cluster.js';

jest.setTimeout(5 * 60_000);

const NODE = '127.0.0.1';
const LABEL = 'virtualio.dev/fault-matrix';
const NIC_PF = '0000:81:00.0';
const GPU_FN = '0000:3b:00.0';
const GPU_AUDIO = '0000:3b:00.1';
const VGPU_PARENT = '0000:5e:00.0';
const HBA = '0000:d8:00.0';
/** A second A10 added by the "writes block for ever" row. */
const GPU2 = '0000:af:00.0';

type PoolKey = 'nic' | 'gpu' | 'vgpu' | 'fc';
const R: Record<PoolKey, string> = { nic: 'virtualio.dev/fm-cx6', gpu: 'virtualio.dev/fm-a10', vgpu: 'virtualio.dev/fm-vgpu', fc: 'virtualio.dev/fm-npiv' };
const POOL: Record<PoolKey, string> = { nic: 'fm-cx6', gpu: 'fm-a10', vgpu: 'fm-vgpu', fc: 'fm-npiv' };
const ALL: PoolKey[] = ['nic', 'gpu', 'vgpu', 'fc'];

/** The admin's intent: four pools on nodes labelled LABEL=on. */
function poolObjects(): Record<string, unknown>[] {
  const sel = { matchLabels: { [LABEL]: 'on' } };
  const mk = (name: string, spec: Record<string, unknown>) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name }, spec: { nodeSelector: sel, ...spec } });
  return [
    mk(POOL.nic, { class: 'NIC', resourceName: R.nic, deviceSelector: { vendorIDs: ['15b3'], deviceIDs: ['101d'] }, carving: { mode: 'SRIOV', count: 4 }, kubevirt: { consumption: 'HostDevice' } }),
    mk(POOL.gpu, { class: 'GPU', resourceName: R.gpu, deviceSelector: { vendorIDs: ['10de'], deviceIDs: ['2236'] }, carving: { mode: 'Passthrough' }, kubevirt: { consumption: 'HostDevice' } }),
    mk(POOL.vgpu, { class: 'GPU', resourceName: R.vgpu, deviceSelector: { vendorIDs: ['10de'], deviceIDs: ['1eb8'] }, carving: { mode: 'Mediated', mdevType: 'nvidia-222', count: 2 }, kubevirt: { consumption: 'MediatedDevice' } }),
    mk(POOL.fc, { class: 'Storage', resourceName: R.fc, deviceSelector: { vendorIDs: ['10df'], deviceIDs: ['f100'] }, carving: { mode: 'NPIV', count: 2, wwnPrefix: 'c05076' }, kubevirt: { consumption: 'HostDevice', permit: false } }),
  ];
}
/** Slices per pool in the baseline (the blocked-write row adds a GPU). */
const capacity: Record<PoolKey, number> = { nic: 4, gpu: 1, vgpu: 2, fc: 2 };

const suite = canRunKubelet() ? describe : describe.skip;

let cp: ControlPlane;
let kubelet: Kubelet;
let kernel: KernelHandle;
let agent: AgentProcess | undefined;
let agentMode: 'cluster' | 'standalone' = 'cluster';
let operator: ChildProcess | undefined;
let base: string;
let sys: string;
let dev: string;
let proxy: PodResourcesProxy;
const matrix: { row: string; result: string; ms: number }[] = [];

const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });
async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- shapes --------------------------------------------------------------------------------------

interface SliceStatus { id: string; pool: string; health: string; reason?: string; draining?: string; allocation?: { namespace: string; pod: string; container?: string; vmi?: string } }
interface PoolStatus { name: string; state: string; message?: string; capacity?: number; allocatable?: number; registered?: boolean }
interface NodeStatus { slices?: SliceStatus[]; pools?: PoolStatus[]; inventory?: { total?: number; truncated?: boolean; devices?: unknown[] } }
interface VioNode { metadata: { uid: string; generation?: number }; spec?: { pools?: { name: string; devices: { pciAddress: string }[] }[] }; status?: NodeStatus }

const vio = () => getJson<VioNode>(['get', 'virtualionode', NODE]);
/** The status the agent reports: VirtualIONode.status in cluster mode, /status in standalone mode. */
async function agentStatus(): Promise<NodeStatus> {
  if (agentMode === 'cluster') return (await vio()).status ?? {};
  return JSON.parse((await agent!.get('/status')).text) as NodeStatus;
}

// ---- processes -----------------------------------------------------------------------------------

/**
 * The agent reads PodResources through this proxy, so a row can take the API away from the agent
 * alone (the kubelet, its device manager and the pod keep running): `down()` closes the listener,
 * cuts open streams and removes the socket, exactly what the agent sees when the kubelet's socket is gone.
 */
class PodResourcesProxy {
  private server: net.Server | undefined;
  private readonly conns = new Set<net.Socket>();
  constructor(readonly socket: string, private readonly target: string) {}
  async up(): Promise<void> {
    if (this.server) return;
    rmSync(this.socket, { force: true });
    const server = net.createServer((c) => {
      const up = net.connect(this.target);
      this.conns.add(c).add(up);
      const drop = () => { c.destroy(); up.destroy(); this.conns.delete(c); this.conns.delete(up); };
      c.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
      c.pipe(up).pipe(c);
    });
    await new Promise<void>((res) => server.listen(this.socket, res));
    this.server = server;
  }
  async down(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    if (s) await new Promise<void>((res) => s.close(() => res()));
    rmSync(this.socket, { force: true });
  }
}

function agentArgs(extra: string[]): string[] {
  return [
    '--node-name', NODE,
    '--sysfs-root', sys, '--dev-root', dev,
    '--plugin-dir', DEVICE_PLUGIN_DIR,
    '--pod-resources-socket', proxy.socket,
    '--devinfo-dir', join(base, 'devinfo'),
    '--state-dir', join(base, 'agent-state'),
    '--metrics-address', '127.0.0.1:0',
    '--rescan-interval', '2s',
    ...extra,
  ];
}

async function startClusterAgent(): Promise<void> {
  agent = await startAgent(agentArgs(['--kubeconfig', cp.kubeconfig]));
  agentMode = 'cluster';
}

let agentRuns = 0;
/** Keeps each agent run's log lines in the run folder (kept when VIO_KEEP_FAULT_MATRIX is set). */
function saveAgentLog(): void {
  if (agent) writeFileSync(join(base, `agent-${++agentRuns}-${agentMode}.log`), agent.logs.map((l) => JSON.stringify(l)).concat(agent.stderr).join('\n'));
}

async function stopAgent(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  await agent?.stop(signal);
  saveAgentLog();
  agent = undefined;
}

const OPERATOR_MAIN = join(REPO_ROOT, 'dist/operator/src/main.js');
function newest(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n = Math.max(n, newest(p));
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) n = Math.max(n, statSync(p).mtimeMs);
  }
  return n;
}
/** dist/ holds the operator too; build it when older than its sources (the agent's helper builds only for the agent). */
async function ensureOperatorBuilt(): Promise<void> {
  await ensureAgentBuilt();
  const built = existsSync(OPERATOR_MAIN) ? statSync(OPERATOR_MAIN).mtimeMs : 0;
  if (built > Math.max(newest(join(REPO_ROOT, 'operator/src')), newest(join(REPO_ROOT, 'crds/generated')))) return;
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(REPO_ROOT, 'tsconfig.build.json')], { cwd: REPO_ROOT, encoding: 'utf8' });
  if (!existsSync(OPERATOR_MAIN)) throw new Error(`operator build failed: ${r.stdout}${r.stderr}`);
}

function startOperator(): void {
  const log = createWriteStream(join(base, 'operator.log'), { flags: 'a' });
  operator = spawn(process.execPath, [OPERATOR_MAIN, '--kubeconfig', cp.kubeconfig, '--leader-elect=false', '--identity', 'fault-matrix', '--metrics-address', '127.0.0.1:0'], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  operator.stdout?.pipe(log);
  operator.stderr?.pipe(log);
}
async function stopOperator(): Promise<void> {
  await stopProcess(operator);
  operator = undefined;
}
const operatorAlive = () => operator !== undefined && operator.exitCode === null && operator.signalCode === null;

function diag(): string {
  const tail = (f: string, n: number) => { try { return readFileSync(f, 'utf8').split('\n').slice(-n).join('\n'); } catch { return ''; } };
  const agentTail = agent ? [...agent.logs.slice(-25).map((l) => JSON.stringify(l).slice(0, 400)), ...agent.stderr.slice(-5)].join('\n') : '(not running)';
  return `\n--- agent (${agentMode}) ---\n${agentTail}\n--- operator ---\n${tail(join(base, 'operator.log'), 15)}`;
}
async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  return eventually(what, async () => {
    try {
      const v = await check();
      return v === false ? undefined : v;
    } catch {
      return undefined;
    }
  }, timeoutMs, 250).catch((err: unknown) => { throw new Error(`${String(err)}${diag()}`, { cause: err }); });
}

// ---- the host --------------------------------------------------------------------------------------

const pciDir = (a: string) => join(sys, 'bus/pci/devices', a);
function driverOf(a: string): string | undefined {
  try { return basename(readlinkSync(join(pciDir(a), 'driver'))); } catch { return undefined; }
}
function groupOf(dir: string): string {
  return basename(realpathSync(join(dir, 'iommu_group')));
}
/** The vport with this WWPN (the slice ID), if it exists. */
function vportOf(wwpn: string): string | undefined {
  const d = join(sys, 'class/fc_vports');
  for (const v of existsSync(d) ? readdirSync(d) : []) {
    try {
      if (BigInt(readFileSync(join(d, v, 'port_name'), 'utf8').trim()) === BigInt(`0x${wwpn}`)) return v;
    } catch { /* being removed */ }
  }
  return undefined;
}

// ---- the VM --------------------------------------------------------------------------------------

interface Held { vm: string; pod: string; nic: string; gpu: string; vgpu: string; fc: string }

async function podResourcesOf(pod: string): Promise<Record<string, string[]> | undefined> {
  const api = loadPodResourcesApi();
  // The kubelet's own socket (not the agent's proxy): what the kubelet says the pod holds.
  const client = new api.v1.PodResourcesLister(`unix://${kubelet.podResourcesSocket}`, grpc.credentials.createInsecure());
  try {
    const listed = await new Promise<ListPodResourcesResponse__Output>((res, rej) =>
      client.List({}, { deadline: Date.now() + 5000 }, (err, r) => (err || !r ? rej(err ?? new Error('empty List response')) : res(r))));
    const p = listed.podResources.find((x) => x.name === pod && x.namespace === 'default');
    if (!p) return undefined;
    const out: Record<string, string[]> = {};
    for (const d of p.containers.find((c) => c.name === 'compute')?.devices ?? []) (out[d.resourceName] ??= []).push(...d.deviceIds);
    return out;
  } finally {
    client.close();
  }
}

let vmSeq = 0;
async function startVm(tag: string): Promise<Held> {
  const vm = `vm-${tag}`;
  const uid = `5a1c3e2f-0000-4000-8000-${String(++vmSeq).padStart(12, '0')}`;
  const pod = `virt-launcher-${vm}-${vmSeq.toString(36).padStart(5, 'x')}`;
  await kubectl(['apply', '-f', '-'], JSON.stringify({
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      name: pod, namespace: 'default',
      labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': uid },
      ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: vm, uid, controller: true }],
    },
    spec: {
      nodeName: NODE,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'compute', image: 'quay.io/kubevirt/virt-launcher:v1.9.0', resources: { limits: { [R.nic]: '1', [R.gpu]: '1', [R.vgpu]: '1', [R.fc]: '1', cpu: '10m', memory: '16Mi' } } }],
    },
  }));
  await until(`pod ${pod} Running`, async () => (await getJson<{ status: { phase?: string } }>(['get', 'pod', pod])).status.phase === 'Running', 60_000)
    .catch(async (err: unknown) => { throw new Error(`${String(err)}\n${await kubectl(['get', 'pod', pod, '-o', 'yaml']).catch(() => '')}`, { cause: err }); });
  const got = await until('PodResources to list the VM', () => podResourcesOf(pod), 30_000);
  const one = (k: PoolKey) => {
    expect(got[R[k]]).toHaveLength(1);
    return got[R[k]]![0]!;
  };
  return { vm, pod, nic: one('nic'), gpu: one('gpu'), vgpu: one('vgpu'), fc: one('fc') };
}

async function deleteVm(h: Held): Promise<void> {
  await kubectl(['delete', 'pod', h.pod, '--wait=false']);
  await until(`pod ${h.pod} gone`, async () => (await kubectl(['get', 'pods', '-o', 'name'])).includes(h.pod) ? undefined : true, 60_000);
  await until(`PodResources to forget ${h.pod}`, async () => ((await podResourcesOf(h.pod)) === undefined ? true : undefined), 30_000);
}

/** The host side of "held": every slice exists, on vfio-pci / as mdev / as vport, with its /dev/vfio node. */
function hostHolds(h: Held, when: string): void {
  const ctx = (what: string) => `${when}: ${what}`;
  for (const a of [h.nic, h.gpu]) {
    expect([ctx(`${a} exists`), existsSync(pciDir(a))]).toEqual([ctx(`${a} exists`), true]);
    expect([ctx(`${a} driver`), driverOf(a)]).toEqual([ctx(`${a} driver`), 'vfio-pci']);
    const node = join(dev, 'vfio', groupOf(pciDir(a)));
    expect([ctx(node), existsSync(node)]).toEqual([ctx(node), true]);
  }
  expect([ctx('GPU audio companion driver'), driverOf(GPU_AUDIO)]).toEqual([ctx('GPU audio companion driver'), 'vfio-pci']);
  const mdev = join(sys, 'bus/mdev/devices', h.vgpu);
  expect([ctx(`mdev ${h.vgpu}`), existsSync(mdev)]).toEqual([ctx(`mdev ${h.vgpu}`), true]);
  const mnode = join(dev, 'vfio', groupOf(mdev));
  expect([ctx(mnode), existsSync(mnode)]).toEqual([ctx(mnode), true]);
  expect([ctx(`vport ${h.fc}`), vportOf(h.fc) !== undefined]).toEqual([ctx(`vport ${h.fc}`), true]);
}

/** The whole "held" check; `vmi: false` where the status cannot know the VM (standalone: no API server). */
async function expectHeld(h: Held, when: string, o: { vmi?: boolean } = {}): Promise<void> {
  hostHolds(h, when);
  const listed = await podResourcesOf(h.pod);
  expect(listed && { nic: listed[R.nic], gpu: listed[R.gpu], vgpu: listed[R.vgpu], fc: listed[R.fc] }).toEqual({ nic: [h.nic], gpu: [h.gpu], vgpu: [h.vgpu], fc: [h.fc] });
  const ids = [h.nic, h.gpu, h.vgpu, h.fc];
  const want = (o.vmi ?? true) ? { namespace: 'default', pod: h.pod, container: 'compute', vmi: h.vm } : { namespace: 'default', pod: h.pod, container: 'compute' };
  await until(`${when}: status names ${h.vm} on all four slices`, async () => {
    const st = await agentStatus();
    return ids.every((id) => isDeepStrictEqual(st.slices?.find((s) => s.id === id)?.allocation, want)) ? true : undefined;
  }, 30_000).catch(async (err: unknown) => {
    const st = await agentStatus().catch(() => ({}) as NodeStatus);
    throw new Error(`${String(err)}\n--- slices ---\n${JSON.stringify(st.slices?.filter((s) => ids.includes(s.id)), null, 1)}`, { cause: err });
  });
  hostHolds(h, `${when} (again)`);
}

/**
 * The slices of `pools` are kept for the VM and marked draining in status; the kubelet still lists
 * them (capacity) but as unhealthy, so nothing of those pools can be allocated again.
 */
async function expectDraining(h: Held, pools: PoolKey[]): Promise<void> {
  await until(`slices of ${pools.join(', ')} draining for ${h.vm}`, async () => {
    const st = await agentStatus();
    const ok = pools.every((k) => {
      const s = st.slices?.find((x) => x.id === h[k]);
      return s?.draining !== undefined && s.allocation?.pod === h.pod && (agentMode === 'standalone' || s.allocation.vmi === h.vm);
    });
    if (!ok) return undefined;
    const n = await getJson<{ status: { capacity: Record<string, string>; allocatable: Record<string, string> } }>(['get', 'node', NODE]);
    return pools.every((k) => Number(n.status.capacity[R[k]] ?? 0) >= 1 && n.status.allocatable[R[k]] === '0') ? st : undefined;
  }, 30_000).catch(async (err: unknown) => {
    const st = await agentStatus().catch(() => ({}) as NodeStatus);
    const n = await kubectl(['get', 'node', NODE, '-o', 'jsonpath={.status.capacity} {.status.allocatable}']).catch(() => '');
    throw new Error(`${String(err)}\n--- slices ---\n${JSON.stringify(st.slices?.filter((s) => pools.some((k) => s.id === h[k])), null, 1)}\n--- pools ---\n${JSON.stringify(st.pools)}\n--- node ---\n${n}`, { cause: err });
  });
}

/**
 * After the pod is gone: slices of pools in `kept` are back as free, healthy slices; the others are
 * released (VFs gone, mdev removed, vport deleted, the GPU and its audio function back on their drivers).
 */
async function expectReleased(h: Held, kept: PoolKey[], o: { status?: boolean } = {}): Promise<void> {
  await until(`released as the plan says (kept: ${kept.join(', ') || 'none'})`, async () => {
    for (const k of ALL) {
      const id = h[k];
      const on = kept.includes(k);
      if (k === 'nic' && existsSync(pciDir(id)) !== on) return undefined;
      if (k === 'nic' && on && driverOf(id) !== 'vfio-pci') return undefined;
      if (k === 'gpu' && (on ? driverOf(id) !== 'vfio-pci' || driverOf(GPU_AUDIO) !== 'vfio-pci' : driverOf(id) !== 'nvidia' || driverOf(GPU_AUDIO) !== 'snd_hda_intel')) return undefined;
      if (k === 'vgpu' && existsSync(join(sys, 'bus/mdev/devices', id)) !== on) return undefined;
      if (k === 'fc' && (vportOf(id) !== undefined) !== on) return undefined;
    }
    if (o.status === false) return true;
    const st = await agentStatus();
    for (const k of ALL) {
      const s = st.slices?.find((x) => x.id === h[k]);
      if (kept.includes(k) ? !s || s.health !== 'Healthy' || s.allocation || s.draining : s) return undefined;
    }
    return true;
  }, 60_000);
  if (kept.includes('nic')) expect(existsSync(join(dev, 'vfio', groupOf(pciDir(h.nic))))).toBe(true);
}

// ---- the baseline between rows -----------------------------------------------------------------

async function applyPools(objs = poolObjects()): Promise<void> {
  await kubectl(['apply', '--server-side', '--force-conflicts', '--field-manager=fault-matrix', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }));
}

/** Everything back to the admin's baseline, the operator and the cluster agent running, no VM. */
async function baseline(): Promise<void> {
  await proxy.up();
  if (agent && agentMode !== 'cluster') await stopAgent();
  const agentStarted = !agent?.alive;
  if (agentStarted) await startClusterAgent();
  if (!operatorAlive()) startOperator();
  for (const p of (await kubectl(['get', 'pods', '-o', 'name'])).split('\n').filter(Boolean)) await kubectl(['delete', p, '--wait=false']);
  await kubectl(['label', 'node', NODE, '--overwrite', `${LABEL}=on`]);
  const ours = new Set(Object.values(POOL));
  const pools = (await getJson<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>(['get', 'virtualiodevices'])).items;
  for (const p of pools) if (!ours.has(p.metadata.name) && !p.metadata.deletionTimestamp) await kubectl(['delete', 'virtualiodevice', p.metadata.name, '--wait=false']);
  await until('deleted pools gone (a deleted pool of ours is re-created below)', async () => {
    const left = (await getJson<{ items: { metadata: { name: string; deletionTimestamp?: string } }[] }>(['get', 'virtualiodevices'])).items;
    return left.every((p) => ours.has(p.metadata.name) && !p.metadata.deletionTimestamp) ? true : undefined;
  });
  await applyPools();
  await until('no pods left', async () => ((await kubectl(['get', 'pods', '-o', 'name'])).trim() === '' ? true : undefined));
  // A fresh agent: the VirtualIONode status and the Node still show what the previous one reported,
  // so wait until this one has every pool registered (its /readyz) before reading them.
  if (agentStarted) await until('the restarted cluster agent ready', async () => ((await agent!.get('/readyz')).status === 200 ? true : undefined));
  await until('the baseline: every pool Ready with all its slices free and healthy, the Node allocatable = capacity', async () => {
    const v = await vio();
    const names = (v.spec?.pools ?? []).map((p) => p.name).sort();
    if (JSON.stringify(names) !== JSON.stringify(Object.values(POOL).sort())) return undefined;
    const st = v.status ?? {};
    if ((st.slices ?? []).some((s) => s.draining || s.allocation)) return undefined;
    for (const k of ALL) {
      const p = st.pools?.find((x) => x.name === POOL[k]);
      if (p?.state !== 'Ready' || p.capacity !== capacity[k] || p.allocatable !== capacity[k]) return undefined;
    }
    const n = await getJson<{ status: { capacity: Record<string, string>; allocatable: Record<string, string> } }>(['get', 'node', NODE]);
    return ALL.every((k) => n.status.capacity[R[k]] === String(capacity[k]) && n.status.allocatable[R[k]] === String(capacity[k])) ? true : undefined;
  }, 90_000).catch(async (err: unknown) => {
    const v = await vio().catch(() => undefined);
    const n = await kubectl(['get', 'node', NODE, '-o', 'jsonpath={.status.capacity} {.status.allocatable}']).catch(() => '');
    const odd = (v?.status?.slices ?? []).filter((s) => s.draining || s.allocation || s.health !== 'Healthy');
    throw new Error(`${String(err)}\n--- plan ---\n${JSON.stringify(v?.spec?.pools?.map((p) => [p.name, p.devices]))}\n--- pools ---\n${JSON.stringify(v?.status?.pools)}\n--- odd slices ---\n${JSON.stringify(odd)}\n--- node ---\n${n}`, { cause: err });
  });
}

async function row(name: string, body: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  try {
    await body();
    matrix.push({ row: name, result: 'pass', ms: Date.now() - t0 });
  } catch (err) {
    matrix.push({ row: name, result: 'FAIL', ms: Date.now() - t0 });
    throw err;
  }
}

const planPools = async () => (await vio()).spec?.pools ?? [];

suite(`fault matrix: a VM never loses its device (real kubelet, operator and agent; fake hardware)${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    const t0 = Date.now();
    await ensureOperatorBuilt();
    cp = await startControlPlane();
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/virtualionodes.virtualio.dev', 'crd/virtualiodevices.virtualio.dev']);
    await kubectl(['create', 'namespace', 'virtualio-system']);
    kubelet = await startKubelet(cp);

    base = mkdtempSync(join(tmpdir(), 'vio-fault-matrix-'));
    sys = join(base, 'sys');
    dev = join(base, 'dev');
    mkdirSync(join(base, 'devinfo'));
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(connectX6(NIC_PF, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
    for (const f of gpuWithAudio(GPU_FN, GPU_AUDIO, { group: 60, numaNode: 0 })) await k.addFunction(f);
    await k.addFunction(mdevGpu(VGPU_PARENT, { numaNode: 0, instances: 4 }));
    await k.addFunction(emulexFc(HBA, { host: 7, wwpn: '10000090fa0000d8', wwnn: '20000090fa0000d8', maxNPIVVports: 8 }));
    kernel = await startKernel(sys, dev);
    proxy = new PodResourcesProxy(join(base, 'podres-proxy.sock'), kubelet.podResourcesSocket);
    matrix.push({ row: '(setup: control plane, kubelet, kernel)', result: 'done', ms: Date.now() - t0 });
  }, 20 * 60_000); // may wait for another suite's kubelet (the machine lock)

  afterAll(async () => {
    await stopAgent('SIGTERM').catch(() => undefined);
    await stopOperator().catch(() => undefined);
    await proxy?.down().catch(() => undefined);
    await kubelet?.stop();
    await kernel?.stop();
    await cp?.stop();
    // The blocked-write row's abandoned helper exits once its write returns; the tree is going anyway.
    if (base && !process.env.VIO_KEEP_FAULT_MATRIX) rmSync(base, { recursive: true, force: true });
    else if (base) console.log(`fault matrix run folder kept: ${base}`);
    for (const f of readdirSync(DEVICE_PLUGIN_DIR)) if (f.startsWith('virtualio-')) rmSync(join(DEVICE_PLUGIN_DIR, f), { force: true });
    if (matrix.length) {
      console.log(`fault matrix:\n${matrix.map((m) => `  ${m.row.padEnd(48)} ${m.result.padEnd(5)} ${(m.ms / 1000).toFixed(1)} s`).join('\n')}`);
      if (process.env.VIO_RESULTS_DIR) writeFileSync(join(process.env.VIO_RESULTS_DIR, 'fault-matrix.json'), JSON.stringify(matrix, null, 2));
    }
  });

  test('node label removed: every pool leaves the plan; the VM keeps all four slices (draining); all released once it is gone', () => row('node label removed', async () => {
    await baseline();
    const h = await startVm('label');
    await expectHeld(h, 'before');
    await kubectl(['label', 'node', NODE, `${LABEL}-`]);
    await until('the operator to unplan every pool', async () => ((await planPools()).length === 0 ? true : undefined));
    await expectDraining(h, ALL);
    const st = await agentStatus();
    for (const k of ALL) expect(st.pools?.find((p) => p.name === POOL[k])?.state).toBe('Draining');
    await sleep(4000); // two rescans on the new plan
    await expectHeld(h, 'after the label went');
    await deleteVm(h);
    await expectReleased(h, []);
  }));

  test('pool selector edited away: the NIC pool keeps the VM\'s VF (draining) and releases it once the pod is gone', () => row('pool selector edited away', async () => {
    await baseline();
    const h = await startVm('selector');
    await expectHeld(h, 'before');
    const objs = poolObjects();
    (objs[0]!.spec as { deviceSelector: { deviceIDs: string[] } }).deviceSelector.deviceIDs = ['ffff'];
    await applyPools(objs);
    await until('the NIC pool planned without its PF', async () => (((await planPools()).find((p) => p.name === POOL.nic)?.devices.length ?? 0) === 0 ? true : undefined));
    await expectDraining(h, ['nic']);
    await sleep(4000);
    await expectHeld(h, 'after the selector edit');
    await deleteVm(h);
    await expectReleased(h, ['gpu', 'vgpu', 'fc']);
  }));

  test('pool deleted: the vGPU pool waits for the VM (its mdev stays), then removes its mdevs and goes', () => row('pool deleted', async () => {
    await baseline();
    const h = await startVm('pooldel');
    await expectHeld(h, 'before');
    await kubectl(['delete', 'virtualiodevice', POOL.vgpu, '--wait=false']);
    await until('the vGPU pool planned as deleting', async () => ((await planPools()).find((p) => p.name === POOL.vgpu) as { deleting?: boolean } | undefined)?.deleting === true ? true : undefined);
    await expectDraining(h, ['vgpu']);
    await sleep(4000);
    await expectHeld(h, 'after the pool was deleted');
    expect((await getJson<{ items: { metadata: { name: string } }[] }>(['get', 'virtualiodevices'])).items.map((p) => p.metadata.name)).toContain(POOL.vgpu);
    await deleteVm(h);
    await expectReleased(h, ['nic', 'gpu', 'fc']);
    await until('the deleted pool object gone', async () => ((await getJson<{ items: { metadata: { name: string } }[] }>(['get', 'virtualiodevices'])).items.some((p) => p.metadata.name === POOL.vgpu) ? undefined : true));
  }));

  test('second pool with the same resource name: the first keeps its plan and the VM its VF; the newcomer is not planned', () => row('second pool, same resource name', async () => {
    await baseline();
    const h = await startVm('dupname');
    await expectHeld(h, 'before');
    const before = JSON.stringify(await planPools());
    const dup = poolObjects()[0]!;
    await kubectl(['apply', '-f', '-'], JSON.stringify({ ...dup, metadata: { name: 'fm-cx6-second' } }));
    await sleep(4000);
    expect(JSON.stringify(await planPools())).toBe(before);
    await expectHeld(h, 'after the second pool');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('VirtualIONode deleted: the agent re-creates it without a plan (keeps everything), the operator restores the plan', () => row('VirtualIONode deleted', async () => {
    await baseline();
    const h = await startVm('viondel');
    await expectHeld(h, 'before');
    const old = await vio();
    const planned = JSON.stringify(old.spec?.pools);
    await kubectl(['delete', 'virtualionode', NODE]);
    await until('a new VirtualIONode with the plan restored', async () => {
      const v = await vio();
      return v.metadata.uid !== old.metadata.uid && JSON.stringify(v.spec?.pools) === planned ? true : undefined;
    });
    await sleep(4000);
    await expectHeld(h, 'after the VirtualIONode was deleted');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('operator stopped for a minute (and the VirtualIONode deleted meanwhile, so no plan is known): nothing moves', () => row('operator stopped for a minute', async () => {
    await baseline();
    const h = await startVm('opstop');
    await expectHeld(h, 'before');
    await stopOperator();
    const t0 = Date.now();
    // Without the operator, the agent's re-created object has no plan: "no plan known" must keep everything.
    await kubectl(['delete', 'virtualionode', NODE]);
    await until('the agent to re-create its VirtualIONode without a plan', async () => ((await vio()).spec?.pools === undefined ? true : undefined));
    while (Date.now() - t0 < 60_000) {
      await sleep(10_000);
      hostHolds(h, `operator down for ${Math.round((Date.now() - t0) / 1000)} s`);
    }
    await expectHeld(h, 'after a minute without the operator');
    startOperator();
    await until('the operator to plan again', async () => ((await planPools()).length === 4 ? true : undefined));
    await expectHeld(h, 'after the operator came back');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('agent SIGKILLed mid-carve and restarted: the carve completes, the VM keeps its slices', () => row('agent SIGKILLed mid-carve', async () => {
    await baseline();
    const h = await startVm('sigkill');
    await expectHeld(h, 'before');
    const seen = agent!.logs.length;
    const objs = poolObjects();
    (objs[2]!.spec as { carving: { count: number } }).carving.count = 3;
    await applyPools(objs);
    await agent!.waitForLog('the carving of a third mdev', (l) => agent!.logs.indexOf(l) >= seen && l.msg === 'carving' && JSON.stringify(l.writes).includes('nvidia-222/create'), 30_000);
    await stopAgent('SIGKILL');
    hostHolds(h, 'right after the SIGKILL');
    await startClusterAgent();
    await until('three vGPU slices after the restart', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.vgpu)?.capacity === 3 ? true : undefined));
    expect(readdirSync(join(sys, 'bus/mdev/devices'))).toHaveLength(3);
    await expectHeld(h, 'after the restart');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('kubelet restarted: the agent re-registers, the kubelet still lists the VM\'s slices', () => row('kubelet restarted', async () => {
    await baseline();
    const h = await startVm('kubelet');
    await expectHeld(h, 'before');
    await kubelet.restart();
    await until('the restarted kubelet\'s PodResources to answer', () => podResourcesOf(h.pod));
    await until('Node allocatable back after the restart', async () => {
      const n = await getJson<{ status: { allocatable: Record<string, string> } }>(['get', 'node', NODE]);
      return ALL.every((k) => n.status.allocatable[R[k]] === String(capacity[k])) ? true : undefined;
    });
    await expectHeld(h, 'after the kubelet restart');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('PodResources unavailable for 30 s, the agent restarted meanwhile and the label removed: nothing is released until the kubelet says who holds what', () => row('PodResources unavailable for 30 s', async () => {
    await baseline();
    const h = await startVm('podres');
    await expectHeld(h, 'before');
    await proxy.down();
    const t0 = Date.now();
    // A restarted agent has not learned any holder yet: the hard case.
    await stopAgent('SIGTERM');
    await startClusterAgent();
    await kubectl(['label', 'node', NODE, `${LABEL}-`]);
    await until('the operator to unplan every pool', async () => ((await planPools()).length === 0 ? true : undefined));
    await until('the agent to report PodResources unavailable', async () => (agent!.logs.some((l) => /PodResources/i.test(l.msg) && l.level >= 40) ? true : undefined), 30_000);
    while (Date.now() - t0 < 30_000) {
      await sleep(5000);
      hostHolds(h, `PodResources down for ${Math.round((Date.now() - t0) / 1000)} s`);
    }
    // Listed as draining, kept until the kubelet says who holds them.
    const st = await agentStatus();
    for (const k of ALL) expect(st.slices?.find((s) => s.id === h[k])?.draining).toBeDefined();
    expect(await podResourcesOf(h.pod)).toBeDefined();
    await proxy.up();
    await expectHeld(h, 'after PodResources came back');
    await expectDraining(h, ALL);
    await deleteVm(h);
    await expectReleased(h, []);
  }));

  test('plan file removed (standalone agent on the same real kubelet): no plan known keeps every slice', () => row('plan file removed (standalone)', async () => {
    await baseline();
    const spec = { pools: await planPools() };
    await stopAgent('SIGTERM');
    const planFile = join(base, 'plan.json');
    writeFileSync(planFile, JSON.stringify(spec));
    agent = await startAgent(agentArgs(['--plan-file', planFile]));
    agentMode = 'standalone';
    await until('the standalone agent ready', async () => ((await agent!.get('/readyz')).status === 200 ? true : undefined));
    const h = await startVm('planfile');
    // Standalone mode has no API server, so its status names the pod, not the VMI.
    await expectHeld(h, 'before', { vmi: false });
    rmSync(planFile);
    await agent.waitForLog('the agent to notice the plan file is gone', (l) => /plan/i.test(l.msg) && l.level >= 40, 20_000);
    await sleep(4000);
    await expectHeld(h, 'after the plan file went', { vmi: false });
    expect(readFileSync(join(pciDir(NIC_PF), 'sriov_numvfs'), 'utf8').trim()).toBe('4');
    await deleteVm(h);
    // No plan known: released means nothing, every slice stays (free).
    await sleep(4000);
    await expectReleased(h, ALL, { status: false });
    expect(readdirSync(join(sys, 'bus/mdev/devices'))).toHaveLength(2);
  }));

  test('one device whose writes block for ever: it is reported stuck, every other device and pool proceeds, the VM keeps its slices', () => row('a device whose writes block for ever', async () => {
    await baseline();
    const h = await startVm('stuck');
    await expectHeld(h, 'before');
    // A second A10 appears (hot-plug); its driver_override is a FIFO nobody reads: the agent's write
    // to it blocks in open(2) for real, like an unbind the kernel holds while a VMM keeps the device open.
    const spec: FunctionSpec = { address: GPU2, vendor: '10de', device: '2236', classCode: '030200', driver: 'nvidia', numaNode: 0 }; // an IOMMU group of its own
    const dir = await kernel.kernel.addFunction(spec);
    rmSync(join(dir, 'driver_override'));
    spawnSync('mkfifo', [join(dir, 'driver_override')]);
    expect(lstatSync(join(dir, 'driver_override')).isFIFO()).toBe(true);
    await until('the GPU pool planned with the second GPU', async () => ((await planPools()).find((p) => p.name === POOL.gpu)?.devices.length === 2 ? true : undefined));
    const stuck = await until('the second GPU reported stuck on the GPU pool', async () => {
      const p = (await agentStatus()).pools?.find((x) => x.name === POOL.gpu);
      return p?.message?.includes(GPU2) && p.message.includes(`stuck: bus/pci/devices/${GPU2}/driver_override="vfio-pci" has not returned for`) ? p : undefined;
    }, 30_000);
    expect(stuck.message).toMatch(/has not returned for \d+ s/);
    expect(stuck.capacity).toBe(2);
    expect(stuck.allocatable).toBe(1); // healthy slices: the VM's GPU only; the second never reached vfio-pci
    // Every other device proceeds: the vGPU pool grows by one mdev while the write is stuck.
    const objs = poolObjects();
    (objs[2]!.spec as { carving: { count: number } }).carving.count = 3;
    await applyPools(objs);
    await until('a third mdev carved while the GPU write is stuck', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.vgpu)?.capacity === 3 ? true : undefined));
    expect(driverOf(GPU2)).toBe('nvidia');
    await expectHeld(h, 'with a write stuck');
    await deleteVm(h);
    await expectReleased(h, ALL);
    // Unblock (read the FIFO so the abandoned helper returns), then hot-unplug the second GPU.
    const fd = openSync(join(dir, 'driver_override'), constants.O_RDONLY | constants.O_NONBLOCK);
    await sleep(200);
    try { readSync(fd, Buffer.alloc(64)); } catch { /* nothing written yet */ }
    closeSync(fd);
    rmSync(join(dir, 'driver_override'), { force: true });
    writeFileSync(join(dir, 'driver_override'), '(null)\n');
    await kernel.kernel.write(`bus/pci/devices/${GPU2}/remove`, '1');
    await until('the GPU pool back to one GPU', async () => ((await planPools()).find((p) => p.name === POOL.gpu)?.devices.length === 1 ? true : undefined));
  }));

  test('inventory grown past the status bound (2,048 functions, ours sorted last): the plan and the VM\'s slices stay', () => row('inventory past the status bound', async () => {
    await baseline();
    const h = await startVm('bound');
    await expectHeld(h, 'before');
    const before = JSON.stringify(await planPools());
    // 2,100 plain functions on buses 01-09, all before ours by PCI address.
    const specs: FunctionSpec[] = [];
    for (let i = 0; i < 2100; i++) {
      const bus = 1 + Math.floor(i / 256);
      const devfn = i % 256;
      const a = `0000:${bus.toString(16).padStart(2, '0')}:${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
      specs.push({ address: a, vendor: '8086', device: '0b00', classCode: '088000', numaNode: 0, iommuGroup: 1000 + i });
    }
    for (let i = 0; i < specs.length; i += 100) await Promise.all(specs.slice(i, i + 100).map((s) => kernel.kernel.addFunction(s)));
    await until('the status inventory cut at the bound', async () => {
      const inv = (await vio()).status?.inventory;
      return inv?.truncated === true && (inv.total ?? 0) > 2048 ? true : undefined;
    }, 90_000);
    await sleep(4000);
    expect(JSON.stringify(await planPools())).toBe(before);
    await expectHeld(h, 'after the inventory grew');
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));
});
