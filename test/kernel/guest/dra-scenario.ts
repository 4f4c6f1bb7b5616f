// Runs INSIDE the real-kernel guest, called by agent-scenarios.ts after the standalone scenarios: the
// agent in cluster mode with --dra against a REAL kube-apiserver on the host (reached through
// run.sh's restricted user network, see ../dra-cluster.ts for what the host set up), serving the igb
// PF as a pool with frontEnd DRA. The host's kube-scheduler allocates the claim of a pod to one of
// the VFs the agent published; this file then does the kubelet's part over the agent's gRPC
// sockets (plugin registration GetInfo + NotifyRegistrationStatus, then v1 DRAPlugin
// NodePrepareResources), starts a nested QEMU from what prepare produced and nothing else (the
// CDI spec named by the answer's CDI device ID → the /dev/vfio group node; KubeVirt's metadata file
// mounted by that spec → resource.kubernetes.io/pciBusID), checks the VF in the VM, and unprepares.
// The claim carries VF settings (a MAC and a VLAN): the agent runs with --vf-net-config and sets them
// on the igb PF with the host's iproute2 at prepare; `ip link show <pf>` is read after prepare and
// again after unprepare (the settings the VF had before are back).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDraV1Api, loadPluginRegistrationApi } from '../../../proto/load.js';
import { clearMtty, onDemandScenario } from './dra-ondemand.js';

export interface DraSetup { node: string; pool: string; namespace: string; claim: string; pod: string; server: string; servername: string; hostPort: number; ca: string; cert: string; key: string }

export interface DraHelpers {
  out: string;
  agentMain: string;
  podResourcesSocket: string;
  sh: (cmd: string, args: string[], timeoutMs?: number) => Promise<string>;
  until: <T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, everyMs?: number) => Promise<T>;
  startVm: (devices: string[]) => Promise<{ command: (c: string) => Promise<string>; quit: () => Promise<void> }>;
  log: (msg: string) => void;
}

const RUN = '/run/vio-dra';
const KUBELET_DIR = join(RUN, 'kubelet');
export const CDI_DIR = join(RUN, 'cdi');
const SYS = '/sys/bus/pci/devices';
/** The igb PF (run.sh: alone behind root port rp1, bus 01). */
const IGB_PF = '0000:01:00.0';

