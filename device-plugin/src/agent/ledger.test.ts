import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../log.js';
import type { Holder } from '../podresources/client.js';
import type { KubeletCheckpointState } from './kubelet-checkpoint.js';
import { Ledger, type HoldState, type LedgerSources } from './ledger.js';

const R = 'virtualio.dev/net';
const holder = (pod: string, resourceName = R): Holder => ({ resourceName, namespace: 'vms', pod, container: 'compute' });

/** Sources a test sets by hand. */
class Sources {
  synced = true;
  error: string | undefined;
  pods = new Map<string, Holder>();
  kubelet: KubeletCheckpointState = { kind: 'absent' };
  dra = new Map<string, Holder>();
  draUnknown: string | undefined;
  gone = new Map<string, boolean | undefined>();
  lookups = 0;
  get(): LedgerSources {
    return {
      podResources: () => ({ synced: this.synced, error: this.error, holders: this.pods }),
      kubeletCheckpoint: () => this.kubelet,
      dra: () => ({ holders: this.dra, unknown: this.draUnknown }),
      resourceNames: () => new Set([R, 'virtualio.dev/other']),
      podGone: (ns, name, uid) => {
        this.lookups++;
        return Promise.resolve(this.gone.get(`${ns}/${name}/${uid}`));
      },
    };
  }
}

/** Moves the clock on, refreshes, and says whether `id` is held. */
async function after(l: Ledger, clock: { t: number }, ms: number, id: string): Promise<HoldState['kind']> {
  clock.t += ms;
  await l.refresh();
  return l.state(id).kind;
}

/** A ledger that has seen VF 0000:81:00.2 held by pod vms/virt-launcher-a (UID uid-a) in both PodResources and the kubelet's checkpoint. */
async function heldByPodA(): Promise<{ src: Sources; clock: { t: number }; l: Ledger }> {
  const src = new Sources();
  const clock = { t: 1_000_000 };
  const l = make(src, { graceMs: 1_000, clock });
  src.pods.set('0000:81:00.2', holder('virt-launcher-a'));
  src.kubelet = { kind: 'ok', entries: new Map([['0000:81:00.2', [{ podUID: 'uid-a', container: 'compute', resourceName: R }]]]) };
  await l.refresh();
  return { src, clock, l };
}

function make(src: Sources, o: { file?: string; graceMs?: number; clock?: { t: number } } = {}): Ledger {
  const clock = o.clock ?? { t: 1_000_000 };
  return new Ledger({ ...(o.file ? { file: o.file } : {}), node: 'n1', logger: silentLogger(), sources: src.get(), graceMs: o.graceMs ?? 0, now: () => clock.t });
}

