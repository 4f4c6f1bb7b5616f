// Issue 10's fault matrix: "a slice that the kubelet has allocated to a pod that still exists is never
// destroyed, unbound, re-carved or handed to someone else", proven by the kernel (issue 17).
// Everything is real except the hardware: a private control plane, the REAL kubelet (on the fake
// CRI), the REAL operator process planning from VirtualIODevice objects and node labels, and the REAL
// agent process (cluster mode; standalone for the plan-file row) on the fake sysfs kernel daemon. A
// VM-shaped pod (virt-launcher-like) holds one slice of every mode: an SR-IOV VF, an mdev, a
// passthrough GPU (its audio function goes along in its IOMMU group) and an NPIV vport; once the
// kubelet has admitted it, a VMM stand-in (test/sysfs/vmm.ts) opens the VFIO groups of its devices
// and uses the vport's LUNs until the pod is deleted, and ignores the kernel's requests to let go.
// Each row: baseline → VM → assert held → fault → assert held → pod deleted → assert released as the
// plan then in force says. "Held" means: the slice exists, is on vfio-pci (its mdev/vport exists),
// its /dev/vfio node is there, the kubelet's own PodResources API lists it, VirtualIONode.status
// names the VM holding it, AND the kernel's witness (test/support/witness.ts) recorded no violation,
// no destructive write on a device the VM held, no request to the VM to let go. IDs come back
// identical after a re-carve (VF addresses, deterministic mdev UUIDs, WWPNs), so rows where nothing
// may move also assert that the kernel destroyed nothing at all, and rows with a window (no plan, no
// operator, no PodResources, a kubelet restart) check all of it throughout the window.
// The agent runs with --release-grace 3s (default 30 s): a shorter grace is the harder case (a
// source that loses a holder for longer than that releases it), and keeps each row short.
// Each row was seen to fail against a deliberately broken agent (or operator), one small edit each,
// applied to a private copy of the tree and never committed:
//   label removed        carver keeps only active slices + gate allows all → violations: sriov_numvfs=0,
//                        unbinds of the GPU and its audio function, vport_delete (the carver edit
//                        alone already: the unbind of the audio function; the gate edit alone: passes)
//   selector edited      same edits → violation: sriov_numvfs=0 reached the VM's VF
//   pool deleted         same edits → violation: the mdev's remove reached the VM's mdev
//   second pool          operator plans a pool whose resource name is taken → the plan changed
//   VirtualIONode del.   cluster.ts reads a VirtualIONode without spec.pools as no pools → in the
//                        window: pools Draining, free slices retired, the kernel destroyed them
//   operator stopped     same edit → a free vport destroyed 1 s into the stop
//   SIGKILL mid-carve    manager.ts records a plan edit 2 s after applying it → the restarted agent
//                        removes the mdev created under the kill and creates it again (same UUID;
//                        the row as it was, killing on the log line before the write, passes)
//   kubelet restarted    manager.ts never reads the kubelet's checkpoint → the VM's vport deleted 3 s
//                        into the restart without an API server
//   PodResources down    ledger.ts unknown() never says "don't know" → free slices destroyed while
//                        PodResources is down (the held ones stay: grants and the kubelet's checkpoint)
//   plan file removed    plan.ts reads a missing plan file as no pools → free slices destroyed
//   writes block         node-ops.ts writes in the agent's own process → the agent freezes, no stuck
//                        report (dropping the carver's stuck report alone passes: ESTUCK errors say it too)
//   inventory bound      inventory-bound.ts keeps planned devices no longer first + the operator drops
//                        planned devices a truncated inventory does not list → the plan emptied (the
//                        agent's edit alone passes)
// Needs root (the kubelet's device plugin folder is fixed); without root the suite says it is skipped.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, constants, createWriteStream, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, readSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { request as httpsRequest } from 'node:https';
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
import { FakeKernel, connectX6, emulexFc, gpuWithAudio, intel82599, mdevGpu, type FunctionSpec } from '../sysfs/kernel.js';
import { startKernel, type KernelEvent, type KernelHandle } from '../sysfs/kernel-daemon.js';
import type { Violation } from '../sysfs/vfio.js';
import { startVm as startVmm } from '../sysfs/vmm.js';
import { eventually, kubectlOk } from '../support/cluster.js';
import { iommuGroupOf, kernelFindings, startPodVm, stopPodVm, type PodVm } from '../support/witness.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

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
/** An Intel 82599 added by the "second pool, same resource name" row. */
const NIC2 = '0000:82:00.0';

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
/** Every pod VM started so far (the kernel's record is checked against their hold windows). */
const vms: PodVm[] = [];
/** Where this row's part of the kernel's record starts: violations from the start of its baseline, destroyed entries from its end. */
let rowFrom = { violations: 0, destroyed: 0 };
/** Violations a row provokes on purpose (a VMM nobody told the kubelet about); reset by baseline(). */
let expectedViolation: ((v: Violation) => boolean) | undefined;
/** Called with every write the kernel daemon applies or refuses (KernelEvent), as it observes it. */
const kernelListeners = new Set<(e: KernelEvent) => void>();

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
    '--release-grace', '3s',
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
  const writes = kernel ? kernel.events.slice(-20).map((e) => `${e.path}=${JSON.stringify(e.value)} ${e.ok ? 'ok' : `refused: ${e.error ?? ''}`}${e.blocked ? ' (blocked)' : ''}`).join('\n') : '';
  const unmet = waitingFor ? `\n--- last unmet condition ---\n${waitingFor}` : '';
  return `${unmet}\n--- agent (${agentMode}) ---\n${agentTail}\n--- kernel: last writes ---\n${writes}\n--- operator ---\n${tail(join(base, 'operator.log'), 15)}`;
}
/** What the current wait still misses, for its timeout message (set by checks that know). */
let waitingFor = '';
/** A failure waiting cannot undo (the kernel's record): `until` stops at once with it. */
class Fatal extends Error {}

