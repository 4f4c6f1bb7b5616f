import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../log.js';
import type { PoolPlan } from '../model.js';
import { Checkpoint, parseCheckpoint } from './checkpoint.js';
import { decodeChecked, encodeChecked, keepCorruptCopy, writeFileDurable } from './durable-file.js';

const log = silentLogger();
const T = new Date(Date.UTC(2026, 2, 1, 12, 0, 0));
const pool: PoolPlan = { name: 'fast', resourceName: 'virtualio.dev/fast', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', devices: [{ pciAddress: '0000:81:00.0' }] };

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vio-cp-'));
  file = join(dir, 'state', 'agent-checkpoint.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('writeFileDurable', () => {
  test('creates the folder, replaces the file and leaves no temp file', () => {
    writeFileDurable(file, 'one');
    writeFileDurable(file, 'two', { mode: 0o600 });
    expect(readFileSync(file, 'utf8')).toBe('two');
    expect(readdirSync(join(dir, 'state'))).toEqual(['agent-checkpoint.json']);
  });

  test('a failed write leaves the old file and no temp file', () => {
    writeFileDurable(file, 'old');
    expect(() => writeFileDurable(join(file, 'x'), 'new')).toThrow(); // parent is a file
    expect(readFileSync(file, 'utf8')).toBe('old');
    expect(readdirSync(join(dir, 'state'))).toEqual(['agent-checkpoint.json']);
  });

  test('checksums: a round trip checks, an edit or damage is refused, a file without one is accepted', () => {
    const text = encodeChecked({ version: 1, a: [1, 'x'] });
    expect(decodeChecked(text)).toEqual({ ok: true, doc: { version: 1, a: [1, 'x'] }, checked: true });
    expect(decodeChecked(text.replace('"x"', '"y"'))).toEqual({ ok: false, message: 'checksum mismatch (the file was damaged or edited)' });
    expect(decodeChecked('{"version":1}')).toEqual({ ok: true, doc: { version: 1 }, checked: false });
    expect(decodeChecked('')).toEqual({ ok: false, message: 'the file is empty' });
    expect(decodeChecked(text.slice(0, 20))).toMatchObject({ ok: false, message: expect.stringContaining('not JSON') });
  });

  test('keepCorruptCopy keeps the bytes under <file>.corrupt-<time>', () => {
    writeFileDurable(file, 'damaged');
    const copy = keepCorruptCopy(file, T);
    expect(copy).toBe(`${file}.corrupt-2026-03-01T12-00-00-000Z`);
    writeFileDurable(file, 'new');
    expect(readFileSync(copy!, 'utf8')).toBe('damaged');
    expect(keepCorruptCopy(join(dir, 'missing'), T)).toBeUndefined();
  });
});

