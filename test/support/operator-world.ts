// The operator's World over a FakeKube for unit tests: one GPU passthrough pool ("gpus", vendor 10de),
// informers of Nodes, VirtualIONodes and pools running until stop().
import pino from 'pino';
import type { Pool, VioNode } from '../../operator/src/api/types.js';
import type { AckSource } from '../../operator/src/controllers/world.js';
import { World } from '../../operator/src/controllers/world.js';
import type { KubeObject } from '../../operator/src/kube/ports.js';
import { Nodes, VirtualIODevices, VirtualIONodes } from '../../operator/src/kube/resources.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { Informer } from '../../operator/src/runtime/informer.js';
import type { FakeKube } from '../fakes/kube-api.js';
import { poolObj } from './operator-fixtures.js';

export interface TestWorld {
  world: World;
  nodes: Informer<KubeObject>;
  vios: Informer<VioNode>;
  pools: Informer<Pool>;
  stop(): Promise<void>;
}

/** Creates the GPU pool, starts the informers and the World (with `acks` if given) and waits until they synced. */
export async function gpuPoolWorld(kube: FakeKube, acks?: AckSource): Promise<TestWorld> {
  const log = pino({ level: 'silent' });
  const { metadata, ...rest } = poolObj('gpus', { class: 'GPU', deviceSelector: { vendorIDs: ['10de'] }, carving: { mode: 'Passthrough' } });
  await kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);
  const ac = new AbortController();
  const nodes = new Informer<KubeObject>({ kube, resource: Nodes, clock: systemClock, log });
  const vios = new Informer<VioNode>({ kube, resource: VirtualIONodes, clock: systemClock, log });
  const pools = new Informer<Pool>({ kube, resource: VirtualIODevices, clock: systemClock, log });
  const world = new World(nodes, vios, pools, { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } }, acks);
  const runs = [nodes, vios, pools].map((i) => i.run(ac.signal));
  await Promise.all([nodes, vios, pools].map((i) => i.synced()));
  return {
    world, nodes, vios, pools,
    stop: async () => {
      ac.abort();
      await Promise.all(runs);
    },
  };
}
