// The DRA driver around its life (driver.ts, wire.ts, prepare.ts with fakes for the API server, the
// kubelet's state and the agent): nothing published, prepared or reported before the agent's first
// cycle; draining devices kept in the health stream; what an interrupted write or prepare left on
// disk removed at start; prepared claims the kubelet will never unprepare forgotten; a failed
// checkpoint save changes nothing in memory.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDraHealthApi, loadPluginRegistrationApi } from '../../../proto/load.js';
import { silentLogger } from '../log.js';
import type { InventoryDevice, PoolPlan, Slice } from '../model.js';
import { desiredPools, draDeviceName, resourceSlicesFor } from './devices.js';
import { DraDriver, type DraDriverOptions } from './driver.js';
import { cdiSpecPath, Checkpoint, type ClaimObject, type ClaimRef } from './prepare.js';
import { startDra, type AgentView } from './wire.js';
import { FakeClaims, MemoryStore, claimObj, until } from '../../../test/fakes/dra.js';

const NODE = 'worker-1';
const pool: PoolPlan = { name: 'gpu', resourceName: 'virtualio.dev/gpu', class: 'GPU', mode: 'Passthrough', consumption: 'HostDevice', frontEnd: 'DRA', devices: [{ pciAddress: '0000:3b:00.0' }, { pciAddress: '0000:3c:00.0' }] };
function fn(addr: string, group: number, extra: Partial<Slice> = {}): Slice {
  return { id: addr, pool: 'gpu', resourceName: pool.resourceName, kind: 'Function', parent: addr, pciAddress: addr, iommuGroup: group, numaNode: 0, deviceNodes: [`/dev/vfio/${group}`], health: 'Healthy', ...extra };
}
const A = fn('0000:3b:00.0', 60);
const B = fn('0000:3c:00.0', 61);
const inventory: { devices: InventoryDevice[] } = { devices: [A, B].map((s) => ({ pciAddress: s.pciAddress!, vendorID: '10de', deviceID: '2231', numaNode: 0 })) };
const POOL = `${NODE}/gpu`;
const ref = (uid: string, name: string): ClaimRef => ({ namespace: 'vms', name, uid });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Rig {
  dir: string;
  driver: DraDriver;
  store: MemoryStore;
  claims: FakeClaims;
  api: Map<string, ClaimObject>;
  stop: () => Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'vio-dra-life-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A running driver; `update` false: the agent's first cycle has not ended yet. */
async function rig(opts: { dir?: string; store?: MemoryStore; claims?: FakeClaims; update?: boolean; slices?: Slice[]; driver?: Partial<DraDriverOptions> } = {}): Promise<Rig> {
  const dir = opts.dir ?? tempDir();
  const store = opts.store ?? new MemoryStore();
  const claims = opts.claims ?? new FakeClaims();
  const api = new Map<string, ClaimObject>();
  const ctl = new AbortController();
  const driver = new DraDriver({
    nodeName: NODE, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
    getClaim: async (ns, name) => api.get(`${ns}/${name}`),
    claims, store, logger: silentLogger(), resyncMs: 60_000, socketCheckMs: 50,
    ...opts.driver,
  });
  if (opts.update !== false) driver.update([pool], opts.slices ?? [A, B], inventory);
  const running = driver.run(ctl.signal);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    ctl.abort();
    await running;
  };
  cleanups.push(stop);
  await until('the driver serving', () => existsSync(driver.draSocket));
  return { dir, driver, store, claims, api, stop };
}

type HealthMsg = { devices: { device: { poolName: string; deviceName: string }; health: string }[] };

function watchHealth(socket: string): { got: HealthMsg[]; close: () => void } {
  const Client = grpc.makeGenericClientConstructor(loadDraHealthApi().v1alpha1.DRAResourceHealth.service, 'x');
  const c = new Client(`unix://${socket}`, grpc.credentials.createInsecure()) as unknown as { NodeWatchResources: (r: object) => grpc.ClientReadableStream<HealthMsg> } & grpc.Client;
  const stream = c.NodeWatchResources({});
  const got: HealthMsg[] = [];
  stream.on('data', (m: HealthMsg) => got.push(m));
  stream.on('error', () => undefined);
  return { got, close: () => { stream.cancel(); c.close(); } };
}

/** The slices a previous agent run published: pool `gpu` with A and B at generation 3. */
function previousRun(store: MemoryStore): void {
  const [content] = desiredPools(NODE, [pool], [A, B], { devices: new Map(inventory.devices.map((d) => [d.pciAddress, d])) });
  for (const o of resourceSlicesFor(NODE, content!, 3)) {
    const name = `${o.metadata.generateName}prev0`;
    store.objects.set(name, { ...o, metadata: { ...o.metadata, name, resourceVersion: '1' } });
  }
}

