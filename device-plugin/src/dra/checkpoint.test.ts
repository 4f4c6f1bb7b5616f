// The DRA driver's prepared-claims checkpoint (prepare.ts): durable, and never "no claims" when damaged.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, type PreparedClaim } from './prepare.js';

const T = new Date(Date.UTC(2026, 2, 1, 12, 0, 0));
const claim: PreparedClaim = {
  uid: 'u1', namespace: 'vms', name: 'c',
  devices: [{ request: 'nic', pool: 'n1/fast', device: 'vf-0000-81-10-0', sliceId: '0000:81:10.0', cdiId: 'virtualio.dev/claim=u1-vf-0000-81-10-0' }],
  pods: ['virt-launcher-a'],
};

let dir: string;
let file: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vio-dra-cp-'));
  file = join(dir, 'checkpoint.json');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('not loaded yet: unknown, and nothing is written over the file', () => {
  const cp = new Checkpoint(file);
  expect(cp.state).toBe('unloaded');
  expect(cp.unknown).toBe(true);
  expect(() => cp.put(claim)).toThrow('not loaded yet');
  expect(existsSync(file)).toBe(false);
});

test('absent → empty and trusted; put/delete are durable and survive a reload', () => {
  const a = new Checkpoint(file);
  expect(a.tryLoad()).toBe('absent');
  expect(a.unknown).toBe(false);
  a.put(claim);
  expect(readFileSync(file, 'utf8')).toContain('"checksum": "sha256:');
  const b = new Checkpoint(file);
  expect(b.tryLoad()).toBe('ok');
  expect(b.get('u1')).toEqual(claim);
  b.delete('u1');
  const c = new Checkpoint(file);
  c.load();
  expect(c.all()).toEqual([]);
});

test('a file written before checksums existed still loads', () => {
  writeFileSync(file, JSON.stringify({ version: 1, claims: [claim] }));
  const cp = new Checkpoint(file);
  expect(cp.tryLoad()).toBe('ok');
  expect(cp.get('u1')).toEqual(claim);
});

test.each([
  ['empty', () => '', 'is damaged: the file is empty'],
  ['truncated', (good: string) => good.slice(0, 40), 'is not valid JSON'],
  ['bad checksum', (good: string) => good.replace('virt-launcher-a', 'virt-launcher-b'), 'checksum mismatch'],
  ['malformed claim', () => JSON.stringify({ version: 1, claims: [{ uid: 'u1' }] }), 'malformed claims[0]'],
  ['unknown layout', () => JSON.stringify({ version: 2, claims: [] }), 'unknown layout'],
])('%s: unknown (every DRA slice counts as held), kept before it is replaced, loss carried over a restart', (_n, damage, msg) => {
  const a = new Checkpoint(file);
  a.tryLoad();
  a.put(claim);
  const bad = damage(readFileSync(file, 'utf8'));
  writeFileSync(file, bad);
  const b = new Checkpoint(file, () => T);
  expect(b.tryLoad()).toBe('corrupt');
  expect(b.unknown).toBe(true);
  expect(b.loadError).toContain(msg);
  expect(b.all()).toEqual([]);
  expect(() => new Checkpoint(file).load()).toThrow(`DRA checkpoint ${file}`);
  // A new claim is still recorded, after the damaged file was kept.
  b.put({ ...claim, uid: 'u2' });
  const copy = `${file}.corrupt-2026-03-01T12-00-00-000Z`;
  expect(readFileSync(copy, 'utf8')).toBe(bad);
  const c = new Checkpoint(file);
  expect(c.tryLoad()).toBe('ok');
  expect(c.unknown).toBe(true);
  expect(c.lost).toMatchObject({ why: b.loadError, copy });
  expect(c.all().map((x) => x.uid)).toEqual(['u2']);
  c.markRecovered();
  expect(c.unknown).toBe(false);
});

/** Makes every save of `file` fail (a non-empty folder where the file is renamed to) until the returned undo. */
function breakSaves(target: string): () => void {
  const text = readFileSync(target, 'utf8');
  rmSync(target);
  mkdirSync(join(target, 'in-the-way'), { recursive: true });
  return () => {
    rmSync(target, { recursive: true, force: true });
    writeFileSync(target, text);
  };
}

test('a claim is recorded or forgotten in memory only once it is saved: a failed save changes nothing', () => {
  const cp = new Checkpoint(file);
  cp.tryLoad();
  cp.put(claim);
  const undo = breakSaves(file);
  expect(() => cp.put({ ...claim, uid: 'u2' })).toThrow();
  expect(cp.get('u2')).toBeUndefined();
  expect(() => cp.delete('u1')).toThrow();
  expect(cp.get('u1')).toEqual(claim);
  undo();
  // Retried once the disk works again: the delete is written, not skipped as already done.
  cp.delete('u1');
  const again = new Checkpoint(file);
  again.load();
  expect(again.all()).toEqual([]);
  expect(readdirSync(dir).filter((n) => n.endsWith('.tmp'))).toEqual([]);
});