/** One apiserver request with the admin client certificate (a JSON body, or by default a merge patch for PATCH); resolves with status and parsed body. */
export function api(s: DraSetup, method: string, path: string, body?: unknown, contentType?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, s.server);
    const headers = body === undefined ? {} : { 'content-type': contentType ?? (method === 'PATCH' ? 'application/merge-patch+json' : 'application/json') };
    const req = request({ method, host: url.hostname, port: url.port, path: url.pathname + url.search, headers, ca: s.ca, cert: s.cert, key: s.key, servername: s.servername, timeout: 15_000 }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> });
        } catch {
          resolve({ status: res.statusCode ?? 0, body: { raw: text } });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timed out`)));
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

export function grpcCall<Req, Res>(service: grpc.ServiceDefinition, socket: string, method: string, req: Req): Promise<Res> {
  const Client = grpc.makeGenericClientConstructor(service, 'x');
  const c = new Client(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Record<string, (r: Req, o: grpc.CallOptions, cb: (e: Error | null, v: Res) => void) => void>;
  const call = c[method];
  if (!call) throw new Error(`no method ${method}`);
  return new Promise((resolve, reject) => call.call(c, req, { deadline: Date.now() + 30_000 }, (e, v) => {
    (c as unknown as grpc.Client).close();
    if (e) reject(e);
    else resolve(v);
  }));
}

/** 'connected', the error code, or 'timeout': what a TCP connect to host:port gives within 3 s. */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const c = connect({ host, port, timeout: 3000 });
    c.on('connect', () => {
      c.destroy();
      resolve('connected');
    });
    c.on('timeout', () => {
      c.destroy();
      resolve('timeout');
    });
    c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

export type PrepareResponse = { claims: Record<string, { devices: { requestNames: string[]; poolName: string; deviceName: string; cdiDeviceIds: string[] }[]; error: string }> };

/**
 * The kubelet's NodePrepareResources for one claim, retried like the kubelet retries a per-claim error
 * (the slice not carved or not on vfio-pci yet) until it succeeds or `timeoutMs` passes; the last
 * per-claim error is in the failure.
 */
export async function prepareClaim(h: Pick<DraHelpers, 'until'>, endpoint: string, ref: { namespace: string; name: string; uid: string }, what: string, timeoutMs: number): Promise<PrepareResponse['claims'][string]> {
  const dra = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
  let lastError = '';
  return h.until(what, async () => {
    const r = await grpcCall<{ claims: (typeof ref)[] }, PrepareResponse>(dra, endpoint, 'NodePrepareResources', { claims: [ref] });
    const c = r.claims[ref.uid];
    lastError = c?.error ?? 'no answer for the claim';
    return c && !c.error ? c : undefined;
  }, timeoutMs, 1000).catch((err: unknown) => {
    throw new Error(`${String(err)}; last per-claim error: ${lastError}`);
  });
}
export type CdiSpec = { kind: string; devices: { name: string; containerEdits: { deviceNodes: { path: string }[]; mounts?: { hostPath: string; containerPath: string }[] } }[] };

/** Brings up the guest's NIC to the host's apiserver (virtio-net on run.sh's restricted user network). */
async function netUp(h: DraHelpers): Promise<string> {
  await h.sh('modprobe', ['virtio_net']);
  const ifname = await h.until('the virtio-net interface', () => readdirSync('/sys/class/net').find((n) => {
    const drv = join('/sys/class/net', n, 'device/driver');
    return existsSync(drv) && basename(readlinkSync(drv)) === 'virtio_net';
  }), 20_000, 100);
  await h.sh('busybox', ['ip', 'addr', 'add', '10.0.2.15/24', 'dev', ifname]);
  await h.sh('busybox', ['ip', 'link', 'set', ifname, 'up']);
  return ifname;
}

export async function draScenario(d: Record<string, unknown>, h: DraHelpers): Promise<void> {
  const setupFile = join(h.out, 'dra', 'setup.json');
  d.interface = await netUp(h);
  // The host writes setup.json once its objects exist (it started the control plane while the guest ran).
  const s = await h.until('the host\'s control plane (dra/setup.json)', () => existsSync(setupFile) && (JSON.parse(readFileSync(setupFile, 'utf8')) as DraSetup), 180_000, 500);
  const ready = await h.until('the apiserver through the guest\'s NIC', async () => (await api(s, 'GET', '/readyz')).status === 200, 60_000, 500);
  d.apiserverReachable = ready;
  // restrict=on: the host itself (10.0.2.2 on QEMU's user network) is not reachable, not even the
  // apiserver's own port; only the guestfwd address is.
  d.hostPortDirect = await tryConnect('10.0.2.2', s.hostPort);
  if (d.hostPortDirect === 'connected') throw new Error(`the guest reached the host's port ${s.hostPort} directly at 10.0.2.2: the user network is not restricted`);

  mkdirSync(RUN, { recursive: true });
  // The on-demand pool's parent empty before the agent first sees it (it learns each type's capacity then).
  d.mttyLeftoversRemoved = clearMtty();
  const kubeconfig = join(h.out, 'dra', 'kubeconfig');
  const chunks: Buffer[] = [];
  const t0 = performance.now();
  const agent: ChildProcess = spawn(process.execPath, [
    h.agentMain, '--node-name', s.node, '--kubeconfig', kubeconfig, '--dra', '--kubelet-dir', KUBELET_DIR,
    '--plugin-dir', join(KUBELET_DIR, 'device-plugins'), '--pod-resources-socket', h.podResourcesSocket,
    '--devinfo-dir', join(RUN, 'devinfo'), '--cdi-dir', CDI_DIR, '--state-dir', join(RUN, 'state'),
    '--metrics-address', '127.0.0.1:9102', '--rescan-interval', '10s', '--vf-net-config', '--release-grace', '5s',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  agent.stdout?.on('data', (c: Buffer) => chunks.push(c));
  agent.stderr?.on('data', (c: Buffer) => chunks.push(c));
  let vm: Awaited<ReturnType<DraHelpers['startVm']>> | undefined;
  try {
    const claimPath = `/apis/resource.k8s.io/v1/namespaces/${s.namespace}/resourceclaims/${s.claim}`;
    // The real scheduler allocates the pod's claim once the agent's ResourceSlice lists a usable VF.
    type Claim = { metadata: { uid: string }; status?: { allocation?: { devices?: { results?: { request: string; driver: string; pool: string; device: string }[] } }; reservedFor?: { name: string }[] } };
    const claim = await h.until('the scheduler to allocate the claim', async () => {
      if (agent.exitCode !== null) throw new Error(`the agent exited ${agent.exitCode}`);
      const c = (await api(s, 'GET', claimPath)).body as unknown as Claim;
      return c.status?.allocation?.devices?.results?.length ? c : undefined;
    }, 240_000, 1000);
    d.claimAllocatedAfterMs = Math.round(performance.now() - t0);
    d.allocation = claim.status?.allocation?.devices?.results;
    d.reservedFor = claim.status?.reservedFor?.map((r) => r.name);
    const pod = (await api(s, 'GET', `/api/v1/namespaces/${s.namespace}/pods/${s.pod}`)).body as { spec?: { nodeName?: string } };
    d.podNodeName = pod.spec?.nodeName;
    const slices = (await api(s, 'GET', `/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D${s.node}`)).body as { items?: { spec: { driver: string; devices?: { name: string }[] } }[] };
    d.publishedDevices = (slices.items ?? []).filter((i) => i.spec.driver === 'virtualio.dev').flatMap((i) => (i.spec.devices ?? []).map((x) => x.name)).sort();

    // The kubelet's part: find the driver through its registration socket, accept it, prepare the claim.
    const reg = loadPluginRegistrationApi().pluginregistration.Registration.service;
    const regSocket = join(KUBELET_DIR, 'plugins_registry', 'virtualio.dev-reg.sock');
    const info = await h.until('the registration socket', async () => grpcCall<object, { type: string; name: string; endpoint: string; supportedVersions: string[] }>(reg, regSocket, 'GetInfo', {}), 60_000, 500);
    d.pluginInfo = info;
    if (!info.supportedVersions.includes('v1.DRAPlugin')) throw new Error(`the driver does not offer v1.DRAPlugin: ${JSON.stringify(info)}`);
    await grpcCall(reg, regSocket, 'NotifyRegistrationStatus', { pluginRegistered: true });
    const dra = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const ref = { namespace: s.namespace, name: s.claim, uid: claim.metadata.uid };
    const prepared = await prepareClaim(h, info.endpoint, ref, 'NodePrepareResources to succeed', 120_000);
    d.prepared = prepared.devices;
    const cdiId = prepared.devices[0]?.cdiDeviceIds[0] ?? '';
    // The VF settings on the PF, as the kernel reports them (the igb PF's netdev; its VF by virtfn link).
    const pfDir = join(SYS, IGB_PF);
    const pfNetdev = readdirSync(join(pfDir, 'net'))[0] ?? '';
    const vfDevice = String(claim.status?.allocation?.devices?.results?.[0]?.device ?? '');
    const vfIndex = readdirSync(pfDir).filter((l) => /^virtfn\d+$/.test(l)).map((l) => ({ n: Number(l.slice(6)), addr: basename(readlinkSync(join(pfDir, l))) }))
      .find((v) => `vf-${v.addr.replace(/[:.]/g, '-')}` === vfDevice)?.n;
    d.pfNetdev = pfNetdev;
    d.vfIndex = vfIndex;
    const vfInfo = async (): Promise<unknown> => ((JSON.parse(await h.sh('ip', ['-json', 'link', 'show', 'dev', pfNetdev])) as { vfinfo_list?: { vf: number }[] }[])[0]?.vfinfo_list ?? []).find((v) => v.vf === vfIndex);
    d.ipLinkShowPrepared = (await h.sh('ip', ['link', 'show', 'dev', pfNetdev])).split('\n').map((l) => l.trim()).filter((l) => l.startsWith(`vf ${vfIndex} `));
    d.vfInfoPrepared = await vfInfo();

    // The runtime's part, from the files only: the CDI spec holding that device, its device nodes and the metadata mount.
    const [kind, devName] = cdiId.split('=');
    const specs = readdirSync(CDI_DIR).filter((f) => f.endsWith('.json')).map((f) => ({ file: join(CDI_DIR, f), spec: JSON.parse(readFileSync(join(CDI_DIR, f), 'utf8')) as CdiSpec }));
    const hit = specs.find((x) => x.spec.kind === kind && x.spec.devices.some((dv) => dv.name === devName));
    if (!hit) throw new Error(`no CDI spec in ${CDI_DIR} has device ${cdiId} (files: ${specs.map((x) => x.file).join(', ')})`);
    const edits = hit.spec.devices.find((dv) => dv.name === devName)?.containerEdits;
    d.cdiSpec = basename(hit.file);
    d.deviceNodes = edits?.deviceNodes.map((n) => n.path);
    const mount = edits?.mounts?.find((m) => m.containerPath.endsWith('/virtualio.dev-metadata.json'));
    if (!mount) throw new Error(`the CDI device mounts no metadata file: ${JSON.stringify(edits)}`);
    d.metadataContainerPath = mount.containerPath;
    const meta = JSON.parse(readFileSync(mount.hostPath, 'utf8')) as { requests: { name: string; devices: { name: string; attributes: Record<string, { string?: string; int?: number }> }[] }[] };
    const pciBusId = meta.requests[0]?.devices[0]?.attributes['resource.kubernetes.io/pciBusID']?.string ?? '';
    d.pciBusID = pciBusId;
    const groupNode = (d.deviceNodes as string[]).find((p) => /^\/dev\/vfio\/\d+$/.test(p)) ?? '';
    d.groupNode = groupNode;
    d.groupNodeExists = existsSync(groupNode) && existsSync('/dev/vfio/vfio');
    d.sysfsGroup = existsSync(join(SYS, pciBusId, 'iommu_group')) ? `/dev/vfio/${basename(readlinkSync(join(SYS, pciBusId, 'iommu_group')))}` : 'none';
    d.driver = existsSync(join(SYS, pciBusId, 'driver')) ? basename(readlinkSync(join(SYS, pciBusId, 'driver'))) : 'none';
    if (!d.groupNodeExists || d.sysfsGroup !== groupNode) throw new Error(`CDI group node ${groupNode} (exists: ${String(d.groupNodeExists)}) is not ${pciBusId}'s group ${String(d.sysfsGroup)}`);

    // virt-launcher's part: the address from the metadata file, managed='no' (vfio-pci binding is the driver's job).
    const t = performance.now();
    vm = await h.startVm([`vfio-pci,host=${pciBusId}`]);
    d.nestedVmStartMs = Math.round(performance.now() - t);
    const pci = await vm.command('info pci');
    d.infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
    if (!/PCI device 8086:10ca/.test(pci)) throw new Error(`the nested VM lacks the igb VF 8086:10ca: ${pci}`);
    await vm.quit();
    vm = undefined;

    // The pod is gone: the kubelet unprepares, and the files go.
    const un = await grpcCall<{ claims: typeof ref[] }, { claims: Record<string, { error: string }> }>(dra, info.endpoint, 'NodeUnprepareResources', { claims: [ref] });
    d.unprepareError = un.claims[ref.uid]?.error;
    d.filesAfterUnprepare = [hit.file, mount.hostPath].filter((f) => existsSync(f));
    if (d.unprepareError !== '' || (d.filesAfterUnprepare as string[]).length > 0) throw new Error(`unprepare: error ${JSON.stringify(d.unprepareError)}, files left ${JSON.stringify(d.filesAfterUnprepare)}`);
    d.vfInfoUnprepared = await vfInfo();
    d.ipLinkShowUnprepared = (await h.sh('ip', ['link', 'show', 'dev', pfNetdev])).split('\n').map((l) => l.trim()).filter((l) => l.startsWith(`vf ${vfIndex} `));

    // The same agent, its on-demand mdev pool on the mtty sample (dra-ondemand.ts); its outcome is
    // recorded in d.onDemand (with its error), so the VF part above stands on its own.
    const od: Record<string, unknown> = {};
    d.onDemand = od;
    await onDemandScenario(od, h, { s, endpoint: info.endpoint, agentAlive: () => agent.exitCode === null && agent.signalCode === null }).catch((err: unknown) => {
      od.error = err instanceof Error ? err.message : String(err);
    });
  } finally {
    if (vm) await vm.quit();
    agent.kill('SIGTERM');
    await h.until('the DRA agent to exit', () => agent.exitCode !== null || agent.signalCode !== null, 30_000, 100).catch(() => agent.kill('SIGKILL'));
    writeFileSync(join(h.out, 'dra-agent.log'), Buffer.concat(chunks));
  }
}
