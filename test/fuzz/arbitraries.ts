// Shared generators of hostile input: JSON values with the keys and values that break naive code
// (`__proto__`, `toString`, huge and non-integer numbers, wrong types), structural mutations of a
// valid document (a field deleted or given another type: an object as the API server may hold it
// after a schema change, a record written by another version), and damaged text (truncated, bytes
// flipped, garbage appended).
import fc from 'fast-check';

/** Object keys: ordinary strings plus the ones that reach Object.prototype. */
export const hostileKey: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constantFrom('__proto__', 'toString', 'valueOf', 'constructor', '') },
);

/** Numbers a parser may not expect: huge, negative, fractional, past 2^53, beyond 1e21 (exponent notation). */
export const hostileNumber: fc.Arbitrary<number> = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(-1, 0, 2 ** 31, 2 ** 32, 2 ** 53 + 2, 1e21, 1e308, -1e308, 0.5),
);

/** A JSON value (what JSON.parse can return) with hostile keys and numbers, a few levels deep. */
export const hostileJson: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    hostileNumber,
    fc.string({ maxLength: 20 }),
    fc.array(tie('v'), { maxLength: 4 }),
    // Built through JSON.parse so that `__proto__` is an own key, as it is in a parsed file.
    fc.array(fc.tuple(hostileKey, tie('v')), { maxLength: 4 }).map((entries) => JSON.parse(JSON.stringify(Object.fromEntries(entries))) as unknown),
  ),
})).v;

type Path = (string | number)[];

function pathsOf(v: unknown, at: Path = [], out: Path[] = []): Path[] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => pathsOf(x, [...at, i], out));
  else if (typeof v === 'object' && v !== null) for (const [k, x] of Object.entries(v)) pathsOf(x, [...at, k], out);
  return out;
}

/** One edit of a document: at the n-th path (modulo), delete the field or replace its value. */
export interface Mutation {
  pick: number;
  op: 'delete' | 'replace' | 'wrap' | 'rename';
  value: unknown;
  /** The new name of the field for `rename` (objects only; elsewhere a replace). */
  key: string;
}

export const mutation: fc.Arbitrary<Mutation> = fc.record({
  pick: fc.nat(),
  op: fc.constantFrom('delete', 'replace', 'replace', 'wrap', 'rename') as fc.Arbitrary<Mutation['op']>,
  value: hostileJson,
  key: hostileKey,
});

/** Applies mutations to a deep copy of `doc` (the root itself may be replaced). */
export function applyMutations(doc: unknown, muts: readonly Mutation[]): unknown {
  let root: unknown = structuredClone(doc);
  for (const m of muts) {
    const paths = pathsOf(root);
    const p = paths[m.pick % paths.length] as Path;
    const value = m.op === 'wrap' ? [getAt(root, p)] : structuredClone(m.value);
    if (p.length === 0) {
      root = m.op === 'delete' ? undefined : value;
      continue;
    }
    const parent = getAt(root, p.slice(0, -1)) as Record<string | number, unknown>;
    const key = p[p.length - 1] as string | number;
    if (m.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key];
    } else if (m.op === 'rename' && !Array.isArray(parent)) {
      const old = parent[key];
      delete parent[key];
      Object.defineProperty(parent, m.key, { value: old, enumerable: true, writable: true, configurable: true });
    } else {
      Object.defineProperty(parent, key, { value, enumerable: true, writable: true, configurable: true });
    }
  }
  return root;
}

function getAt(v: unknown, p: Path): unknown {
  let cur = v;
  for (const k of p) cur = (cur as Record<string | number, unknown>)[k];
  return cur;
}

/** Up to `max` mutations of a valid document. */
export function mutated(valid: fc.Arbitrary<unknown>, max = 3): fc.Arbitrary<unknown> {
  return fc.tuple(valid, fc.array(mutation, { minLength: 1, maxLength: max })).map(([doc, muts]) => applyMutations(doc, muts));
}

/** Damage to a text file: truncation (a crashed writer), flipped bytes, garbage inserted. */
export function damagedText(text: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.tuple(text, fc.nat(), fc.constantFrom('truncate', 'flip', 'insert', 'prefix'), fc.string({ minLength: 1, maxLength: 8, unit: 'binary' })).map(([t, n, how, junk]) => {
    const at = t.length === 0 ? 0 : n % t.length;
    switch (how) {
      case 'truncate':
        return t.slice(0, at);
      case 'flip':
        return `${t.slice(0, at)}${String.fromCharCode((t.charCodeAt(at) ^ 0x20) || 0x41)}${t.slice(at + 1)}`;
      case 'insert':
        return `${t.slice(0, at)}${junk}${t.slice(at)}`;
      default:
        return `${junk}${t}`;
    }
  });
}

/** PCI addresses, mostly well-formed. */
export const pciAddress: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 7 })).map(([d, b, s, f]) => `${d.toString(16).padStart(4, '0')}:${b.toString(16).padStart(2, '0')}:${s.toString(16).padStart(2, '0')}.${f}`) },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 14 }).filter((s) => !s.includes('/') && !s.includes('\0') && s !== '.' && s !== '..') },
);
