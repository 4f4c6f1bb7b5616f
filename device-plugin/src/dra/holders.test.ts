// One slice, one holder, on the DRA side (driver.ts with fakes for the API server and the agent's
// ledger): a slice held outside DRA is neither published nor prepared; a slice prepared for one claim
// is refused to another; claims the scheduler allocated here hold their slices before prepare; the
// claim read has a deadline and never holds up other claims; a damaged checkpoint leaves the driver
// serving, says "unknown" and recovers by re-learning the claims from their CDI specs. Plus the
// device plugin's side of a frontEnd switch (DRA → device plugin) checked against the real ledger.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DevicePluginFrontEnd, type FrontEndOptions } from '../agent/frontends.js';
import { Ledger } from '../agent/ledger.js';
import { silentLogger } from '../log.js';
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import { draDeviceName } from './devices.js';
import { DraDriver, type DraHoldState, type PreparedHolder } from './driver.js';
import type { ClaimObject, ClaimRef } from './prepare.js';
import { FakeClaims, MemoryStore, claimObj, until } from '../../../test/fakes/dra.js';

const NODE = 'worker-1';
const pool: PoolPlan = { name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: '0000:3b:00.0' }, { pciAddress: '0000:3c:00.0' }] };
function fn(addr: string, group: number): Slice {
  return { id: addr, pool: 'gpu', resourceName: pool.resourceName, kind: 'Function', parent: addr, pciAddress: addr, iommuGroup: group, numaNode: 0, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy' };
}
const A = fn('0000:3b:00.0', 60);
const B = fn('0000:3c:00.0', 61);
const inventory: { devices: InventoryDevice[] } = { devices: [{ pciAddress: A.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 }, { pciAddress: B.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 }] };
const POOL = `${NODE}/gpu`;

interface Rig {
  dir: string;
  driver: DraDriver;
  store: MemoryStore;
  claims: FakeClaims;
  /** What the API server answers to a GET, by namespace/name. */
  api: Map<string, ClaimObject | Promise<ClaimObject | undefined>>;
  /** The agent's ledger, as holderOf answers it. */
  holds: Map<string, DraHoldState>;
  holdersChanged: number;
  stop: () => Promise<void>;
}

const rigs: Rig[] = [];
afterEach(async () => {
  for (const r of rigs.splice(0)) {
    await r.stop();
    rmSync(r.dir, { recursive: true, force: true });
  }
});

/** A running driver on fresh folders (or `dir` again), with every port faked. */
async function rig(opts: { dir?: string; claims?: FakeClaims; claimTimeoutMs?: number; slices?: Slice[]; keepDir?: boolean } = {}): Promise<Rig> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'vio-dra-h-'));
  const store = new MemoryStore();
  const claims = opts.claims ?? new FakeClaims();
  const api = new Map<string, ClaimObject | Promise<ClaimObject | undefined>>();
  const holds = new Map<string, DraHoldState>();
  const ctl = new AbortController();
  const r: Partial<Rig> = { dir, store, claims, api, holds, holdersChanged: 0 };
  const driver = new DraDriver({
    nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
    getClaim: (ns, name) => Promise.resolve(api.get(`${ns}/${name}`)),
    claims, store, logger: silentLogger(), resyncMs: 60_000, socketCheckMs: 50,
    holderOf: (id) => holds.get(id) ?? { kind: 'free' },
    onHoldersChanged: () => {
      r.holdersChanged!++;
    },
    ...(opts.claimTimeoutMs ? { claimTimeoutMs: opts.claimTimeoutMs } : {}),
  });
  driver.update([pool], opts.slices ?? [A, B], inventory);
  const running = driver.run(ctl.signal);
  r.driver = driver;
  r.stop = async () => {
    ctl.abort();
    await running;
  };
  if (!opts.keepDir) rigs.push(r as Rig);
  await until('the driver serving', () => existsSync(driver.draSocket));
  return r as Rig;
}

const ref = (uid: string, name: string): ClaimRef => ({ namespace: 'vms', name, uid });
const podHold = (pod: string): DraHoldState => ({ kind: 'held', by: `pod vms/${pod}`, holder: { resourceName: 'virtualio.dev/gpu', namespace: 'vms', pod, container: 'compute' } as never });
const claimHold = (h: PreparedHolder | undefined): DraHoldState => ({ kind: 'held', by: `DRA claim ${h?.namespace}/${h?.pod}`, holder: h });

