// The REAL agent process under the chart's RBAC and admission policy, authenticated exactly as in
// its DaemonSet pod: a token of the chart's agent ServiceAccount bound to a Pod on the agent's Node.
// The operator's plan is applied with the operator ServiceAccount's token. Hardware is the test's
// simulated kernel (sysfs tree that reacts to writes) and the kubelet is the fake kubelet; the API
// server, RBAC and the policy are real. Proves the chart grants what the agent actually does (create
// its VirtualIONode, watch it, read its Node and the launcher pod, apply status) and that an agent
// told the wrong node name cannot write another node's object.
import { jest } from '@jest/globals';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VirtualIONode } from '../../crds/generated/types.js';
import { REPO, startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { FakeKernel, connectX6 } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { clusterEnv, eventually, installCrds, kubectl, kubectlOk } from '../support/cluster.js';
import { apiRequest, CHART_DIR, ensureNamespace, helmOk, tokenFor, WITHOUT_CRDS } from './chart-support.js';

jest.setTimeout(180_000);

const NS = 'vio-policy-e2e';
const RELEASE = 'vio-e2e';
const AGENT_SA = `${RELEASE}-virtualio-agent`;
const OPERATOR_SA = `${RELEASE}-virtualio-operator`;
const NODE = 'policy-e2e-node';
const OTHER = 'policy-e2e-other';
const NIC = '0000:81:00.0';
const RES = 'virtualio.dev/e2e-net';

let dir: string;
let kernel: KernelHandle;
let kubelet: FakeKubelet;
let podres: FakePodResources;
const agents: AgentProcess[] = [];

/** A kubeconfig that authenticates with a bearer token, as in-cluster config does. */
function tokenKubeconfig(name: string, token: string): string {
  const env = clusterEnv();
  const file = join(dir, `${name}.kubeconfig`);
  writeFileSync(file, JSON.stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'c',
    clusters: [{ name: 'c', cluster: { server: env.server, 'certificate-authority': join(process.env.VIO_CP_DIR ?? '', 'ca.crt') } }],
    users: [{ name: 'u', user: { token } }],
    contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
  }), { mode: 0o600 });
  return file;
}

async function agentPodToken(node: string, pod: string): Promise<string> {
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }) });
  await kubectlOk(['apply', '--server-side', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: pod, namespace: NS },
      spec: { nodeName: node, serviceAccountName: AGENT_SA, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'virtualio:test' }] },
    }),
  });
  const uid = (await kubectlOk(['-n', NS, 'get', 'pod', pod, '-o', 'jsonpath={.metadata.uid}'])).trim();
  return tokenFor(NS, AGENT_SA, { name: pod, uid });
}

async function getVin(name: string): Promise<VirtualIONode | undefined> {
  const r = await kubectl(['get', 'virtualionode', name, '-o', 'json', '--show-managed-fields']);
  return r.code === 0 ? (JSON.parse(r.stdout) as VirtualIONode) : undefined;
}

function agentArgs(kubeconfig: string, nodeName: string): string[] {
  return [
    '--kubeconfig', kubeconfig, '--node-name', nodeName,
    '--sysfs-root', join(dir, 'sys'), '--dev-root', join(dir, 'dev'),
    '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket,
    '--devinfo-dir', join(dir, 'devinfo'), '--rescan-interval', '5s', '--metrics-address', '127.0.0.1:0',
  ];
}