describe('before the agent\'s first cycle', () => {
  test('the slices of the last run stay as they are — not withdrawn, not rewritten — through a claim list and a registration; the first cycle finds them current', async () => {
    const store = new MemoryStore();
    previousRun(store);
    const claims = new FakeClaims();
    claims.items.set('u1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    const r = await rig({ store, claims, update: false });
    await until('the claim list', () => claims.watching);
    // The kubelet registers the driver (the publisher re-lists at once).
    await new Promise<void>((resolve, reject) => {
      const Client = grpc.makeGenericClientConstructor(loadPluginRegistrationApi().pluginregistration.Registration.service, 'x');
      const c = new Client(`unix://${r.driver.registrationSocket}`, grpc.credentials.createInsecure()) as unknown as { NotifyRegistrationStatus: (q: object, cb: (e: Error | null) => void) => void } & grpc.Client;
      c.NotifyRegistrationStatus({ pluginRegistered: true }, (e) => {
        c.close();
        if (e) reject(e);
        else resolve();
      });
    });
    await sleep(200);
    expect(store.writes).toEqual([]);
    expect(r.driver.started).toBe(false);
    // The first cycle: the same devices, so nothing to write (no new generation either).
    r.driver.update([pool], [A, B], inventory);
    await sleep(200);
    expect(store.writes).toEqual([]);
    expect([...store.objects.values()].map((o) => [o.spec.pool.generation, (o.spec.devices ?? []).map((d) => d.name)])).toEqual([[3, [draDeviceName(A), draDeviceName(B)]]]);
  });

  test('NodePrepareResources waits for the first cycle, then prepares (even a claim prepared before the restart)', async () => {
    const first = await rig();
    first.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    const before = await first.driver.prepare(ref('u1', 'c1'));
    expect(before.error).toBe('');
    await first.stop();

    const r = await rig({ dir: first.dir, update: false });
    r.api.set('vms/c2', claimObj(POOL, 'u2', 'c2', [B], ['virt-launcher-vm2-abcde']));
    const again = r.driver.prepare(ref('u1', 'c1'));
    const fresh = r.driver.prepare(ref('u2', 'c2'));
    let settled = false;
    void Promise.all([again, fresh]).then(() => {
      settled = true;
    });
    await sleep(150);
    expect(settled).toBe(false);
    r.driver.update([pool], [A, B], inventory);
    expect(await again).toEqual(before);
    expect((await fresh).error).toBe('');
  });

  test('without a first cycle in time, prepare answers an error the kubelet retries (nothing written)', async () => {
    const r = await rig({ update: false, driver: { readyTimeoutMs: 100 } });
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A]));
    expect(await r.driver.prepare(ref('u1', 'c1'))).toEqual({ devices: [], error: 'the agent has not finished its first scan of the node yet (waited 100 ms); try again' });
    expect(existsSync(cdiSpecPath(join(r.dir, 'cdi'), 'u1'))).toBe(false);
  });

  test('the health stream says nothing (an empty report marks every device Unknown) until the first cycle', async () => {
    const r = await rig({ update: false, driver: { healthRefreshMs: 50 } });
    const h = watchHealth(r.driver.draSocket);
    try {
      await sleep(250);
      expect(h.got).toEqual([]);
      r.driver.update([pool], [A, B], inventory);
      await until('a report', () => h.got.length > 0);
      expect(h.got[0]!.devices.map((d) => d.device.deviceName)).toEqual([draDeviceName(A), draDeviceName(B)]);
    } finally {
      h.close();
    }
  });

  test('startDra hands the agent\'s state over only once a cycle has ended', async () => {
    const dir = tempDir();
    const store = new MemoryStore();
    previousRun(store);
    let done = false;
    let slices: readonly Slice[] = [];
    const agent: AgentView = { pools: () => [pool], slices: () => slices, inventory: () => (done ? inventory : { devices: [] }), cycleDone: () => done };
    const ctl = new AbortController();
    const w = await startDra({
      nodeName: NODE, kubeconfig: undefined, kubeletDir: join(dir, 'kubelet'), cdiDir: join(dir, 'cdi'), sysfsRoot: join(dir, 'sys'),
      agent, logger: silentLogger(), signal: ctl.signal, pollMs: 10, ports: { store, getClaim: async () => undefined },
    });
    cleanups.push(async () => {
      ctl.abort();
      await w.done;
    });
    await sleep(200);
    expect(w.driver.started).toBe(false);
    expect(store.writes).toEqual([]);
    slices = [A, B];
    done = true;
    await until('the first cycle handed over', () => w.driver.started);
    await sleep(100);
    expect(store.writes).toEqual([]); // the devices of the last run, unchanged
  });
});

