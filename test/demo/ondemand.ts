// The demo's on-demand step (issue 19, docs/dra.md "Carving on demand"): a DRA pool carves nothing
// ahead on the demo host's second GPU (test/demo/host.ts); a VM's claim asks for one vGPU type, the
// scheduler allocates it, the agent creates that mdev, the pod runs; deleting the VM removes the mdev.
// Both are checked from the simulated kernel's side (the sysfs tree as Linux lays it out), not from
// what the agent reports: `/sys/bus/mdev/devices/<uuid>` links to the mdev under its parent, the
// mdev's `mdev_type` names the type asked for, and the parent's `mdev_supported_types/<type>/devices/`
// lists it; after the VM is gone, none of them is there.
//
// Node runs this file directly (type stripping): it imports only Node built-ins and `.ts` files whose
// own imports are built-ins or types.
import { existsSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { HOST } from './host.ts';

/** What the step uses: the pool on the demo host's second GPU and the type its VM asks for. */
export const ONDEMAND = {
  pool: 'gpu-ondemand',
  gpu: HOST.ondemandGpu,
  mdevTypes: ['nvidia-745', 'nvidia-746', 'nvidia-747'],
  /** What the VM's claim asks for: an A16-8Q, half the GPU's framebuffer. */
  type: 'nvidia-747',
  vm: 'vm-ondemand',
  claim: 'vm-ondemand-vgpu',
} as const;

/** The pool: nothing carved ahead; each VM's claim says which type it gets. */
export function onDemandPool(): unknown {
  return {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: ONDEMAND.pool },
    spec: {
      class: 'GPU', frontEnd: 'DRA',
      deviceSelector: { pciAddresses: [ONDEMAND.gpu] },
      carving: { mode: 'Mediated', onDemand: { mdevTypes: [...ONDEMAND.mdevTypes] } },
      kubevirt: { consumption: 'MediatedDevice' },
    },
  };
}

/** The VM's claim (what KubeVirt's VM spec.resourceClaims names) and its virt-launcher-shaped pod. */
export function onDemandVm(uid: string): unknown[] {
  const claim = {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: ONDEMAND.claim, namespace: 'default' },
    spec: {
      devices: {
        requests: [{
          name: 'vgpu',
          exactly: { deviceClassName: `${ONDEMAND.pool}.virtualio.dev`, selectors: [{ cel: { expression: `device.attributes["virtualio.dev"].mdevType == "${ONDEMAND.type}"` } }] },
        }],
      },
    },
  };
  const pod = {
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      name: `virt-launcher-${ONDEMAND.vm}-${uid.slice(0, 5)}`, namespace: 'default',
      labels: { 'kubevirt.io': 'virt-launcher-ondemand', 'kubevirt.io/created-by': uid, 'vm.kubevirt.io/name': ONDEMAND.vm },
      annotations: { 'kubevirt.io/domain': ONDEMAND.vm },
      ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: ONDEMAND.vm, uid, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      terminationGracePeriodSeconds: 0,
      resourceClaims: [{ name: 'gpu', resourceClaimName: ONDEMAND.claim }],
      containers: [{
        name: 'compute', image: 'quay.io/kubevirt/virt-launcher:v1.8.0', command: ['/usr/bin/virt-launcher-monitor'],
        resources: { claims: [{ name: 'gpu' }], limits: { memory: '64Mi', cpu: '100m' }, requests: { memory: '64Mi', cpu: '100m' } },
      }],
    },
  };
  return [claim, pod];
}

/** An mdev as the kernel's tree shows it. */
export interface KernelMdev {
  /** `bus/mdev/devices/<uuid>` exists. */
  onBus: boolean;
  /** The PCI function the mdev sits under (where the bus link leads), if it resolves. */
  parent?: string;
  /** The type its `mdev_type` link names. */
  type?: string;
  /** The parent's `mdev_supported_types/<type>/devices/` lists it. */
  listed: boolean;
  /** Anything that is not laid out as Linux lays it out. */
  problems: string[];
}

/** Reads the mdev `uuid` from the sysfs tree at `sys`, checking the layout Linux gives it. */
export function kernelMdev(sys: string, uuid: string): KernelMdev {
  const bus = path.join(sys, 'bus/mdev/devices', uuid);
  const out: KernelMdev = { onBus: false, listed: false, problems: [] };
  if (!lstatSync(bus, { throwIfNoEntry: false })) return out;
  out.onBus = true;
  if (!lstatSync(bus).isSymbolicLink()) out.problems.push(`bus/mdev/devices/${uuid} is not a link`);
  let dir: string;
  try {
    dir = realpathSync(bus);
  } catch {
    out.problems.push(`bus/mdev/devices/${uuid} leads nowhere`);
    return out;
  }
  const parentDir = path.dirname(dir);
  out.parent = path.basename(parentDir);
  const viaPci = path.join(sys, 'bus/pci/devices', out.parent);
  if (!existsSync(viaPci) || realpathSync(viaPci) !== parentDir) out.problems.push(`its parent folder ${parentDir} is not the PCI function ${out.parent}`);
  try {
    out.type = path.basename(readlinkSync(path.join(dir, 'mdev_type')));
  } catch {
    out.problems.push('no mdev_type link');
    return out;
  }
  out.listed = existsSync(path.join(parentDir, 'mdev_supported_types', out.type, 'devices', uuid));
  if (!out.listed) out.problems.push(`${out.parent}'s mdev_supported_types/${out.type}/devices/ does not list it`);
  return out;
}