beforeAll(async () => {
  await ensureNamespace(NS);
  await installCrds();
  await helmOk(['upgrade', '--install', RELEASE, CHART_DIR, '--namespace', NS, ...WITHOUT_CRDS]);
  dir = mkdtempSync(join(tmpdir(), 'vio-policy-e2e-'));
  const k = await FakeKernel.create(join(dir, 'sys'), join(dir, 'dev'));
  await k.addFunction(connectX6(NIC, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
  kernel = await startKernel(join(dir, 'sys'), join(dir, 'dev'));
  kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
});

afterAll(async () => {
  for (const a of agents) await a.stop('SIGKILL');
  await kubelet?.stop();
  await podres?.stop();
  await kernel?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the agent, as the chart deploys it, creates its VirtualIONode, follows the plan and reports the VM holding a slice', async () => {
  const kubeconfig = tokenKubeconfig('agent', await agentPodToken(NODE, 'agent-e2e'));
  const agent = await startAgent(agentArgs(kubeconfig, NODE));
  agents.push(agent);

  const first = await eventually('the agent to create and report its VirtualIONode', async () => {
    const v = await getVin(NODE);
    return v?.status?.inventory?.devices?.some((d) => d.pciAddress === NIC) ? v : undefined;
  }, 90_000);
  expect(first.metadata.managedFields?.filter((m) => m.subresource === 'status').map((m) => m.manager)).toContain('virtualio-agent');

  // The plan, applied with the chart's operator ServiceAccount (spec only).
  const operatorToken = await tokenFor(NS, OPERATOR_SA);
  const plan = {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: NODE },
    spec: { pools: [{ name: 'e2e-net', resourceName: RES, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 2, devices: [{ pciAddress: NIC }] }] },
  };
  const applied = await apiRequest(operatorToken, 'PATCH', `/apis/virtualio.dev/v1alpha1/virtualionodes/${NODE}?fieldManager=virtualio-operator&force=true`, plan, 'application/apply-patch+yaml');
  expect(applied.status).toBe(200);

  await eventually('the pool registered with two healthy VFs', async () => {
    const p = (await getVin(NODE))?.status?.pools?.[0];
    return p?.registered && p.allocatable === 2 ? p : undefined;
  }, 90_000);

  // A virt-launcher pod holds a VF; the agent reads the pod (RBAC: pods get) to name the VMI.
  await kubectlOk(['apply', '--server-side', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1', kind: 'Pod',
      metadata: {
        name: 'virt-launcher-e2e-vm', namespace: NS,
        labels: { 'kubevirt.io': 'virt-launcher', 'kubevirt.io/created-by': '5f0c1d2e-0000-4000-8000-000000000001' },
        ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: 'e2e-vm', uid: '5f0c1d2e-0000-4000-8000-000000000001', controller: true }],
      },
      spec: { nodeName: NODE, automountServiceAccountToken: false, containers: [{ name: 'compute', image: 'registry.invalid/virt-launcher:none' }] },
    }),
  });
  const vf = kubelet.lastList(RES)?.[1]?.ID ?? '';
  podres.setPods([{ name: 'virt-launcher-e2e-vm', namespace: NS, containers: [{ name: 'compute', devices: [{ resourceName: RES, deviceIds: [vf] }] }] }]);
  await kubelet.allocate(RES, [vf]);
  const held = await eventually('the allocation in status', async () => {
    const v = await getVin(NODE);
    return v?.status?.slices?.find((s) => s.id === vf)?.allocation ? v : undefined;
  }, 90_000);
  expect(held.status?.slices?.find((s) => s.id === vf)?.allocation).toMatchObject({ namespace: NS, pod: 'virt-launcher-e2e-vm', vmi: 'e2e-vm' });
  // Nothing the agent did was refused.
  expect(agent.logs.filter((l) => JSON.stringify(l).includes('forbidden'))).toEqual([]);
});

test("an agent told another node's name cannot create or write that node's VirtualIONode", async () => {
  // The token is bound to a Pod on NODE, but the process is started with --node-name OTHER.
  const kubeconfig = tokenKubeconfig('confused', await agentPodToken(NODE, 'agent-e2e-confused'));
  // Its own state folder: on the same one it would rightly wait for the node lock the first agent holds.
  const agent = await startAgent([...agentArgs(kubeconfig, OTHER), '--state-dir', join(dir, 'state-confused')]);
  agents.push(agent);
  const refused = await eventually('the API server to refuse the agent', async () => (
    agent.logs.find((l) => JSON.stringify(l).includes(`may only write VirtualIONode ${NODE}, not ${OTHER}`))
  ), 90_000);
  expect(refused).toBeDefined();
  expect(await getVin(OTHER)).toBeUndefined();
});