describe('Ledger', () => {
  test('unknown until PodResources answers, and again while it fails, a kubelet checkpoint is damaged or DRA cannot tell', async () => {
    const src = new Sources();
    src.synced = false;
    const l = make(src);
    await l.refresh();
    expect(l.unknown()).toMatch(/not answered/);
    src.synced = true;
    await l.refresh();
    expect(l.unknown()).toBeUndefined();
    src.error = 'PodResources List failed (UNAVAILABLE)';
    await l.refresh();
    expect(l.unknown()).toBe(src.error);
    src.error = undefined;
    src.kubelet = { kind: 'corrupt', message: 'kubelet checkpoint: not JSON' };
    await l.refresh();
    expect(l.unknown()).toMatch(/not JSON/);
    src.kubelet = { kind: 'absent' };
    src.draUnknown = 'DRA checkpoint damaged';
    await l.refresh();
    expect(l.unknown()).toBe('DRA checkpoint damaged');
  });

  test('an Allocate grant holds the ID before any source shows it, and is released only after the grace with every source silent', async () => {
    const src = new Sources();
    const clock = { t: 1_000_000 };
    const l = make(src, { graceMs: 10_000, clock });
    l.granted(R, ['0000:81:00.2']);
    await l.refresh();
    expect(l.state('0000:81:00.2')).toMatchObject({ kind: 'held', by: expect.stringContaining('Allocate') });
    expect(await after(l, clock, 9_999, '0000:81:00.2')).toBe('held');
    expect(await after(l, clock, 1, '0000:81:00.2')).toBe('free');
  });

  test('an empty PodResources list after a kubelet restart releases nothing the kubelet checkpoint still lists', async () => {
    const { src, clock, l } = await heldByPodA();
    // The kubelet restarts: PodResources answers empty (its pods are not back), its checkpoint is unchanged.
    src.pods.clear();
    for (let i = 0; i < 5; i++) {
      clock.t += 60_000;
      await l.refresh();
      expect(l.state('0000:81:00.2')).toMatchObject({ kind: 'held', holder: { pod: 'virt-launcher-a' } });
    }
    // Nobody could say whether the pod was gone: the lookup answers "don't know".
    expect(src.lookups).toBeGreaterThan(0);
  });

  test('a stale kubelet checkpoint entry whose pod the API server says is gone does not hold', async () => {
    const { src, clock, l } = await heldByPodA();
    src.pods.clear();
    src.gone.set('vms/virt-launcher-a/uid-a', true);
    expect(await after(l, clock, 500, '0000:81:00.2')).toBe('held'); // grace not over
    expect(await after(l, clock, 1_000, '0000:81:00.2')).toBe('free');
  });

  test('a checkpoint entry of another resource is not ours; one with no pod name known holds until the kubelet rewrites it', async () => {
    const src = new Sources();
    const l = make(src);
    src.kubelet = {
      kind: 'ok',
      entries: new Map([
        ['0000:81:00.3', [{ podUID: 'u1', container: 'c', resourceName: 'example.com/gpu' }]],
        ['0000:81:00.4', [{ podUID: 'u2', container: 'c', resourceName: R }]],
      ]),
    };
    await l.refresh();
    expect(l.state('0000:81:00.3').kind).toBe('free');
    expect(l.state('0000:81:00.4')).toMatchObject({ kind: 'held', by: expect.stringContaining('u2') });
    src.kubelet = { kind: 'ok', entries: new Map() };
    await l.refresh();
    expect(l.state('0000:81:00.4').kind).toBe('free');
  });

  test('while nobody can tell, grants are kept and their grace starts only once every source answers again', async () => {
    const src = new Sources();
    const clock = { t: 1_000_000 };
    const l = make(src, { graceMs: 5_000, clock });
    l.granted(R, ['a']);
    src.error = 'PodResources List failed (UNAVAILABLE)';
    clock.t += 60_000;
    await l.refresh();
    expect(l.state('a').kind).toBe('held');
    src.error = undefined;
    expect(await after(l, clock, 4_000, 'a')).toBe('held');
    expect(await after(l, clock, 2_000, 'a')).toBe('free');
  });

  test('Allocate is refused for a fenced ID, one a DRA claim holds, and one held through another resource', async () => {
    const src = new Sources();
    const l = make(src);
    src.dra.set('d', { resourceName: 'virtualio.dev/other', namespace: 'vms', pod: 'claim/c', container: '' });
    src.pods.set('p', holder('x', 'virtualio.dev/other'));
    await l.refresh();
    l.fence(['f'], 'being re-carved');
    expect(l.refuseAllocate(R, ['f'])).toMatch(/being changed/);
    expect(l.refuseAllocate(R, ['d'])).toMatch(/DRA claim/);
    expect(l.refuseAllocate(R, ['p'])).toMatch(/through virtualio.dev\/other/);
    expect(l.refuseAllocate(R, ['free'])).toBeUndefined();
    l.unfence(['f']);
    expect(l.refuseAllocate(R, ['f'])).toBeUndefined();
  });

  test('grants survive a restart (durable file); a damaged file is unknown for a grace period', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-ledger-'));
    const file = join(dir, 'agent-ledger.json');
    const src = new Sources();
    const clock = { t: 1_000_000 };
    const first = make(src, { file, clock });
    first.granted(R, ['0000:81:00.2']);
    // In the file when granted() returns (before the Allocate answer leaves); fsynced just after.
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ version: 1, node: 'n1', grants: { '0000:81:00.2': { resourceName: R, via: 'allocate' } } });
    await first.flushed();
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const again = make(src, { file, clock, graceMs: 1_000 });
    expect(again.state('0000:81:00.2').kind).toBe('held');
    writeFileSync(file, '{"version":1,"node":"n1","gra');
    const damaged = make(src, { file, clock, graceMs: 1_000 });
    await damaged.refresh();
    expect(damaged.unknown()).toMatch(/unreadable/);
    clock.t += 1_000;
    expect(damaged.unknown()).toBeUndefined();
  });

  test('holders for status: PodResources first, then DRA, then the last known pod of a grant', async () => {
    const src = new Sources();
    const l = make(src, { graceMs: 60_000 });
    src.pods.set('a', holder('pa'));
    await l.refresh();
    src.pods.clear();
    src.dra.set('b', { resourceName: R, namespace: 'vms', pod: 'claim/b', container: '' });
    await l.refresh();
    expect([...l.holders()].map(([id, h]) => [id, h.pod])).toStrictEqual([
      ['a', 'pa'],
      ['b', 'claim/b'],
    ]);
  });
});
