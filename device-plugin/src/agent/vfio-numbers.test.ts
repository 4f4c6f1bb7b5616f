import type { Inventory, InventoryDevice, Slice, SysfsWrite } from '../model.js';
import { checkVfioNumbers, orderVfioBinds, VfioNumbers, type VfioRecord } from './vfio-numbers.js';

const dev = (pciAddress: string, driver?: string): InventoryDevice => ({ pciAddress, vendor: '15b3', device: '101e', classCode: '020000', ...(driver ? { driver } : {}) }) as InventoryDevice;
const inv = (devices: InventoryDevice[], cdevs: Record<string, number> = {}): Inventory => ({ devices, vfioCdevs: Object.fromEntries(Object.entries(cdevs).map(([b, n]) => [b, `/dev/vfio/devices/vfio${n}`])) });
const bind = (bdf: string): SysfsWrite[] => [
  { path: `bus/pci/devices/${bdf}/driver_override`, value: 'vfio-pci', why: 'bind', group: bdf },
  { path: 'bus/pci/drivers_probe', value: bdf, why: 'bind', group: bdf },
];
const probes = (ws: SysfsWrite[]): string[] => ws.filter((w) => w.path === 'bus/pci/drivers_probe').map((w) => w.value);
const numvfs: SysfsWrite = { path: 'bus/pci/devices/0000:81:00.0/sriov_numvfs', value: '4', why: 'vfs', group: '0000:81:00.0' };

/** The writes without the settle paths the ordering adds while restoring. */
const plain = (ws: SysfsWrite[]): SysfsWrite[] => ws.map(({ settle: _s, ...w }) => w);
const g = (n: number): string => `/dev/vfio/${n}`;
const c = (n: number): string => `/dev/vfio/devices/vfio${n}`;

