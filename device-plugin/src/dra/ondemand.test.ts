// The DRA side of on-demand pools without an API server: which claimed devices the agent must carve,
// which mdevs the scheduler already counts, and when a claim's device gets Carved or CarveFailed.
import { silentLogger } from '../log.js';
import type { PoolPlan, Slice } from '../model.js';
import type { AllocatedClaim } from './claims.js';
import { CARVED_CONDITION, CARVE_FAILED_CONDITION } from './counters.js';
import { OnDemandDevices, type DeviceCondition } from './ondemand.js';

const NODE = 'n1';
const U1 = '11111111-1111-5111-8111-111111111111';
const U2 = '22222222-2222-5222-8222-222222222222';
const od: PoolPlan = { name: 'a16', resourceName: 'virtualio.dev/a16', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', onDemand: { mdevTypes: ['nvidia-747'] }, devices: [{ pciAddress: '0000:3b:00.0' }] };
const fixed: PoolPlan = { ...od, name: 'fixed', resourceName: 'virtualio.dev/fixed', onDemand: undefined, mdevType: 'nvidia-747', count: 1 } as PoolPlan;

function claim(uid: string, pool: string, device: string, pods: { name: string; uid?: string }[] = [{ name: 'vm', uid: 'p1' }]): AllocatedClaim {
  return { uid, namespace: 'default', name: `c-${uid.slice(0, 4)}`, devices: [{ request: 'vgpu', pool: `${NODE}/${pool}`, device }], pods };
}

function mdevSlice(uuid: string, health: Slice['health'] = 'Healthy'): Slice {
  return { id: uuid, pool: 'a16', resourceName: od.resourceName, kind: 'Mdev', parent: '0000:3b:00.0', mdevUuid: uuid, mdevType: 'nvidia-747', deviceNodes: [], health };
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

test('only devices of on-demand pools on this node are wanted; released claims are not', () => {
  const d = new OnDemandDevices(NODE, silentLogger(), undefined);
  const claims = new Map([
    ['c1', claim('c1', 'a16', `mdev-${U1}`)],
    ['c2', claim('c2', 'fixed', `mdev-${U2}`)],
    ['c3', claim('c3', 'a16', `mdev-${U2}`)],
  ]);
  const wanted = d.wanted([od, fixed], claims, (c) => c.uid === 'c3');
  expect([...wanted.keys()]).toEqual([U1]);
  expect(wanted.get(U1)).toMatchObject({ pool: 'a16', claim: 'default/c-c1', uid: 'c1' });
  // A prepared claim still counts (the kubelet has not unprepared it), even once deallocated.
  const live = d.live([od, fixed], claims, [{ uid: 'c9', namespace: 'default', name: 'c9', devices: [{ request: 'vgpu', pool: `${NODE}/a16`, device: `mdev-${U2}`, sliceId: U2, cdiId: 'x' }] }], (c) => c.uid === 'c3');
  expect([...live].sort()).toEqual([U1, U2].sort());
  expect(d.lookup([od], `${NODE}/a16`, `mdev-${U1}`)).toEqual({ sliceId: U1, resourceName: od.resourceName });
  expect(d.lookup([od], `${NODE}/fixed`, `mdev-${U1}`)).toBeUndefined();
});

test('Carved once the mdev exists and is healthy, CarveFailed with the reason when it cannot be made; each written once', async () => {
  const calls: [string, string, DeviceCondition][] = [];
  const d = new OnDemandDevices(NODE, silentLogger(), async (c, dev, cond) => {
    calls.push([c.name, dev.device, cond]);
  });
  const claims = new Map([['c1', claim('c1', 'a16', `mdev-${U1}`)], ['c2', claim('c2', 'a16', `mdev-${U2}`)]]);
  const none = (): boolean => false;
  d.report([od], claims, none, []); // nothing carved, nothing failed yet: no condition
  await flush();
  expect(calls).toEqual([]);
  d.state = { capacity: {}, failed: new Map([[U2, 'type nvidia-747 no longer fits on 0000:3b:00.0']]) };
  d.report([od], claims, none, [mdevSlice(U1, 'Unhealthy')]); // not healthy yet: no Carved
  await flush();
  expect(calls.map(([n, , c]) => [n, c.type, c.message])).toEqual([['c-c2', CARVE_FAILED_CONDITION, 'type nvidia-747 no longer fits on 0000:3b:00.0']]);
  d.report([od], claims, none, [mdevSlice(U1)]);
  d.report([od], claims, none, [mdevSlice(U1)]);
  await flush();
  expect(calls.map(([n, dev, c]) => [n, dev, c.type])).toEqual([['c-c2', `mdev-${U2}`, CARVE_FAILED_CONDITION], ['c-c1', `mdev-${U1}`, CARVED_CONDITION]]);
});

test('a condition the API server refused is written again at the next report', async () => {
  let fail = true;
  const calls: string[] = [];
  const d = new OnDemandDevices(NODE, silentLogger(), async (c) => {
    calls.push(c.name);
    if (fail) throw new Error('conflict');
  });
  const claims = new Map([['c1', claim('c1', 'a16', `mdev-${U1}`)]]);
  d.report([od], claims, () => false, [mdevSlice(U1)]);
  await flush();
  fail = false;
  d.report([od], claims, () => false, [mdevSlice(U1)]);
  await flush();
  d.report([od], claims, () => false, [mdevSlice(U1)]);
  await flush();
  expect(calls).toEqual(['c-c1', 'c-c1']);
});

test('NVMe queue pools: the claim\'s VF is wanted with its queue count, and Carved only once its controller is Online at that size', async () => {
  const nvme: PoolPlan = { name: 'nvmeq', resourceName: 'virtualio.dev/nvmeq', class: 'Storage', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 2, onDemand: { nvmeQueues: [2, 4] }, devices: [{ pciAddress: '0000:02:00.0' }] };
  const VF = '0000:02:00.1';
  const calls: [string, DeviceCondition][] = [];
  const d = new OnDemandDevices(NODE, silentLogger(), async (c, _dev, cond) => {
    calls.push([c.name, cond]);
  });
  const claims = new Map([['c1', claim('c1', 'nvmeq', 'nvme-0000-02-00-1-q4')], ['c2', claim('c2', 'a16', 'nvme-0000-02-00-2-q4')]]);
  const wanted = d.wanted([nvme, od], claims, () => false);
  expect([...wanted.values()]).toEqual([expect.objectContaining({ pool: 'nvmeq', uuid: VF, queues: 4, uid: 'c1' })]);
  expect(d.lookup([nvme], `${NODE}/nvmeq`, 'nvme-0000-02-00-1-q4')).toEqual({ sliceId: VF, resourceName: nvme.resourceName });
  expect([...d.liveVgpus([nvme], claims, [], () => false)]).toEqual([[VF, 4]]);
  const vfSlice: Slice = { id: VF, pool: 'nvmeq', resourceName: nvme.resourceName, kind: 'VF', parent: '0000:02:00.0', pciAddress: VF, deviceNodes: [], health: 'Healthy' };
  const caps = { cntlid: 0, vqfrt: 16, vqrfa: 2, vqrfap: 0, vqfrsm: 8, vqgran: 1, vifrt: 8, virfa: 2, virfap: 0, vifrsm: 4, vigran: 1 };
  const at = (online: boolean, nvq: number, nvi: number): void => {
    d.state = { capacity: {}, failed: new Map(), nvme: { '0000:02:00.0': { pool: 'nvmeq', caps, vfs: { [VF]: { scid: 1, vfn: 1, online, nvq, nvi, index: 0 } } } } };
  };
  at(false, 0, 0); // the VF exists (its slice is healthy) but its controller is Offline: not carved
  d.report([nvme], claims, () => false, [vfSlice]);
  at(true, 2, 2); // Online at another size: not carved either
  d.report([nvme], claims, () => false, [vfSlice]);
  await flush();
  expect(calls).toEqual([]);
  at(true, 4, 4);
  d.report([nvme], claims, () => false, [vfSlice]);
  await flush();
  expect(calls).toEqual([['c-c1', expect.objectContaining({ type: CARVED_CONDITION, message: 'NVMe secondary controller 1 of VF 0000:02:00.1 Online with 4 queues and 4 interrupts on 0000:02:00.0' })]]);
});
