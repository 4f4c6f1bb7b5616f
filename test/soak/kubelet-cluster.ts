// The node of the real-kubelet churn soak (test/soak/kubelet-churn.ts, issue 21 "Day two"): a private
// real control plane (etcd, kube-apiserver, kube-scheduler, kube-controller-manager: the
// ResourceClaim controller makes and removes each pod's claim from its template), the REAL kubelet
// on the fake CRI runtime, TWO operator processes (dist/, leader election on a 4 s Lease) that plan
// the node from VirtualIODevices, and the REAL agent process (--dra, cluster mode) on the fake kernel
// daemon, which is the witness: VMs (test/sysfs/vmm.ts) hold their VFIO groups and vports open, and a
// destructive write reaching a held device is a violation.
// Pools, every mode on both front ends: SR-IOV VFs, mdevs, a passthrough GPU with its audio function
// and NPIV vports through the device plugin; VFs and mdevs through DRA.
// The cluster offers what the churn needs besides pods: agent restarts, operator fail-overs, the
// plan's identity, and the end-state readers (sysfs, ledger, DRA checkpoint, PodResources, claims).
// Needs root (the kubelet's folders are fixed) and takes the machine-wide kubelet lock.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ListPodResourcesResponse__Output } from '../../proto/generated/podresources/v1/ListPodResourcesResponse.js';
import { loadPodResourcesApi } from '../../proto/load.js';
import { LEASE_NAME } from '../../operator/src/kube/resources.js';
import { client, type Api } from '../bench/api.js';
import { REPO_ROOT, freePort, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { DEVICE_PLUGIN_DIR, startKubelet, type Kubelet } from '../cluster/kubelet.js';
import { ensureAgentBuilt, startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKernel, connectX6, emulexFc, gpuWithAudio, intel82599, mdevGpu } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { eventually, kubectlOk, untaintedNode } from '../support/cluster.js';
import { spawnOperator, type OperatorProcess } from '../support/operator-integration.js';
import { chartNodeOptions, ledgerEntries, sleep } from './sample.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

export const NODE = '127.0.0.1';
export const NS = 'default';
const OP_NS = 'virtualio-system';

/** One pool of the soak: how a pod asks for one of its slices, and how many it has. */
export interface SoakPool {
  name: string;
  frontEnd: 'DevicePlugin' | 'DRA';
  slices: number;
  /** The extended resource (device plugin) or the DeviceClass (DRA). */
  resourceName: string;
  /** The PCI function it carves (or passes through). */
  pf: string;
  spec: Record<string, unknown>;
}

const HW = { nic: '0000:81:00.0', nicDra: '0000:82:00.0', gpu: '0000:3b:00.0', audio: '0000:3b:00.1', vgpu: '0000:5e:00.0', vgpuDra: '0000:5f:00.0', hba: '0000:d8:00.0' };

function pool(name: string, frontEnd: SoakPool['frontEnd'], slices: number, pf: string, spec: Record<string, unknown>): SoakPool {
  return { name, frontEnd, slices, pf, resourceName: frontEnd === 'DRA' ? `${name}.virtualio.dev` : `virtualio.dev/${name}`, spec: { ...spec, frontEnd, deviceSelector: { pciAddresses: [pf] } } };
}

export const POOLS: SoakPool[] = [
  pool('net', 'DevicePlugin', 4, HW.nic, { class: 'NIC', carving: { mode: 'SRIOV', count: 4 } }),
  pool('vgpu', 'DevicePlugin', 2, HW.vgpu, { class: 'GPU', carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-222' }, kubevirt: { consumption: 'MediatedDevice' } }),
  pool('gpu', 'DevicePlugin', 1, HW.gpu, { class: 'GPU', carving: { mode: 'Passthrough' } }),
  pool('fc', 'DevicePlugin', 2, HW.hba, { class: 'Storage', carving: { mode: 'NPIV', count: 2, wwnPrefix: 'c05076' }, kubevirt: { consumption: 'HostDevice', permit: false } }),
  pool('net-dra', 'DRA', 2, HW.nicDra, { class: 'NIC', carving: { mode: 'SRIOV', count: 2 } }),
  pool('vgpu-dra', 'DRA', 2, HW.vgpuDra, { class: 'GPU', carving: { mode: 'Mediated', count: 2, mdevType: 'nvidia-222' }, kubevirt: { consumption: 'MediatedDevice' } }),
];

/** An operator replica: its identity, process and metrics port. */
export interface Replica { identity: string; proc: OperatorProcess; port: number }

/** What the kernel and the node's records hold at the end; every count is a leaked slice when non-zero. */
export interface NodeLeftovers {
  /** Carved devices against the plan (VFs per PF, mdevs, vports): |have − planned| summed. */
  sysfs: number;
  /** Grants in the agent's ledger, and slices its /status shows allocated. */
  ledger: number;
  agentAllocated: number;
  /** Devices PodResources still lists for our resources (device plugin and DRA). */
  podResources: number;
  /** Claims in the agent's DRA checkpoint, its CDI claim specs, and ResourceClaims left in the API. */
  draCheckpoint: number;
  cdiClaimSpecs: number;
  resourceClaims: number;
}

export class SoakCluster {
  cp!: ControlPlane;
  kubelet!: Kubelet;
  kernel!: KernelHandle;
  agent!: AgentProcess;
  api!: Api;
  readonly replicas: Replica[] = [];
  readonly base = mkdtempSync(join(tmpdir(), 'vio-ksoak-'));
  readonly stateDir = join(this.base, 'agent-state');
  readonly cdiDir = join(this.base, 'cdi');
  private agentArgs: string[] = [];
  /** Both processes run with the V8 flags the chart gives them (what ships). */
  private readonly agentEnv: Record<string, string> = chartNodeOptions('agent') ? { NODE_OPTIONS: chartNodeOptions('agent') } : {};
  private readonly operatorNodeArgs = chartNodeOptions('operator').split(/\s+/).filter(Boolean);
  private replicaSeq = 0;

  /** logLevel: the agent's; below info, its metrics address (an info line) stays unknown, so keep info or lower. */
  private readonly opts: { logLevel?: string; releaseGrace?: string };

  constructor(opts: { logLevel?: string; releaseGrace?: string } = {}) {
    this.opts = opts;
  }

  kubectl(args: string[], input?: string): Promise<string> {
    return kubectlOk(args, { input, kubeconfig: this.cp.kubeconfig, binDir: this.cp.binDir });
  }

  async start(): Promise<void> {
    await ensureAgentBuilt(); // dist/: the agent and the operator
    this.cp = await startControlPlane({ scheduler: true, controllerManager: true });
    this.api = client(this.cp);
    await this.kubectl(['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
    await waitCrdsEstablished((a) => this.kubectl(a), ['virtualionodes.virtualio.dev', 'virtualiodevices.virtualio.dev'], 60);
    await this.kubectl(['create', 'namespace', OP_NS]);
    this.kubelet = await startKubelet(this.cp);
    await untaintedNode((a) => this.kubectl(a), NODE, (k) => k.startsWith('node.kubernetes.io/'));
    rmSync(join(this.kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });

    const sys = join(this.base, 'sys');
    const dev = join(this.base, 'dev');
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(connectX6(HW.nic, { netdev: 'ens1f0np0', totalVFs: 8 }));
    await k.addFunction(intel82599(HW.nicDra, { netdev: 'eno49', totalVFs: 8 }));
    for (const f of gpuWithAudio(HW.gpu, HW.audio, { group: 60 })) await k.addFunction(f);
    await k.addFunction(mdevGpu(HW.vgpu, { instances: 8 }));
    await k.addFunction(mdevGpu(HW.vgpuDra, { instances: 8 }));
    await k.addFunction(emulexFc(HW.hba, { host: 5, wwpn: '10000090fa000001', wwnn: '20000090fa000001', maxNPIVVports: 8 }));
    this.kernel = await startKernel(sys, dev);

    for (let i = 0; i < 2; i++) await this.addReplica();
    const items = [
      ...POOLS.map((p) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: p.name }, spec: p.spec })),
      ...POOLS.filter((p) => p.frontEnd === 'DRA').map((p) => ({
        apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: p.name, namespace: NS },
        spec: { spec: { devices: { requests: [{ name: 'dev', exactly: { deviceClassName: p.resourceName } }] } } },
      })),
    ];
    await this.kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    mkdirSync(join(this.base, 'devinfo'));
    this.agentArgs = [
      '--node-name', NODE, '--kubeconfig', this.cp.kubeconfig, '--sysfs-root', sys, '--dev-root', dev,
      '--plugin-dir', DEVICE_PLUGIN_DIR, '--kubelet-dir', this.kubelet.rootDir, '--pod-resources-socket', this.kubelet.podResourcesSocket,
      '--devinfo-dir', join(this.base, 'devinfo'), '--cdi-dir', this.cdiDir, '--state-dir', this.stateDir,
      '--metrics-address', '127.0.0.1:0', '--rescan-interval', '2s', '--dra',
      '--release-grace', this.opts.releaseGrace ?? '1s', '--log-level', this.opts.logLevel ?? 'info',
    ];
    this.agent = await startAgent(this.agentArgs, this.agentEnv);
    await this.nodeServes(180_000);
    // The ServiceAccount admission wants the namespace's default ServiceAccount (the controller manager makes it).
    await eventually('the default ServiceAccount', async () => ((await this.api('GET', `/api/v1/namespaces/${NS}/serviceaccounts/default`)) ? true : undefined), 60_000, 250);
  }

  /** Starts one more operator replica (a new identity) and waits for its /healthz. */
  async addReplica(): Promise<Replica> {
    const identity = `op-${++this.replicaSeq}`;
    const port = await freePort();
    const proc = spawnOperator({
      repoRoot: REPO_ROOT, nodeBin: process.execPath, logFile: join(this.base, `${identity}.log`), nodeArgs: this.operatorNodeArgs,
      args: ['--kubeconfig', this.cp.kubeconfig, '--identity', identity, '--namespace', OP_NS, '--lease-duration', '4s', '--metrics-address', `127.0.0.1:${port}`, '--log-level', 'warn'],
    });
    const r = { identity, proc, port };
    this.replicas.push(r);
    await eventually(`${identity} serves /healthz`, async () => ((await fetch(`http://127.0.0.1:${port}/healthz`)).ok ? true : undefined), 60_000, 100);
    return r;
  }

  async lease(): Promise<{ holder: string; transitions: number }> {
    const l = await this.api('GET', `/apis/coordination.k8s.io/v1/namespaces/${OP_NS}/leases/${LEASE_NAME}`) as { spec?: { holderIdentity?: string; leaseTransitions?: number } };
    return { holder: l.spec?.holderIdentity ?? '', transitions: l.spec?.leaseTransitions ?? 0 };
  }

  /**
   * The leader goes (SIGKILL: it leaves the Lease to expire; SIGTERM: it releases it), a new replica
   * is started in its place (two stay), and this resolves once a live replica holds the Lease:
   * the ms from the signal to that.
   */
  async failOver(signal: 'SIGKILL' | 'SIGTERM'): Promise<{ from: string; to: string; ms: number }> {
    const from = (await this.lease()).holder;
    const leader = this.replicas.find((r) => r.identity === from);
    if (!leader) throw new Error(`the Lease holder ${JSON.stringify(from)} is none of the replicas ${this.replicas.map((r) => r.identity).join(', ')}`);
    const t0 = Date.now();
    const exit = leader.proc.kill(signal);
    this.replicas.splice(this.replicas.indexOf(leader), 1);
    await exit;
    await this.addReplica();
    const to = await eventually(`a new operator leader after ${signal} on ${from}`, async () => {
      const h = (await this.lease()).holder;
      return h && h !== from && this.replicas.some((r) => r.identity === h) ? h : undefined;
    }, 60_000, 100);
    return { from, to, ms: Date.now() - t0 };
  }

  /** The node's plan as the operator wrote it: generation and pools. */
  async plan(): Promise<{ generation: number; pools: string }> {
    const v = await this.api('GET', `/apis/virtualio.dev/v1alpha1/virtualionodes/${NODE}`) as { metadata: { generation: number }; spec?: { pools?: unknown[] } };
    return { generation: v.metadata.generation, pools: JSON.stringify(v.spec?.pools ?? []) };
  }

  /** The agent goes (SIGTERM or SIGKILL) while VMs hold slices; a new one starts and serves every pool again. */
  async restartAgent(signal: NodeJS.Signals): Promise<number> {
    await this.agent.stop(signal);
    const t0 = Date.now();
    this.agent = await startAgent(this.agentArgs, this.agentEnv);
    await this.nodeServes(60_000);
    return Date.now() - t0;
  }

  /**
   * Every pool Ready and registered with the kubelet in the agent's /status, all its slices
   * allocatable, and the Node advertising every device-plugin slice (a pod the scheduler places
   * before that would fail the kubelet's admission).
   */
  async nodeServes(timeoutMs: number): Promise<void> {
    type St = { pools?: { name: string; state: string; registered?: boolean; capacity?: number; allocatable?: number }[] };
    await eventually('every pool served', async () => {
      if (!this.agent.alive) throw new Error(`the agent exited (${this.agent.exitCode})`);
      const r = await this.agent.get('/status');
      const st = JSON.parse(r.text) as St;
      const ok = POOLS.every((p) => {
        const s = st.pools?.find((x) => x.name === p.name);
        return s?.state === 'Ready' && s.registered === true && s.capacity === p.slices && s.allocatable === p.slices;
      });
      if (!ok) return undefined;
      const n = await this.api('GET', `/api/v1/nodes/${NODE}`) as { status: { allocatable: Record<string, string> } };
      return POOLS.every((p) => p.frontEnd === 'DRA' || Number(n.status.allocatable[p.resourceName] ?? -1) === p.slices) ? true : undefined;
    }, timeoutMs, 250).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n--- agent /status ---\n${await this.agent.get('/status').then((r) => r.text, () => '-')}\n--- agent ---\n${this.agent.tail()}`, { cause: err });
    });
  }

  /** What is left on the node once every pod is gone (see NodeLeftovers). */
  async leftovers(): Promise<NodeLeftovers> {
    const sys = this.kernel.kernel.root;
    const vfs = (pf: string): number => readdirSync(join(sys, 'bus/pci/devices', pf)).filter((e) => /^virtfn\d+$/.test(e)).length;
    const list = (d: string): string[] => { try { return readdirSync(d); } catch { return []; } };
    const mdevs = (parent: string): number => list(join(sys, 'bus/mdev/devices')).filter((u) => list(join(sys, 'bus/pci/devices', parent)).includes(u)).length;
    const planned = Object.fromEntries(POOLS.map((p) => [p.name, p.slices]));
    const sysfs = Math.abs(vfs(HW.nic) - planned.net!) + Math.abs(vfs(HW.nicDra) - planned['net-dra']!) + Math.abs(mdevs(HW.vgpu) - planned.vgpu!)
      + Math.abs(mdevs(HW.vgpuDra) - planned['vgpu-dra']!) + Math.abs(list(join(sys, 'class/fc_vports')).length - planned.fc!);
    const st = JSON.parse((await this.agent.get('/status')).text) as { slices?: { allocation?: unknown }[] };
    let draCheckpoint = 0;
    try {
      draCheckpoint = (JSON.parse(readFileSync(join(this.kubelet.rootDir, 'plugins/virtualio.dev/checkpoint.json'), 'utf8')) as { claims?: unknown[] }).claims?.length ?? 0;
    } catch { /* none written */ }
    const claims = await this.api('GET', `/apis/resource.k8s.io/v1/namespaces/${NS}/resourceclaims`) as { items: unknown[] };
    return {
      sysfs,
      ledger: ledgerEntries(this.stateDir),
      agentAllocated: st.slices?.filter((s) => s.allocation).length ?? Number.NaN,
      podResources: await this.podResourcesDevices(),
      draCheckpoint,
      cdiClaimSpecs: list(this.cdiDir).filter((f) => f.includes('claim')).length,
      resourceClaims: claims.items.length,
    };
  }

  /** Devices of our resources (and DRA claims of our driver) the kubelet's PodResources lists. */
  async podResourcesDevices(): Promise<number> {
    const api = loadPodResourcesApi();
    const c = new api.v1.PodResourcesLister(`unix://${this.kubelet.podResourcesSocket}`, grpc.credentials.createInsecure());
    try {
      const r = await new Promise<ListPodResourcesResponse__Output>((res, rej) => c.List({}, (err, x) => (err || !x ? rej(err ?? new Error('empty List')) : res(x))));
      let n = 0;
      for (const p of r.podResources) {
        for (const ct of p.containers) {
          for (const d of ct.devices) if (d.resourceName.startsWith('virtualio.dev/')) n += d.deviceIds.length;
          for (const d of ct.dynamicResources ?? []) for (const cr of d.claimResources ?? []) if (cr.driverName === 'virtualio.dev') n++;
        }
      }
      return n;
    } finally {
      c.close();
    }
  }

  async close(): Promise<void> {
    await this.agent?.stop().catch(() => undefined);
    await Promise.all(this.replicas.map((r) => r.proc.kill('SIGTERM').catch(() => undefined)));
    await this.kubelet?.stop().catch(() => undefined);
    if (this.kubelet) rmSync(join(this.kubelet.rootDir, 'plugins/virtualio.dev'), { recursive: true, force: true });
    for (const f of readdirSync(DEVICE_PLUGIN_DIR)) if (f.startsWith('virtualio-')) rmSync(join(DEVICE_PLUGIN_DIR, f), { force: true });
    await this.kernel?.stop().catch(() => undefined);
    await this.cp?.stop().catch(() => undefined);
    await sleep(0);
    rmSync(this.base, { recursive: true, force: true });
  }
}