describe('device plugin → DRA: a slice a pod holds through the device plugin', () => {
  test('is left out of the ResourceSlices until the ledger lets it go', async () => {
    const r = await rig();
    r.holds.set(A.id, podHold('virt-launcher-vm1-abcde'));
    r.driver.update([pool], [A, B], inventory);
    await until('only B published', () => r.store.devices().join() === draDeviceName(B));
    expect(r.driver.withheld.get(A.id)).toBe('pod vms/virt-launcher-vm1-abcde');
    r.holds.delete(A.id);
    r.driver.update([pool], [A, B], inventory);
    await until('both published again', () => r.store.devices().length === 2);
    expect(r.driver.withheld.size).toBe(0);
  });

  test('is refused by NodePrepareResources with a per-claim error, and nothing is written', async () => {
    const r = await rig();
    r.holds.set(A.id, podHold('virt-launcher-vm1-abcde'));
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm2-fghij']));
    const out = await r.driver.prepare(ref('u1', 'c1'));
    expect(out.devices).toEqual([]);
    expect(out.error).toBe(`ResourceClaim vms/c1: device ${draDeviceName(A)} (${A.id}) is held by pod vms/virt-launcher-vm1-abcde; not handing it out twice`);
    expect(existsSync(join(r.dir, 'cdi', 'virtualio.dev-claim_u1.json'))).toBe(false);
    expect(r.driver.preparedSliceIds().size).toBe(0);
    // Once the pod is gone the kubelet's retry goes through.
    r.holds.delete(A.id);
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
  });
});

describe('one slice, one claim', () => {
  test('a slice prepared for one claim is refused to another; the first claim is answered the same again', async () => {
    const r = await rig();
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    r.api.set('vms/c2', claimObj(POOL, 'u2', 'c2', [A], ['virt-launcher-vm2-fghij']));
    const first = await r.driver.prepare(ref('u1', 'c1'));
    expect(first.error).toBe('');
    // The ledger names our own claim as the holder: not "elsewhere", but still another claim.
    r.holds.set(A.id, claimHold(r.driver.preparedHolders().get(A.id)));
    const second = await r.driver.prepare(ref('u2', 'c2'));
    expect(second.error).toBe(`ResourceClaim vms/c2: device ${draDeviceName(A)} (${A.id}) is already prepared for ResourceClaim vms/c1 (UID u1); not handing it out twice`);
    expect(await r.driver.prepare(ref('u1', 'c1'))).toEqual(first);
    // Published all along: a slice our claim holds is the scheduler's business.
    r.driver.update([pool], [A, B], inventory);
    await until('both published', () => r.store.devices().length === 2);
  });

  test('after unprepare, the hold the ledger keeps for its grace period (no holder named) is ours: still published and preparable', async () => {
    const r = await rig();
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    expect(await r.driver.unprepare(ref('u1', 'c1'))).toBe('');
    const grace: DraHoldState = { kind: 'held', by: 'pod ? in the kubelet\'s checkpoint' };
    r.holds.set(A.id, grace);
    r.holds.set(B.id, grace); // B was never ours: that hold is someone else's
    r.driver.update([pool], [A, B], inventory);
    await until('A published, B withheld', () => r.store.devices().join() === draDeviceName(A));
    r.api.set('vms/c3', claimObj(POOL, 'u3', 'c3', [A], ['virt-launcher-vm3-klmno']));
    expect((await r.driver.prepare(ref('u3', 'c3'))).error).toBe('');
    // A pool that stops being a DRA pool (and comes back) loses that benefit of the doubt.
    await r.driver.unprepare(ref('u3', 'c3'));
    r.driver.update([{ ...pool, frontEnd: 'DevicePlugin' }], [A, B], inventory);
    r.driver.update([pool], [A, B], inventory);
    expect([...r.driver.withheld.keys()].sort()).toEqual([A.id, B.id]);
  });
});