describe('orderVfioBinds: binds to vfio-pci in the order of their recorded cdev numbers', () => {
  const rec: VfioRecord = { cdevs: { '0000:81:00.2': 3, '0000:81:00.3': 2, '0000:81:00.4': 1, '0000:81:00.5': 0, '0000:5e:00.0': 5, '0000:5e:00.1': 4 }, nodes: {} };

  test('while the VFs are not re-created yet, the GPU and its audio function wait for them (their numbers are lower)', () => {
    const r = orderVfioBinds([numvfs, ...bind('0000:5e:00.0'), ...bind('0000:5e:00.1')], rec, inv([dev('0000:81:00.0'), dev('0000:5e:00.0', 'nvidia'), dev('0000:5e:00.1')]), true);
    expect(r.writes).toEqual([numvfs]);
    expect(r.waitingFor).toEqual(['0000:5e:00.1 (vfio4, not bound yet)', '0000:81:00.2 (vfio3)', '0000:81:00.3 (vfio2)', '0000:81:00.4 (vfio1)', '0000:81:00.5 (vfio0)']);
  });

  test('VFs that exist but whose binds are not in this pass (created moments ago) hold the GPU back too', () => {
    const vfs = ['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5'];
    const r = orderVfioBinds([...bind('0000:5e:00.1'), ...bind('0000:5e:00.0')], rec, inv([dev('0000:81:00.0'), ...vfs.map((a) => dev(a)), dev('0000:5e:00.0', 'nvidia'), dev('0000:5e:00.1', 'snd_hda_intel')]), true);
    expect(probes(r.writes)).toEqual([]);
    expect(r.waitingFor).toEqual(['0000:5e:00.1 (vfio4, not bound yet)', ...vfs.map((a) => `${a} (vfio${rec.cdevs[a]}, not bound yet)`)]);
    // Once they are on vfio-pci (bound in an earlier pass), the audio function and then the GPU go.
    const bound = inv([dev('0000:81:00.0'), ...vfs.map((a) => dev(a, 'vfio-pci')), dev('0000:5e:00.0', 'nvidia'), dev('0000:5e:00.1', 'snd_hda_intel')]);
    expect(probes(orderVfioBinds([...bind('0000:5e:00.0'), ...bind('0000:5e:00.1')], rec, bound, true).writes)).toEqual(['0000:5e:00.1', '0000:5e:00.0']);
  });

  test('once they exist every bind goes, after the other writes, lowest recorded number first; a function with no record last', () => {
    const all = ['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5', '0000:5e:00.0', '0000:5e:00.1', '0000:5e:00.2'];
    const writes = [...bind('0000:5e:00.2'), ...all.slice(0, 6).flatMap(bind), numvfs];
    const r = orderVfioBinds(writes, rec, inv([dev('0000:81:00.0'), ...all.map((a) => dev(a))]), true);
    expect(r.writes[0]).toEqual(numvfs);
    expect(probes(r.writes)).toEqual(['0000:81:00.5', '0000:81:00.4', '0000:81:00.3', '0000:81:00.2', '0000:5e:00.1', '0000:5e:00.0', '0000:5e:00.2']);
    // Each bind keeps its own writes together and in order.
    expect(plain(r.writes.slice(1, 3))).toEqual(bind('0000:81:00.5'));
    // The next bind waits until this one's number is taken.
    expect(r.writes.slice(1, 3).map((w) => w.settle)).toEqual([undefined, ['bus/pci/devices/0000:81:00.5/vfio-dev']]);
    expect(r.waitingFor).toEqual([]);
  });

  test('past the wait nothing waits (a recorded VF that never comes back holds no one)', () => {
    const r = orderVfioBinds([...bind('0000:5e:00.0')], rec, inv([dev('0000:5e:00.0')]), false);
    expect(probes(r.writes)).toEqual(['0000:5e:00.0']);
  });

  test('a bind written moments ago is not written again while restoring (a stale rescan would unbind it from vfio-pci)', () => {
    const r = orderVfioBinds([...bind('0000:81:00.5'), ...bind('0000:81:00.4')], rec, inv(['0000:81:00.2', '0000:81:00.3', '0000:81:00.4', '0000:81:00.5'].map((a) => dev(a))), true, (b) => b === '0000:81:00.5');
    expect(probes(r.writes)).toEqual(['0000:81:00.4']);
    expect(r.binds).toEqual(['0000:81:00.4']);
  });

  test('an mdev created after the binds before a reboot (an on-demand vGPU) is created after them again, so no function number moves', () => {
    // Before the reboot: VFs on vfio0 and vfio1, then an mdev made for a claim: vfio2 (mdevs take
    // their number from the same IDA when they are created, drivers/vfio/vfio_main.c).
    const r2: VfioRecord = { cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1, u: 2 }, nodes: {} };
    const create: SysfsWrite = { path: 'bus/pci/devices/0000:5e:00.0/mdev_supported_types/nvidia-746/create', value: 'u', why: 'restore', group: '0000:5e:00.0/u' };
    // First pass: the VFs are not there; the mdev waits for them.
    const first = orderVfioBinds([create, numvfs], r2, inv([dev('0000:81:00.0'), dev('0000:5e:00.0', 'nvidia')]), true);
    expect(first.writes).toEqual([numvfs]);
    expect(first.waitingFor).toEqual(['0000:81:00.2 (vfio0)', '0000:81:00.3 (vfio1)']);
    // Next pass: the binds go first, then the create.
    const next = orderVfioBinds([create, ...bind('0000:81:00.3'), ...bind('0000:81:00.2')], r2, inv([dev('0000:81:00.0'), dev('0000:81:00.2'), dev('0000:81:00.3'), dev('0000:5e:00.0', 'nvidia')]), true);
    expect(plain(next.writes)).toEqual([...bind('0000:81:00.2'), ...bind('0000:81:00.3'), create]);
    expect(next.writes.map((w) => w.settle).filter(Boolean)).toEqual([['bus/pci/devices/0000:81:00.2/vfio-dev'], ['bus/pci/devices/0000:81:00.3/vfio-dev'], ['bus/mdev/devices/u/vfio-dev']]);
    // Past the wait, nothing settles.
    expect(orderVfioBinds([create, ...bind('0000:81:00.2')], r2, inv([dev('0000:81:00.2')]), false).writes.some((w) => w.settle)).toBe(false);
    expect(next.binds).toEqual(['0000:81:00.2', '0000:81:00.3', 'u']);
    // And a VF recorded after an mdev waits for that mdev to be created.
    const r3: VfioRecord = { cdevs: { u: 0, '0000:81:00.2': 1 }, nodes: {} };
    expect(orderVfioBinds([...bind('0000:81:00.2')], r3, inv([dev('0000:81:00.2')]), true).waitingFor).toEqual(['u (vfio0)']);
    expect(plain(orderVfioBinds([...bind('0000:81:00.2')], r3, inv([dev('0000:81:00.2')], { u: 0 }), true).writes)).toEqual(bind('0000:81:00.2'));
  });

  test('no record: the writes are left as planned', () => {
    const writes = [...bind('0000:81:00.3'), numvfs, ...bind('0000:81:00.2')];
    expect(orderVfioBinds(writes, { cdevs: {}, nodes: {} }, inv([]), true).writes).toEqual(writes);
  });
});