test('the operator, as the chart deploys it, leads, plans a pool onto the node and writes the pool status, with no request refused', async () => {
  // A private, fresh build of the working tree (inside node_modules so that packages resolve).
  const out = join(REPO, 'node_modules/.cache/vio-policy-e2e', String(process.pid));
  const main = join(out, 'operator/src/main.js');
  const r = spawnSync(process.execPath, [join(REPO, 'node_modules/typescript/bin/tsc'), '-p', join(REPO, 'tsconfig.build.json'), '--outDir', out], { cwd: REPO, encoding: 'utf8' });
  if (!existsSync(main)) throw new Error(`operator build failed: ${r.stdout}${r.stderr}`);
  const kubeconfig = tokenKubeconfig('operator', await tokenFor(NS, OPERATOR_SA));
  const lines: string[] = [];
  const proc: ChildProcess = spawn(process.execPath, [main, '--kubeconfig', kubeconfig, '--namespace', NS, '--identity', 'e2e-operator-0',
    '--metrics-address', '127.0.0.1:0', '--kubevirt-namespace', 'kubevirt', '--log-level', 'debug'], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (c: Buffer) => lines.push(...c.toString('utf8').split('\n').filter(Boolean)));
  proc.stderr?.on('data', (c: Buffer) => lines.push(...c.toString('utf8').split('\n').filter(Boolean)));
  try {
    await kubectlOk(['apply', '--server-side', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'e2e-operator-pool' },
        spec: { class: 'NIC', nodeSelector: { matchLabels: { 'kubernetes.io/hostname': NODE } }, deviceSelector: { pciAddresses: [NIC] },
          carving: { mode: 'SRIOV', count: 2 }, kubevirt: { permit: false } },
      }),
    });
    await kubectlOk(['label', 'node', NODE, `kubernetes.io/hostname=${NODE}`, '--overwrite']);
    const lease = await eventually('the operator to hold the Lease', async () => {
      const r = await kubectl(['-n', NS, 'get', 'lease', 'virtualio-operator', '-o', 'jsonpath={.spec.holderIdentity}']);
      return r.code === 0 && r.stdout.trim() === 'e2e-operator-0' ? r.stdout.trim() : undefined;
    }, 60_000);
    expect(lease).toBe('e2e-operator-0');
    await eventually('the plan for the pool on the node', async () => {
      const v = await getVin(NODE);
      return v?.spec?.pools?.some((p) => p.name === 'e2e-operator-pool') ? true : undefined;
    }, 60_000);
    const pool = await eventually('pool status with a finalizer', async () => {
      const r = await kubectl(['get', 'virtualiodevice', 'e2e-operator-pool', '-o', 'json']);
      const o = r.code === 0 ? JSON.parse(r.stdout) : undefined;
      return o?.status?.conditions?.length && o.metadata.finalizers?.length ? o : undefined;
    }, 60_000);
    expect(pool.status.observedGeneration).toBe(pool.metadata.generation);
    // A second pool with the same resource name: both conflict, and the operator records Warning
    // Events (RBAC: events in `default`, where Events about cluster-scoped objects must go).
    await kubectlOk(['apply', '--server-side', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: 'e2e-operator-pool-b' },
        spec: { class: 'NIC', resourceName: 'virtualio.dev/e2e-operator-pool', deviceSelector: { pciAddresses: ['0000:82:00.0'] },
          carving: { mode: 'SRIOV', count: 2 }, kubevirt: { permit: false } },
      }),
    });
    const event = await eventually('a Warning Event about the conflict in default', async () => {
      const r = await kubectl(['-n', 'default', 'get', 'events', '--field-selector', 'involvedObject.name=e2e-operator-pool-b', '-o', 'json']);
      const items = r.code === 0 ? (JSON.parse(r.stdout) as { items: { type: string; reason: string }[] }).items : [];
      return items.find((e) => e.type === 'Warning');
    }, 60_000);
    expect(event.reason).toBe('ResourceNameConflict');
    expect(lines.filter((l) => /forbidden/i.test(l))).toEqual([]);
    rmSync(out, { recursive: true, force: true });
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
});