test('the health stream keeps a draining device a VM still holds (the kubelet would mark it Unknown)', async () => {
  const r = await rig({ driver: { healthRefreshMs: 50 } });
  r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
  expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
  const h = watchHealth(r.driver.draSocket);
  try {
    // A leaves the pool's devices while its VM runs: draining, withdrawn from the ResourceSlices.
    r.driver.update([pool], [{ ...A, draining: 'left the plan' } as Slice, B], inventory);
    await until('B alone published', () => [...r.store.objects.values()].flatMap((o) => (o.spec.devices ?? []).map((d) => d.name)).join() === draDeviceName(B));
    const n = h.got.length;
    await until('a report after the change', () => h.got.length > n);
    expect(h.got.at(-1)!.devices.map((d) => [d.device.deviceName, d.health])).toEqual([[draDeviceName(A), 'HEALTHY'], [draDeviceName(B), 'HEALTHY']]);
  } finally {
    h.close();
  }
});

test('at start, temp files of interrupted writes and the files of a prepare that died before recording its claim are removed; recorded claims keep theirs', async () => {
  const first = await rig();
  first.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A]));
  expect((await first.driver.prepare(ref('u1', 'c1'))).error).toBe('');
  await first.stop();
  const cdi = join(first.dir, 'cdi');
  const plugin = join(first.dir, 'kubelet/plugins/virtualio.dev');
  const leftovers = [
    join(cdi, 'virtualio.dev-claim_u7.json.tmp'), // an earlier version's temp file
    join(cdi, '.virtualio.dev-claim_u8.json.1234-0a1b2c3d.tmp'),
    join(plugin, '.checkpoint.json.1234-0a1b2c3d.tmp'),
    join(plugin, 'metadata/u1/gpu/.virtualio.dev-metadata.json.1234-0a1b2c3d.tmp'),
  ];
  for (const f of leftovers) writeFileSync(f, '{');
  // u9: CDI spec and metadata written, the process died before the checkpoint recorded it.
  writeFileSync(cdiSpecPath(cdi, 'u9'), '{}');
  mkdirSync(join(plugin, 'metadata/u9/gpu'), { recursive: true });
  writeFileSync(join(plugin, 'metadata/u9/gpu/virtualio.dev-metadata.json'), '{}');
  writeFileSync(join(cdi, 'other-vendor.json.tmp'), 'not ours');
  await rig({ dir: first.dir });
  for (const f of leftovers) expect(existsSync(f)).toBe(false);
  expect(readdirSync(cdi).sort()).toEqual(['other-vendor.json.tmp', 'virtualio.dev-claim_u1.json']);
  expect(readdirSync(join(plugin, 'metadata'))).toEqual(['u1']);
});

test('with a lost checkpoint the CDI specs stay (claims are re-learned from them); only temp files go', async () => {
  const first = await rig();
  first.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A]));
  expect((await first.driver.prepare(ref('u1', 'c1'))).error).toBe('');
  await first.stop();
  writeFileSync(join(first.dir, 'kubelet/plugins/virtualio.dev/checkpoint.json'), '{"version": 1');
  writeFileSync(join(first.dir, 'cdi', '.virtualio.dev-claim_u1.json.99-ff.tmp'), '{');
  const r = await rig({ dir: first.dir });
  expect(readdirSync(join(first.dir, 'cdi'))).toEqual(['virtualio.dev-claim_u1.json']);
  expect(r.driver.preparedSliceIds()).toEqual(new Set([A.id]));
});

