// The DRA front end without an API server: device attributes, chunking and generation bookkeeping
// against an in-memory store, claim planning, the CDI spec and KubeVirt metadata files, the
// checkpoint, and the driver's gRPC services called over a real unix socket the way the kubelet does.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDraHealthApi, loadDraV1Api, loadDraV1beta1Api, loadPluginRegistrationApi } from '../../../proto/load.js';
import { silentLogger } from '../log.js';
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import { ATTR_PCI_BUS_ID, ATTR_PCIE_ROOT, desiredPools, draDeviceName, MAX_DEVICES, MAX_DEVICES_WITH_TAINTS, resourceSliceIndex, UNHEALTHY_TAINT, type ResourceSliceObject } from './devices.js';
import { DraDriver } from './driver.js';
import { pcieRootReader } from './pcie.js';
import { Checkpoint, planClaim, sliceIndex, type ClaimObject } from './prepare.js';
import { newPublisherMemory, ResourceSlicePublisher, syncResourceSlices, type DroppedFields, type ResourceSliceStore } from './publisher.js';

const NODE = 'worker-1';
const nicPool: PoolPlan = { name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', frontEnd: 'DRA', count: 4, devices: [{ pciAddress: '0000:81:00.0' }] };
const gpuPool: PoolPlan = { name: 'vgpu', resourceName: 'virtualio.dev/vgpu', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', frontEnd: 'DRA', count: 2, mdevType: 'nvidia-754', devices: [{ pciAddress: '0000:c1:00.0' }] };
const dpPool: PoolPlan = { ...nicPool, name: 'classic', resourceName: 'virtualio.dev/classic', frontEnd: undefined as never };
delete (dpPool as Partial<PoolPlan>).frontEnd;

function vf(i: number, health: Slice['health'] = 'Healthy', pool = 'fast-net'): Slice {
  const addr = `0000:81:${String(2 + Math.floor(i / 8)).padStart(2, '0')}.${i % 8}`;
  return { id: addr, pool, resourceName: `virtualio.dev/${pool}`, kind: 'VF', parent: '0000:81:00.0', pciAddress: addr, pfNetdev: 'ens1f0', index: i, iommuGroup: 40 + i, numaNode: 1, deviceNodes: [`/dev/vfio/${40 + i}`], health, ...(health === 'Unhealthy' ? { reason: 'VF 0000:81:02.0 bound to ixgbevf, not vfio-pci' } : {}) };
}
const mdev: Slice = { id: 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2', pool: 'vgpu', resourceName: 'virtualio.dev/vgpu', kind: 'Mdev', parent: '0000:c1:00.0', mdevUuid: 'c22f6d4d-4ecc-5030-93a3-eb7f1a400ee2', index: 0, iommuGroup: 109, numaNode: 0, deviceNodes: ['/dev/vfio/109'], health: 'Healthy' };
const inventory: InventoryDevice[] = [
  { pciAddress: '0000:81:00.0', vendorID: '8086', deviceID: '10fb', numaNode: 1 },
  { pciAddress: '0000:81:02.0', vendorID: '8086', deviceID: '10ed', numaNode: 1, physfn: '0000:81:00.0' },
  { pciAddress: '0000:c1:00.0', vendorID: '10de', deviceID: '25b6', numaNode: 0 },
];
const facts = { devices: new Map(inventory.map((d) => [d.pciAddress, d])), pcieRoot: (a: string) => (a.startsWith('0000:81') ? 'pci0000:80' : 'pci0000:c0') };

/**
 * The API server's ResourceSlices as one node's agent sees them (field selector spec.nodeName).
 * Stores sharing `objects` are the agents of several nodes on one API server: names are cluster-wide.
 * `dropTaints`: an API server without the DRADeviceTaints feature (1.34–1.35 defaults).
 */
class MemoryStore implements ResourceSliceStore {
  writes = 0;
  private static rv = 0;
  private static seq = 0;
  constructor(readonly objects = new Map<string, ResourceSliceObject>(), private readonly node?: string, readonly opts: { dropTaints?: boolean } = {}) {}
  async list(): Promise<ResourceSliceObject[]> {
    return [...this.objects.values()].filter((o) => !this.node || o.spec.nodeName === this.node).map((o) => structuredClone(o));
  }
  async create(o: ResourceSliceObject): Promise<ResourceSliceObject> {
    const name = o.metadata.name ?? `${o.metadata.generateName!.slice(0, 58)}${(++MemoryStore.seq).toString(36).padStart(5, 'x')}`;
    if (this.objects.has(name)) throw new Error(`409 AlreadyExists: resourceslices "${name}" already exists`);
    return this.put({ ...o, metadata: { ...o.metadata, name } });
  }
  async update(o: ResourceSliceObject): Promise<ResourceSliceObject> {
    const cur = this.objects.get(o.metadata.name!);
    if (!cur || cur.metadata.resourceVersion !== o.metadata.resourceVersion) throw new Error(`409 conflict on ${o.metadata.name}`);
    return this.put(o);
  }
  async remove(name: string): Promise<void> {
    this.writes++;
    this.objects.delete(name);
  }
  private put(o: ResourceSliceObject): ResourceSliceObject {
    this.writes++;
    const copy = structuredClone(o);
    delete copy.metadata.generateName;
    copy.metadata.resourceVersion = String(++MemoryStore.rv);
    // Like the API server: taints get a timeAdded the agent never sets, or are dropped with the feature off.
    for (const d of copy.spec.devices ?? []) {
      if (this.opts.dropTaints) delete d.taints;
      for (const t of d.taints ?? []) (t as Record<string, unknown>).timeAdded = '2026-01-01T00:00:00Z';
    }
    this.objects.set(copy.metadata.name!, copy);
    return structuredClone(copy);
  }
  /** Object names by index (the first `-` field), in index order. */
  names(): string[] {
    return [...this.objects.values()].filter((o) => !this.node || o.spec.nodeName === this.node).map((o) => o.metadata.name!).sort();
  }
}

describe('devices', () => {
  test('a VF carries the standard attributes, NUMA, IDs, parent and VF facts; names are DNS labels', () => {
    const [pool] = desiredPools(NODE, [nicPool], [vf(0)], facts);
    const d = pool!.chunks[0]![0]!;
    expect(d.name).toBe('vf-0000-81-02-0');
    expect(d.attributes).toEqual({
      [ATTR_PCI_BUS_ID]: { string: '0000:81:02.0' }, [ATTR_PCIE_ROOT]: { string: 'pci0000:80' },
      pool: { string: 'fast-net' }, class: { string: 'NIC' }, mode: { string: 'SRIOV' }, kind: { string: 'VF' }, parent: { string: '0000:81:00.0' },
      vendorID: { string: '8086' }, deviceID: { string: '10ed' }, parentVendorID: { string: '8086' }, parentDeviceID: { string: '10fb' },
      numaNode: { int: 1 }, iommuGroup: { int: 40 }, vfIndex: { int: 0 }, pfNetdev: { string: 'ens1f0' },
    });
    expect(pool!.poolName).toBe('worker-1/fast-net');
  });

  test('an mdev has no pciBusID of its own but the mdev UUID and type, and its parent GPU\'s PCIe root', () => {
    const [pool] = desiredPools(NODE, [gpuPool], [mdev], facts);
    const d = pool!.chunks[0]![0]!;
    expect(d.name).toBe(`mdev-${mdev.mdevUuid}`);
    expect(d.attributes[ATTR_PCI_BUS_ID]).toBeUndefined();
    expect(d.attributes[ATTR_PCIE_ROOT]).toEqual({ string: 'pci0000:c0' });
    expect(d.attributes.mdevUUID).toEqual({ string: mdev.mdevUuid });
    expect(d.attributes.mdevType).toEqual({ string: 'nvidia-754' });
    expect(d.attributes.vendorID).toEqual({ string: '10de' });
  });

  test('only DRA pools are published; an Unhealthy slice is tainted NoSchedule with a label-safe reason', () => {
    const pools = desiredPools(NODE, [nicPool, dpPool], [vf(0, 'Unhealthy'), vf(1), vf(2, 'Healthy', 'classic')], facts);
    expect(pools.map((p) => p.pool)).toEqual(['fast-net']);
    const [bad, good] = pools[0]!.chunks[0]!;
    expect(bad!.taints).toEqual([{ key: UNHEALTHY_TAINT, value: 'VF_0000_81_02.0_bound_to_ixgbevf_not_vfio-pci', effect: 'NoSchedule' }]);
    expect(good!.taints).toBeUndefined();
    for (const d of [bad!, good!]) expect(d.name).toMatch(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/);
  });

  test('chunks: at most 128 devices per object, 64 when a device is tainted', () => {
    const many = Array.from({ length: 200 }, (_, i) => vf(i));
    expect(desiredPools(NODE, [nicPool], many, facts)[0]!.chunks.map((c) => c.length)).toEqual([MAX_DEVICES, 200 - MAX_DEVICES]);
    many[5] = vf(5, 'Unhealthy');
    expect(desiredPools(NODE, [nicPool], many, facts)[0]!.chunks.map((c) => c.length)).toEqual([MAX_DEVICES_WITH_TAINTS, MAX_DEVICES_WITH_TAINTS, MAX_DEVICES_WITH_TAINTS, 200 - 3 * MAX_DEVICES_WITH_TAINTS]);
  });

  test('PCIe root from the sysfs link, as the standard attribute defines it', () => {
    const sys = mkdtempSync(join(tmpdir(), 'vio-pcie-'));
    try {
      mkdirSync(join(sys, 'devices/pci0000:80/0000:80:03.0/0000:81:00.0'), { recursive: true });
      mkdirSync(join(sys, 'bus/pci/devices'), { recursive: true });
      symlinkSync('../../../devices/pci0000:80/0000:80:03.0/0000:81:00.0', join(sys, 'bus/pci/devices/0000:81:00.0'));
      const read = pcieRootReader(sys);
      expect(read('0000:81:00.0')).toBe('pci0000:80');
      expect(read('0000:99:00.0')).toBeUndefined();
    } finally {
      rmSync(sys, { recursive: true, force: true });
    }
  });
});

test('a kick before anything is desired does not spin the event loop', async () => {
  const store = new MemoryStore();
  const p = new ResourceSlicePublisher({ store, node: NODE, logger: silentLogger(), resyncMs: 60_000 });
  const ctl = new AbortController();
  const running = p.run(ctl.signal);
  p.kick();
  await new Promise((r) => setTimeout(r, 50)); // would never fire if run() looped synchronously
  p.setDesired(desiredPools(NODE, [nicPool], [vf(0)], facts));
  for (let i = 0; i < 100 && store.objects.size === 0; i++) await new Promise((r) => setTimeout(r, 10));
  expect(store.objects.size).toBe(1);
  ctl.abort();
  await running;
});

describe('syncResourceSlices', () => {
  test('generation bookkeeping: written at 1, unchanged → no write, changed → every object at 2, extra objects deleted', async () => {
    const store = new MemoryStore();
    const many = Array.from({ length: 130 }, (_, i) => vf(i));
    let r = await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], many, facts));
    expect(r.created).toHaveLength(2);
    expect(r.created.map((n) => [resourceSliceIndex(n, 2), n.slice(0, -5)])).toEqual([[0, '00000-virtualio.dev-worker-1-'], [1, '00001-virtualio.dev-worker-1-']]);
    const [first, second] = r.created;
    expect([...store.objects.values()].map((o) => o.spec.pool)).toEqual([
      { name: 'worker-1/fast-net', generation: 1, resourceSliceCount: 2 }, { name: 'worker-1/fast-net', generation: 1, resourceSliceCount: 2 },
    ]);
    const writes = store.writes;
    r = await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], many, facts));
    expect(store.writes).toBe(writes);
    expect(r.generations).toEqual({});

    r = await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], many.slice(0, 10), facts));
    expect(r).toMatchObject({ updated: [first], deleted: [second], generations: { 'fast-net': 2 } });
    expect([...store.objects.values()].map((o) => [o.spec.pool.generation, o.spec.pool.resourceSliceCount, (o.spec.devices ?? []).length])).toEqual([[2, 1, 10]]);
  });

  test('a taint the server stamped with timeAdded is still "the same"; a pool that left is deleted', async () => {
    const store = new MemoryStore();
    const first = await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool, gpuPool], [vf(0, 'Unhealthy'), mdev], facts));
    const writes = store.writes;
    await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool, gpuPool], [vf(0, 'Unhealthy'), mdev], facts));
    expect(store.writes).toBe(writes);
    const r = await syncResourceSlices(store, NODE, desiredPools(NODE, [gpuPool], [mdev], facts));
    expect(r.deleted).toEqual([first.created[0]]);
  });

  test('slices wiped behind our back (kubelet start) come back at a higher generation than the last one written', async () => {
    const store = new MemoryStore();
    const gens = new Map<string, number>();
    await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], [vf(0)], facts), undefined, gens);
    await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], [vf(0), vf(1)], facts), undefined, gens);
    expect([...store.objects.values()][0]!.spec.pool.generation).toBe(2);
    store.objects.clear();
    const r = await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], [vf(0), vf(1)], facts), undefined, gens);
    expect(r.created).toHaveLength(1);
    expect([...store.objects.values()][0]!.spec.pool.generation).toBe(3);
  });
});