async function until<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  let fatal: Fatal | undefined;
  waitingFor = '';
  const r = await eventually(what, async () => {
    try {
      const v = await check();
      return v === false ? undefined : v;
    } catch (err) {
      if (err instanceof Fatal) {
        fatal = err;
        return null;
      }
      return undefined;
    }
  }, timeoutMs, 250).catch((err: unknown) => { throw new Error(`${String(err)}${diag()}`, { cause: err }); });
  if (fatal) throw fatal;
  return r as T;
}

/** While waiting: the kernel's record must stay clean (fails the wait at once, see expectKernel). */
function kernelStaysClean(when: string): void {
  const f = kernelFindings(kernel, vms, { from: rowFrom, ...(expectedViolation ? { expected: expectedViolation } : {}) });
  if (f.length) throw new Fatal(`${when}: the kernel's record:\n  ${f.join('\n  ')}`);
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

interface Held { vm: string; pod: string; nic: string; gpu: string; vgpu: string; fc: string; /** Its VMM, holding all four. */ pvm: PodVm }

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
  const ids = { nic: one('nic'), gpu: one('gpu'), vgpu: one('vgpu'), fc: one('fc') };
  // The VMM starts: it opens the VFIO group of every device the kubelet gave the pod and uses the
  // vport's LUNs, until the pod is deleted. A group someone else has open fails it with EBUSY.
  const pvm = await startPodVm(kernel, sys, dev, { name: vm, pod, vfio: [ids.nic, ids.gpu, ids.vgpu], vports: [ids.fc] });
  vms.push(pvm);
  return { vm, pod, ...ids, pvm };
}

async function deleteVm(h: Held): Promise<void> {
  await kubectl(['delete', 'pod', h.pod, '--wait=false']);
  await stopPodVm(h.pvm); // the VMM exits as the pod terminates, before the kubelet forgets the pod
  await until(`pod ${h.pod} gone`, async () => (await kubectl(['get', 'pods', '-o', 'name'])).includes(h.pod) ? undefined : true, 60_000);
  await until(`PodResources to forget ${h.pod}`, async () => ((await podResourcesOf(h.pod)) === undefined ? true : undefined), 30_000);
}

interface KernelCheck {
  /** Nothing at all may have been destroyed since then (ms since the epoch). */
  nothingDestroyedSince?: number;
}

/**
 * The kernel's side: no violation in this row (but the one it provokes on purpose), no destructive
 * write while a pod's VM held a device it took, no request to a VM to let go, every group still open.
 */
function expectKernel(when: string, o: KernelCheck = {}): void {
  const f = kernelFindings(kernel, vms, { from: rowFrom, ...(expectedViolation ? { expected: expectedViolation } : {}), ...o });
  expect([`${when}: the kernel's record`, f]).toEqual([`${when}: the kernel's record`, []]);
}

/** What the agent logged since `from` that moves slices: plan retirements and writes that destroy. */
function agentMoved(from: number): string[] {
  return (agent?.logs.slice(from) ?? [])
    .filter((l) => l.msg.startsWith('retiring') || (l.msg === 'carving' && Array.isArray(l.destroys) && l.destroys.length > 0))
    .map((l) => `${l.msg}: ${JSON.stringify(l.destroys ?? l.devices ?? '')} ${String(l.why ?? '')}`);
}

/** The host side of "held": every slice exists, on vfio-pci / as mdev / as vport, with its /dev/vfio node; and the kernel's record. */
function hostHolds(h: Held, when: string, o: KernelCheck = {}): void {
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
  expectKernel(when, o);
}

/** The whole "held" check; `vmi: false` where the status cannot know the VM (standalone: no API server). */
async function expectHeld(h: Held, when: string, o: { vmi?: boolean } & KernelCheck = {}): Promise<void> {
  hostHolds(h, when, o);
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
  hostHolds(h, `${when} (again)`, o);
}

/**
 * The slices of `pools` are kept for the VM and marked draining in status; the kubelet still lists
 * them (capacity) but as unhealthy, so nothing of those pools can be allocated again.
 */