describe('agent checkpoint', () => {
  test('absent file: a trusted empty record', () => {
    const cp = new Checkpoint(file, 'n1', log);
    expect(cp.state).toBe('absent');
    expect(cp.unknown).toBe(false);
    expect(cp.error).toBeUndefined();
    expect(cp.pools().size).toBe(0);
  });

  test('saves durably with a checksum and loads it back', () => {
    const a = new Checkpoint(file, 'n1', log);
    a.setPool(pool);
    a.ownPf('0000:81:00.0', ['fast']);
    a.rememberOriginal('0000:81:00.0', { driver: 'ixgbe', interfaceNames: ['ens1f0'] });
    a.save();
    expect(readFileSync(file, 'utf8')).toContain('"checksum": "sha256:');
    const b = new Checkpoint(file, 'n1', log);
    expect(b.state).toBe('ok');
    expect(b.unknown).toBe(false);
    expect(b.pools().get('fast')).toEqual(pool);
    expect([...b.ownedPfs()]).toEqual(['0000:81:00.0']);
    expect(b.originals().get('0000:81:00.0')).toEqual({ driver: 'ixgbe', interfaceNames: ['ens1f0'] });
  });

  test('a record written before checksums existed still loads', () => {
    writeFileDurable(file, JSON.stringify({ version: 1, node: 'n1', pools: { fast: pool }, pfs: {}, devices: {} }));
    const cp = new Checkpoint(file, 'n1', log);
    expect(cp.state).toBe('ok');
    expect(cp.pools().get('fast')).toEqual(pool);
  });

  test.each([
    ['empty file', () => ''],
    ['truncated JSON', (good: string) => good.slice(0, good.length / 2)],
    ['bad checksum', (good: string) => good.replace('virtualio.dev/fast', 'virtualio.dev/slow')],
    ['wrong shape (pool without devices)', () => JSON.stringify({ version: 1, node: 'n1', pools: { fast: { ...pool, devices: 'x' } } })],
    ['wrong shape (pfs not an object)', () => JSON.stringify({ version: 1, node: 'n1', pfs: [] })],
    ['another node', () => JSON.stringify({ version: 1, node: 'n2' })],
    ['unknown version', () => JSON.stringify({ version: 2, node: 'n1' })],
  ])('%s: corrupt, unknown (not empty), kept before the first save, the loss survives a restart', (_n, damage) => {
    const a = new Checkpoint(file, 'n1', log);
    a.setPool(pool);
    a.save();
    const bad = damage(readFileSync(file, 'utf8'));
    writeFileSync(file, bad);
    const b = new Checkpoint(file, 'n1', log, () => T);
    expect(b.state).toBe('corrupt');
    expect(b.unknown).toBe(true);
    expect(b.loadError).toMatch(new RegExp(`^checkpoint ${file} is damaged: `));
    expect(b.error).toContain('every slice is treated as held');
    expect(b.pools().size).toBe(0);
    b.save();
    const copy = `${file}.corrupt-2026-03-01T12-00-00-000Z`;
    expect(readFileSync(copy, 'utf8')).toBe(bad);
    expect(b.lost).toEqual({ at: T.toISOString(), why: b.loadError, copy });
    expect(b.error).toContain(`(kept as ${copy})`);
    // A restart reads a valid record that still says what it held is unknown.
    const c = new Checkpoint(file, 'n1', log);
    expect(c.state).toBe('ok');
    expect(c.unknown).toBe(true);
    expect(c.lost?.copy).toBe(copy);
    c.markRecovered();
    expect(c.unknown).toBe(false);
    expect(c.error).toBeUndefined();
    c.save();
    expect(new Checkpoint(file, 'n1', log).unknown).toBe(false);
  });

  test('an unreadable file is unknown too', () => {
    mkdirSync(file, { recursive: true }); // EISDIR: read fails even as root
    const cp = new Checkpoint(file, 'n1', log);
    expect(cp.state).toBe('unreadable');
    expect(cp.unknown).toBe(true);
    expect(cp.loadError).toContain(`cannot read checkpoint ${file}`);
  });

  test('parseCheckpoint refuses a damaged entry instead of dropping it', () => {
    const r = parseCheckpoint(JSON.stringify({ version: 1, node: 'n1', retired: [{ plan: { name: 'x' } }] }), 'n1');
    expect(r).toEqual({ ok: false, message: 'malformed retired[0]' });
  });

  test('VFIO numbers: kept across a restart, an empty record is not written, a damaged one refuses the file', () => {
    const cp = new Checkpoint(file, 'n1', log, () => T);
    cp.save();
    expect(JSON.parse(readFileSync(file, 'utf8')).vfio).toBeUndefined();
    cp.vfio().cdevs['0000:81:00.2'] = 3;
    cp.vfio().nodes['0000:81:00.2'] = ['/dev/vfio/12', '/dev/vfio/devices/vfio3'];
    cp.save();
    expect(new Checkpoint(file, 'n1', log).vfio()).toEqual({ cdevs: { '0000:81:00.2': 3 }, nodes: { '0000:81:00.2': ['/dev/vfio/12', '/dev/vfio/devices/vfio3'] } });
    expect(parseCheckpoint(JSON.stringify({ version: 1, node: 'n1', vfio: { cdevs: { a: -1 }, nodes: {} } }), 'n1')).toEqual({ ok: false, message: 'malformed vfio' });
    expect(parseCheckpoint(JSON.stringify({ version: 1, node: 'n1', vfio: { cdevs: {}, nodes: { a: [3] } } }), 'n1')).toEqual({ ok: false, message: 'malformed vfio' });
  });

  test('no file configured: nothing is read or written', () => {
    const cp = new Checkpoint(undefined, 'n1', log);
    expect(cp.state).toBe('absent');
    cp.setPool(pool);
    cp.save();
    expect(cp.error).toBeUndefined();
  });
});