describe('claims the scheduler allocated here, not prepared yet', () => {
  test('hold their slices from the first list on; unknown before it; a failing API server keeps the last list', async () => {
    const claims = new FakeClaims();
    claims.failLists = true;
    const r = await rig({ claims });
    await until('a failed list', () => claims.listCalls > 0);
    expect(r.driver.holdersUnknown()).toMatch(/^ResourceClaims not listed yet \(listing ResourceClaims: Error: connect ECONNREFUSED\)/);
    claims.items.set('u5', claimObj(POOL, 'u5', 'c5', [A], ['virt-launcher-vm5-abcde']));
    claims.failLists = false;
    await until('the list', () => claims.watching);
    expect(r.driver.holdersUnknown()).toBeUndefined();
    expect(r.driver.preparedHolders().get(A.id)).toEqual({ resourceName: 'virtualio.dev/gpu', namespace: 'vms', pod: 'virt-launcher-vm5-abcde', container: '', claim: 'c5' });
    expect(r.driver.preparedSliceIds().size).toBe(0); // allocated, not prepared
    expect(r.holdersChanged).toBeGreaterThan(0);
    // A claim allocated later (watch) holds at once.
    const before = r.holdersChanged;
    claims.set(claimObj(POOL, 'u6', 'c6', [B], []));
    expect(r.driver.preparedHolders().get(B.id)?.pod).toBe('claim/c6');
    expect(r.holdersChanged).toBe(before + 1);
  });

  test('unprepared while still reserved for the same pod: holds nothing; reserved for a new pod: holds again', async () => {
    const claims = new FakeClaims();
    claims.items.set('u5', claimObj(POOL, 'u5', 'c5', [A], ['virt-launcher-vm5-abcde']));
    const r = await rig({ claims });
    await until('the list', () => claims.watching);
    r.api.set('vms/c5', claimObj(POOL, 'u5', 'c5', [A], ['virt-launcher-vm5-abcde']));
    expect((await r.driver.prepare(ref('u5', 'c5'))).error).toBe('');
    expect(r.driver.preparedHolders().has(A.id)).toBe(true);
    await r.driver.unprepare(ref('u5', 'c5'));
    // Nothing runs the ResourceClaim controller that would clear reservedFor and the allocation.
    expect(r.driver.preparedHolders().has(A.id)).toBe(false);
    claims.set(claimObj(POOL, 'u5', 'c5', [A], ['virt-launcher-vm5-xyzzy']));
    expect(r.driver.preparedHolders().get(A.id)?.pod).toBe('virt-launcher-vm5-xyzzy');
  });
});