describe('ResourceSlice object names', () => {
  test('never collide across nodes: node a-b pool c and node a pool b-c publish side by side on one API server', async () => {
    const api = new Map<string, ResourceSliceObject>();
    const ab = new MemoryStore(api, 'a-b');
    const a = new MemoryStore(api, 'a');
    const pool = (name: string): PoolPlan => ({ ...nicPool, name, resourceName: `virtualio.dev/${name}` });
    await syncResourceSlices(ab, 'a-b', desiredPools('a-b', [pool('c')], [vf(0, 'Healthy', 'c')], facts));
    await syncResourceSlices(a, 'a', desiredPools('a', [pool('b-c')], [vf(0, 'Healthy', 'b-c')], facts));
    expect([...api.values()].map((o) => [o.spec.nodeName, o.spec.pool.name]).sort()).toEqual([['a', 'a/b-c'], ['a-b', 'a-b/c']]);
    // Each agent keeps to its own objects: a second pass writes nothing.
    const writes = ab.writes + a.writes;
    await syncResourceSlices(ab, 'a-b', desiredPools('a-b', [pool('c')], [vf(0, 'Healthy', 'c')], facts));
    await syncResourceSlices(a, 'a', desiredPools('a', [pool('b-c')], [vf(0, 'Healthy', 'b-c')], facts));
    expect(ab.writes + a.writes).toBe(writes);
  });

  test('objects of an earlier version (fixed names) are replaced by indexed ones; a second object for one index is deleted', async () => {
    const store = new MemoryStore();
    const [content] = desiredPools(NODE, [nicPool], [vf(0)], facts);
    const old: ResourceSliceObject = {
      apiVersion: 'resource.k8s.io/v1', kind: 'ResourceSlice', metadata: { name: `${NODE}-fast-net-virtualio.dev-0`, labels: {}, resourceVersion: '1' },
      spec: { driver: 'virtualio.dev', nodeName: NODE, pool: { name: content!.poolName, generation: 4, resourceSliceCount: 1 }, devices: content!.chunks[0]! },
    };
    store.objects.set(old.metadata.name!, old);
    const r = await syncResourceSlices(store, NODE, [content!]);
    expect(r.deleted).toEqual([old.metadata.name]);
    expect(r.created).toHaveLength(1);
    expect([...store.objects.values()].map((o) => [resourceSliceIndex(o.metadata.name!, 1), o.spec.pool.generation])).toEqual([[0, 5]]);
    // A create whose answer was lost leaves two objects for index 0: one goes.
    const dup = structuredClone([...store.objects.values()][0]!);
    dup.metadata.name = `${dup.metadata.name!.slice(0, -5)}zzzzz`;
    store.objects.set(dup.metadata.name, dup);
    const again = await syncResourceSlices(store, NODE, [content!]);
    expect(again.deleted).toHaveLength(1);
    expect(store.objects.size).toBe(1);
  });
});

