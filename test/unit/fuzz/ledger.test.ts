// Fuzzing the agent's ledger file (agent-ledger.json, issue 21, hostile input): valid ledgers,
// the same with fields deleted, retyped or renamed, and damaged text. Loading never throws; a
// ledger that is not read whole is "unknown" (every slice held for the grace period); and what the
// gate and Allocate ask of a loaded ledger (state, refuseAllocate, holders, refresh) never throws,
// and every grant the file holds counts as held until the sources have been asked.
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Ledger } from '../../../device-plugin/src/agent/ledger.js';
import { silentLogger } from '../../../device-plugin/src/log.js';
import { damagedText, hostileNumber, mutated } from '../../fuzz/arbitraries.js';
import { fuzzAsync } from '../../fuzz/budget.js';

const NODE = 'n1';
const R = 'virtualio.dev/net';
const grant = fc.record({
  resourceName: fc.constantFrom(R, 'virtualio.dev/other'),
  via: fc.constantFrom('allocate', 'podresources', 'kubelet-checkpoint', 'dra'),
  grantedAt: fc.oneof(fc.integer({ min: 0, max: 2 ** 41 }), hostileNumber),
  lastSeenAt: fc.constant(0),
  pod: fc.option(fc.record({ namespace: fc.constant('vms'), name: fc.constant('virt-launcher-a'), container: fc.constant('compute') }), { nil: undefined }),
  podUID: fc.option(fc.uuid(), { nil: undefined }),
}, { requiredKeys: ['resourceName', 'via', 'grantedAt', 'lastSeenAt'] });
const ledgerDoc = fc.record({ version: fc.constant(1), node: fc.constant(NODE), grants: fc.dictionary(fc.constantFrom('0000:81:02.0', '0000:81:02.1', '0000:81:02.2'), grant, { maxKeys: 3 }) });
const texts = fc.oneof(
  ledgerDoc.map((d) => JSON.stringify(d)),
  mutated(ledgerDoc).map((d) => JSON.stringify(d) ?? ''),
  damagedText(ledgerDoc.map((d) => JSON.stringify(d))),
);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vio-fuzz-ledger-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('a ledger file of any shape loads without a throw; its grants are held, or the ledger is unknown', async () => {
  let n = 0;
  await fuzzAsync('agent ledger load+query', 300, [texts], async (text) => {
    const file = path.join(dir, `ledger-${n++}.json`);
    writeFileSync(file, text);
    const sources = {
      podResources: () => ({ synced: true, holders: new Map() }),
      kubeletCheckpoint: () => ({ kind: 'absent' as const }),
      resourceNames: () => new Set([R]),
    };
    const l = new Ledger({ file, node: NODE, logger: silentLogger(), sources, graceMs: 60_000, now: () => 1_000_000 });
    try {
      let doc: unknown;
      try {
        doc = JSON.parse(text);
      } catch {
        doc = undefined;
      }
      const grants = typeof doc === 'object' && doc !== null ? (doc as { grants?: unknown }).grants : undefined;
      const ids = typeof grants === 'object' && grants !== null ? Object.keys(grants) : [];
      if (l.unknown() === undefined) for (const id of ids) expect(l.state(id).kind).toBe('held');
      for (const id of [...ids, '0000:81:02.7']) {
        l.state(id);
        l.refuseAllocate(R, [id]);
      }
      l.holders();
      await l.refresh();
      for (const id of ids) l.state(id);
    } catch (err) {
      throw new Error(`ledger threw on ${JSON.stringify(text).slice(0, 400)}: ${String(err)}`, { cause: err });
    } finally {
      rmSync(file, { force: true });
    }
  });
});

describe('counterexamples the fuzzer found, kept as examples', () => {
  test('a grant with grantedAt past the Date range (1e21) stays held and is described, not a RangeError', () => {
    const file = path.join(dir, 'ledger-1e21.json');
    writeFileSync(file, '{"version":1,"node":"n1","grants":{"0000:81:02.0":{"resourceName":"virtualio.dev/net","via":"allocate","grantedAt":1e+21,"lastSeenAt":0}}}');
    const sources = { podResources: () => ({ synced: true, holders: new Map() }), kubeletCheckpoint: () => ({ kind: 'absent' as const }), resourceNames: () => new Set([R]) };
    const l = new Ledger({ file, node: NODE, logger: silentLogger(), sources, graceMs: 60_000, now: () => 1_000_000 });
    expect(l.state('0000:81:02.0')).toEqual({ kind: 'held', by: 'an Allocate answered at 1e+21 ms since the epoch' });
  });
});