/** What the step saw, for the summary and its check. */
export interface OnDemandSummary {
  pool: string;
  /** The GPU the pool carves on. */
  gpu: string;
  vm: string;
  pod: string;
  claim: string;
  /** The type asked for. */
  mdevType: string;
  /** The device the scheduler allocated (`mdev-<uuid>`) and its UUID. */
  device: string;
  uuid: string;
  /** The claim's `virtualio.dev/Carved` condition status when the pod ran. */
  carved: string;
  phase: string;
  /** What the kernel's tree showed while the VM ran, and after it was deleted. */
  whileRunning?: KernelMdev;
  afterDelete?: KernelMdev;
  /** Seconds from the pod's creation to Running, and from its deletion to the mdev's removal. */
  secondsToRunning?: number;
  secondsToRemoval?: number;
  /** Why the step could not finish, if it did not. */
  error?: string;
}

/** What the step needs from the demo. */
export interface OnDemandDeps {
  sys: string;
  kubectl: (args: string[], input?: string) => Promise<string>;
  until: <T>(what: string, check: () => Promise<T | undefined | false>, pending?: () => string) => Promise<T>;
  say: (m: string) => void;
}

interface ClaimJson {
  status?: {
    allocation?: { devices?: { results?: { pool: string; device: string }[] } };
    devices?: { device: string; conditions?: { type: string; status: string; message?: string }[] }[];
  };
}
interface PodJson { status?: { phase?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[] } }

/**
 * Runs the step once the pool is published: the VM's claim and pod, Running once its mdev exists,
 * then the pod deleted and the mdev gone. Never throws: a failure is in `error`.
 */
export async function runOnDemand(d: OnDemandDeps, uid: string): Promise<OnDemandSummary> {
  const [, pod] = onDemandVm(uid) as [unknown, { metadata: { name: string } }];
  const s: OnDemandSummary = { pool: ONDEMAND.pool, gpu: ONDEMAND.gpu, vm: ONDEMAND.vm, pod: pod.metadata.name, claim: ONDEMAND.claim, mdevType: ONDEMAND.type, device: '', uuid: '', carved: '', phase: '' };
  const getJson = async <T>(args: string[]): Promise<T> => JSON.parse(await d.kubectl([...args, '-o', 'json'])) as T;
  try {
    let note = '';
    await d.until(`the pool ${ONDEMAND.pool} published (what the GPU could carve)`, async () => {
      const l = await getJson<{ items: { spec: { pool: { name: string }; sharedCounters?: unknown[]; devices?: unknown[] } }[] }>(['get', 'resourceslices', '--field-selector', 'spec.driver=virtualio.dev']);
      const ours = l.items.filter((x) => x.spec.pool.name.endsWith(ONDEMAND.pool));
      note = `${ours.length} ResourceSlices, ${ours.flatMap((x) => x.spec.devices ?? []).length} devices`;
      return ours.some((x) => x.spec.sharedCounters?.length) && ours.some((x) => x.spec.devices?.length);
    }, () => note);
    const t0 = Date.now();
    await d.kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: onDemandVm(uid) }));
    await d.until(`${ONDEMAND.vm}'s pod to run on a vGPU carved for its claim`, async () => {
      const p = await getJson<PodJson>(['get', 'pod', s.pod]);
      const c = await getJson<ClaimJson>(['get', 'resourceclaim', ONDEMAND.claim]);
      s.device = c.status?.allocation?.devices?.results?.[0]?.device ?? '';
      s.carved = c.status?.devices?.[0]?.conditions?.find((x) => x.type === 'virtualio.dev/Carved')?.status ?? '';
      s.phase = p.status?.phase ?? '';
      const sched = p.status?.conditions?.find((x) => x.type === 'PodScheduled');
      note = `pod ${s.phase || '?'}${sched?.status === 'False' ? ` (${sched.reason}: ${sched.message ?? ''})` : ''}; claim ${s.device ? `allocated ${s.device}` : 'not allocated'}${s.carved ? `, Carved=${s.carved}` : ''}`;
      return s.phase === 'Running';
    }, () => note);
    s.secondsToRunning = Math.round((Date.now() - t0) / 100) / 10;
    s.uuid = s.device.replace(/^mdev-/, '');
    s.whileRunning = kernelMdev(d.sys, s.uuid);
    d.say(`  ${ONDEMAND.vm} Running after ${s.secondsToRunning} s on ${s.device}; the kernel shows mdev ${s.uuid} of type ${s.whileRunning.type ?? '?'} on ${s.whileRunning.parent ?? '?'}`);
    const t1 = Date.now();
    await d.kubectl(['delete', 'pod', s.pod, '--wait=false']);
    await d.until(`mdev ${s.uuid} removed once ${ONDEMAND.vm} is gone`, async () => {
      s.afterDelete = kernelMdev(d.sys, s.uuid);
      return !s.afterDelete.onBus && !s.afterDelete.listed;
    }, () => `the kernel still shows it${s.afterDelete?.parent ? ` on ${s.afterDelete.parent}` : ''}`);
    s.secondsToRemoval = Math.round((Date.now() - t1) / 100) / 10;
    s.afterDelete = kernelMdev(d.sys, s.uuid);
    d.say(`  ${ONDEMAND.vm} deleted: mdev ${s.uuid} removed after ${s.secondsToRemoval} s`);
  } catch (err) {
    s.error = err instanceof Error ? err.message : String(err);
  }
  return s;
}
