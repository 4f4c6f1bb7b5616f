// Runs INSIDE the real-kernel guest, called by dra-scenario.ts once its VF claim is unprepared, with
// the same agent (cluster mode, --dra) and the same host control plane: an on-demand mdev pool
// (`onDemand.mdevTypes: [mtty-1, mtty-2]`) on the kernel's mtty sample, whose types share the
// parent's 24 ports (an mtty-1 takes 1, an mtty-2 takes 2: `available_instances` of both drop
// together, the real counterpart of the simulated kernel's shared capacity). In order:
//  1. the mtty parent is empty when the agent starts (dra-scenario.ts clears it), so the agent learns
//     each type's capacity; here another user of the parent then takes 22 ports (11 mtty-2 with
//     UUIDs of nobody's), and the pool's published counters follow the kernel (2 units left);
//  2. a claim for an mtty-1 (created here, with its pod) is allocated by the real scheduler; the
//     agent creates that mdev — read from this kernel's /sys/bus/mdev/devices, not from the agent —,
//     sets Carved, and only then does the scheduler bind the pod; both types' available_instances drop;
//  3. a claim for an mtty-2, which no longer fits, stays unallocated and its pod unschedulable, with
//     the scheduler's reason;
//  4. NodePrepareResources for the first claim: its CDI spec (the mdev's /dev/vfio group) and KubeVirt's
//     metadata file (mdevUUID) are all the nested QEMU gets (`sysfsdev=/sys/bus/mdev/devices/<uuid>`),
//     and its `info pci` lists the mtty device;
//  5. unprepare, then the pod and the claim deleted (the guest plays the ResourceClaim controller and
//     drops the claim's finalizer): the agent removes the mdev, and the room is back.
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { loadDraV1Api } from '../../../proto/load.js';
import { api, CDI_DIR, grpcCall, type CdiSpec, type DraHelpers, type DraSetup, prepareClaim } from './dra-scenario.js';

/** The on-demand pool, its DeviceClass and the two claims (shared with the host's dra-cluster.ts and kernel.test.ts). */
export const OD = {
  pool: 'mtty-od',
  parent: 'mtty',
  types: ['mtty-1', 'mtty-2'],
  /** mtty's ports (MAX_MTTYS in samples/vfio-mdev/mtty.c), shared by its types. */
  ports: 24,
  /** Ports another user of the parent takes before the claims, as mtty-2 instances (11 × 2 = 22). */
  foreignMtty2: 11,
  fits: { claim: 'vm-serial-1', pod: 'virt-launcher-vm-serial-1', type: 'mtty-1' },
  tooBig: { claim: 'vm-serial-2', pod: 'virt-launcher-vm-serial-2', type: 'mtty-2' },
} as const;

const TYPES_DIR = `/sys/class/mdev_bus/${OD.parent}/mdev_supported_types`;
const MDEVS = '/sys/bus/mdev/devices';

/** available_instances of each mtty type, as the kernel shows it. */
function available(): Record<string, number> {
  return Object.fromEntries(OD.types.map((t) => [t, Number(readFileSync(join(TYPES_DIR, t, 'available_instances'), 'utf8').trim())]));
}

/** The mdevs on the mtty parent now: uuid → type. */
function mttyMdevs(): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(TYPES_DIR)) return out;
  for (const t of readdirSync(TYPES_DIR)) for (const u of readdirSync(join(TYPES_DIR, t, 'devices'))) out[u] = t;
  return out;
}

/** Removes every mdev on the mtty parent (what the standalone scenarios left); returns their UUIDs. */
export function clearMtty(): string[] {
  const gone = Object.keys(mttyMdevs());
  for (const u of gone) writeFileSync(join(MDEVS, u, 'remove'), '1');
  return gone;
}

