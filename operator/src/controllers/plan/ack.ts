// The acknowledgement of a node whose agent plans locally (VirtualIONodeAck, one small object per
// node): per pool, a digest of the plan entry the agent carried out and the pool's state there. The
// agent writes it before its VirtualIONode status (a write that costs the API server several times
// more: the whole inventory and its managedFields), and the operator's pool status reads it first.
// Pure. The agent builds its ack with ackPools and the operator compares with planEntryDigest: one
// function on both sides, so that "the same entry" means the same thing to both.
import { createHash } from 'node:crypto';
import type { PoolAck, VirtualIONodeAck } from '../../../../crds/generated/types.js';
import type { ObjectMeta } from '../../kube/ports.js';
import { intern } from '../../util/intern.js';

export type { PoolAck };
/** A VirtualIONodeAck as the operator caches it. */
export type NodeAck = Omit<VirtualIONodeAck, 'metadata'> & { metadata: ObjectMeta };

/** The pool states an ack can carry (the agent's status.pools[].state). */
const STATES: readonly string[] = ['Ready', 'Carving', 'Blocked', 'Error', 'Deleting', 'Released', 'Draining'];
/** The CRD's maxLength of an ack's message. */
export const ACK_MESSAGE_MAX = 1024;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON with object keys sorted and undefined members left out: equal for values jsonEqual calls equal. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonical(x))).join(',')}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

const digests = new WeakMap<object, string>();

/**
 * Digest of one plan entry (a PoolPlan as planNode derives it and the agent serves it): 32 hex
 * characters of SHA-256 over its canonical JSON, so key order and absent members do not matter.
 * Memoized per entry object (plan entries are shared and frozen in the operator's cache).
 */
export function planEntryDigest(entry: object): string {
  let d = digests.get(entry);
  if (d === undefined) {
    d = createHash('sha256').update(canonical(entry)).digest('hex').slice(0, 32);
    digests.set(entry, d);
  }
  return d;
}

/**
 * The ack of a plan carried out: one entry per served pool that has a state in the agent's report
 * (a pool without one says nothing yet and is left out, so the operator keeps reading the VirtualIONode).
 */
export function ackPools(plan: readonly ({ name: string } & object)[], states: readonly { name: string; state: string; message?: string | undefined }[]): PoolAck[] {
  const byName = new Map(states.map((s) => [s.name, s]));
  const out: PoolAck[] = [];
  for (const p of plan) {
    const s = byName.get(p.name);
    if (!s || !STATES.includes(s.state)) continue;
    const message = s.message && s.message.length > ACK_MESSAGE_MAX ? `${s.message.slice(0, ACK_MESSAGE_MAX - 3)}...` : s.message;
    out.push({ name: p.name, digest: planEntryDigest(p), state: s.state as PoolAck['state'], ...(message ? { message } : {}) });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

/** An ack entry the roll-up can read (an object of another shape is skipped, never a throw). */
export function isPoolAck(p: unknown): p is PoolAck {
  return isObject(p) && typeof p.name === 'string' && typeof p.digest === 'string' && typeof p.state === 'string' && STATES.includes(p.state) &&
    (p.message === undefined || typeof p.message === 'string');
}

/** The cached form of an ack: name, uid, owner and readable pool entries (shared between nodes: intern.ts); no managedFields. */
export function ackCacheForm(a: NodeAck): NodeAck {
  const { name, uid, resourceVersion, ownerReferences } = a.metadata;
  const raw: unknown = isObject(a.status) ? a.status.pools : undefined;
  const pools = Array.isArray(raw) ? raw.filter(isPoolAck).map((p) => intern({ name: p.name, digest: p.digest, state: p.state, ...(p.message ? { message: p.message } : {}) })) : [];
  return { apiVersion: a.apiVersion, kind: a.kind, metadata: { name, uid, resourceVersion, ...(ownerReferences ? { ownerReferences } : {}) }, status: { pools } };
}

/**
 * The ack entry of a pool when it acknowledges `want` (the entry the operator derives for the node):
 * same digest. A deleting entry is not acknowledged here (deletion waits for the detailed report).
 */
export function currentAck(ack: NodeAck | undefined, want: ({ name: string; deleting?: boolean | undefined } & object) | undefined): PoolAck | undefined {
  if (!ack || !want || want.deleting) return undefined;
  const a = ack.status?.pools?.find((p) => p.name === want.name);
  return a && a.digest === planEntryDigest(want) ? a : undefined;
}
