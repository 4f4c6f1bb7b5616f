import type { PoolPlan, VioNode } from '../../api/types.js';
import { nodeObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import type { World } from '../world.js';
import { unreportedNodes } from './reconciler.js';

const plan = (name: string): PoolPlan => ({
  name, resourceName: `virtualio.dev/${name}`, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', devices: [{ pciAddress: '0000:81:00.0' }], deleting: true,
});

/** The parts of World that unreportedNodes reads. */
function world(nodes: string[], vios: VioNode[], plans: Record<string, PoolPlan[]>): World {
  return {
    nodes: { list: () => nodes.map((n) => nodeObj(n)) },
    vioNodes: { get: (n: string) => vios.find((v) => v.metadata.name === n) },
    planFor: (n: string) => ({ pools: plans[n] ?? [], conflicts: [] }),
  } as unknown as World;
}

test('deletion waits for Nodes without a VirtualIONode and for planned nodes whose VirtualIONode lacks the plan', () => {
  const reporting = vioNodeObj('n1', { plan: [plan('vfs')] });
  const recreated = vioNodeObj('n3', { plan: [] }); // re-created by its agent; the last known plan had vfs
  const elsewhere = vioNodeObj('n4', { plan: [] });
  const w = world(['n1', 'n2', 'n3', 'n4'], [reporting, recreated, elsewhere], { n1: [plan('vfs')], n3: [plan('vfs')] });
  expect(unreportedNodes(w, 'vfs', [reporting])).toEqual([
    { node: 'n2', why: 'the Node has no VirtualIONode, so its agent cannot report' },
    { node: 'n3', why: 'its VirtualIONode does not carry the plan yet' },
  ]);
});

test('a node whose Node object is gone is not waited for (with its VirtualIONode gone too, it left the cluster)', () => {
  expect(unreportedNodes(world([], [], {}), 'vfs', [])).toEqual([]);
});
