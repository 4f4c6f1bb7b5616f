// Inside the guest, after the DRA scenario (same apiserver, same credentials): an on-demand NVMe
// queue pool (onDemand.nvmeQueues, issue 19) on QEMU's emulated NVMe with SR-IOV and flexible
// resources. This file adds the pool to the node's plan, the pool's DeviceClass, a claim for a VF
// with 4 queues and a pod using it (as an admin and the operator would); the host's REAL
// kube-scheduler allocates the claim from the agent's ResourceSlice and binds the pod once the agent
// reports Carved. The drive's own answer (`nvme list-secondary`, `nvme primary-ctrl-caps` in the
// guest, not the agent's report) must show the VF's secondary controller Online with 4 VQ; prepare
// (the kubelet's call over gRPC) hands that VF. After unprepare, the pod's and the claim's deletion,
// the controller must be Offline with 0 VQ / 0 VI and the primary's assigned count back.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNvmeDevice } from '../../../device-plugin/src/carving/ondemand-nvme.js';
import { deviceClassFor } from '../../../device-plugin/src/dra/devices.js';
import { loadDraV1Api, loadPluginRegistrationApi } from '../../../proto/load.js';
import { api, grpcCall, prepareClaim, type DraHelpers, type DraSetup } from './dra-scenario.js';

/** The pool, its claim and pod; kernel.test.ts asserts on these names. */
export const NVMEQ = { pool: 'nvme-queues', claim: 'vm-nvme-q4', pod: 'virt-launcher-vm-nvme-q4', queues: 4 } as const;

/** The NVMe PF (run.sh: alone behind root port rp2, bus 02). */
const NVME_PF = '0000:02:00.0';
const SYS = '/sys/bus/pci/devices';
const RUN = '/run/vio-nvmeq';
const KUBELET_DIR = join(RUN, 'kubelet');

type Api = (method: string, path: string, body?: unknown, contentType?: string) => Promise<{ status: number; body: Record<string, unknown> }>;

function apiFor(s: DraSetup): Api {
  return (method, path, body, contentType) => api(s, method, path, body, contentType);
}

