// World.planFor with the node's last known VirtualIONode: a deleted or re-created VirtualIONode (no
// status yet) is planned from what the node reported last, but only for the same Node object.
import type { VioNode } from '../api/types.js';
import { FakeKube } from '../../../test/fakes/kube-api.js';
import { AGENT_FIELD_MANAGER, Nodes, VirtualIONodes } from '../kube/resources.js';
import { gpu, nodeObj, waitFor } from '../../../test/support/operator-fixtures.js';
import { gpuPoolWorld } from '../../../test/support/operator-world.js';

const until = (what: string, fn: () => boolean): Promise<true> => waitFor(what, async () => fn() || undefined);

test('a deleted or re-created VirtualIONode is planned from the last report of the same Node, not of a new Node with its name', async () => {
  const kube = new FakeKube();
  const createVio = (uid: string) => kube.create(VirtualIONodes, {
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'n1', uid }] }, spec: { pools: [] },
  } as VioNode);
  const node = await kube.create(Nodes, nodeObj('n1'));
  await createVio(node.metadata.uid ?? '');
  await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1' }, status: { inventory: { devices: [gpu('0000:c1:00.0')] } } },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  const { world, nodes, vios, stop } = await gpuPoolWorld(kube);
  const planned = () => world.planFor('n1').pools.map((p) => `${p.name}:${p.devices.map((d) => d.pciAddress).join()}`);

  expect(planned()).toEqual(['gpus:0000:c1:00.0']);
  await kube.delete(VirtualIONodes, 'n1');
  await until('VirtualIONode gone from the cache', () => !vios.get('n1'));
  expect(planned()).toEqual(['gpus:0000:c1:00.0']);
  // The agent re-creates it with an empty plan and no status: still planned from the last report.
  await createVio(node.metadata.uid ?? '');
  await until('re-created VirtualIONode cached', () => !!vios.get('n1'));
  expect(planned()).toEqual(['gpus:0000:c1:00.0']);

  // The Node goes (its VirtualIONode with it) and a new machine joins under the same name: its
  // inventory is unknown, so nothing is planned until its agent reports.
  await kube.delete(Nodes, 'n1');
  await until('Node gone from the cache', () => !nodes.get('n1'));
  const again = await kube.create(Nodes, nodeObj('n1'));
  expect(again.metadata.uid).not.toBe(node.metadata.uid);
  await createVio(again.metadata.uid ?? '').catch(() => undefined);
  await until('new Node cached', () => nodes.get('n1')?.metadata.uid === again.metadata.uid);
  expect(planned()).toEqual([]);
  await stop();
});
