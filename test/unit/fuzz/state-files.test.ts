// Fuzzing the agent's state and plan files (issue 21, hostile input): its checkpoint, the DRA
// checkpoint, the kubelet's checkpoint and the standalone plan file, generated well-formed (they
// must round-trip), then truncated, garbled, given wrong types or another version. A parser must
// never throw; a bad file is an error naming why, never a smaller valid record; and a damaged
// record is kept byte for byte before anything replaces it. Budget: test/fuzz/budget.ts.
import fc from 'fast-check';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { Checkpoint, parseCheckpoint } from '../../../device-plugin/src/agent/checkpoint.js';
import { decodeChecked, encodeChecked } from '../../../device-plugin/src/agent/durable-file.js';
import { parseKubeletCheckpoint } from '../../../device-plugin/src/agent/kubelet-checkpoint.js';
import { validatePlan } from '../../../device-plugin/src/agent/plan.js';
import { parsePlanText } from '../../../device-plugin/src/agent/plan-file.js';
import { Checkpoint as DraCheckpoint } from '../../../device-plugin/src/dra/prepare.js';
import { silentLogger } from '../../../device-plugin/src/log.js';
import { damagedText, hostileJson, mutated } from '../../fuzz/arbitraries.js';
import { fuzz } from '../../fuzz/budget.js';
import { checkpointData, kubeletCheckpoint, poolPlans, preparedClaims } from '../../fuzz/documents.js';