describe('prepared claims the kubelet will never unprepare', () => {
  async function setup(): Promise<Rig & { clock: { now: number }; kubeletState: string }> {
    const dir = tempDir();
    const clock = { now: 1_000_000 };
    const kubeletState = join(dir, 'kubelet/dra_manager_state');
    const claims = new FakeClaims();
    claims.items.set('u1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    const r = await rig({ dir, claims, driver: { nowMs: () => clock.now, kubeletDraStateFile: kubeletState, staleClaimGraceMs: 600_000, gcIntervalMs: 3_600_000 } });
    await until('the claim list', () => claims.watching);
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A], ['virt-launcher-vm1-abcde']));
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    writeFileSync(kubeletState, JSON.stringify({ Data: JSON.stringify({ kind: 'DRACheckpoint', Claims: { u1: { ClaimUID: 'u1' } } }), Checksum: 1 }));
    return { ...r, clock, kubeletState };
  }

  test('are forgotten once the kubelet\'s state does not name them, the claim is gone, and that lasted the grace period', async () => {
    const r = await setup();
    expect(await r.driver.collectStale()).toEqual([]); // the kubelet knows it, it is allocated here
    // The kubelet's state was wiped (node rebuilt under the same name) and the claim was deleted.
    writeFileSync(r.kubeletState, JSON.stringify({ Data: JSON.stringify({ kind: 'DRACheckpoint', Claims: {} }), Checksum: 2 }));
    r.claims.remove('u1');
    r.api.delete('vms/c1');
    expect(await r.driver.collectStale()).toEqual([]); // starts the grace period
    r.clock.now += 599_000;
    expect(await r.driver.collectStale()).toEqual([]);
    expect(r.driver.preparedSliceIds()).toEqual(new Set([A.id]));
    r.clock.now += 1_000;
    expect(await r.driver.collectStale()).toEqual(['u1']);
    expect(r.driver.preparedSliceIds().size).toBe(0);
    expect(existsSync(cdiSpecPath(join(r.dir, 'cdi'), 'u1'))).toBe(false);
    const cp = new Checkpoint(join(r.dir, 'kubelet/plugins/virtualio.dev/checkpoint.json'));
    cp.load();
    expect(cp.all()).toEqual([]);
  });

  test.each([
    ['the kubelet still names it', (r: Rig & { kubeletState: string }) => {
      r.claims.remove('u1');
      r.api.delete('vms/c1');
    }],
    ['the kubelet\'s state cannot be read', (r: Rig & { kubeletState: string }) => {
      rmSync(r.kubeletState);
      r.claims.remove('u1');
      r.api.delete('vms/c1');
    }],
    ['the claim is still allocated here (the list)', (r: Rig & { kubeletState: string }) => {
      writeFileSync(r.kubeletState, '{}');
    }],
    ['a GET still finds it allocated here (the watch missed it)', (r: Rig & { kubeletState: string }) => {
      writeFileSync(r.kubeletState, '{}');
      r.claims.remove('u1');
    }],
  ])('are kept while %s', async (_n, arrange) => {
    const r = await setup();
    arrange(r);
    expect(await r.driver.collectStale()).toEqual([]);
    r.clock.now += 3_600_000;
    expect(await r.driver.collectStale()).toEqual([]);
    expect(r.driver.preparedSliceIds()).toEqual(new Set([A.id]));
    expect(existsSync(cdiSpecPath(join(r.dir, 'cdi'), 'u1'))).toBe(true);
  });
});

describe('a checkpoint save that fails', () => {
  const file = (r: Rig): string => join(r.dir, 'kubelet/plugins/virtualio.dev/checkpoint.json');
  /** A non-empty folder where the checkpoint is renamed to: every save fails until the undo. */
  function breakSaves(target: string): () => void {
    const text = existsSync(target) ? readFileSync(target, 'utf8') : undefined;
    rmSync(target, { force: true });
    mkdirSync(join(target, 'in-the-way'), { recursive: true });
    return () => {
      rmSync(target, { recursive: true, force: true });
      if (text !== undefined) writeFileSync(target, text);
    };
  }

  test('fails the prepare and leaves no claim behind in memory: the kubelet\'s retry prepares and records it', async () => {
    const r = await rig();
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A]));
    const undo = breakSaves(file(r));
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toMatch(/^writing CDI spec or metadata for vms\/c1: /);
    expect(r.driver.preparedSliceIds().size).toBe(0);
    undo();
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    const cp = new Checkpoint(file(r));
    cp.load();
    expect(cp.all().map((c) => c.uid)).toEqual(['u1']);
  });

  test('fails the unprepare and keeps the claim: the kubelet\'s retry removes it from the file too', async () => {
    const r = await rig();
    r.api.set('vms/c1', claimObj(POOL, 'u1', 'c1', [A]));
    expect((await r.driver.prepare(ref('u1', 'c1'))).error).toBe('');
    const undo = breakSaves(file(r));
    expect(await r.driver.unprepare(ref('u1', 'c1'))).toMatch(/^unpreparing vms\/c1: /);
    expect(r.driver.preparedSliceIds()).toEqual(new Set([A.id]));
    undo();
    expect(await r.driver.unprepare(ref('u1', 'c1'))).toBe('');
    const cp = new Checkpoint(file(r));
    cp.load();
    expect(cp.all()).toEqual([]);
  });
});