/** What a write gives: 'ok' or the errno code. */
function tryWrite(path: string, value: string): string {
  try {
    writeFileSync(path, value);
    return 'ok';
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

export function claimFor(name: string, type: string): unknown {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: 'default' },
    spec: { devices: { requests: [{ name: 'serial', exactly: { deviceClassName: `${OD.pool}.virtualio.dev`, selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${type}"` } }] } }] } },
  };
}

export function podFor(name: string, claim: string): unknown {
  return {
    apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default' },
    spec: { resourceClaims: [{ name: 'serial', resourceClaimName: claim }], containers: [{ name: 'compute', image: 'example.invalid/virt-launcher:1', resources: { claims: [{ name: 'serial' }] } }], terminationGracePeriodSeconds: 0 },
  };
}

type Claim = {
  metadata: { uid: string; finalizers?: string[] };
  status?: { allocation?: { devices?: { results?: { request: string; pool: string; device: string }[] } }; devices?: { device: string; conditions?: { type: string; status: string; message?: string }[] }[]; reservedFor?: { name: string }[] };
};
type Pod = { spec?: { nodeName?: string }; status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } };
type Slice = { spec: { driver: string; pool: { name: string }; sharedCounters?: { name: string; counters: Record<string, { value: string }> }[]; devices?: { name: string }[] } };

export interface OnDemandContext {
  s: DraSetup;
  /** The DRA plugin's socket (from registration). */
  endpoint: string;
  agentAlive: () => boolean;
}

export async function onDemandScenario(od: Record<string, unknown>, h: DraHelpers, c: OnDemandContext): Promise<void> {
  const { s } = c;
  const t0 = performance.now();
  const ms = (): number => Math.round(performance.now() - t0);
  const ns = `/api/v1/namespaces/${s.namespace}`;
  const claims = `/apis/resource.k8s.io/v1/namespaces/${s.namespace}/resourceclaims`;
  const live = (): void => {
    if (!c.agentAlive()) throw new Error('the DRA agent exited');
  };
  const create = async (path: string, obj: unknown): Promise<void> => {
    const r = await api(s, 'POST', path, obj);
    if (r.status !== 201) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
  };
  /** The pool's counter set as the agent last published it. */
  const counters = async (): Promise<Record<string, string> | undefined> => {
    const r = (await api(s, 'GET', `/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.nodeName%3D${s.node}`)).body as { items?: Slice[] };
    const mine = (r.items ?? []).filter((i) => i.spec.driver === 'virtualio.dev' && i.spec.pool.name === `${s.node}/${OD.pool}`);
    od.publishedDevices = mine.reduce((n, i) => n + (i.spec.devices?.length ?? 0), 0);
    const set = mine.flatMap((i) => i.spec.sharedCounters ?? [])[0];
    return set ? Object.fromEntries(Object.entries(set.counters).map(([k, v]) => [k, v.value])) : undefined;
  };

  // 1. The empty parent as the agent learned it, then another user takes 22 of the 24 ports.
  od.availableEmpty = available();
  od.countersEmpty = await h.until('the on-demand pool published with the empty parent\'s room', async () => {
    live();
    const v = await counters();
    return v?.units === String(OD.ports) ? v : undefined;
  }, 60_000, 1000);
  const foreign = Array.from({ length: OD.foreignMtty2 }, () => randomUUID());
  for (const u of foreign) writeFileSync(join(TYPES_DIR, 'mtty-2', 'create'), u);
  od.availableWithForeign = available();
  od.countersWithForeign = await h.until('the published counters to follow the kernel (2 ports left)', async () => {
    live();
    const v = await counters();
    return v?.units === '2' ? v : undefined;
  }, 60_000, 1000);
  od.foreignPublishedAfterMs = ms();

  try {
    // 2. A claim for an mtty-1: the scheduler allocates, the agent carves, the scheduler binds.
    await create(claims, claimFor(OD.fits.claim, OD.fits.type));
    await create(`${ns}/pods`, podFor(OD.fits.pod, OD.fits.claim));
    const tClaim = performance.now();
    const claim = await h.until('the scheduler to allocate the mtty-1 claim', async () => {
      live();
      const cl = (await api(s, 'GET', `${claims}/${OD.fits.claim}`)).body as unknown as Claim;
      return cl.status?.allocation?.devices?.results?.length ? cl : undefined;
    }, 60_000, 500);
    od.allocation = claim.status?.allocation?.devices?.results;
    const device = od.allocation ? String((od.allocation as { device: string }[])[0]?.device) : '';
    const uuid = device.replace(/^mdev-/, '');
    od.uuid = uuid;
    // The kernel's own record of the mdev: under the parent, of the claimed type.
    const dir = join(MDEVS, uuid);
    await h.until(`mdev ${uuid} in ${MDEVS}`, () => existsSync(dir), 60_000, 250);
    od.carvedAfterMs = Math.round(performance.now() - tClaim);
    od.mdev = { type: basename(readlinkSync(join(dir, 'mdev_type'))), parent: basename(dirname(realpathSync(dir))), driver: basename(readlinkSync(join(dir, 'driver'))), group: basename(readlinkSync(join(dir, 'iommu_group'))) };
    od.availableAfterCarve = available();
    const bound = await h.until('the pod bound once the claim\'s device is Carved', async () => {
      live();
      const pod = (await api(s, 'GET', `${ns}/pods/${OD.fits.pod}`)).body as Pod;
      return pod.spec?.nodeName ? pod : undefined;
    }, 60_000, 500);
    od.boundAfterMs = Math.round(performance.now() - tClaim);
    od.podNodeName = bound.spec?.nodeName;
    const cl = (await api(s, 'GET', `${claims}/${OD.fits.claim}`)).body as unknown as Claim;
    od.deviceConditions = cl.status?.devices?.flatMap((x) => x.conditions ?? []).map((x) => ({ type: x.type, status: x.status, message: x.message }));
    const vion = (await api(s, 'GET', `/apis/virtualio.dev/v1alpha1/virtualionodes/${s.node}`)).body as { status?: { slices?: { id: string; carvedFor?: unknown }[] } };
    od.carvedFor = vion.status?.slices?.find((x) => x.id === uuid)?.carvedFor;
    // The kernel itself refuses an mtty-2 now (what the agent's CarveFailed path meets).
    const probe = randomUUID();
    od.kernelCreateMtty2 = tryWrite(join(TYPES_DIR, 'mtty-2', 'create'), probe);
    if (existsSync(join(MDEVS, probe))) writeFileSync(join(MDEVS, probe, 'remove'), '1');

    // 3. A claim for an mtty-2 no longer fits: unallocated, the pod unschedulable with the scheduler's reason.
    await create(claims, claimFor(OD.tooBig.claim, OD.tooBig.type));
    await create(`${ns}/pods`, podFor(OD.tooBig.pod, OD.tooBig.claim));
    const why = await h.until('the mtty-2 pod reported unschedulable', async () => {
      const pod = (await api(s, 'GET', `${ns}/pods/${OD.tooBig.pod}`)).body as Pod;
      return pod.status?.conditions?.find((x) => x.type === 'PodScheduled' && x.status === 'False' && x.reason === 'Unschedulable');
    }, 60_000, 500);
    od.tooBigReason = why.message;
    od.tooBigAllocation = ((await api(s, 'GET', `${claims}/${OD.tooBig.claim}`)).body as unknown as Claim).status?.allocation ?? null;
    od.tooBigMdevs = Object.values(mttyMdevs()).filter((t) => t === 'mtty-2').length; // the foreign 11 only
    // Out of the way before the room comes back (an unallocated claim has no finalizer).
    await api(s, 'DELETE', `${ns}/pods/${OD.tooBig.pod}?gracePeriodSeconds=0`);
    await api(s, 'DELETE', `${claims}/${OD.tooBig.claim}`);

    // 4. The kubelet's prepare, and the nested VM from its files only.
    const dra = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const ref = { namespace: s.namespace, name: OD.fits.claim, uid: claim.metadata.uid };
    const prepared = await prepareClaim(h, c.endpoint, ref, 'NodePrepareResources for the mtty-1 claim', 60_000);
    od.prepared = prepared.devices;
    const [kind, devName] = (prepared.devices[0]?.cdiDeviceIds[0] ?? '').split('=');
    const specs = readdirSync(CDI_DIR).filter((f) => f.endsWith('.json')).map((f) => ({ file: join(CDI_DIR, f), spec: JSON.parse(readFileSync(join(CDI_DIR, f), 'utf8')) as CdiSpec }));
    const hit = specs.find((x) => x.spec.kind === kind && x.spec.devices.some((dv) => dv.name === devName));
    if (!hit) throw new Error(`no CDI spec has device ${kind}=${devName}`);
    const edits = hit.spec.devices.find((dv) => dv.name === devName)?.containerEdits;
    od.deviceNodes = edits?.deviceNodes.map((n) => n.path);
    const mount = edits?.mounts?.find((m) => m.containerPath.endsWith('/virtualio.dev-metadata.json'));
    if (!mount) throw new Error(`the CDI device mounts no metadata file: ${JSON.stringify(edits)}`);
    const meta = JSON.parse(readFileSync(mount.hostPath, 'utf8')) as { requests: { devices: { attributes: Record<string, { string?: string }> }[] }[] };
    const fromMeta = meta.requests[0]?.devices[0]?.attributes.mdevUUID?.string ?? '';
    od.metadataMdevUUID = fromMeta;
    const tVm = performance.now();
    const vm = await h.startVm([`vfio-pci,sysfsdev=${MDEVS}/${fromMeta}`]);
    try {
      od.nestedVmStartMs = Math.round(performance.now() - tVm);
      const pci = await vm.command('info pci');
      od.infoPci = pci.split('\n').filter((l) => /PCI device/.test(l)).map((l) => l.trim());
      if (!/PCI device 4348:3253/.test(pci)) throw new Error(`the nested VM lacks the mtty device 4348:3253: ${pci}`);
    } finally {
      await vm.quit();
    }

    // 5. The pod is gone: unprepare, the claim deleted, and the agent removes the mdev.
    const un = await grpcCall<{ claims: typeof ref[] }, { claims: Record<string, { error: string }> }>(dra, c.endpoint, 'NodeUnprepareResources', { claims: [ref] });
    od.unprepareError = un.claims[ref.uid]?.error;
    od.filesAfterUnprepare = [hit.file, mount.hostPath].filter((f) => existsSync(f));
    const tGone = performance.now();
    await api(s, 'DELETE', `${ns}/pods/${OD.fits.pod}?gracePeriodSeconds=0`);
    await api(s, 'DELETE', `${claims}/${OD.fits.claim}`);
    // No controller manager runs: drop the claim's finalizer as the ResourceClaim controller would.
    await api(s, 'PATCH', `${claims}/${OD.fits.claim}`, { metadata: { finalizers: null } });
    od.claimGone = await h.until('the claim gone from the API', async () => (await api(s, 'GET', `${claims}/${OD.fits.claim}`)).status === 404, 30_000, 500);
    await h.until(`the agent to remove mdev ${uuid}`, () => {
      live();
      return !existsSync(dir);
    }, 90_000, 250);
    od.removedAfterMs = Math.round(performance.now() - tGone);
    od.availableAfterRemove = available();
  } finally {
    for (const u of foreign) if (existsSync(join(MDEVS, u))) writeFileSync(join(MDEVS, u, 'remove'), '1');
    od.mdevsLeft = mttyMdevs();
  }
}