async function expectDraining(h: Held, pools: PoolKey[]): Promise<void> {
  await until(`slices of ${pools.join(', ')} draining for ${h.vm}`, async () => {
    kernelStaysClean(`waiting for ${pools.join(', ')} to drain`);
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
    kernelStaysClean('waiting for the release');
    const miss = (why: string): undefined => {
      waitingFor = why;
      return undefined;
    };
    for (const k of ALL) {
      const id = h[k];
      const on = kept.includes(k);
      if (k === 'nic' && existsSync(pciDir(id)) !== on) return miss(`nic VF ${id} ${on ? 'gone' : 'still there'}`);
      if (k === 'nic' && on && driverOf(id) !== 'vfio-pci') return miss(`nic VF ${id} on ${driverOf(id) ?? 'no driver'}`);
      if (k === 'gpu' && (on ? driverOf(id) !== 'vfio-pci' || driverOf(GPU_AUDIO) !== 'vfio-pci' : driverOf(id) !== 'nvidia' || driverOf(GPU_AUDIO) !== 'snd_hda_intel')) {
        return miss(`gpu ${id} on ${driverOf(id) ?? 'no driver'}, its audio function on ${driverOf(GPU_AUDIO) ?? 'no driver'}`);
      }
      if (k === 'vgpu' && existsSync(join(sys, 'bus/mdev/devices', id)) !== on) return miss(`mdev ${id} ${on ? 'gone' : 'still there'}`);
      if (k === 'fc' && (vportOf(id) !== undefined) !== on) return miss(`vport ${id} ${on ? 'gone' : 'still there'}`);
    }
    if (o.status === false) return true;
    const st = await agentStatus();
    for (const k of ALL) {
      const s = st.slices?.find((x) => x.id === h[k]);
      if (kept.includes(k) ? !s || s.health !== 'Healthy' || s.allocation || s.draining : s) return miss(`the agent's status lists ${k} ${h[k]} as ${JSON.stringify(s ?? null)}`);
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
  for (const p of vms) await stopPodVm(p); // a failed row's VM: its pod is deleted below
  const violationsFrom = kernel.violations.length; // the baseline's own writes are witnessed too
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
  expectedViolation = undefined;
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
  rowFrom = { violations: violationsFrom, destroyed: kernel.destroyed.length };
}

async function row(name: string, body: () => Promise<void>): Promise<void> {
  const t0 = Date.now();
  try {
    await body();
    expectKernel(`${name}, at the end`);
    matrix.push({ row: name, result: 'pass', ms: Date.now() - t0 });
  } catch (err) {
    matrix.push({ row: name, result: 'FAIL', ms: Date.now() - t0 });
    throw err;
  }
}

const planPools = async () => (await vio()).spec?.pools ?? [];

// ---- "nothing moves" windows ---------------------------------------------------------------------

interface SliceRef { id: string; pool: string }

/** A slice exists on the host as carved: a VF/GPU on vfio-pci with its /dev/vfio node, an mdev, a vport. */
function hostHasSlice(s: SliceRef): boolean {
  if (s.pool === POOL.vgpu) return existsSync(join(sys, 'bus/mdev/devices', s.id));
  if (s.pool === POOL.fc) return vportOf(s.id) !== undefined;
  return existsSync(pciDir(s.id)) && driverOf(s.id) === 'vfio-pci' && existsSync(join(dev, 'vfio', groupOf(pciDir(s.id))));
}

/** The slices no pod holds, as the agent reports them. */
async function freeSlices(): Promise<SliceRef[]> {
  const st = await agentStatus();
  return (st.slices ?? []).filter((s) => !s.allocation && !s.draining).map((s) => ({ id: s.id, pool: s.pool }));
}

const numVfs = (pf = NIC_PF) => readdirSync(pciDir(pf)).filter((e) => /^virtfn\d+$/.test(e)).length;

/**
 * The API server without kubectl (a few ms instead of a process start), with the admin client
 * certificate: for sampling a window that lasts a fraction of a second.
 */
function api(method: 'GET' | 'DELETE', path: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = httpsRequest(`${cp.server}${path}`, {
      method, timeout: 5000,
      ca: readFileSync(join(cp.dir, 'ca.crt')), cert: readFileSync(join(cp.dir, 'admin.crt')), key: readFileSync(join(cp.dir, 'admin.key')),
    }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c: string) => (body += c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', rej);
    req.end();
  });
}
const VIO_PATH = `/apis/virtualio.dev/v1alpha1/virtualionodes/${NODE}`;

/** What a failed expect() in `f` says, or nothing. */
function failure(f: () => void): string[] {
  try {
    f();
    return [];
  } catch (err) {
    return [String((err as Error).message)];
  }
}

/**
 * Nothing moves (a window where no plan change happened): the VM holds everything (host and
 * kernel), nothing at all was destroyed since `since`, every free slice is still on the host, the
 * agent logged no retirement and no destroying write since its log line `logFrom`, the Node's
 * allocatable equals its capacity for every pool, and the agent's status (its /status, and also
 * VirtualIONode.status with `object: true`) shows every pool Ready with all its slices allocatable
 * and the free ones healthy, unallocated, not draining. Returns the problems (empty: nothing moved).
 */
async function stillProblems(h: Held, when: string, w: { since: number; logFrom: number; free: SliceRef[]; object?: boolean }): Promise<string[]> {
  const out = failure(() => hostHolds(h, when, { nothingDestroyedSince: w.since }));
  const lost = w.free.filter((s) => !hostHasSlice(s)).map((s) => `${s.pool}/${s.id}`);
  if (lost.length) out.push(`${when}: free slices gone from the host: ${lost.join(', ')}`);
  const moved = agentMoved(w.logFrom);
  if (moved.length) out.push(`${when}: the agent retired or destroyed: ${moved.join('; ')}`);
  const n = JSON.parse((await api('GET', `/api/v1/nodes/${NODE}`)).body) as { status: { capacity: Record<string, string>; allocatable: Record<string, string> } };
  const alloc = ALL.map((k) => `${k} ${n.status.capacity[R[k]]}/${n.status.allocatable[R[k]]}`).join(', ');
  const want = ALL.map((k) => `${k} ${capacity[k]}/${capacity[k]}`).join(', ');
  if (alloc !== want) out.push(`${when}: Node capacity/allocatable ${alloc}, expected ${want}`);
  const views: [string, NodeStatus | undefined][] = [['agent /status', JSON.parse((await agent!.get('/status')).text) as NodeStatus]];
  if (w.object) views.push(['VirtualIONode.status', (await vio()).status]);
  for (const [where, st] of views) {
    const pools = ALL.map((k) => {
      const p = st?.pools?.find((x) => x.name === POOL[k]);
      return `${k} ${p?.state} ${p?.capacity}/${p?.allocatable}`;
    }).join(', ');
    const wantPools = ALL.map((k) => `${k} Ready ${capacity[k]}/${capacity[k]}`).join(', ');
    if (pools !== wantPools) out.push(`${when}: ${where} pools ${pools}, expected ${wantPools}`);
    const bad = w.free.filter((f) => {
      const sl = st?.slices?.find((x) => x.id === f.id);
      return !sl || sl.health !== 'Healthy' || sl.allocation !== undefined || sl.draining !== undefined;
    }).map((f) => `${f.pool}/${f.id}`);
    if (bad.length) out.push(`${when}: ${where}: free slices not free and healthy: ${bad.join(', ')}`);
  }
  return out;
}

async function expectStill(h: Held, when: string, w: { since: number; logFrom: number; free: SliceRef[]; object?: boolean }): Promise<void> {
  expect([when, await stillProblems(h, when, w)]).toEqual([when, []]);
}

suite(`fault matrix: a VM never loses its device (real kubelet, operator and agent; fake hardware)${kubeletSkipReason()}`, () => {
  beforeAll(async () => {
    const t0 = Date.now();
    await ensureOperatorBuilt();
    cp = await startControlPlane();
    await kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished(kubectl, ['virtualionodes.virtualio.dev', 'virtualiodevices.virtualio.dev'], 60);
    await kubectl(['create', 'namespace', 'virtualio-system']);
    kubelet = await startKubelet(cp);
    // /var/lib/kubelet is the machine's: the kubelet of a suite that ran before (kubelet-e2e) left
    // its device manager checkpoint, listing pods of another cluster on the same fake PCI addresses,
    // which the agent rightly counts as held. With the machine lock ours, start from none.
    rmSync(join(DEVICE_PLUGIN_DIR, 'kubelet_internal_checkpoint'), { force: true });
    await kubelet.restart();

    base = mkdtempSync(join(tmpdir(), 'vio-fault-matrix-'));
    sys = join(base, 'sys');
    dev = join(base, 'dev');
    mkdirSync(join(base, 'devinfo'));
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(connectX6(NIC_PF, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
    for (const f of gpuWithAudio(GPU_FN, GPU_AUDIO, { group: 60, numaNode: 0 })) await k.addFunction(f);
    await k.addFunction(mdevGpu(VGPU_PARENT, { numaNode: 0, instances: 4 }));
    await k.addFunction(emulexFc(HBA, { host: 7, wwpn: '10000090fa0000d8', wwnn: '20000090fa0000d8', maxNPIVVports: 8 }));
    kernel = await startKernel(sys, dev, { onEvent: (e) => { for (const l of kernelListeners) l(e); } });
    proxy = new PodResourcesProxy(join(base, 'podres-proxy.sock'), kubelet.podResourcesSocket);
    matrix.push({ row: '(setup: control plane, kubelet, kernel)', result: 'done', ms: Date.now() - t0 });
  }, 20 * 60_000); // may wait for another suite's kubelet (the machine lock)

  afterAll(async () => {
    for (const p of vms) await stopPodVm(p).catch(() => undefined);
    await stopAgent('SIGTERM').catch(() => undefined);
    await stopOperator().catch(() => undefined);
    await proxy?.down().catch(() => undefined);
    // Each step even when one before it failed (a failed row can leave the tree odd): no orphans.
    await kubelet?.stop().catch((err: unknown) => console.error(`kubelet stop: ${String(err)}`));
    await kernel?.stop().catch((err: unknown) => console.error(`kernel daemon stop: ${String(err)}`));
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

  test('second pool with the same resource name, on a NIC only it selects: the newcomer is not planned (resource name conflict), the first keeps its plan and the VM its VF; nothing is destroyed', () => row('second pool, same resource name', async () => {
    await baseline();
    const h = await startVm('dupname');
    await expectHeld(h, 'before');
    // A NIC of another make appears that only the newcomer selects: nothing but its resource name
    // keeps it out of the plan (the same selector would also be stopped by the device conflict).
    await kernel.kernel.addFunction(intel82599(NIC2, { netdev: 'eno50', totalVFs: 8, numaNode: 0 }));
    await until('the second NIC in the agent\'s inventory', async () => ((await vio()).status?.inventory?.devices as { pciAddress: string }[] | undefined)?.some((d) => d.pciAddress === NIC2) ? true : undefined);
    const before = JSON.stringify(await planPools());
    const t0 = Date.now();
    const dup = poolObjects()[0]!;
    const dupSpec = { ...(dup.spec as Record<string, unknown>), deviceSelector: { vendorIDs: ['8086'], deviceIDs: ['10fb'] }, carving: { mode: 'SRIOV', count: 2 } };
    await kubectl(['apply', '-f', '-'], JSON.stringify({ ...dup, metadata: { name: 'fm-cx6-second' }, spec: dupSpec }));
    await until('the newcomer reported in conflict over its resource name', async () => {
      const c = (await getJson<{ status?: { conditions?: { type: string; status: string; reason?: string }[] } }>(['get', 'virtualiodevice', 'fm-cx6-second'])).status?.conditions ?? [];
      return c.some((x) => x.type === 'Conflict' && x.status === 'True' && x.reason === 'ResourceNameConflict') ? true : undefined;
    });
    await sleep(4000);
    expect(JSON.stringify(await planPools())).toBe(before);
    expect(numVfs(NIC2)).toBe(0);
    await expectHeld(h, 'after the second pool', { nothingDestroyedSince: t0 });
    await deleteVm(h);
    await expectReleased(h, ALL);
    await kubectl(['delete', 'virtualiodevice', 'fm-cx6-second']);
    await kernel.kernel.write(`bus/pci/devices/${NIC2}/remove`, '1'); // hot-unplug
    await until('the second NIC gone from the agent\'s inventory', async () => ((await vio()).status?.inventory?.devices as { pciAddress: string }[] | undefined)?.some((d) => d.pciAddress === NIC2) ? undefined : true);
  }));

  test('VirtualIONode deleted: all through the window until the operator has restored the plan, nothing moves (the agent re-creates it without a plan and keeps everything)', () => row('VirtualIONode deleted', async () => {
    await baseline();
    const h = await startVm('viondel');
    await expectHeld(h, 'before');
    const free = await freeSlices();
    const old = await vio();
    const planned = JSON.stringify(old.spec?.pools);
    const t0 = Date.now();
    const logFrom = agent!.logs.length;
    // The window: the old object deleted, then the agent's new one without spec.pools, until the
    // operator has written the plan again. Left alone the operator restores it within ~0.1 s, less
    // than one check takes; so it is frozen (SIGSTOP, as a stalled or throttled operator would be)
    // for 3 s from just before the delete and then continues where it was. Sampled from before the
    // delete until the plan is back, through the API server directly and the agent's /status.
    const samples: string[] = [];
    const problems: string[] = [];
    let deleted = false;
    const sampler = (async () => {
      for (;;) {
        const r = await api('GET', VIO_PATH);
        const v = r.status === 404 ? undefined : (JSON.parse(r.body) as VioNode);
        const state = !v ? 'no VirtualIONode'
          : v.metadata.uid === old.metadata.uid ? (deleted ? 'the old one, being deleted' : 'the old one')
            : v.spec?.pools === undefined ? 'the agent\'s new one, without a plan'
              : JSON.stringify(v.spec.pools) === planned ? 'plan back' : 'a new one with another plan';
        if (state === 'plan back') return;
        samples.push(state);
        problems.push(...(await stillProblems(h, `VirtualIONode deleted, ${Date.now() - t0} ms in (${state})`, { since: t0, logFrom, free })));
        if (Date.now() - t0 > 60_000) throw new Error(`the plan is not back after 60 s${diag()}`);
      }
    })();
    operator!.kill('SIGSTOP');
    try {
      expect((await api('DELETE', VIO_PATH)).status).toBe(200);
      deleted = true;
      await sleep(3000);
    } finally {
      operator!.kill('SIGCONT');
    }
    await sampler;
    const inWindow = samples.filter((x) => x === 'no VirtualIONode' || x.startsWith('the agent'));
    console.log(`VirtualIONode deleted: plan back after ${Date.now() - t0} ms; ${samples.length} samples, ${inWindow.length} in the window (${[...new Set(samples)].join(', ')})`);
    expect({ problems: problems.length, first: [...new Set(problems)].slice(0, 6) }).toEqual({ problems: 0, first: [] });
    expect(samples).toContain('the agent\'s new one, without a plan');
    expect(inWindow.length).toBeGreaterThanOrEqual(5);
    await sleep(4000); // two rescans on the restored plan
    await expectStill(h, 'after the VirtualIONode was deleted', { since: t0, logFrom, free, object: true });
    await expectHeld(h, 'after the VirtualIONode was deleted', { nothingDestroyedSince: t0 });
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('operator stopped for a minute (and the VirtualIONode deleted meanwhile, so no plan is known): nothing moves, the free slices, pools and allocatable stay', () => row('operator stopped for a minute', async () => {
    await baseline();
    const h = await startVm('opstop');
    await expectHeld(h, 'before');
    const free = await freeSlices();
    expect(free.map((s) => s.pool).sort()).toEqual([...Array(capacity.nic - 1).fill(POOL.nic), ...Array(capacity.fc - 1).fill(POOL.fc), ...Array(capacity.vgpu - 1).fill(POOL.vgpu)].sort());
    await stopOperator();
    const t0 = Date.now();
    const logFrom = agent!.logs.length;
    // Without the operator, the agent's re-created object has no plan: "no plan known" must keep everything.
    await kubectl(['delete', 'virtualionode', NODE]);
    await until('the agent to re-create its VirtualIONode without a plan, with its status', async () => {
      const v = await vio();
      return v.metadata.uid !== undefined && v.spec?.pools === undefined && v.status?.pools !== undefined ? true : undefined;
    });
    while (Date.now() - t0 < 60_000) {
      await expectStill(h, `operator down for ${Math.round((Date.now() - t0) / 1000)} s`, { since: t0, logFrom, free, object: true });
      await sleep(5000);
    }
    await expectHeld(h, 'after a minute without the operator', { nothingDestroyedSince: t0 });
    startOperator();
    await until('the operator to plan again', async () => ((await planPools()).length === 4 ? true : undefined));
    await sleep(4000);
    await expectStill(h, 'after the operator came back', { since: t0, logFrom, free, object: true });
    await expectHeld(h, 'after the operator came back', { nothingDestroyedSince: t0 });
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('agent SIGKILLed mid-carve (as the kernel applies its write, before the agent sees the result) and restarted: the carve completes, nothing is destroyed or carved again, the VM keeps its slices', () => row('agent SIGKILLed mid-carve', async () => {
    await baseline();
    const h = await startVm('sigkill');
    await expectHeld(h, 'before');
    const mdevs = readdirSync(join(sys, 'bus/mdev/devices'));
    const t0 = Date.now();
    const victim = agent!;
    let killedOn: KernelEvent | undefined;
    const onEvent = (e: KernelEvent): void => {
      if (killedOn || !e.ok || e.blocked || !/mdev_supported_types\/nvidia-222\/create$/.test(e.path)) return;
      killedOn = e;
      victim.proc.kill('SIGKILL'); // the kernel has applied the write; the agent has not recorded its outcome
    };
    kernelListeners.add(onEvent);
    try {
      const objs = poolObjects();
      (objs[2]!.spec as { carving: { count: number } }).carving.count = 3;
      await applyPools(objs);
      await until('the kernel to apply the third mdev\'s create (the agent SIGKILLed on it)', async () => (killedOn ? true : undefined), 30_000);
    } finally {
      kernelListeners.delete(onEvent);
    }
    await stopAgent('SIGKILL');
    const created = killedOn!.value;
    expect(readdirSync(join(sys, 'bus/mdev/devices')).sort()).toEqual([...mdevs, created].sort());
    hostHolds(h, 'right after the SIGKILL', { nothingDestroyedSince: t0 });
    await startClusterAgent();
    await until('three vGPU slices after the restart', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.vgpu)?.capacity === 3 ? true : undefined));
    await sleep(4000); // two rescans of the restarted agent
    // The same three mdevs: the one created under the kill was kept, not removed and created again.
    expect(readdirSync(join(sys, 'bus/mdev/devices')).sort()).toEqual([...mdevs, created].sort());
    expect(agentMoved(0)).toEqual([]);
    await expectHeld(h, 'after the restart', { nothingDestroyedSince: t0 });
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));

  test('kubelet restarted while a pool drains and a re-carve waits on a held slice, once without its API server (PodResources stays empty) and once with it: nothing is destroyed; the re-carve and the drain complete once the VM is gone', () => row('kubelet restarted', async () => {
    await baseline();
    const h = await startVm('kubelet');
    await expectHeld(h, 'before');
    // Pending work: the NIC pool goes to 2 VFs (sriov_numvfs must pass through 0, destroying the
    // VM's VF: the re-carve waits for it) and the FC pool is deleted (the VM's vport drains).
    const objs = poolObjects();
    (objs[0]!.spec as { carving: { count: number } }).carving.count = 2;
    await applyPools(objs);
    await kubectl(['delete', 'virtualiodevice', POOL.fc, '--wait=false']);
    await until('the NIC pool planned with 2 VFs and the FC pool as deleting', async () => {
      const pools = await planPools() as { name: string; count?: number; deleting?: boolean }[];
      return pools.find((p) => p.name === POOL.nic)?.count === 2 && pools.find((p) => p.name === POOL.fc)?.deleting === true ? true : undefined;
    });
    await expectDraining(h, ['fc']);
    const waits = `re-carving ${NIC_PF} from 4 to 2 VFs waits: allocated VFs ${h.nic}`;
    await until('the NIC re-carve reported waiting for the VM\'s VF', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.nic)?.message?.includes(waits) ? true : undefined), 30_000)
      .catch(async (err: unknown) => { throw new Error(`${String(err)}\n--- pools ---\n${JSON.stringify((await agentStatus()).pools)}`, { cause: err }); });
    expect(numVfs()).toBe(4);
    const t0 = Date.now(); // from here on nothing may be destroyed until the VM is gone
    const logFrom = agent!.logs.length;
    const pending = (when: string): void => {
      hostHolds(h, when, { nothingDestroyedSince: t0 });
      expect([`${when}: VFs of ${NIC_PF}`, numVfs()]).toEqual([`${when}: VFs of ${NIC_PF}`, 4]);
      expect([`${when}: the agent retired or destroyed`, agentMoved(logFrom)]).toEqual([`${when}: the agent retired or destroyed`, []]);
    };
    // Restart 1: the kubelet cannot reach its API server, so its pod sources never deliver and its
    // PodResources answers without the VM (the VM keeps running: nothing kills it). Only the
    // kubelet's checkpoint (and the agent's own record) still say who holds what.
    const kc = join(cp.dir, 'system_node_127.0.0.1.kubeconfig');
    const kubeconfig = readFileSync(kc, 'utf8');
    expect(kubeconfig).toMatch(/server: https:\/\/127\.0\.0\.1:\d+/);
    const answers: string[] = [];
    try {
      writeFileSync(kc, kubeconfig.replace(/server: \S+/, 'server: https://127.0.0.1:9'));
      await kubelet.restart(); // returns at once: the Node's Ready condition is the old one
      const tUp = Date.now();
      // Kept up 10 s from its first answer without the VM: > --release-grace (3 s) + two Lists (5 s).
      let firstEmpty: number | undefined;
      while (firstEmpty === undefined || Date.now() - firstEmpty < 10_000) {
        if (Date.now() - tUp > 60_000) throw new Error(`the restarted kubelet never answered PodResources without the VM: ${answers.join(', ')}`);
        pending(`kubelet up without its API server for ${Math.round((Date.now() - tUp) / 1000)} s`);
        const a = await podResourcesOf(h.pod).then((r) => (r ? 'lists the VM' : 'without the VM'), () => 'no answer');
        answers.push(a);
        if (a === 'without the VM') firstEmpty ??= Date.now();
        await sleep(1000);
      }
      pending('kubelet up without its API server, at the end');
    } finally {
      writeFileSync(kc, kubeconfig);
    }
    expect(answers).not.toContain('lists the VM');
    // Restart 2: with its API server; the pod is still running and the kubelet lists it again.
    await kubelet.restart();
    await until('the restarted kubelet\'s PodResources to list the VM again', () => podResourcesOf(h.pod));
    await until('every pool registered again', async () => ((await agent!.get('/readyz')).status === 200 ? true : undefined));
    await sleep(4000);
    pending('after the second kubelet restart');
    await expectHeld(h, 'after the kubelet restarts', { nothingDestroyedSince: t0 });
    await expectDraining(h, ['fc']);
    expect((await agentStatus()).pools?.find((p) => p.name === POOL.nic)?.message).toContain(waits);
    await deleteVm(h);
    // Once the VM is gone, the re-carve runs and the drained pool goes.
    await until('the NIC pool re-carved to 2 VFs, the FC pool and its vports gone', async () => {
      if (numVfs() !== 2 || vportOf(h.fc) !== undefined) return undefined;
      const st = await agentStatus();
      const nic = st.pools?.find((p) => p.name === POOL.nic);
      if (nic?.state !== 'Ready' || nic.capacity !== 2 || nic.allocatable !== 2) return undefined;
      if (st.pools?.some((p) => p.name === POOL.fc)) return undefined;
      return (await getJson<{ items: { metadata: { name: string } }[] }>(['get', 'virtualiodevices'])).items.some((p) => p.metadata.name === POOL.fc) ? undefined : true;
    }, 60_000);
    expect(readdirSync(pciDir(NIC_PF)).filter((e) => /^virtfn\d+$/.test(e)).map((l) => driverOf(basename(readlinkSync(join(pciDir(NIC_PF), l)))))).toEqual(['vfio-pci', 'vfio-pci']);
    expect(driverOf(h.gpu)).toBe('vfio-pci');
    expect(existsSync(join(sys, 'bus/mdev/devices', h.vgpu))).toBe(true);
  }));

  test('PodResources unavailable for 30 s, the agent restarted meanwhile and the label removed: nothing is destroyed until the kubelet says who holds what', () => row('PodResources unavailable for 30 s', async () => {
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
      hostHolds(h, `PodResources down for ${Math.round((Date.now() - t0) / 1000)} s`, { nothingDestroyedSince: t0 });
    }
    // Listed as draining, kept until the kubelet says who holds them; nothing destroyed, free or not.
    const st = await agentStatus();
    for (const k of ALL) expect(st.slices?.find((s) => s.id === h[k])?.draining).toBeDefined();
    expect(await podResourcesOf(h.pod)).toBeDefined();
    hostHolds(h, 'PodResources still down', { nothingDestroyedSince: t0 });
    await proxy.up();
    await expectHeld(h, 'after PodResources came back');
    await expectDraining(h, ALL);
    await deleteVm(h);
    await expectReleased(h, []);
  }));

  test('plan file removed (standalone agent on the same real kubelet): no plan known keeps every slice, nothing is destroyed', () => row('plan file removed (standalone)', async () => {
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
    const t0 = Date.now();
    rmSync(planFile);
    await agent.waitForLog('the agent to notice the plan file is gone', (l) => /plan/i.test(l.msg) && l.level >= 40, 20_000);
    await sleep(4000);
    await expectHeld(h, 'after the plan file went', { vmi: false, nothingDestroyedSince: t0 });
    expect(readFileSync(join(pciDir(NIC_PF), 'sriov_numvfs'), 'utf8').trim()).toBe('4');
    await deleteVm(h);
    // No plan known: released means nothing, every slice stays (free).
    await sleep(4000);
    await expectReleased(h, ALL, { status: false });
    expect(readdirSync(join(sys, 'bus/mdev/devices'))).toHaveLength(2);
    expectKernel('after the VM went, still without a plan', { nothingDestroyedSince: t0 });
  }));

  test('writes that block for ever: a hardware hang (a write that never returns) and the kernel holding the release of an mdev a VMM the kubelet does not know has open (as Linux does); both reported stuck, every other device and pool proceeds, the VM keeps its slices', () => row('a device whose writes block for ever', async () => {
    await baseline();
    const h = await startVm('stuck');
    await expectHeld(h, 'before');
    // 1. A second A10 appears (hot-plug); its driver_override is a FIFO nobody reads: the agent's
    // write to it blocks in open(2) for real (a device that hangs; no VM involved).
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
    const mdevs = readdirSync(join(sys, 'bus/mdev/devices'));
    const objs = poolObjects();
    (objs[2]!.spec as { carving: { count: number } }).carving.count = 3;
    await applyPools(objs);
    await until('a third mdev carved while the GPU write is stuck', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.vgpu)?.capacity === 3 ? true : undefined));
    expect(driverOf(GPU2)).toBe('nvidia');
    await expectHeld(h, 'with a write stuck');
    // 2. A VMM nobody told the kubelet about (a QEMU started by hand on the host) opens the new mdev,
    // which the agent counts free (it cannot know: probing /dev/vfio is racy). The vGPU pool goes
    // back to two: the agent releases that mdev. Its `remove` is a FIFO nobody reads, so the agent's
    // write sits in open(2) as it would in D state, and the kernel gets the write (the test hands it
    // on): the witness records the violation of the foreign VMM and blocks it, asking the VMM to let
    // go, which it ignores, exactly as vfio_unregister_group_dev() does.
    const third = readdirSync(join(sys, 'bus/mdev/devices')).find((u) => !mdevs.includes(u))!;
    expect(third).toBeDefined();
    expect(third).not.toBe(h.vgpu);
    const foreign = await startVmm(kernel, { name: 'qemu-by-hand', deviceNodes: [join(dev, 'vfio', String(iommuGroupOf(sys, third)))] });
    const removeAttr = join(realpathSync(join(sys, 'bus/mdev/devices', third)), 'remove');
    rmSync(removeAttr);
    spawnSync('mkfifo', [removeAttr]);
    expect(lstatSync(removeAttr).isFIFO()).toBe(true);
    expectedViolation = (v) => v.holder === foreign.holder && v.device === third && v.path === `bus/mdev/devices/${third}/remove`;
    await applyPools(); // count back to 2
    const mdevStuck = `stuck: bus/mdev/devices/${third}/remove="1" has not returned for`;
    await until('the mdev release reported stuck on the vGPU pool', async () => ((await agentStatus()).pools?.find((x) => x.name === POOL.vgpu)?.message?.includes(mdevStuck) ? true : undefined), 30_000)
      .catch(async (err: unknown) => { throw new Error(`${String(err)}\n--- pools ---\n${JSON.stringify((await agentStatus()).pools)}`, { cause: err }); });
    let released = false;
    const relay = kernel.kernel.write(`bus/mdev/devices/${third}/remove`, '1').finally(() => { released = true; });
    await until('the kernel to ask the foreign VMM to let go', async () => (foreign.requests.length > 0 ? true : undefined), 10_000);
    expect(released).toBe(false);
    expect(kernel.violations.slice(rowFrom.violations).map((v) => [v.holder, v.device])).toEqual([[foreign.holder, third]]);
    expect(existsSync(join(sys, 'bus/mdev/devices', third))).toBe(true);
    // Every other device still proceeds while the kernel holds that release: the FC pool grows.
    const more = poolObjects();
    (more[3]!.spec as { carving: { count: number } }).carving.count = 3;
    await applyPools(more);
    await until('a third vport created while both writes are stuck', async () => ((await agentStatus()).pools?.find((p) => p.name === POOL.fc)?.capacity === 3 ? true : undefined));
    expect(released).toBe(false);
    await expectHeld(h, 'with two writes stuck, one of them held by the kernel for a VMM');
    await deleteVm(h);
    await expectReleased(h, ALL);
    // Unblock: the agent's writes return (read the FIFOs), the foreign VMM lets go (the kernel's
    // release goes through), then hot-unplug the second GPU.
    const mfd = openSync(removeAttr, constants.O_RDONLY | constants.O_NONBLOCK);
    await sleep(300);
    await foreign.stop();
    await relay;
    try { readSync(mfd, Buffer.alloc(64)); } catch { /* nothing written yet */ }
    closeSync(mfd);
    expect(existsSync(join(sys, 'bus/mdev/devices', third))).toBe(false);
    const fd = openSync(join(dir, 'driver_override'), constants.O_RDONLY | constants.O_NONBLOCK);
    await sleep(200);
    try { readSync(fd, Buffer.alloc(64)); } catch { /* nothing written yet */ }
    closeSync(fd);
    rmSync(join(dir, 'driver_override'), { force: true });
    writeFileSync(join(dir, 'driver_override'), '(null)\n');
    await kernel.kernel.write(`bus/pci/devices/${GPU2}/remove`, '1');
    await until('the GPU pool back to one GPU', async () => ((await planPools()).find((p) => p.name === POOL.gpu)?.devices.length === 1 ? true : undefined));
    await until('the vGPU pool back to two mdevs, nothing stuck', async () => {
      const p = (await agentStatus()).pools?.find((x) => x.name === POOL.vgpu);
      return p?.capacity === 2 && !p.message?.includes('stuck') ? true : undefined;
    });
  }));

  test('inventory grown past the status bound (2,048 functions, ours sorted last): the plan and the VM\'s slices stay, nothing is destroyed', () => row('inventory past the status bound', async () => {
    await baseline();
    const h = await startVm('bound');
    await expectHeld(h, 'before');
    const before = JSON.stringify(await planPools());
    const t0 = Date.now();
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
    await expectHeld(h, 'after the inventory grew', { nothingDestroyedSince: t0 });
    await deleteVm(h);
    await expectReleased(h, ALL);
  }));
});