describe('checkVfioNumbers: a held slice is never served with device nodes other than those it was handed out with', () => {
  const vf = (id: string, nodes: string[], health: Slice['health'] = 'Healthy'): Slice => ({ id, pool: 'net', resourceName: 'virtualio.dev/net', kind: 'VF', parent: '0000:81:00.0', pciAddress: id, deviceNodes: nodes, health });

  test('free slices are recorded as they are; a held one whose cdev moved is Unhealthy naming the old and new path, and keeps its record', () => {
    const rec: VfioRecord = { cdevs: {}, nodes: {} };
    const first = checkVfioNumbers(rec, [vf('0000:81:00.2', [g(10), c(0)]), vf('0000:81:00.3', [g(11), c(1)])], inv([], { '0000:81:00.2': 0, '0000:81:00.3': 1 }), () => false, false);
    expect(first.changed).toBe(true);
    expect(rec).toEqual({ cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1 }, nodes: { '0000:81:00.2': [g(10), c(0)], '0000:81:00.3': [g(11), c(1)] } });
    // After a reboot the two came back the other way round; only .2 is held.
    const held = (id: string) => id === '0000:81:00.2';
    const r = checkVfioNumbers(rec, [vf('0000:81:00.2', [g(10), c(1)]), vf('0000:81:00.3', [g(11), c(0)])], inv([], { '0000:81:00.2': 1, '0000:81:00.3': 0 }), held, true);
    expect(r.slices[0]?.health).toBe('Unhealthy');
    expect(r.slices[0]?.reason).toMatch(/^handed out with \/dev\/vfio\/devices\/vfio0, .* now \/dev\/vfio\/devices\/vfio1 \(the kernel numbered it anew/);
    expect(r.slices[1]?.health).toBe('Healthy');
    expect(r.moved).toEqual([{ id: '0000:81:00.2', was: [c(0)], now: [c(1)] }]);
    expect(rec.cdevs).toEqual({ '0000:81:00.2': 0, '0000:81:00.3': 0 });
    expect(rec.nodes['0000:81:00.2']).toEqual([g(10), c(0)]);
    expect(rec.nodes['0000:81:00.3']).toEqual([g(11), c(0)]);
    // Its holder lets go: served again with its new nodes.
    const later = checkVfioNumbers(rec, [vf('0000:81:00.2', [g(10), c(1)])], inv([], { '0000:81:00.2': 1 }), () => false, false);
    expect(later.slices[0]?.health).toBe('Healthy');
    expect(rec.nodes['0000:81:00.2']).toEqual([g(10), c(1)]);
  });

  test('a moved IOMMU group counts the same as a moved cdev', () => {
    const rec: VfioRecord = { cdevs: {}, nodes: { u: [g(12)] } };
    const mdev: Slice = { id: 'u', pool: 'vgpu', resourceName: 'virtualio.dev/vgpu', kind: 'Mdev', parent: '0000:3b:00.0', mdevUuid: 'u', deviceNodes: [g(13)], health: 'Healthy' };
    expect(checkVfioNumbers(rec, [mdev], inv([]), () => true, true).slices[0]?.reason).toMatch(/handed out with \/dev\/vfio\/12, .* now \/dev\/vfio\/13/);
  });

  test('records of what is not there are kept while restoring or held, and forgotten after', () => {
    const rec: VfioRecord = { cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1 }, nodes: { '0000:81:00.2': [c(0)], '0000:81:00.3': [c(1)] } };
    expect(checkVfioNumbers(rec, [], inv([]), () => false, true).changed).toBe(false);
    checkVfioNumbers(rec, [], inv([]), (id) => id === '0000:81:00.3', false);
    expect(rec).toEqual({ cdevs: { '0000:81:00.3': 1 }, nodes: { '0000:81:00.3': [c(1)] } });
  });

  test('an on-demand mdev removed and carved again for another claim is not a moved slice (its device stays listed without nodes)', () => {
    const rec: VfioRecord = { cdevs: {}, nodes: {} };
    const mdev = (nodes: string[]): Slice => ({ id: 'u', pool: 'a16', resourceName: 'virtualio.dev/a16', kind: 'Mdev', parent: '0000:3b:00.0', mdevUuid: 'u', deviceNodes: nodes, health: 'Healthy' });
    checkVfioNumbers(rec, [mdev([g(2)])], inv([]), () => false, false); // carved for a first claim
    checkVfioNumbers(rec, [mdev([g(2)])], inv([]), () => true, false); // handed out
    checkVfioNumbers(rec, [mdev([])], inv([]), () => false, false); // let go and removed; still published
    expect(rec.nodes).toEqual({});
    const again = checkVfioNumbers(rec, [mdev([g(3)])], inv([]), () => true, false); // a second claim
    expect(again.moved).toEqual([]);
    expect(again.slices[0]?.health).toBe('Healthy');
    // While restoring, or held, such a record is kept.
    const kept: VfioRecord = { cdevs: {}, nodes: { u: [g(2)] } };
    checkVfioNumbers(kept, [mdev([])], inv([]), () => false, true);
    checkVfioNumbers(kept, [mdev([])], inv([]), () => true, false);
    expect(kept.nodes).toEqual({ u: [g(2)] });
  });

  test('a slice not restored yet (unhealthy, no nodes) is left as it is', () => {
    const rec: VfioRecord = { cdevs: {}, nodes: { '0000:81:00.2': [c(0)] } };
    const s = vf('0000:81:00.2', [], 'Unhealthy');
    expect(checkVfioNumbers(rec, [s], inv([]), () => true, true).slices).toEqual([s]);
  });
});

