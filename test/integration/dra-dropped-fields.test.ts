// The DRA driver on a real kube-apiserver that drops device taints (`--feature-gates=DRADeviceTaints=false`,
// the default of 1.34–1.35, which docs/dra.md supports): the publisher sees the drop in what the
// create returns, the driver leaves the unhealthy device out of the ResourceSlices instead of
// publishing it untainted (allocatable), and re-lists find the pool current — no new generation every
// resync. Also: objects carry generated names with the index in front, so two nodes whose
// `<node>-<pool>` read the same publish side by side.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { loadKubeConfig } from '../../device-plugin/src/kube/adapter.js';
import { silentLogger } from '../../device-plugin/src/log.js';
import type { PoolPlan, Slice } from '../../device-plugin/src/model.js';
import { desiredPools, draDeviceName, type ResourceSliceObject } from '../../device-plugin/src/dra/devices.js';
import { DraDriver } from '../../device-plugin/src/dra/driver.js';
import { KubeResourceSliceStore } from '../../device-plugin/src/dra/kube.js';
import { syncResourceSlices } from '../../device-plugin/src/dra/publisher.js';
import { startControlPlane, type ControlPlane } from '../cluster/control-plane.js';
import { eventually, kubectlOk } from '../support/cluster.js';

jest.setTimeout(240_000);

const NODE = 'dra-taintless-1';
const pool: PoolPlan = { name: 'nic-vf', resourceName: 'virtualio.dev/nic-vf', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 2, devices: [{ pciAddress: '0000:99:00.0' }] };
function vf(i: number, health: Slice['health'] = 'Healthy', p = pool.name): Slice {
  const addr = `0000:99:02.${i}`;
  return { id: addr, pool: p, resourceName: `virtualio.dev/${p}`, kind: 'VF', parent: '0000:99:00.0', pciAddress: addr, index: i, iommuGroup: 200 + i, numaNode: 1, deviceNodes: [], health, ...(health === 'Unhealthy' ? { reason: 'not bound to vfio-pci' } : {}) };
}
const inventory = { devices: [{ pciAddress: '0000:99:00.0', vendorID: '15b3', deviceID: '101b' }] };

let cp: ControlPlane;
let base: string;
const kubectl = (args: string[], input?: string): Promise<string> => kubectlOk(args, { input, kubeconfig: cp.kubeconfig, binDir: cp.binDir });

async function ours(node: string): Promise<ResourceSliceObject[]> {
  return (JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${node},spec.driver=virtualio.dev`, '-o', 'json'])) as { items: ResourceSliceObject[] }).items;
}

beforeAll(async () => {
  cp = await startControlPlane({ apiserverArgs: ['--feature-gates=DRADeviceTaints=false'] });
  base = mkdtempSync(join(tmpdir(), 'vio-dra-taintless-'));
  for (const name of [NODE, 'a-b', 'a']) await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name } }));
}, 10 * 60_000);

afterAll(async () => {
  await cp?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

test('taints dropped: detected, the unhealthy device left out, and no rewrite on every re-list', async () => {
  const kc = loadKubeConfig(cp.kubeconfig);
  const store = new KubeResourceSliceStore(kc, NODE);
  const ctl = new AbortController();
  const driver = new DraDriver({
    nodeName: NODE, kubeletDir: join(base, 'kubelet'), cdiDir: join(base, 'cdi'), sysfsRoot: join(base, 'sys'),
    getClaim: async () => undefined, store, logger: silentLogger(), resyncMs: 500, socketCheckMs: 200,
  });
  driver.update([pool], [vf(0, 'Unhealthy'), vf(1)], inventory);
  const running = driver.run(ctl.signal);
  try {
    const objs = await eventually('the unhealthy VF left out', async () => {
      const l = await ours(NODE);
      return driver.taintsUnsupported && l.length === 1 && l[0]!.spec.devices?.length === 1 ? l : undefined;
    }, 60_000, 200);
    expect((objs[0]!.spec.devices ?? []).map((d) => d.name)).toEqual([draDeviceName(vf(1))]);
    expect(driver.taintsUnsupported).toContain('DRADeviceTaints');
    expect(driver.slicePublisher.lastDropped).toMatchObject({ poolName: `${NODE}/nic-vf`, features: ['DRADeviceTaints'] });
    const generation = objs[0]!.spec.pool.generation;
    const passes = driver.slicePublisher.passes;
    await eventually('four more re-lists', async () => (driver.slicePublisher.passes >= passes + 4 ? true : undefined), 30_000, 100);
    const after = await ours(NODE);
    expect(after.map((o) => [o.metadata.name, o.spec.pool.generation])).toEqual([[objs[0]!.metadata.name, generation]]);
    expect(objs[0]!.metadata.name).toMatch(new RegExp(`^00000-virtualio\\.dev-${NODE}-[a-z0-9]{5}$`));
  } finally {
    ctl.abort();
    await running;
  }
});

test('object names never collide across nodes: node a-b pool c and node a pool b-c', async () => {
  const kc = loadKubeConfig(cp.kubeconfig);
  const p = (name: string): PoolPlan => ({ ...pool, name, resourceName: `virtualio.dev/${name}` });
  const facts = { devices: new Map(inventory.devices.map((d) => [d.pciAddress, d])) };
  await syncResourceSlices(new KubeResourceSliceStore(kc, 'a-b'), 'a-b', desiredPools('a-b', [p('c')], [vf(0, 'Healthy', 'c')], facts));
  await syncResourceSlices(new KubeResourceSliceStore(kc, 'a'), 'a', desiredPools('a', [p('b-c')], [vf(0, 'Healthy', 'b-c')], facts));
  expect((await ours('a-b')).map((o) => o.spec.pool.name)).toEqual(['a-b/c']);
  expect((await ours('a')).map((o) => o.spec.pool.name)).toEqual(['a/b-c']);
});