describe('the ResourceClaim read', () => {
  test('has a deadline, and a hung read does not hold up another claim', async () => {
    const r = await rig({ claimTimeoutMs: 300 });
    r.api.set('vms/hung', new Promise<never>(() => undefined));
    r.api.set('vms/c2', claimObj(POOL, 'u2', 'c2', [B], ['virt-launcher-vm2-fghij']));
    const t0 = Date.now();
    const hung = r.driver.prepare(ref('u1', 'hung'));
    let hungDone = false;
    void hung.then(() => {
      hungDone = true;
    });
    const other = await r.driver.prepare(ref('u2', 'c2'));
    expect(other.error).toBe('');
    expect(hungDone).toBe(false);
    const out = await hung;
    expect(out).toEqual({ devices: [], error: 'reading ResourceClaim vms/hung: no answer from the API server within 300 ms' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  test('the deadline aborts the request', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-dra-h-'));
    let seen: AbortSignal | undefined;
    const driver = new DraDriver({
      nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'), store: new MemoryStore(), logger: silentLogger(), claimTimeoutMs: 50,
      getClaim: (_ns, _name, signal) => {
        seen = signal;
        return new Promise(() => undefined);
      },
    });
    try {
      const out = await driver.prepare(ref('u1', 'c1'));
      expect(out.error).toContain('within 50 ms');
      expect(seen?.aborted).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a damaged DRA checkpoint', () => {
  /** A driver that prepared c1 (A) and stopped; then the checkpoint is damaged. */
  async function damaged(): Promise<{ dir: string; expected: object }> {
    const first = await rig({ keepDir: true });
    first.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    expect((await first.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    const file = join(first.dir, 'kubelet/plugins/virtualio.dev/checkpoint.json');
    const expected = (JSON.parse(readFileSync(file, 'utf8')) as { claims: object[] }).claims[0]!;
    await first.stop();
    writeFileSync(file, '{"version": 1, "claims": [');
    return { dir: first.dir, expected };
  }

  test('the driver keeps serving, says "unknown" until the claims are re-learned and listed, then recovers', async () => {
    const { dir, expected } = await damaged();
    const claims = new FakeClaims();
    claims.failLists = true;
    const r = await rig({ dir, claims });
    rigs.push(r);
    // The claim whose CDI spec is on disk is re-learned at start: its slice is held again at once.
    expect(r.driver.preparedSliceIds()).toEqual(new Set([A.id]));
    const ckpt = JSON.parse(readFileSync(join(dir, 'kubelet/plugins/virtualio.dev/checkpoint.json'), 'utf8')) as { claims: unknown[]; lost?: { copy?: string } };
    // The same record, but for the pods it was reserved for (the API server did not answer yet).
    const { pods: _pods, ...withoutPods } = expected as { pods?: string[] };
    expect(ckpt.claims).toEqual([withoutPods]);
    expect(readFileSync(ckpt.lost!.copy!, 'utf8')).toBe('{"version": 1, "claims": [');
    await until('a failed list', () => claims.listCalls > 0);
    expect(r.driver.holdersUnknown()).toMatch(/is not valid JSON.*\(damaged file kept as .*checkpoint\.json\.corrupt-.*\); prepared claims not re-learned yet: ResourceClaims not listed yet/);
    // New claims are still prepared; the kubelet's unprepare still works.
    r.api.set('vms/c2', claimObj(POOL, 'u2', 'c2', [B], ['virt-launcher-vm2-fghij']));
    expect((await r.driver.prepare(ref('u2', 'c2'))).error).toBe('');
    expect(await r.driver.unprepare(ref('u1', 'c1'))).toBe('');
    expect(existsSync(join(dir, 'cdi', 'virtualio.dev-claim_u1.json'))).toBe(false);
    claims.failLists = false;
    await until('recovered', () => r.driver.holdersUnknown() === undefined);
    expect(r.driver.preparedSliceIds()).toEqual(new Set([B.id]));
  });

  test('a CDI spec that cannot be re-learned keeps it unknown, naming the file, until the kubelet unprepares that claim', async () => {
    const { dir } = await damaged();
    mkdirSync(join(dir, 'cdi'), { recursive: true });
    writeFileSync(join(dir, 'cdi', 'virtualio.dev-claim_zz.json'), JSON.stringify({ cdiVersion: '0.5.0', kind: 'virtualio.dev/claim', devices: [{ name: 'zz-fn-0000-99-00-0', containerEdits: { deviceNodes: [] } }] }));
    const claims = new FakeClaims();
    const r = await rig({ dir, claims });
    rigs.push(r);
    await until('the list', () => claims.watching);
    expect(r.driver.holdersUnknown()).toContain(`claim zz (${join(dir, 'cdi', 'virtualio.dev-claim_zz.json')}): neither its metadata files nor the API server name the claim`);
    expect(await r.driver.unprepare(ref('zz', 'gone'))).toBe('');
    expect(r.driver.holdersUnknown()).toBeUndefined();
    expect(readdirSync(join(dir, 'cdi'))).toEqual(['virtualio.dev-claim_u1.json']);
  });
});

describe('DRA → device plugin (agent side, with the real ledger)', () => {
  async function setup(): Promise<{ ledger: Ledger; fe: DevicePluginFrontEnd }> {
    const claims = new FakeClaims();
    const r = await rig({ claims });
    await until('the list', () => claims.watching);
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    claims.set(claimObj(POOL, 'u2', 'c2', [B], ['virt-launcher-vm2-fghij'])); // allocated, not prepared
    const ledger = new Ledger({
      node: NODE, logger: silentLogger(),
      sources: {
        podResources: () => ({ synced: true, holders: new Map() }),
        kubeletCheckpoint: () => ({ kind: 'absent' }),
        dra: () => ({ holders: r.driver.preparedHolders(), unknown: r.driver.holdersUnknown() }),
        resourceNames: () => new Set([pool.resourceName]),
      },
    });
    await ledger.refresh();
    return { ledger, fe: new DevicePluginFrontEnd({ holder: (id: string) => ledger.state(id) } as unknown as FrontEndOptions) };
  }

  test('Allocate refuses a slice prepared for a claim and one allocated to a claim, after the pool went back to the device plugin', async () => {
    const { ledger } = await setup();
    expect(ledger.refuseAllocate(pool.resourceName, [A.id])).toBe(`${A.id} is held by DRA claim vms/virt-launcher-vm1-abcde`);
    expect(ledger.refuseAllocate(pool.resourceName, [B.id])).toBe(`${B.id} is held by DRA claim vms/virt-launcher-vm2-fghij`);
  });

  // A pool switched from DRA back to the device plugin keeps its resourceName: a claim's slice must
  // still not be offered (Allocate would refuse it and the pod fail admission instead of going elsewhere).
  test('the device plugin advertises a claim\'s slice Unhealthy after the pool went back to the device plugin (same resourceName)', async () => {
    const { fe } = await setup();
    expect(fe.advertised({ ...A }).health).toBe('Unhealthy');
  });
});