describe('VfioNumbers: the ordering window counts from the first pass that binds, not from the agent start', () => {
  test('a first carving pass that comes long after the start (a busy node) still waits, and the absent records are kept until it has', () => {
    let t = 0;
    let record: VfioRecord = { cdevs: { '0000:81:00.2': 1, '0000:81:00.3': 0, '0000:5e:00.0': 2 }, nodes: {} };
    const saved: VfioRecord[] = [];
    const log = { info: () => {}, warn: () => {} } as unknown as ConstructorParameters<typeof VfioNumbers>[1];
    const v = new VfioNumbers({ vfio: () => record, save: () => saved.push(structuredClone(record)) }, log, () => t, 10_000);
    t = 30_000; // the first cycle: the VFs are not there yet, the GPU is
    v.check([], inv([dev('0000:5e:00.0', 'nvidia')]), () => false);
    expect(Object.keys(record.cdevs).sort()).toEqual(['0000:5e:00.0', '0000:81:00.2', '0000:81:00.3']);
    expect(probes(v.order([numvfs, ...bind('0000:5e:00.0')], inv([dev('0000:81:00.0'), dev('0000:5e:00.0', 'nvidia')])))).toEqual([]);
    t = 31_000; // the VFs exist now: they go first, lowest recorded number first; the GPU after them
    const all = inv([dev('0000:81:00.0'), dev('0000:81:00.2'), dev('0000:81:00.3'), dev('0000:5e:00.0', 'nvidia')]);
    expect(probes(v.order([...bind('0000:5e:00.0'), ...bind('0000:81:00.2'), ...bind('0000:81:00.3')], all))).toEqual(['0000:81:00.3', '0000:81:00.2', '0000:5e:00.0']);
    t = 41_000; // the window is over: a record nobody has any more is forgotten
    record = { ...record, cdevs: { ...record.cdevs, '0000:99:00.0': 7 } };
    v.check([], all, () => false);
    expect(record.cdevs['0000:99:00.0']).toBeUndefined();
  });
});

