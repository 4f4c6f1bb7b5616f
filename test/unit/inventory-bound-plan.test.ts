// Issue 10, point 4, across the agent and the operator: carving VFs grows a node's inventory past the
// status bound (2,048 functions). The agent's status must still list what planning needs, and the
// operator, planning from that status, must keep every pool it had — including when the list is
// so long that even a planned device is left out (the truncation flag keeps it planned).
import { buildStatus, type StatusInput } from '../../device-plugin/src/agent/status.js';
import type { InventoryDevice } from '../../device-plugin/src/model.js';
import type { VioNode } from '../../operator/src/api/types.js';
import { planNode, preparePools } from '../../operator/src/controllers/plan/plan.js';
import { nodeObj, poolObj } from '../support/operator-fixtures.js';

const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');

/** A PF on bus `bus` with `vfs` VFs on the buses after it (numVFs as carved). */
function pf(bus: number, vfs: number, netdev: string): InventoryDevice[] {
  const addr = `0000:${hex(bus, 2)}:00.0`;
  const vfAddrs = Array.from({ length: vfs }, (_, i) => `0000:${hex(bus + 1 + Math.floor(i / 256), 2)}:${hex(Math.floor(i / 8) % 32, 2)}.${i % 8}`);
  return [
    { pciAddress: addr, vendorID: '15b3', deviceID: '101d', classCode: '020000', driver: 'mlx5_core', netdevs: [{ name: netdev }], iommuGroup: bus, sriov: { totalVFs: 1024, numVFs: vfs, vfs: vfAddrs } },
    ...vfAddrs.map((a): InventoryDevice => ({ pciAddress: a, vendorID: '15b3', deviceID: '101e', classCode: '020000', driver: 'vfio-pci', physfn: addr })),
  ];
}

const node = nodeObj('big');
const pools = preparePools([
  poolObj('a', { class: 'NIC', deviceSelector: { interfaceNames: ['ens1'] }, carving: { mode: 'SRIOV', count: 1000 } }, { createdSec: 1 }),
  poolObj('b', { class: 'NIC', deviceSelector: { interfaceNames: ['ens2'] }, carving: { mode: 'SRIOV', count: 1000 } }, { createdSec: 2 }),
  poolObj('late', { class: 'NIC', deviceSelector: { interfaceNames: ['ens9'] }, carving: { mode: 'SRIOV', count: 8 } }, { createdSec: 3 }),
]);
const statusInput = (devices: InventoryDevice[], plan: VioNode['spec']): StatusInput => ({
  agentVersion: 'test', pools: plan?.pools ?? [], planLoaded: true, inventory: { devices }, slices: [], holders: new Map(),
  registration: new Map(), blocked: [], carvingErrors: [], now: new Date('2026-01-01T00:00:00Z'),
});
const vio = (status: ReturnType<typeof buildStatus>, plan: VioNode['spec']): VioNode => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'big' }, spec: plan, status });

test('two PFs carved to 1,100 VFs each push the last PF past 2,048 by address; its pool stays planned', () => {
  // Before carving: three PFs, no VFs; every pool is planned.
  const before = [...pf(0x10, 0, 'ens1'), ...pf(0x20, 0, 'ens2'), ...pf(0xe0, 0, 'ens9')];
  const plan0 = { pools: planNode(node, vio(buildStatus(statusInput(before, undefined)), undefined), pools).pools };
  expect(plan0.pools.map((p) => p.name)).toEqual(['a', 'b', 'late']);

  // After carving: 2,303 functions. Cut by address (the old rule), 0000:e0:00.0 would be function 2,203 and fall out.
  const after = [...pf(0x10, 1100, 'ens1'), ...pf(0x20, 1100, 'ens2'), ...pf(0xe0, 100, 'ens9')];
  expect(after.length).toBeGreaterThan(2048);
  expect([...after].sort((x, y) => x.pciAddress.localeCompare(y.pciAddress)).findIndex((d) => d.pciAddress === '0000:e0:00.0')).toBeGreaterThanOrEqual(2048);
  const status = buildStatus(statusInput(after, plan0));
  expect(status.inventory?.truncated).toBe(true);
  expect(status.inventory?.devices?.some((d) => d.pciAddress === '0000:e0:00.0')).toBe(true);
  expect(planNode(node, vio(status, plan0), pools).pools).toEqual(plan0.pools);
});

test('a planned PF missing from a truncated list (more physical functions than room) stays planned', () => {
  const before = [...pf(0x10, 0, 'ens1'), ...pf(0x20, 0, 'ens2'), ...pf(0xe0, 0, 'ens9')];
  const plan0 = { pools: planNode(node, vio(buildStatus(statusInput(before, undefined)), undefined), pools).pools };
  // A status that lists only the first PF (as a cut by a much smaller bound would) but says it is truncated.
  const status = buildStatus(statusInput(before, plan0));
  const cut: VioNode['status'] = { ...status, inventory: { total: 3, truncated: true, devices: (status.inventory?.devices ?? []).slice(0, 1) } };
  expect(planNode(node, vio(cut, plan0), pools).pools).toEqual(plan0.pools);
  // The same list without the flag is a complete report: the PFs are gone, their pools leave.
  const complete: VioNode['status'] = { ...status, inventory: { devices: (status.inventory?.devices ?? []).slice(0, 1) } };
  expect(planNode(node, vio(complete, plan0), pools).pools.map((p) => p.name)).toEqual(['a']);
});