async function ok(api: Api, method: string, path: string, body?: unknown, contentType?: string): Promise<Record<string, unknown>> {
  const r = await api(method, path, body, contentType);
  if (r.status < 200 || r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
  return r.body;
}

type Secondary = Record<string, number>;
type Claim = { metadata: { uid: string; finalizers?: string[] }; status?: { allocation?: { devices?: { results?: { request: string; driver: string; pool: string; device: string }[] } }; devices?: { device: string; conditions?: { type: string; status: string; message?: string }[] }[] } };

export async function draNvmeScenario(d: Record<string, unknown>, h: DraHelpers): Promise<void> {
  const s = JSON.parse(readFileSync(join(h.out, 'dra', 'setup.json'), 'utf8')) as DraSetup;
  const api = apiFor(s);
  const ctrl = readdirSync(join(SYS, NVME_PF, 'nvme'))[0] as string;
  const dev = `/dev/${ctrl}`;
  const secondaries = async (): Promise<Secondary[]> => (JSON.parse(await h.sh('nvme', ['list-secondary', dev, '-o', 'json'])) as { 'secondary-controllers': Secondary[] })['secondary-controllers'];
  const caps = async (): Promise<Record<string, number>> => JSON.parse(await h.sh('nvme', ['primary-ctrl-caps', dev, '-o', 'json'])) as Record<string, number>;
  const vfs = readdirSync(join(SYS, NVME_PF)).filter((l) => /^virtfn\d+$/.test(l)).length;

  // The earlier scenarios' standalone agent sized and onlined every VF's controller (a pre-carved
  // pool) and one VF went to the nvme driver: as an admin would before handing the drive to a queue
  // pool, the guest takes its VFs off nvme and sets every controller Offline with nothing assigned.
  for (const l of readdirSync(join(SYS, NVME_PF)).filter((x) => /^virtfn\d+$/.test(x))) {
    const vf = readFileSync(join(SYS, NVME_PF, l, 'uevent'), 'utf8').match(/PCI_SLOT_NAME=(\S+)/)?.[1] ?? '';
    if (existsSync(join(SYS, vf, 'driver')) && readdirSync('/sys/bus/pci/drivers/nvme').includes(vf)) writeFileSync('/sys/bus/pci/drivers/nvme/unbind', vf);
  }
  for (const sc of await secondaries()) {
    const id = String(sc['secondary-controller-identifier']);
    if (sc['secondary-controller-state'] === 1) await h.sh('nvme', ['virt-mgmt', dev, '-c', id, '-a', '7', '-n', '0']);
    for (const r of ['0', '1']) await h.sh('nvme', ['virt-mgmt', dev, '-c', id, '-r', r, '-a', '8', '-n', '0']);
  }
  d.vfsEnabled = vfs;
  d.secondariesBefore = await secondaries();
  d.capsBefore = await caps();

  // The pool in the node's plan (what the operator writes), its DeviceClass, a claim for 4 queues, the pod.
  const pool = { name: NVMEQ.pool, resourceName: `virtualio.dev/${NVMEQ.pool}`, class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: vfs, onDemand: { nvmeQueues: [2, NVMEQ.queues] }, devices: [{ pciAddress: NVME_PF }] };
  await ok(api, 'PATCH', `/apis/virtualio.dev/v1alpha1/virtualionodes/${s.node}`, [{ op: 'add', path: '/spec/pools/-', value: pool }], 'application/json-patch+json');
  const cls = deviceClassFor(NVMEQ.pool);
  await ok(api, 'POST', '/apis/resource.k8s.io/v1/deviceclasses', cls);
  const ns = s.namespace;
  await ok(api, 'POST', `/apis/resource.k8s.io/v1/namespaces/${ns}/resourceclaims`, {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: NVMEQ.claim, namespace: ns },
    spec: { devices: { requests: [{ name: 'disk', exactly: { deviceClassName: cls.metadata.name, selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].nvmeQueues == ${NVMEQ.queues}` } }] } }] } },
  });
  await ok(api, 'POST', `/api/v1/namespaces/${ns}/pods`, {
    apiVersion: 'v1', kind: 'Pod', metadata: { name: NVMEQ.pod, namespace: ns },
    spec: { resourceClaims: [{ name: 'disk', resourceClaimName: NVMEQ.claim }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'disk' }] } }] },
  });

  mkdirSync(RUN, { recursive: true });
  const chunks: Buffer[] = [];
  const t0 = performance.now();
  const agent: ChildProcess = spawn(process.execPath, [
    h.agentMain, '--node-name', s.node, '--kubeconfig', join(h.out, 'dra', 'kubeconfig'), '--dra', '--kubelet-dir', KUBELET_DIR,
    '--plugin-dir', join(KUBELET_DIR, 'device-plugins'), '--pod-resources-socket', h.podResourcesSocket,
    '--devinfo-dir', join(RUN, 'devinfo'), '--cdi-dir', join(RUN, 'cdi'), '--state-dir', join(RUN, 'state'),
    '--metrics-address', '127.0.0.1:9103', '--rescan-interval', '10s', '--release-grace', '5s',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  agent.stdout?.on('data', (c: Buffer) => chunks.push(c));
  agent.stderr?.on('data', (c: Buffer) => chunks.push(c));
  const claimPath = `/apis/resource.k8s.io/v1/namespaces/${ns}/resourceclaims/${NVMEQ.claim}`;
  const podPath = `/api/v1/namespaces/${ns}/pods/${NVMEQ.pod}`;
  try {
    const alive = (): void => {
      if (agent.exitCode !== null) throw new Error(`the agent exited ${agent.exitCode}`);
    };
    const slices = (await h.until('the agent to publish the queue pool', async () => {
      alive();
      const b = (await api('GET', `/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D${s.node}`)).body as { items?: { spec: { pool: { name: string }; devices?: { name: string }[]; sharedCounters?: { name: string; counters: Record<string, { value: string }> }[] } }[] };
      const mine = (b.items ?? []).filter((i) => i.spec.pool.name === `${s.node}/${NVMEQ.pool}`);
      return mine.some((i) => i.spec.devices?.length) ? mine : undefined;
    }, 180_000, 1000));
    d.publishedDevices = slices.flatMap((i) => (i.spec.devices ?? []).map((x) => x.name)).sort();
    d.publishedCounters = slices.flatMap((i) => i.spec.sharedCounters ?? []);
    // The scheduler allocates, the agent sizes and onlines the controller, reports Carved, the pod is bound.
    const claim = await h.until('the scheduler to allocate the claim and bind the pod', async () => {
      alive();
      const c = (await api('GET', claimPath)).body as unknown as Claim;
      const pod = (await api('GET', podPath)).body as { spec?: { nodeName?: string } };
      return c.status?.allocation?.devices?.results?.length && pod.spec?.nodeName ? c : undefined;
    }, 240_000, 1000);
    d.boundAfterMs = Math.round(performance.now() - t0);
    const result = claim.status?.allocation?.devices?.results?.[0];
    d.allocation = result;
    d.deviceConditions = claim.status?.devices?.flatMap((x) => (x.conditions ?? []).map((c) => ({ device: x.device, type: c.type, status: c.status, message: c.message })));
    d.podNodeName = ((await api('GET', podPath)).body as { spec?: { nodeName?: string } }).spec?.nodeName;

    // The drive's word, not the agent's: the allocated VF's secondary controller.
    const vfAddr = parseNvmeDevice(String(result?.device ?? ''))?.vf ?? '';
    const vfIndex = Number(readdirSync(join(SYS, NVME_PF)).find((l) => /^virtfn\d+$/.test(l) && readFileSync(join(SYS, NVME_PF, l, 'uevent'), 'utf8').includes(`PCI_SLOT_NAME=${vfAddr}`))?.slice(6) ?? -1);
    d.vf = vfAddr;
    d.vfIndex = vfIndex;
    const mine = (list: Secondary[]): Secondary | undefined => list.find((x) => x['virtual-function-number'] === vfIndex + 1);
    d.secondaryAllocated = mine(await secondaries());
    d.capsAllocated = await caps();

    // The kubelet's part: registration, then prepare; the answer names the VF.
    const reg = loadPluginRegistrationApi().pluginregistration.Registration.service;
    const regSocket = join(KUBELET_DIR, 'plugins_registry', 'virtualio.dev-reg.sock');
    const info = await h.until('the registration socket', async () => grpcCall<object, { endpoint: string }>(reg, regSocket, 'GetInfo', {}), 60_000, 500);
    await grpcCall(reg, regSocket, 'NotifyRegistrationStatus', { pluginRegistered: true });
    const draApi = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const ref = { namespace: ns, name: NVMEQ.claim, uid: claim.metadata.uid };
    const prepared = await prepareClaim(h, info.endpoint, ref, 'NodePrepareResources to succeed', 120_000);
    d.prepared = prepared.devices;
    const metaDir = join(RUN, 'cdi');
    const meta = readdirSync(metaDir).filter((f) => f.endsWith('.json')).map((f) => readFileSync(join(metaDir, f), 'utf8')).join('\n');
    const metaFile = /"hostPath":\s*"([^"]+virtualio\.dev-metadata\.json)"/.exec(meta)?.[1] ?? '';
    d.pciBusID = existsSync(metaFile) ? (JSON.parse(readFileSync(metaFile, 'utf8')) as { requests: { devices: { attributes: Record<string, { string?: string }> }[] }[] }).requests[0]?.devices[0]?.attributes['resource.kubernetes.io/pciBusID']?.string : 'no metadata file';
    d.vfDriver = existsSync(join(SYS, vfAddr, 'driver')) ? readFileSync(join(SYS, vfAddr, 'uevent'), 'utf8').match(/DRIVER=(\S+)/)?.[1] : 'none';
    const sa = d.secondaryAllocated as Secondary | undefined;
    if (sa?.['secondary-controller-state'] !== 1 || sa['num-virtual-queues'] !== NVMEQ.queues) throw new Error(`the allocated VF's secondary controller is not Online with ${NVMEQ.queues} VQ: ${JSON.stringify(sa)}`);

    // The pod goes: unprepare, the pod and the claim deleted (the finalizer removed as the resource
    // claim controller would; none runs on the host).
    const un = await grpcCall<{ claims: typeof ref[] }, { claims: Record<string, { error: string }> }>(draApi, info.endpoint, 'NodeUnprepareResources', { claims: [ref] });
    d.unprepareError = un.claims[ref.uid]?.error;
    const t1 = performance.now();
    await ok(api, 'DELETE', `${podPath}?gracePeriodSeconds=0`);
    await ok(api, 'DELETE', claimPath);
    const left = await api('GET', claimPath);
    if (left.status === 200) await ok(api, 'PATCH', claimPath, { metadata: { finalizers: null } }, 'application/merge-patch+json');
    d.secondaryReleased = await h.until('the controller Offline with its resources returned', async () => {
      alive();
      const sc = mine(await secondaries());
      return sc && sc['secondary-controller-state'] === 0 && sc['num-virtual-queues'] === 0 && sc['num-virtual-interrupts'] === 0 ? sc : undefined;
    }, 120_000, 1000);
    d.releasedAfterMs = Math.round(performance.now() - t1);
    d.capsReleased = await caps();
  } finally {
    agent.kill('SIGTERM');
    await h.until('the NVMe DRA agent to exit', () => agent.exitCode !== null || agent.signalCode !== null, 30_000, 100).catch(() => agent.kill('SIGKILL'));
    writeFileSync(join(h.out, 'dra-nvme-agent.log'), Buffer.concat(chunks));
  }
}
