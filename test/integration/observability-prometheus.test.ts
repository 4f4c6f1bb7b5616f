// A real Prometheus (Debian's package, test/observability/prometheus.sh) scraping a running cluster:
// a private control plane (etcd + kube-apiserver) with the virtualio CRDs, the built operator, and the
// built agent in cluster mode on one node (`obs-node`) of simulated hardware (the fake kernel over a
// temp sysfs tree: two ConnectX-6 and an NVMe with SR-IOV), served by the fake kubelet and PodResources;
// one NIC's pool is a DRA pool, whose claims this test prepares and unprepares over the agent's DRA
// socket as the kubelet does (a ResourceClaim in the API server, allocated to one of its devices).
// Prometheus scrapes both every second and evaluates the chart's rules (as `helm template` renders the
// PrometheusRule). Checked: every query of every dashboard panel returns data; the alerts are silent on
// the healthy cluster; a VF unbound from vfio-pci (written to the fake kernel's unbind, as an admin or a
// host driver would) makes the unhealthy-slice alert's expression non-empty and the alert fire; and
// the runbooks' read-only commands (kubectl get/describe, the agent's endpoints) run against it.
// Without Debian's prometheus (no root to refresh apt's lists, no network) the suite is reported
// skipped with the reason.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { jest } from '@jest/globals';
import YAML from 'yaml';
import { installCrdFiles, kubectlAt, spawnOperator, waitUntil, type OperatorProcess } from '../support/operator-integration.js';
import { REPO_ROOT, freePort, startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { ensureAgentBuilt, startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { FakeKubelet, FakePodResources } from '../fakes/kubelet.js';
import { FakeKernel, connectX6, nvmeWithSriov } from '../sysfs/kernel.js';
import { startKernel, type KernelHandle } from '../sysfs/kernel-daemon.js';
import { NAMESPACE, dashboard, expandQuery, prometheusTools, renderedRuleGroups, type Rule } from '../observability/tools.js';
import { runbookCommands, runnable, substitute } from '../observability/runbooks.js';
import { loadDraV1Api, loadPluginRegistrationApi } from '../../proto/load.js';

jest.setTimeout(300_000);

const tools = prometheusTools();
const skipReason = 'skip' in tools ? tools.skip : undefined;
if (skipReason) console.log(`observability-prometheus: skipped: ${skipReason}`);
const suite = skipReason ? describe.skip : describe;

const NODE = 'obs-node';
const NIC = '0000:81:00.0';
const NVME = '0000:83:00.0';
const DRA_NIC = '0000:82:00.0';
const AGENT_JOB = 'virtualio-agent-metrics';
const OPERATOR_JOB = 'virtualio-operator-metrics';
const POOLS = `
apiVersion: virtualio.dev/v1alpha1
kind: VirtualIODevice
metadata: {name: fast-net}
spec:
  class: NIC
  deviceSelector: {vendorIDs: ["15b3"], deviceIDs: ["101d"], pciAddresses: ["${NIC}"]}
  carving: {mode: SRIOV, count: 4}
  kubevirt: {consumption: SRIOVNetwork}
---
apiVersion: virtualio.dev/v1alpha1
kind: VirtualIODevice
metadata: {name: dra-net}
spec:
  class: NIC
  frontEnd: DRA
  deviceSelector: {pciAddresses: ["${DRA_NIC}"]}
  carving: {mode: SRIOV, count: 2}
  kubevirt: {consumption: HostDevice}
---
apiVersion: virtualio.dev/v1alpha1
kind: VirtualIODevice
metadata: {name: nvme-vf}
spec:
  class: Storage
  deviceSelector: {vendorIDs: ["144d"], deviceIDs: ["a824"]}
  carving: {mode: SRIOV, count: 2}
  kubevirt: {consumption: HostDevice}
`;
const NET = 'virtualio.dev/fast-net';
const NVME_RES = 'virtualio.dev/nvme-vf';

let dir: string;
let cp: ControlPlane | undefined;
let operator: OperatorProcess | undefined;
let operatorPort: number;
let kernel: KernelHandle | undefined;
let kubelet: FakeKubelet | undefined;
let podres: FakePodResources | undefined;
let agent: AgentProcess | undefined;
let prometheus: ChildProcess | undefined;
let promUrl: string;
let rules: Rule[];
let allocating: NodeJS.Timeout | undefined;
let preparing: NodeJS.Timeout | undefined;
let sys: string;
let dev: string;

const kubectl = (args: string[]): Promise<string> => kubectlAt((cp as ControlPlane).binDir, (cp as ControlPlane).kubeconfig, args);

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

async function query(q: string): Promise<Sample[]> {
  const res = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { status: string; error?: string; data?: { resultType: string; result: Sample[] | [number, string] } };
  if (body.status !== 'success') throw new Error(`query ${q}: ${body.error ?? res.status}`);
  const r = body.data?.result;
  if (body.data?.resultType === 'scalar' && Array.isArray(r)) return [{ metric: {}, value: r as [number, string] }];
  return (r as Sample[]) ?? [];
}

async function firing(): Promise<{ labels: Record<string, string>; state: string }[]> {
  const body = (await (await fetch(`${promUrl}/api/v1/alerts`)).json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
  return body.data.alerts;
}

/** One claim's NodePrepareResources or NodeUnprepareResources over the DRA plugin socket, as the kubelet calls it (v1). */
function draCall(socket: string, method: 'NodePrepareResources' | 'NodeUnprepareResources', claim: { namespace: string; name: string; uid: string }): Promise<{ error: string; devices?: unknown[] }> {
  const Client = grpc.makeGenericClientConstructor(loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service, 'DRAPlugin');
  const c = new Client(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Record<string, (r: unknown, cb: (e: Error | null, v: { claims: Record<string, { error: string; devices?: unknown[] }> }) => void) => void>;
  return new Promise((resolve, reject) => c[method]!({ claims: [claim] }, (e, v) => {
    (c as unknown as grpc.Client).close();
    if (e) reject(e);
    else resolve(v.claims[claim.uid] ?? { error: `no answer for claim ${claim.uid}` });
  }));
}

/** The plugin watcher's calls on a registration socket. */
function registrationCall(socket: string, method: 'GetInfo' | 'NotifyRegistrationStatus', req: object): Promise<unknown> {
  const Client = grpc.makeGenericClientConstructor(loadPluginRegistrationApi().pluginregistration.Registration.service, 'Registration');
  const c = new Client(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Record<string, (r: unknown, cb: (e: Error | null, v: unknown) => void) => void>;
  return new Promise((resolve, reject) => c[method]!(req, (e, v) => {
    (c as unknown as grpc.Client).close();
    if (e) reject(e);
    else resolve(v);
  }));
}

suite(`a real Prometheus against the agent and the operator of a running cluster${skipReason ? ` (skipped: ${skipReason})` : ''}`, () => {
  beforeAll(async () => {
    const bin = (tools as { bin: string }).bin;
    dir = mkdtempSync(join(tmpdir(), 'vio-obs-'));
    rules = renderedRuleGroups().flatMap((g) => g.rules);
    await ensureAgentBuilt(); // both bundles: the operator's is spawned too

    cp = await startControlPlane({ parentDir: dir });
    await installCrdFiles(cp.binDir, cp.kubeconfig,
      [join(REPO_ROOT, 'crds/virtualio.dev_virtualiodevices.yaml'), join(REPO_ROOT, 'crds/virtualio.dev_virtualionodes.yaml')],
      ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev']);
    await kubectl(['create', 'namespace', NAMESPACE]);
    await kubectl(['create', 'namespace', 'vms']);
    writeFileSync(join(dir, 'node.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } } }));
    await kubectl(['apply', '-f', join(dir, 'node.json')]);

    operatorPort = await freePort();
    operator = spawnOperator({
      repoRoot: REPO_ROOT, nodeBin: process.execPath, logFile: join(dir, 'operator.log'),
      args: ['--kubeconfig', cp.kubeconfig, '--namespace', NAMESPACE, '--identity', 'obs-operator', '--metrics-address', `127.0.0.1:${operatorPort}`],
    });

    sys = join(dir, 'sys');
    dev = join(dir, 'dev');
    const k = await FakeKernel.create(sys, dev);
    await k.addFunction(connectX6(NIC, { netdev: 'ens1f0np0', totalVFs: 8, numaNode: 0 }));
    await k.addFunction(connectX6(DRA_NIC, { netdev: 'ens2f0np0', totalVFs: 8, numaNode: 0 }));
    await k.addFunction(nvmeWithSriov(NVME, { name: 'nvme0', serial: 'S4YNNE0N800123', totalVFs: 4, numaNode: 0 }));
    kernel = await startKernel(sys, dev);
    kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
    podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
    agent = await startAgent([
      '--node-name', NODE, '--kubeconfig', cp.kubeconfig,
      '--sysfs-root', sys, '--dev-root', dev, '--plugin-dir', kubelet.pluginDir, '--pod-resources-socket', podres.socket,
      '--devinfo-dir', join(dir, 'devinfo'), '--rescan-interval', '2s', '--metrics-address', '127.0.0.1:0',
      '--dra', '--kubelet-dir', join(dir, 'kubelet'), '--cdi-dir', join(dir, 'cdi'),
    ]);
    await waitUntil('the agent reports its inventory', async () => (await kubectl(['get', 'vionode', NODE, '-o', 'jsonpath={.status.inventory.total}'])).trim() !== '', 60_000, 500);
    writeFileSync(join(dir, 'pools.yaml'), POOLS);
    await kubectl(['apply', '-f', join(dir, 'pools.yaml')]);
    const k8 = kubelet;
    await k8.waitFor('4 healthy VFs of fast-net', () => k8.lastList(NET)?.filter((d) => d.health === 'Healthy').length === 4, 90_000);
    await k8.waitFor('2 healthy VFs of nvme-vf', () => k8.lastList(NVME_RES)?.filter((d) => d.health === 'Healthy').length === 2, 90_000);

    // A VM holds a VF: its launcher pod exists (Pending: no scheduler here) and PodResources shows it.
    const held = k8.lastList(NET)?.[0]?.ID ?? '';
    writeFileSync(join(dir, 'pod.json'), JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'virt-launcher-vm1-x2x4z', namespace: 'vms', labels: { 'kubevirt.io': 'virt-launcher' } },
      spec: { containers: [{ name: 'compute', image: 'virt-launcher', resources: { limits: { [NET]: '1' } } }] },
    }));
    await kubectl(['apply', '-f', join(dir, 'pod.json')]);
    await k8.allocate(NET, [held]);
    await k8.allocate(NVME_RES, [k8.lastList(NVME_RES)?.[0]?.ID ?? '']);
    podres.hold({ namespace: 'vms', name: 'virt-launcher-vm1-x2x4z' }, NET, [held]);

    // A claim the scheduler would have allocated one of dra-net's devices to (the allocation written
    // to the claim's status as the scheduler does), prepared and unprepared as the kubelet does.
    const device = await waitUntil('a ResourceSlice of dra-net with 2 devices', async () => {
      const list = JSON.parse(await kubectl(['get', 'resourceslices', '-o', 'json'])) as { items: { spec: { pool: { name: string }; devices?: { name: string }[] } }[] };
      const rs = list.items.find((i) => i.spec.pool.name === `${NODE}/dra-net`);
      return rs?.spec.devices?.length === 2 ? rs.spec.devices[0]?.name : undefined;
    }, 90_000, 500);
    writeFileSync(join(dir, 'claim.json'), JSON.stringify({
      apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vm2-vf', namespace: 'vms' },
      spec: { devices: { requests: [{ name: 'vf', exactly: { deviceClassName: 'dra-net.virtualio.dev' } }] } },
    }));
    await kubectl(['apply', '-f', join(dir, 'claim.json')]);
    await kubectl(['patch', 'resourceclaim', '-n', 'vms', 'vm2-vf', '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: { allocation: { devices: { results: [{ request: 'vf', driver: 'virtualio.dev', pool: `${NODE}/dra-net`, device }] } } },
    })]);
    // The kubelet's plugin watcher: it reads the registration socket's info and confirms the driver.
    const regSocket = join(dir, 'kubelet/plugins_registry/virtualio.dev-reg.sock');
    await registrationCall(regSocket, 'GetInfo', {});
    await registrationCall(regSocket, 'NotifyRegistrationStatus', { pluginRegistered: true });
    const claimRef = { namespace: 'vms', name: 'vm2-vf', uid: (await kubectl(['get', 'resourceclaim', '-n', 'vms', 'vm2-vf', '-o', 'jsonpath={.metadata.uid}'])).trim() };
    const draSocket = join(dir, 'kubelet/plugins/virtualio.dev/dra.sock');
    const prepared = await draCall(draSocket, 'NodePrepareResources', claimRef);
    expect(prepared.error).toBe('');
    expect(await draCall(draSocket, 'NodeUnprepareResources', claimRef)).toEqual({ error: '' });

    // Prometheus: both programs every second, the chart's rules every second.
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const agentTarget = (agent.metricsUrl ?? (await agent.get('/healthz'), agent.metricsUrl) ?? '').replace(/^http:\/\//, '');
    writeFileSync(join(dir, 'rules.yaml'), YAML.stringify({ groups: renderedRuleGroups() }));
    writeFileSync(join(dir, 'prometheus.yml'), YAML.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [join(dir, 'rules.yaml')],
      scrape_configs: [
        // The labels the chart's ServiceMonitors give: job = the metrics Service's name, node = the agent pod's node.
        { job_name: AGENT_JOB, static_configs: [{ targets: [agentTarget], labels: { node: NODE } }] },
        { job_name: OPERATOR_JOB, static_configs: [{ targets: [`127.0.0.1:${operatorPort}`] }] },
      ],
    }));
    const log = createWriteStream(join(dir, 'prometheus.log'));
    prometheus = spawn(join(bin, 'prometheus'), [
      `--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    prometheus.stdout?.pipe(log);
    prometheus.stderr?.pipe(log);
    await waitUntil('Prometheus scrapes the agent and the operator', async () => (await query('sum(up)')).map((s) => s.value[1]).join() === '2', 60_000, 500);
    // Allocate keeps being called, as the kubelet does when pods start (the latency panels need rates).
    allocating = setInterval(() => void k8.allocate(NET, [held]).catch(() => undefined), 1000);
    // ...and so are prepare and unprepare (the DRA latency panel).
    preparing = setInterval(() => void draCall(draSocket, 'NodePrepareResources', claimRef)
      .then(() => draCall(draSocket, 'NodeUnprepareResources', claimRef)).catch(() => undefined), 1000);
  });

  afterAll(async () => {
    if (allocating) clearInterval(allocating);
    if (preparing) clearInterval(preparing);
    prometheus?.kill('SIGTERM');
    await agent?.stop('SIGTERM');
    await operator?.kill('SIGTERM');
    await kubelet?.stop();
    await podres?.stop();
    await kernel?.stop();
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('every query of every dashboard panel (and each variable) returns data', async () => {
    const d = dashboard();
    for (const v of d.templating.list.filter((x) => x.type === 'query')) {
      const q = typeof v.query === 'string' ? v.query : v.query.query;
      const m = /^label_values\((.*), *(\w+)\)$/.exec(q);
      if (!m) throw new Error(`variable ${v.name}: unexpected query ${q}`);
      const [, selector = '', label = ''] = m;
      const values = await waitUntil(`values of variable ${v.name}`, async () => {
        const res = (await (await fetch(`${promUrl}/api/v1/series?match[]=${encodeURIComponent(expandQuery(selector))}`)).json()) as { data: Record<string, string>[] };
        const got = [...new Set(res.data.map((s) => s[label]).filter(Boolean))];
        return got.length > 0 ? got.sort() : undefined;
      }, 30_000, 500);
      expect(values).toEqual(v.name === 'node' ? [NODE] : ['dra-net', 'fast-net', 'nvme-vf']);
    }
    const missing: string[] = [];
    for (const p of d.panels.filter((x) => x.type !== 'row')) {
      for (const t of p.targets ?? []) {
        const q = expandQuery(t.expr);
        try {
          await waitUntil(`data for "${p.title}" ${t.refId}`, async () => (await query(q)).some((s) => Number.isFinite(Number(s.value[1]))), 45_000, 1000);
        } catch {
          missing.push(`${p.title} [${t.refId}]: ${q}`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  test('silent while the cluster is healthy: no alert fires, every alert expression is empty', async () => {
    const active = (await firing()).filter((a) => a.state === 'firing');
    expect(active).toEqual([]);
    // Carving the pools made no slice count as turned unhealthy.
    expect((await query('virtualio_agent_slice_health_failures_total')).map((s) => [s.metric.pool, s.value[1]]).sort()).toEqual([['fast-net', '0'], ['nvme-vf', '0']]);
    const nonEmpty: string[] = [];
    for (const r of rules) {
      const got = await query(r.expr);
      if (got.length > 0) nonEmpty.push(`${r.alert}: ${JSON.stringify(got.map((s) => s.metric))}`);
    }
    expect(nonEmpty).toEqual([]);
  });

  test('a VF unbound from vfio-pci makes the unhealthy-slice alert fire (even though the agent re-binds it at once)', async () => {
    const rule = rules.find((r) => r.alert === 'VirtualIOSliceTurnedUnhealthy') as Rule;
    expect(await query(rule.expr)).toEqual([]);
    const vf = (kubelet as FakeKubelet).lastList(NET)?.[2]?.ID ?? '';
    await (kernel as KernelHandle).idle();
    await (kernel as KernelHandle).kernel.write('bus/pci/drivers/vfio-pci/unbind', vf);
    const got = await waitUntil('the alert expression to be non-empty', async () => {
      const r = await query(rule.expr);
      return r.length > 0 ? r : undefined;
    }, 30_000, 500);
    expect(got.map((s) => s.metric)).toEqual([expect.objectContaining({ job: AGENT_JOB, node: NODE, pool: 'fast-net' })]);
    const alert = await waitUntil('VirtualIOSliceTurnedUnhealthy firing', async () => (await firing()).find((a) => a.labels.alertname === 'VirtualIOSliceTurnedUnhealthy' && a.state === 'firing'), 30_000, 500);
    expect(alert.labels).toMatchObject({ severity: 'warning', pool: 'fast-net', node: NODE });
    // The agent has repaired it: the slice is Healthy again and bound to vfio-pci.
    await (kubelet as FakeKubelet).waitFor('VF healthy again', () => (kubelet as FakeKubelet).lastList(NET)?.find((d) => d.ID === vf)?.health === 'Healthy');
  });

  test('the runbooks\' read-only commands run against this cluster', async () => {
    const c = cp as ControlPlane;
    const status = JSON.parse((await (agent as AgentProcess).get('/status')).text) as { slices?: { id: string; pool: string }[] };
    const values = { node: NODE, pool: 'fast-net', slice: status.slices?.find((x) => x.pool === 'fast-net')?.id ?? '', device: NIC, namespace: 'vms', pod: 'virt-launcher-vm1-x2x4z' };
    const agentAddress = ((agent as AgentProcess).metricsUrl ?? '').replace(/^http:\/\//, '');
    // curl as the runbooks use it (after their port-forward), failing on an HTTP error; node's fetch
    // stands in so the test does not depend on curl being installed.
    const curl = 'curl() { node -e \'const u = process.argv.at(-1); fetch(/^https?:/.test(u) ? u : `http://${u}`).then(async (r) => { process.stdout.write(await r.text()); process.exit(r.ok ? 0 : 22); })\' -- "$@"; }';
    const ran: string[] = [];
    const failed: string[] = [];
    for (const cmd of runbookCommands()) {
      const how = runnable(cmd.command);
      if (!how) continue;
      let line = substitute(cmd.command, values);
      if (how === 'agent') line = line.replaceAll('localhost:8080', agentAddress);
      if (how === 'host') line = line.replace(/(^|\s)\/sys\//g, `$1${sys}/`).replace(/(^|\s)\/dev\/vfio/g, `$1${dev}/vfio`);
      const r = spawnSync('bash', ['-o', 'pipefail', '-c', `${curl}\n${line}`], {
        encoding: 'utf8', timeout: 30_000,
        env: { ...process.env, PATH: `${c.binDir}:${dirname(process.execPath)}:${process.env.PATH ?? ''}`, KUBECONFIG: c.kubeconfig },
      });
      if (r.status === 0) ran.push(`${cmd.runbook}: ${line}`);
      else failed.push(`${cmd.runbook}: ${line}: exit ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`);
    }
    expect(failed).toEqual([]);
    // Most of them run: every get/describe of pools and nodes, the agent's endpoints, the sysfs reads.
    expect(ran.length).toBeGreaterThan(40);
  });
});