const NODE = 'node-a';
const log = silentLogger();
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vio-fuzz-state-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Well-formed, mutated (wrong types, fields gone) or damaged text of a checked JSON record. */
function recordTexts(valid: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<string> {
  const enc = (d: unknown) => (isRecord(d) ? encodeChecked(d) : `${JSON.stringify(d) ?? ''}\n`);
  return fc.oneof(
    valid.map(enc),
    mutated(valid).map(enc),
    // Mutated after the checksum was computed: an old record without one, or a hand edit.
    mutated(valid).map((d) => `${JSON.stringify(d) ?? ''}\n`),
    damagedText(valid.map(enc)),
    fc.string({ maxLength: 64, unit: 'binary' }),
  );
}

describe('checked JSON records (durable-file.ts)', () => {
  test('any JSON object round-trips; damaged text is refused with a reason, never a throw', () => {
    const obj = hostileJson.filter(isRecord);
    fuzz('durable-file decodeChecked', 300, [obj, damagedText(obj.map((o) => encodeChecked(o)))], (doc, bad) => {
      const back = decodeChecked(encodeChecked(doc));
      const { checksum: _c, ...rest } = doc;
      expect(back).toEqual({ ok: true, doc: rest, checked: true });
      const r = decodeChecked(bad);
      if (!r.ok) expect(r.message).toMatch(/empty|not JSON|not a JSON object|checksum mismatch/);
    });
  });
});

describe('the agent checkpoint (checkpoint.ts)', () => {
  test('valid records round-trip; any other text is refused or read whole, never losing an entry', () => {
    fuzz('agent checkpoint parse', 300, [recordTexts(checkpointData(NODE) as fc.Arbitrary<unknown> as fc.Arbitrary<Record<string, unknown>>)], (text) => {
      const r = parseCheckpoint(text, NODE);
      if (!r.ok) {
        expect(r.message.length).toBeGreaterThan(0);
        return;
      }
      // Accepted: every entry of the file is in the record (a record with entries missing would
      // read as pools never served here, and their slices as free).
      const doc = JSON.parse(text) as Record<string, unknown>;
      for (const section of ['pools', 'pfs', 'devices', 'carvings', 'mdevCapacity'] as const) {
        const inFile = isRecord(doc[section]) ? Object.keys(doc[section]) : [];
        const kept = Object.keys((r.data[section] ?? {}) as object);
        expect({ section, kept: kept.sort() }).toEqual({ section, kept: inFile.sort() });
      }
      expect(r.data.retired.length).toBe(Array.isArray(doc.retired) ? doc.retired.length : 0);
      expect(parseCheckpoint(encodeChecked(r.data as unknown as Record<string, unknown>), NODE)).toEqual({ ok: true, data: r.data });
    });
  });

  test('loading a damaged file keeps it byte for byte and marks the record unknown until recovered', () => {
    let n = 0;
    fuzz('agent checkpoint load+save', 120, [recordTexts(checkpointData(NODE) as fc.Arbitrary<unknown> as fc.Arbitrary<Record<string, unknown>>)], (text) => {
      const sub = path.join(dir, `cp-${n++}`);
      const file = path.join(sub, 'agent-checkpoint.json');
      writeFileDurableText(file, text);
      const cp = new Checkpoint(file, NODE, log, () => new Date(Date.UTC(2026, 11, 6)));
      const parsed = parseCheckpoint(text, NODE);
      expect(cp.state).toBe(parsed.ok ? 'ok' : 'corrupt');
      if (!parsed.ok) expect(cp.unknown).toBe(true);
      cp.save();
      if (!parsed.ok) {
        const copies = readdirSync(sub).filter((f) => f.startsWith('agent-checkpoint.json.corrupt-'));
        expect(copies).toHaveLength(1);
        expect(readFileSync(path.join(sub, copies[0] as string), 'utf8')).toBe(text);
        const again = new Checkpoint(file, NODE, log);
        expect({ state: again.state, unknown: again.unknown }).toEqual({ state: 'ok', unknown: true });
      } else {
        expect(readFileSync(file, 'utf8')).toBe(text); // nothing changed: not rewritten
      }
      rmSync(sub, { recursive: true, force: true });
    });
  });
});

function writeFileDurableText(file: string, text: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
}

describe('the DRA checkpoint (dra/prepare.ts)', () => {
  test('valid files load whole; any other text is corrupt (unknown), kept byte for byte before a write', () => {
    let n = 0;
    const valid = fc.record({ version: fc.constant(1), claims: preparedClaims }) as fc.Arbitrary<Record<string, unknown>>;
    fuzz('DRA checkpoint load+save', 150, [recordTexts(valid)], (text) => {
      const sub = path.join(dir, `dra-${n++}`);
      const file = path.join(sub, 'checkpoint.json');
      writeFileDurableText(file, text);
      const cp = new DraCheckpoint(file, () => new Date(Date.UTC(2026, 11, 6)));
      const state = cp.tryLoad();
      expect(['ok', 'corrupt']).toContain(state);
      if (state === 'ok') {
        const doc = JSON.parse(text) as { claims: { uid: string }[] };
        // Every claim of the file is loaded (claims with the same UID: the last one wins).
        expect(cp.all().map((c) => c.uid).sort()).toEqual([...new Set(doc.claims.map((c) => c.uid))].sort());
      } else {
        expect(cp.unknown).toBe(true);
        expect(cp.loadError).toContain(file);
        cp.put({ uid: 'u-new', namespace: 'ns', name: 'c', devices: [] });
        const copies = readdirSync(sub).filter((f) => f.startsWith('checkpoint.json.corrupt-'));
        expect(copies).toHaveLength(1);
        expect(readFileSync(path.join(sub, copies[0] as string), 'utf8')).toBe(text);
        const again = new DraCheckpoint(file);
        expect(again.tryLoad()).toBe('ok');
        expect(again.unknown).toBe(true);
      }
      rmSync(sub, { recursive: true, force: true });
    });
  });
});

describe("the kubelet's checkpoint (kubelet-checkpoint.ts)", () => {
  test('valid files give every device its holder; anything else is corrupt with a reason, never a throw', () => {
    fuzz('kubelet checkpoint parse', 300, [kubeletCheckpoint, recordTexts(kubeletCheckpoint as fc.Arbitrary<unknown> as fc.Arbitrary<Record<string, unknown>>)], (valid, other) => {
      const r = parseKubeletCheckpoint(JSON.stringify(valid));
      if (r.kind !== 'ok') throw new Error(`valid checkpoint refused: ${r.kind === 'corrupt' ? r.message : r.kind}`);
      for (const e of valid.Data.PodDeviceEntries) {
        const ids = Array.isArray(e.DeviceIDs) ? e.DeviceIDs : Object.values(e.DeviceIDs).flat();
        for (const id of ids) expect(r.entries.get(id)).toContainEqual({ podUID: e.PodUID, container: e.ContainerName, resourceName: e.ResourceName });
      }
      const o = parseKubeletCheckpoint(other);
      if (o.kind === 'corrupt') expect(o.message.length).toBeGreaterThan(0);
    });
  });
});

describe('the standalone plan file (plan.ts)', () => {
  const planDoc = poolPlans.map((pools) => ({ pools }));
  test('valid plans round-trip through YAML and JSON', () => {
    fuzz('plan file round-trip', 200, [planDoc, fc.boolean()], (doc, json) => {
      const r = parsePlanText(json ? JSON.stringify(doc) : toYaml(doc), parseYaml);
      expect(r).toEqual({ ok: true, spec: doc });
    });
  });

  test('truncated, garbled or mistyped plans are an error naming the problem, never a throw', () => {
    const texts = fc.oneof(
      mutated(planDoc).map((d) => (toYaml(d) as string | undefined) ?? ''),
      mutated(planDoc).map((d) => JSON.stringify(d) ?? ''),
      damagedText(planDoc.map((d) => toYaml(d))),
      damagedText(planDoc.map((d) => JSON.stringify(d))),
      fc.string({ maxLength: 64, unit: 'binary' }),
    );
    fuzz('plan file parse', 400, [texts], (text) => {
      let r: ReturnType<typeof parsePlanText>;
      try {
        r = parsePlanText(text, parseYaml);
      } catch (err) {
        throw new Error(`parsePlanText threw on ${JSON.stringify(text)}: ${String(err)}`, { cause: err });
      }
      if (!r.ok) {
        expect(r.message.length).toBeGreaterThan(0);
        return;
      }
      // Accepted: it is a valid plan (validating it again changes nothing).
      expect(validatePlan({ pools: r.spec.pools })).toEqual({ ok: true, spec: r.spec });
    });
  });
});

describe('counterexamples the fuzzers found, kept as examples', () => {
  test('a plan whose pool name is not a string (e.g. [{toString: null}]) is an error, not a TypeError', () => {
    const text = '{"pools":[{"name":[{"toString":null}],"resourceName":"virtualio.dev/aa","class":"NIC","mode":"SRIOV","consumption":"HostDevice","devices":[{"pciAddress":"0000:00:00.0"}]}]}';
    const r = parsePlanText(text, parseYaml);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toContain('pools[0].name: must be a lower-case DNS label-like name, got [{"toString":null}]');
  });

  test.each(['pfs', 'devices', 'pools'])('a checkpoint with a "__proto__" key in %s is refused (the entry would vanish), not read as a smaller record', (section) => {
    const entry = section === 'pfs' ? { pools: ['net'] } : section === 'devices' ? { driver: 'ixgbe' } : { name: '__proto__', resourceName: 'virtualio.dev/x', mode: 'SRIOV', devices: [] };
    const text = `{"version":1,"node":"${NODE}","${section}":{"__proto__":${JSON.stringify(entry)}}}`;
    expect(parseCheckpoint(text, NODE)).toEqual({ ok: false, message: `malformed ${section === 'pools' ? 'pool "__proto__"' : `${section}["__proto__"]`}` });
  });
});
