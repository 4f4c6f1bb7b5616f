// A VMM stand-in: what QEMU in a virt-launcher pod does with the devices it was handed. It opens every
// VFIO group node of its device specs (`/dev/vfio/<N>`, or a VFIO cdev `/dev/vfio/devices/vfioN`,
// mapped to its function's group) and uses the LUNs of its NPIV vports, and keeps them until stop().
// A second VM handed the same group fails to start with the kernel's EBUSY, so a double hand-out
// shows as a thrown KernelError.
//
// When the kernel asks it to let go (a destructive write on one of its devices, vfio.ts), it either
// ignores the request (the default: the guest does not answer the hot-unplug, and the write stays
// blocked) or lets go of that group after `releaseAfterMs` (the guest completed the hot-unplug, the
// device is gone from the VM).
//
//   const vm = await startVm(kernel, { name: 'vm1', deviceNodes: ['/dev/vfio/vfio', '/dev/vfio/42'] });
//   const vm2 = await startVmFromAllocation(kernel, await kubelet.allocate(res, ids), { name: 'vm2' });
//   ...; await vm.stop();
import { readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import type { FakeKernel } from './kernel.js';
import type { VfioRequest } from './vfio.js';

/** What the VM does when asked to let go of a group. */
export type RequestPolicy = 'ignore' | { releaseAfterMs: number };

/** Options of {@link startVm}. */
export interface VmOptions {
  name: string;
  /** Device spec host paths as Allocate returns them; `/dev/vfio/vfio` (the container) is skipped. */
  deviceNodes: string[];
  /** WWPNs of the NPIV vports whose LUNs the VM uses. */
  vports?: string[];
  /** Default 'ignore'. */
  onRequest?: RequestPolicy;
}

/** A running VM. */
export interface Vm {
  readonly name: string;
  /** The holder name it opens its groups with: `vm/<name>`. */
  readonly holder: string;
  /** Every group it opened, ascending. */
  readonly groups: number[];
  readonly vports: string[];
  /** Every request to let go it received. */
  readonly requests: VfioRequest[];
  /** Groups it still has open. */
  openGroups(): number[];
  /** Lets go of everything (idempotent). */
  stop(): Promise<void>;
}

/** Anything that has a FakeKernel: the kernel itself or a kernel daemon handle. */
export type HasKernel = FakeKernel | { kernel: FakeKernel };

function kernelOf(k: HasKernel): FakeKernel {
  return 'kernel' in k ? k.kernel : k;
}

/**
 * The IOMMU group a device node stands for: `/dev/vfio/<N>` (or `<devRoot>/vfio/<N>`) → N; a VFIO
 * cdev `.../vfio/devices/vfioN` → its function's group; the container node → undefined.
 */
export async function groupOfNode(kernel: HasKernel, node: string): Promise<number | undefined> {
  const k = kernelOf(kernel);
  if (/(^|\/)vfio\/vfio$/.test(node)) return undefined;
  const g = /(^|\/)vfio\/(\d+)$/.exec(node);
  if (g) return Number(g[2]);
  const cdev = /(^|\/)vfio\/devices\/(vfio\d+)$/.exec(node);
  if (cdev) {
    const name = cdev[2] as string;
    for (const bdf of await readdir(path.join(k.root, 'bus/pci/devices')).catch((): string[] => [])) {
      const fn = path.join(k.root, 'bus/pci/devices', bdf);
      if ((await readdir(path.join(fn, 'vfio-dev')).catch((): string[] => [])).includes(name)) {
        return Number(path.basename(await readlink(path.join(fn, 'iommu_group'))));
      }
    }
    throw new Error(`no PCI function has the VFIO cdev ${node}`);
  }
  throw new Error(`not a VFIO device node: ${node}`);
}

/** Starts a VM holding the groups of `deviceNodes` and the `vports`; throws (holding nothing) when one cannot be opened. */
export async function startVm(kernel: HasKernel, o: VmOptions): Promise<Vm> {
  const k = kernelOf(kernel);
  const holder = `vm/${o.name}`;
  const policy = o.onRequest ?? 'ignore';
  const groups: number[] = [];
  for (const n of o.deviceNodes) {
    const g = await groupOfNode(k, n);
    if (g !== undefined && !groups.includes(g)) groups.push(g);
  }
  groups.sort((a, b) => a - b);
  const open = new Set<number>();
  const held: string[] = [];
  const requests: VfioRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const letGo = (g: number): void => {
    if (!open.delete(g)) return;
    k.closeVfio(g, holder);
  };
  const onRequest = (r: VfioRequest): void => {
    requests.push(r);
    if (policy === 'ignore' || r.count > 1) return;
    const t = setTimeout(() => {
      timers.delete(t);
      letGo(r.group);
    }, policy.releaseAfterMs);
    timers.add(t);
  };
  const stop = async (): Promise<void> => {
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const g of [...open]) letGo(g);
    for (const w of held.splice(0)) k.releaseVport(w, holder);
  };
  try {
    for (const g of groups) {
      await k.openVfio(g, holder, { onRequest });
      open.add(g);
    }
    for (const w of o.vports ?? []) {
      await k.holdVport(w, holder);
      held.push(w);
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { name: o.name, holder, groups, vports: [...(o.vports ?? [])], requests, openGroups: () => [...open].sort((a, b) => a - b), stop };
}

/** The parts of an AllocateResponse a VM reads (Input or Output shape). */
export interface AllocationLike {
  containerResponses?: { envs?: Record<string, string> | null; devices?: { hostPath?: string | null }[] | null }[] | null;
}

/**
 * Starts a VM from a device plugin AllocateResponse, as virt-launcher would: every container's device
 * specs, and the vports of `VIRTUALIO_NPIV_*` variables. Throws when a PCI address of a
 * `PCI_RESOURCE_*` variable or a UUID of an `MDEV_PCI_RESOURCE_*` one is not covered by a group
 * node of the response (the VM could not use it).
 */
export async function startVmFromAllocation(kernel: HasKernel, res: AllocationLike, o: { name: string; onRequest?: RequestPolicy }): Promise<Vm> {
  const k = kernelOf(kernel);
  const nodes: string[] = [];
  const vports: string[] = [];
  const devices: string[] = [];
  for (const c of res.containerResponses ?? []) {
    for (const d of c.devices ?? []) if (d.hostPath) nodes.push(d.hostPath);
    for (const [name, value] of Object.entries(c.envs ?? {})) {
      const ids = value.split(',').filter((x) => x !== '');
      if (name.startsWith('VIRTUALIO_NPIV_')) vports.push(...ids.map((p) => p.split(':')[0] as string));
      else if (name.startsWith('PCI_RESOURCE_') || name.startsWith('MDEV_PCI_RESOURCE_')) devices.push(...ids);
    }
  }
  const groups = new Set<number>();
  for (const n of nodes) {
    const g = await groupOfNode(k, n);
    if (g !== undefined) groups.add(g);
  }
  for (const d of devices) {
    const link = d.includes(':') ? path.join(k.root, 'bus/pci/devices', d, 'iommu_group') : path.join(k.root, 'bus/mdev/devices', d, 'iommu_group');
    const g = await readlink(link).then((l) => Number(path.basename(l)), () => undefined);
    if (g === undefined || !groups.has(g)) throw new Error(`VM ${o.name}: the response names ${d} but hands out no node of its IOMMU group${g === undefined ? '' : ` ${g}`}`);
  }
  return startVm(k, { name: o.name, deviceNodes: nodes, vports, ...(o.onRequest ? { onRequest: o.onRequest } : {}) });
}
