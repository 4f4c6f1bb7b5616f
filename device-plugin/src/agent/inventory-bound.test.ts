import type { InventoryDevice, PoolPlan } from '../model.js';
import { boundInventory, MAX_INVENTORY, truncationMessage } from './inventory-bound.js';
import { buildStatus, type StatusInput } from './status.js';

const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
/** PF at bus `bus` with `vfs` VFs on the following buses (8 per device, 32 devices per bus). */
function pfWithVfs(bus: number, vfs: number): InventoryDevice[] {
  const pf = `0000:${hex(bus, 2)}:00.0`;
  const vfAddrs = Array.from({ length: vfs }, (_, i) => `0000:${hex(bus + 1 + Math.floor(i / 256), 2)}:${hex(Math.floor(i / 8) % 32, 2)}.${i % 8}`);
  return [
    { pciAddress: pf, vendorID: '15b3', deviceID: '101d', classCode: '020000', driver: 'mlx5_core', iommuGroup: bus, iommuGroupMembers: [pf], sriov: { totalVFs: vfs, numVFs: vfs, vfs: vfAddrs } },
    ...vfAddrs.map((a): InventoryDevice => ({ pciAddress: a, vendorID: '15b3', deviceID: '101e', classCode: '020000', driver: 'vfio-pci', physfn: pf })),
  ];
}
const plan = (addr: string): PoolPlan => ({ name: 'p', resourceName: 'virtualio.dev/p', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: 8, devices: [{ pciAddress: addr }] });

describe('boundInventory', () => {
  test('within the bound: everything, not truncated', () => {
    const inv = pfWithVfs(0x10, 8);
    expect(boundInventory(inv, [])).toEqual({ devices: inv, total: 9, truncated: false, omitted: { vfs: 0, functions: 0 } });
  });

  test('VFs that sort before a PF never push it out: every PF is listed, then one VF per PF, then the planned PF\'s VFs', () => {
    // Three PFs; the VFs of the first two fill more than the bound on their own, the third PF comes last by address.
    const inv = [...pfWithVfs(0x10, 1200), ...pfWithVfs(0x20, 1200), ...pfWithVfs(0xe0, 100), { pciAddress: '0000:ff:00.0', classCode: '030000', vendorID: '10de', deviceID: '2231' }];
    const b = boundInventory(inv, [plan('0000:e0:00.0')]);
    expect(b.total).toBe(inv.length);
    expect(b.truncated).toBe(true);
    expect(b.devices).toHaveLength(MAX_INVENTORY);
    const listed = new Set(b.devices.map((d) => d.pciAddress));
    for (const pf of ['0000:10:00.0', '0000:20:00.0', '0000:e0:00.0', '0000:ff:00.0']) expect(listed.has(pf)).toBe(true);
    // The first VF of every PF (KubeVirt entries read the VF device ID from it) and all VFs of the planned PF.
    for (const first of ['0000:11:00.0', '0000:21:00.0']) expect(listed.has(first)).toBe(true);
    expect(inv.filter((d) => d.physfn === '0000:e0:00.0').every((d) => listed.has(d.pciAddress))).toBe(true);
    // Sorted by address, as the scan reports it.
    expect(b.devices.map((d) => d.pciAddress)).toEqual([...listed].sort());
    expect(b.omitted).toEqual({ vfs: inv.length - MAX_INVENTORY, functions: 0 });
    expect(truncationMessage(b)).toBe(`status lists 2048 of ${inv.length} PCI functions (planned devices and physical functions first); left out: ${inv.length - 2048} VF(s)`);
  });

  test('more physical functions than room: planned devices and their IOMMU group members come first', () => {
    const many: InventoryDevice[] = Array.from({ length: 30 }, (_, i) => ({ pciAddress: `0000:${hex(i, 2)}:00.0`, classCode: '020000' }));
    const gpu: InventoryDevice = { pciAddress: '0000:c1:00.0', classCode: '030000', iommuGroupMembers: ['0000:c1:00.0', '0000:c1:00.1'] };
    const audio: InventoryDevice = { pciAddress: '0000:c1:00.1', classCode: '040300', iommuGroupMembers: ['0000:c1:00.0', '0000:c1:00.1'] };
    const b = boundInventory([...many, gpu, audio], [plan('0000:c1:00.0')], 10);
    expect(b.devices.map((d) => d.pciAddress)).toEqual([...many.slice(0, 8).map((d) => d.pciAddress), '0000:c1:00.0', '0000:c1:00.1']);
    expect(b.omitted).toEqual({ vfs: 0, functions: 22 });
  });
});

describe('buildStatus inventory', () => {
  const base: StatusInput = {
    agentVersion: 'test', pools: [], planLoaded: true, inventory: { devices: [] }, slices: [], holders: new Map(),
    registration: new Map(), blocked: [], carvingErrors: [], now: new Date('2026-01-01T00:00:00Z'),
  };

  test('a node with more functions than the bound: truncated, total, and a Degraded reason that says what was left out', () => {
    const inv = [...pfWithVfs(0x10, 1500), ...pfWithVfs(0x20, 1500)];
    const s = buildStatus({ ...base, inventory: { devices: inv }, pools: [plan('0000:20:00.0')] });
    expect(s.inventory?.truncated).toBe(true);
    expect(s.inventory?.total).toBe(3002);
    expect(s.inventory?.devices).toHaveLength(2048);
    expect(s.inventory?.devices?.some((d) => d.pciAddress === '0000:20:00.0')).toBe(true);
    expect(s.summary?.devices).toBe(3002);
    const degraded = s.conditions?.find((c) => c.type === 'Degraded');
    expect(degraded).toMatchObject({ status: 'True', reason: 'InventoryTruncated' });
    expect(degraded?.message).toContain('status lists 2048 of 3002 PCI functions');
  });

  test('within the bound: total, no truncated flag, no Degraded', () => {
    const s = buildStatus({ ...base, inventory: { devices: pfWithVfs(0x10, 4) } });
    expect(s.inventory).toEqual({ total: 5, devices: pfWithVfs(0x10, 4) });
    expect(s.conditions?.find((c) => c.type === 'Degraded')?.status).toBe('False');
  });

  test('no successful scan yet: no inventory at all (unknown), rather than an empty one', () => {
    const s = buildStatus({ ...base, scanError: 'sysfs scan failed: EACCES' });
    expect(s).not.toHaveProperty('inventory');
    // A node that really has no functions reports an empty, known inventory.
    expect(buildStatus(base).inventory).toEqual({ total: 0, devices: [] });
  });
});