describe('VfioNumbers.nextDue: what a pass left out wakes the loop when it may go', () => {
  const log = { info: () => {}, warn: () => {} } as unknown as ConstructorParameters<typeof VfioNumbers>[1];
  test('a function that left vfio-pci moments after its bind is bound again once that bind no longer counts as in flight', () => {
    // Seen on the real kernel: a VF unbound 1.7 s after the agent bound it (within the restore window)
    // sent its one /dev/vfio event, the pass left its bind out as in flight, and nothing woke the loop
    // until the rescan timer (7 s later on the benchmark).
    let t = 0;
    const record: VfioRecord = { cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1 }, nodes: {} };
    const v = new VfioNumbers({ vfio: () => record, save: () => {} }, log, () => t, 10_000);
    t = 1000;
    expect(probes(v.order([...bind('0000:81:00.2'), ...bind('0000:81:00.3')], inv([dev('0000:81:00.2'), dev('0000:81:00.3')])))).toEqual(['0000:81:00.2', '0000:81:00.3']);
    expect(v.nextDue()).toBeUndefined();
    t = 2700; // 0000:81:00.3 left vfio-pci; its bind of t = 1000 is still in flight
    const unbound = inv([dev('0000:81:00.2', 'vfio-pci'), dev('0000:81:00.3')], { '0000:81:00.2': 0 });
    expect(probes(v.order(bind('0000:81:00.3'), unbound))).toEqual([]);
    expect(v.nextDue()).toBe(3000);
    t = 3000;
    expect(probes(v.order(bind('0000:81:00.3'), unbound))).toEqual(['0000:81:00.3']);
    expect(v.nextDue()).toBeUndefined();
  });

  test('binds waiting for a lower number that does not come back go at the window\'s end', () => {
    let t = 0;
    const record: VfioRecord = { cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1 }, nodes: {} };
    const v = new VfioNumbers({ vfio: () => record, save: () => {} }, log, () => t, 10_000);
    t = 500; // 0000:81:00.2 (vfio0) is not there: 0000:81:00.3 waits for it
    expect(probes(v.order(bind('0000:81:00.3'), inv([dev('0000:81:00.3')])))).toEqual([]);
    expect(v.nextDue()).toBe(10_500);
  });
});

describe('VfioNumbers.forget: what the agent destroyed itself leaves no record', () => {
  test('a destroyed slice loses its nodes and cdev; other records and an unknown ID change nothing', () => {
    const record: VfioRecord = { cdevs: { '0000:81:00.2': 0, '0000:81:00.3': 1 }, nodes: { u: [g(2)], '0000:81:00.3': [c(1)] } };
    const saves: VfioRecord[] = [];
    const log = { info: () => {}, warn: () => {} } as unknown as ConstructorParameters<typeof VfioNumbers>[1];
    const v = new VfioNumbers({ vfio: () => record, save: () => saves.push(structuredClone(record)) }, log, () => 0, 10_000);
    v.forget(['u', '0000:81:00.3']);
    expect(record).toEqual({ cdevs: { '0000:81:00.2': 0 }, nodes: {} });
    expect(saves).toHaveLength(1);
    v.forget(['nothing-recorded']);
    expect(saves).toHaveLength(1);
  });
});