describe('fields the API server drops (device taints with DRADeviceTaints off)', () => {
  test('detected in what the write returns; what was stored counts as written: no new generation every pass', async () => {
    const store = new MemoryStore(undefined, undefined, { dropTaints: true });
    const memory = newPublisherMemory();
    const dropped: DroppedFields[] = [];
    const desired = desiredPools(NODE, [nicPool], [vf(0, 'Unhealthy'), vf(1)], facts);
    await syncResourceSlices(store, NODE, desired, undefined, memory, (d) => dropped.push(d));
    expect(dropped).toEqual([{ pool: 'fast-net', poolName: 'worker-1/fast-net', index: 0, features: ['DRADeviceTaints'] }]);
    const writes = store.writes;
    for (let i = 0; i < 3; i++) await syncResourceSlices(store, NODE, desired, undefined, memory, (d) => dropped.push(d));
    expect(store.writes).toBe(writes);
    expect([...store.objects.values()].map((o) => o.spec.pool.generation)).toEqual([1]);
    expect(dropped).toHaveLength(1);
    // Another content is written (and checked) again.
    await syncResourceSlices(store, NODE, desiredPools(NODE, [nicPool], [vf(0, 'Unhealthy')], facts), undefined, memory, (d) => dropped.push(d));
    expect([...store.objects.values()].map((o) => o.spec.pool.generation)).toEqual([2]);
    expect(dropped).toHaveLength(2);
  });

  test('the driver then leaves unhealthy devices out instead of publishing them untainted (allocatable), once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-dra-taints-'));
    const store = new MemoryStore(undefined, undefined, { dropTaints: true });
    const ctl = new AbortController();
    const claims = new Map<string, ClaimObject>();
    const driver = new DraDriver({
      nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
      getClaim: async (ns, name) => claims.get(`${ns}/${name}`), store, logger: silentLogger(), resyncMs: 30, socketCheckMs: 50,
    });
    driver.update([nicPool], [vf(0, 'Unhealthy'), vf(1)], { devices: inventory });
    const running = driver.run(ctl.signal);
    try {
      const devices = (): string[] => [...store.objects.values()].flatMap((o) => (o.spec.devices ?? []).map((d) => d.name));
      for (let i = 0; i < 200 && !(driver.taintsUnsupported && devices().length === 1); i++) await new Promise((r) => setTimeout(r, 10));
      expect(devices()).toEqual([draDeviceName(vf(1))]);
      expect(driver.taintsUnsupported).toContain('DRADeviceTaints');
      // Resyncs every 30 ms: nothing more is written.
      const writes = store.writes;
      await new Promise((r) => setTimeout(r, 300));
      expect(store.writes).toBe(writes);
      // Healthy again: published again.
      driver.update([nicPool], [vf(0), vf(1)], { devices: inventory });
      for (let i = 0; i < 200 && devices().length < 2; i++) await new Promise((r) => setTimeout(r, 10));
      expect(devices().sort()).toEqual([draDeviceName(vf(0)), draDeviceName(vf(1))]);
    } finally {
      ctl.abort();
      await running;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function claim(uid: string, results: { request: string; driver: string; pool: string; device: string }[], annotations?: Record<string, string>): ClaimObject {
  return { metadata: { name: 'vm-gpu', namespace: 'vms', uid, ...(annotations ? { annotations } : {}) }, status: { allocation: { devices: { results } } } };
}

describe('planClaim', () => {
  const index = sliceIndex(NODE, [nicPool, gpuPool], [vf(0), vf(1, 'Unhealthy'), mdev]);
  const ref = { namespace: 'vms', name: 'vm-gpu', uid: 'u1' };

  test('our results on this node become prepared devices with CDI IDs; other drivers are skipped', () => {
    const p = planClaim(ref, claim('u1', [
      { request: 'nic', driver: 'virtualio.dev', pool: 'worker-1/fast-net', device: 'vf-0000-81-02-0' },
      { request: 'other', driver: 'gpu.example.com', pool: 'x', device: 'y' },
    ]), NODE, index);
    expect(p).toEqual({ uid: 'u1', namespace: 'vms', name: 'vm-gpu', devices: [{ request: 'nic', pool: 'worker-1/fast-net', device: 'vf-0000-81-02-0', sliceId: '0000:81:02.0', cdiId: 'virtualio.dev/claim=u1-vf-0000-81-02-0', resourceName: 'virtualio.dev/fast-net' }] });
  });

  test.each([
    ['a missing claim', undefined, 'not found'],
    ['another claim under the same name', claim('u2', []), 'has UID u2, the kubelet asked for u1'],
    ['an unallocated claim', { metadata: { name: 'vm-gpu', namespace: 'vms', uid: 'u1' } }, 'is not allocated'],
    ['a device of another node', claim('u1', [{ request: 'r', driver: 'virtualio.dev', pool: 'worker-2/fast-net', device: 'vf-0000-81-02-0' }]), 'is not on node worker-1'],
    ['a device we do not publish', claim('u1', [{ request: 'r', driver: 'virtualio.dev', pool: 'worker-1/fast-net', device: 'vf-0000-81-09-0' }]), 'is not published by this agent'],
    ['an Unhealthy device', claim('u1', [{ request: 'r', driver: 'virtualio.dev', pool: 'worker-1/fast-net', device: 'vf-0000-81-02-1' }]), 'is Unhealthy'],
  ])('refuses %s', (_n, c, msg) => {
    const p = planClaim(ref, c as ClaimObject | undefined, NODE, index);
    expect(p).toHaveProperty('error');
    expect((p as { error: string }).error).toContain(msg);
  });

  test('an on-demand NVMe VF is found under the queue-count names it is published as, not its plain VF name', () => {
    const nvmePool: PoolPlan = { ...nicPool, name: 'nvmeq', resourceName: 'virtualio.dev/nvmeq', class: 'Storage', onDemand: { nvmeQueues: [2, 4] } };
    const idx = sliceIndex(NODE, [nvmePool], [vf(1, 'Healthy', 'nvmeq')]);
    const p = planClaim(ref, claim('u1', [{ request: 'disk', driver: 'virtualio.dev', pool: 'worker-1/nvmeq', device: 'nvme-0000-81-02-1-q4' }]), NODE, idx);
    expect(p).toMatchObject({ devices: [{ device: 'nvme-0000-81-02-1-q4', sliceId: '0000:81:02.1', cdiId: 'virtualio.dev/claim=u1-nvme-0000-81-02-1-q4' }] });
    for (const device of ['vf-0000-81-02-1', 'nvme-0000-81-02-1-q8']) {
      expect(planClaim(ref, claim('u1', [{ request: 'disk', driver: 'virtualio.dev', pool: 'worker-1/nvmeq', device }]), NODE, idx)).toHaveProperty('error');
    }
  });
});

test('checkpoint: survives a reload; a corrupt file is an error that names it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vio-ckpt-'));
  try {
    const file = join(dir, 'checkpoint.json');
    const a = new Checkpoint(file);
    a.load();
    a.put({ uid: 'u1', namespace: 'vms', name: 'c', devices: [] });
    const b = new Checkpoint(file);
    b.load();
    expect(b.get('u1')?.name).toBe('c');
    writeFileSync(file, '{');
    expect(() => new Checkpoint(file).load()).toThrow(`DRA checkpoint ${file} is not valid JSON`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe('DraDriver over its unix sockets', () => {
  let dir: string;
  let ctl: AbortController;
  let driver: DraDriver;
  let running: Promise<void>;
  const claims = new Map<string, ClaimObject>();
  const store = new MemoryStore();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-dra-'));
    ctl = new AbortController();
    driver = new DraDriver({
      nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
      getClaim: async (ns, name) => claims.get(`${ns}/${name}`), store, logger: silentLogger(), resyncMs: 60_000, socketCheckMs: 50,
    });
    driver.update([nicPool, gpuPool], [vf(0), mdev], { devices: inventory });
    running = driver.run(ctl.signal);
    for (let i = 0; i < 100 && !(existsSync(driver.registrationSocket) && existsSync(driver.draSocket)); i++) await new Promise((r) => setTimeout(r, 20));
  });

  afterAll(async () => {
    ctl.abort();
    await running;
    rmSync(dir, { recursive: true, force: true });
  });

  function call<Req, Res>(service: grpc.ServiceDefinition, socket: string, method: string, req: Req): Promise<Res> {
    const Client = grpc.makeGenericClientConstructor(service, 'x');
    const c = new Client(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as Record<string, (r: Req, cb: (e: Error | null, v: Res) => void) => void>;
    return new Promise((resolve, reject) => c[method]!(req, (e, v) => {
      (c as unknown as grpc.Client).close();
      if (e) reject(e);
      else resolve(v);
    }));
  }

  test('GetInfo names a DRAPlugin with both service versions and the plugin socket', async () => {
    const info = await call<object, { type: string; name: string; endpoint: string; supportedVersions: string[] }>(loadPluginRegistrationApi().pluginregistration.Registration.service, driver.registrationSocket, 'GetInfo', {});
    expect(info).toEqual({ type: 'DRAPlugin', name: 'virtualio.dev', endpoint: driver.draSocket, supportedVersions: ['v1.DRAPlugin', 'v1beta1.DRAPlugin'] });
    expect(driver.registrationSocket).toBe(join(dir, 'kubelet/plugins_registry/virtualio.dev-reg.sock'));
    await call(loadPluginRegistrationApi().pluginregistration.Registration.service, driver.registrationSocket, 'NotifyRegistrationStatus', { pluginRegistered: true });
    expect(driver.registration).toEqual({ registered: true });
  });

  test('prepare (v1) writes the CDI spec and KubeVirt metadata, holds the slice, is idempotent; unprepare undoes it (v1beta1)', async () => {
    claims.set('vms/vm-gpu', claim('u9', [{ request: 'gpu', driver: 'virtualio.dev', pool: 'worker-1/vgpu', device: draDeviceName(mdev) }], { 'resource.kubernetes.io/pod-claim-name': 'gpu-claim' }));
    const v1 = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const req = { claims: [{ namespace: 'vms', name: 'vm-gpu', uid: 'u9' }] };
    type Resp = { claims: Record<string, { devices: { requestNames: string[]; poolName: string; deviceName: string; cdiDeviceIds: string[] }[]; error: string }> };
    const r1 = await call<typeof req, Resp>(v1, driver.draSocket, 'NodePrepareResources', req);
    const cdiId = `virtualio.dev/claim=u9-${draDeviceName(mdev)}`;
    expect(r1.claims.u9).toEqual({ error: '', devices: [{ requestNames: ['gpu'], poolName: 'worker-1/vgpu', deviceName: draDeviceName(mdev), cdiDeviceIds: [cdiId] }] });
    expect(driver.preparedSliceIds()).toEqual(new Set([mdev.id]));

    const spec = JSON.parse(readFileSync(join(dir, 'cdi/virtualio.dev-claim_u9.json'), 'utf8'));
    expect(spec.kind).toBe('virtualio.dev/claim');
    const dev = spec.devices[0];
    expect(dev.containerEdits.deviceNodes.map((n: { path: string }) => n.path)).toEqual(['/dev/vfio/vfio', '/dev/vfio/109']);
    expect(dev.containerEdits.mounts[0].containerPath).toBe('/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/gpu-claim/gpu/virtualio.dev-metadata.json');
    const meta = JSON.parse(readFileSync(dev.containerEdits.mounts[0].hostPath, 'utf8'));
    expect(meta).toMatchObject({ apiVersion: 'metadata.resource.k8s.io/v1alpha1', kind: 'DeviceMetadata', podClaimName: 'gpu-claim', metadata: { name: 'vm-gpu', namespace: 'vms', uid: 'u9' } });
    expect(meta.requests[0].devices[0]).toMatchObject({ driver: 'virtualio.dev', pool: 'worker-1/vgpu', attributes: { mdevUUID: { string: mdev.mdevUuid } } });

    claims.delete('vms/vm-gpu'); // a second call must answer from the checkpoint, not the API
    const r2 = await call<typeof req, Resp>(v1, driver.draSocket, 'NodePrepareResources', req);
    expect(r2).toEqual(r1);

    const v1beta1 = loadDraV1beta1Api().k8s.io.kubelet.pkg.apis.dra.v1beta1.DRAPlugin.service;
    const u = await call<typeof req, { claims: Record<string, { error: string }> }>(v1beta1, driver.draSocket, 'NodeUnprepareResources', req);
    expect(u.claims.u9).toEqual({ error: '' });
    expect(existsSync(join(dir, 'cdi/virtualio.dev-claim_u9.json'))).toBe(false);
    expect(driver.preparedSliceIds().size).toBe(0);
    const again = await call<typeof req, { claims: Record<string, { error: string }> }>(v1beta1, driver.draSocket, 'NodeUnprepareResources', req);
    expect(again.claims.u9).toEqual({ error: '' });
  });

  test('a firstAvailable claim: requestNames is the top-level request (the kubelet and KubeVirt match it), as are the metadata file and mount', async () => {
    claims.set('vms/vm-first', { ...claim('u10', [{ request: 'gpu/a16-4q', driver: 'virtualio.dev', pool: 'worker-1/vgpu', device: draDeviceName(mdev) }]), metadata: { name: 'vm-first', namespace: 'vms', uid: 'u10' } });
    const v1 = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const req = { claims: [{ namespace: 'vms', name: 'vm-first', uid: 'u10' }] };
    type Resp = { claims: Record<string, { devices: { requestNames: string[] }[]; error: string }> };
    try {
      const r = await call<typeof req, Resp>(v1, driver.draSocket, 'NodePrepareResources', req);
      expect(r.claims.u10!.error).toBe('');
      expect(r.claims.u10!.devices.map((d) => d.requestNames)).toEqual([['gpu']]);
      const spec = JSON.parse(readFileSync(join(dir, 'cdi/virtualio.dev-claim_u10.json'), 'utf8'));
      expect(spec.devices[0].containerEdits.mounts[0].containerPath).toBe('/var/run/kubernetes.io/dra-device-attributes/resourceclaims/vm-first/gpu/virtualio.dev-metadata.json');
      // Answered the same from the checkpoint.
      expect((await call<typeof req, Resp>(v1, driver.draSocket, 'NodePrepareResources', req)).claims.u10!.devices.map((d) => d.requestNames)).toEqual([['gpu']]);
    } finally {
      await call(v1, driver.draSocket, 'NodeUnprepareResources', req);
    }
  });

  test('a claim that cannot be prepared gets a per-claim error, not a failed call', async () => {
    const v1 = loadDraV1Api().k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.service;
    const r = await call<object, { claims: Record<string, { error: string }> }>(v1, driver.draSocket, 'NodePrepareResources', { claims: [{ namespace: 'vms', name: 'nope', uid: 'u0' }] });
    expect(r.claims.u0!.error).toBe('ResourceClaim vms/nope not found');
  });

  test('the registration socket is re-created when it disappears (kubelet cleanup)', async () => {
    rmSync(driver.registrationSocket);
    for (let i = 0; i < 100 && !existsSync(driver.registrationSocket); i++) await new Promise((r) => setTimeout(r, 20));
    expect(existsSync(driver.registrationSocket)).toBe(true);
  });

  test('the health stream sends every device at once and again when one turns Unhealthy', async () => {
    const Client = grpc.makeGenericClientConstructor(loadDraHealthApi().v1alpha1.DRAResourceHealth.service, 'x');
    const c = new Client(`unix://${driver.draSocket}`, grpc.credentials.createInsecure()) as unknown as { NodeWatchResources: (r: object) => grpc.ClientReadableStream<{ devices: { device: { poolName: string; deviceName: string }; health: string; message: string }[] }> } & grpc.Client;
    const stream = c.NodeWatchResources({});
    const got: { devices: { device: { poolName: string; deviceName: string }; health: string; message: string }[] }[] = [];
    stream.on('data', (m) => got.push(m));
    stream.on('error', () => undefined);
    try {
      for (let i = 0; i < 100 && got.length < 1; i++) await new Promise((r) => setTimeout(r, 20));
      expect(got[0]!.devices.map((d) => [d.device.poolName, d.device.deviceName, d.health])).toEqual([
        ['worker-1/fast-net', 'vf-0000-81-02-0', 'HEALTHY'], ['worker-1/vgpu', draDeviceName(mdev), 'HEALTHY'],
      ]);
      driver.update([nicPool, gpuPool], [vf(0, 'Unhealthy'), mdev], { devices: inventory });
      for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      expect(got[1]!.devices[0]).toMatchObject({ health: 'UNHEALTHY', message: 'VF 0000:81:02.0 bound to ixgbevf, not vfio-pci' });
      driver.update([nicPool, gpuPool], [vf(0, 'Unhealthy'), mdev], { devices: inventory });
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toHaveLength(2); // nothing changed: nothing sent (until the periodic refresh)
    } finally {
      stream.cancel();
      c.close();
      driver.update([nicPool, gpuPool], [vf(0), mdev], { devices: inventory });
    }
  });

  test('the publisher wrote the two pools', async () => {
    for (let i = 0; i < 100 && store.objects.size < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect([...store.objects.values()].map((o) => o.spec.pool.name).sort()).toEqual(['worker-1/fast-net', 'worker-1/vgpu']);
  });
});
