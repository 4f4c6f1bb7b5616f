// Intent-named builders for tests (pools, nodes, inventories). Used by unit tests and the
// integration suites; no I/O.
import type { InventoryDevice, SliceStatus, VirtualIONodeStatus } from '../../crds/generated/types.js';
import type { NodeObject, Pool, PoolPlan, VioNode } from '../../operator/src/api/types.js';

const T0 = Date.UTC(2026, 0, 1);

export function poolObj(name: string, spec: Partial<Pool['spec']> & Pick<Pool['spec'], 'class'>, meta: {
  createdSec?: number; generation?: number; deleting?: boolean; finalizers?: string[]; uid?: string;
} = {}): Pool {
  return {
    apiVersion: 'virtualio.dev/v1alpha1',
    kind: 'VirtualIODevice',
    metadata: {
      name,
      uid: meta.uid ?? `uid-${name}`,
      generation: meta.generation ?? 1,
      resourceVersion: '1',
      creationTimestamp: new Date(T0 + (meta.createdSec ?? 0) * 1000).toISOString().replace('.000Z', 'Z'),
      ...(meta.deleting ? { deletionTimestamp: new Date(T0 + 3_600_000).toISOString() } : {}),
      ...(meta.finalizers ? { finalizers: meta.finalizers } : {}),
    },
    spec: { deviceSelector: { vendorIDs: ['8086'] }, carving: { mode: 'SRIOV', count: 4 }, ...spec },
  };
}

export function nodeObj(name: string, labels: Record<string, string> = {}): NodeObject {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, uid: `node-uid-${name}`, resourceVersion: '1', labels } };
}

/** A NIC PF with `vfs` VFs (VF device ID `vfDevice`), netdev `netdev`. */
export function nicPF(pci: string, o: { vendor?: string; device?: string; vfDevice?: string; netdev?: string; numa?: number; vfs?: number; driver?: string } = {}): InventoryDevice[] {
  const vfAddrs = Array.from({ length: o.vfs ?? 0 }, (_, i) => `${pci.slice(0, 8)}${(0x10 + i).toString(16).padStart(2, '0')}.${i % 8}`);
  const pf: InventoryDevice = {
    pciAddress: pci, vendorID: o.vendor ?? '8086', deviceID: o.device ?? '10fb', classCode: '020000', driver: o.driver ?? 'ixgbe',
    numaNode: o.numa ?? 0, iommuGroup: 10, netdevs: [{ name: o.netdev ?? 'ens1f0', operState: 'up' }],
    sriov: { totalVFs: 63, numVFs: vfAddrs.length, vfs: vfAddrs },
  };
  const vfs = vfAddrs.map((a): InventoryDevice => ({
    pciAddress: a, vendorID: o.vendor ?? '8086', deviceID: o.vfDevice ?? '10ed', classCode: '020000', driver: 'vfio-pci', physfn: pci, numaNode: o.numa ?? 0,
  }));
  return [pf, ...vfs];
}

export function gpu(pci: string, o: { vendor?: string; device?: string; numa?: number; mdevTypes?: { id: string; name?: string; availableInstances?: number }[]; driver?: string } = {}): InventoryDevice {
  return {
    pciAddress: pci, vendorID: o.vendor ?? '10de', deviceID: o.device ?? '25b6', classCode: '030200', driver: o.driver ?? 'nvidia',
    numaNode: o.numa ?? 0, iommuGroup: 20, ...(o.mdevTypes ? { mdevTypes: o.mdevTypes } : {}),
  };
}

export function nvme(pci: string, o: { vendor?: string; device?: string } = {}): InventoryDevice {
  return { pciAddress: pci, vendorID: o.vendor ?? '144d', deviceID: o.device ?? 'a808', classCode: '010802', driver: 'nvme', numaNode: 0, iommuGroup: 30 };
}

export function vioNodeObj(name: string, o: { devices?: InventoryDevice[]; plan?: PoolPlan[]; status?: Partial<VirtualIONodeStatus>; ownerUid?: string } = {}): VioNode {
  return {
    apiVersion: 'virtualio.dev/v1alpha1',
    kind: 'VirtualIONode',
    metadata: {
      name, resourceVersion: '1',
      ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: o.ownerUid ?? `node-uid-${name}` }],
    },
    ...(o.plan ? { spec: { pools: o.plan } } : {}),
    status: { inventory: { devices: o.devices ?? [] }, ...o.status },
  };
}

export function slice(id: string, pool: string, o: { parent?: string; healthy?: boolean; pod?: string; namespace?: string; vmi?: string } = {}): SliceStatus {
  return {
    id, pool, kind: 'VF', health: o.healthy === false ? 'Unhealthy' : 'Healthy', ...(o.parent ? { parent: o.parent } : {}),
    ...(o.pod ? { allocation: { namespace: o.namespace ?? 'default', pod: o.pod, ...(o.vmi ? { vmi: o.vmi } : {}) } } : {}),
  };
}

/** Polls `fn` every 5 ms until it returns something truthy (returned), or throws after `ms`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
