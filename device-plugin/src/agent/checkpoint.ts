// The agent's node-local record, modelled on the kubelet device manager's checkpoint: what this
// agent has served and carved, kept on the node so that a restart, a lost VirtualIONode or an
// operator outage never makes it forget a slice a pod may hold.
//
// - `pools`: the last plan of every pool the agent has served on this node (also pools that left
//   the plan and still have slices to release). Holders are learned for all of their resource
//   names, not only for today's plan, and a pool that left the plan while the agent was down is
//   still released (or kept draining) after a restart.
// - `pfs`: physical functions whose `sriov_numvfs` this agent set. VFs on any other PF belong to
//   someone else and are never reset silently.
// - `devices`: what a function looked like before the agent moved it off its driver (driver and
//   netdev names), so pool membership survives the agent's own carving.
//
// Written durably (temp file, fsync, rename, fsync of the folder; see durable-file.ts), only when it
// changed, with a checksum. A missing file is an empty record. A file that cannot be read, is not
// JSON, fails its checksum or has the wrong shape is NOT an empty record: `state` says so, `unknown`
// stays true (the caller treats every slice as held, since pools and retired plans it listed are
// lost), the damaged file is kept as `<file>.corrupt-<time>` before the first write replaces it, and
// the loss is written into the new record so that a restart does not forget it.
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { PoolPlan } from '../model.js';
import { decodeChecked, encodeChecked, keepCorruptCopy, writeFileDurable } from './durable-file.js';
import type { VfioRecord } from './vfio-numbers.js';

export const CHECKPOINT_FILE = 'agent-checkpoint.json';

/** Facts of a function before the agent first re-bound it. */
export interface OriginalFacts {
  driver?: string;
  interfaceNames?: string[];
}

/** A record that could not be read: what it held is unknown from then on, until the caller says otherwise. */
export interface CheckpointLoss {
  /** When the damage was found (ISO time). */
  at: string;
  why: string;
  /** Where the damaged file was kept. */
  copy?: string;
}

export interface CheckpointData {
  version: 1;
  node: string;
  pools: Record<string, PoolPlan>;
  /** Pools (or their devices) that left the plan and still had slices to release or drain. */
  retired: { plan: PoolPlan; why: string }[];
  pfs: Record<string, { pools: string[] }>;
  devices: Record<string, OriginalFacts>;
  /** Set while an earlier record was lost (see {@link Checkpoint.unknown}). */
  lost?: CheckpointLoss;
  /** On-demand pools: instances per type each mdev parent holds empty, learned from the kernel. */
  mdevCapacity?: Record<string, Record<string, number>>;
  /** On-demand mdevs by UUID: the claim whose allocation they are carved for, recorded before the create. */
  carvings?: Record<string, CarvingRecord>;
  /** VFIO cdev numbers of functions and device nodes of slices, kept across reboots (vfio-numbers.ts). */
  vfio?: VfioRecord;
}

/** Which claim an on-demand mdev is (being) carved for. */
export interface CarvingRecord {
  pool: string;
  namespace: string;
  claim: string;
  uid: string;
  /** When the create was decided (RFC 3339). */
  since: string;
}

/**
 * What loading found: `ok` (a valid record), `absent` (no file, or no file configured: a trusted
 * empty record), `corrupt` (not JSON, bad checksum, wrong shape or another node's record) or
 * `unreadable` (the file exists but cannot be read). The last two mean "unknown", never "empty".
 */
export type CheckpointState = 'ok' | 'absent' | 'corrupt' | 'unreadable';

function empty(node: string): CheckpointData {
  return { version: 1, node, pools: {}, retired: [], pfs: {}, devices: {} };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringList(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

/**
 * A key no record of ours holds (pool names, PCI addresses and UUIDs never are): assigning it would
 * set the section's prototype instead of adding an entry, so the entry would vanish silently.
 */
const FORBIDDEN_KEY = '__proto__';

function isPlan(p: unknown): p is PoolPlan {
  return isRecord(p) && typeof p.name === 'string' && typeof p.resourceName === 'string' && typeof p.mode === 'string' && Array.isArray(p.devices);
}

/**
 * Parses checkpoint text; returns a reason instead of throwing on anything malformed. Strict: any
 * entry of the wrong shape refuses the whole record (a record missing entries would look like
 * pools that were never served here). Sections missing entirely are empty (older records).
 */
export function parseCheckpoint(text: string, node: string): { ok: true; data: CheckpointData } | { ok: false; message: string } {
  const decoded = decodeChecked(text);
  if (!decoded.ok) return decoded;
  const doc = decoded.doc;
  if (doc.version !== 1) return { ok: false, message: `not a version 1 checkpoint (version ${JSON.stringify(doc.version)})` };
  if (doc.node !== node) return { ok: false, message: `written for node ${JSON.stringify(doc.node)}, not ${node}` };
  const data = empty(node);
  const bad = (what: string) => ({ ok: false as const, message: `malformed ${what}` });
  if (doc.pools !== undefined) {
    if (!isRecord(doc.pools)) return bad('pools');
    for (const [name, p] of Object.entries(doc.pools)) {
      if (name === FORBIDDEN_KEY || !isPlan(p) || p.name !== name) return bad(`pool ${JSON.stringify(name)}`);
      data.pools[name] = p;
    }
  }
  if (doc.retired !== undefined) {
    if (!Array.isArray(doc.retired)) return bad('retired');
    for (const [i, r] of doc.retired.entries()) {
      if (!isRecord(r) || !isPlan(r.plan) || (r.why !== undefined && typeof r.why !== 'string')) return bad(`retired[${i}]`);
      data.retired.push({ plan: r.plan, why: typeof r.why === 'string' ? r.why : 'left the plan' });
    }
  }
  if (doc.pfs !== undefined) {
    if (!isRecord(doc.pfs)) return bad('pfs');
    for (const [addr, v] of Object.entries(doc.pfs)) {
      if (addr === FORBIDDEN_KEY || !isRecord(v) || !isStringList(v.pools)) return bad(`pfs[${JSON.stringify(addr)}]`);
      data.pfs[addr] = { pools: v.pools };
    }
  }
  if (doc.devices !== undefined) {
    if (!isRecord(doc.devices)) return bad('devices');
    for (const [addr, v] of Object.entries(doc.devices)) {
      if (addr === FORBIDDEN_KEY || !isRecord(v) || (v.driver !== undefined && typeof v.driver !== 'string') || (v.interfaceNames !== undefined && !isStringList(v.interfaceNames))) {
        return bad(`devices[${JSON.stringify(addr)}]`);
      }
      const f: OriginalFacts = {};
      if (typeof v.driver === 'string') f.driver = v.driver;
      if (isStringList(v.interfaceNames)) f.interfaceNames = v.interfaceNames;
      data.devices[addr] = f;
    }
  }
  if (doc.mdevCapacity !== undefined) {
    if (!isRecord(doc.mdevCapacity) || !Object.values(doc.mdevCapacity).every((v) => isRecord(v) && Object.values(v).every((n) => Number.isInteger(n)))) return bad('mdevCapacity');
    data.mdevCapacity = doc.mdevCapacity as Record<string, Record<string, number>>;
  }
  if (doc.carvings !== undefined) {
    if (!isRecord(doc.carvings) || !Object.values(doc.carvings).every((v) => isRecord(v) && ['pool', 'namespace', 'claim', 'uid', 'since'].every((k) => typeof v[k] === 'string'))) return bad('carvings');
    data.carvings = doc.carvings as Record<string, CarvingRecord>;
  }
  if (doc.vfio !== undefined) {
    const v = doc.vfio;
    const okCdevs = isRecord(v) && isRecord(v.cdevs) && !Object.hasOwn(v.cdevs, FORBIDDEN_KEY) && Object.values(v.cdevs).every((n) => Number.isInteger(n) && (n as number) >= 0);
    const okNodes = isRecord(v) && isRecord(v.nodes) && !Object.hasOwn(v.nodes, FORBIDDEN_KEY) && Object.values(v.nodes).every(isStringList);
    if (!okCdevs || !okNodes) return bad('vfio');
    data.vfio = { cdevs: { ...(v.cdevs as Record<string, number>) }, nodes: { ...(v.nodes as Record<string, string[]>) } };
  }
  if (doc.lost !== undefined) {
    const l = doc.lost;
    if (!isRecord(l) || typeof l.at !== 'string' || typeof l.why !== 'string' || (l.copy !== undefined && typeof l.copy !== 'string')) return bad('lost');
    data.lost = { at: l.at, why: l.why, ...(typeof l.copy === 'string' ? { copy: l.copy } : {}) };
  }
  return { ok: true, data };
}

export class Checkpoint {
  private data: CheckpointData;
  private written = '';
  private writeError: string | undefined;
  /** What loading found (fixed for the life of the object). */
  readonly state: CheckpointState;
  /** Why the record could not be loaded (state `corrupt` or `unreadable`). */
  readonly loadError: string | undefined;
  /** The damaged file still has to be kept before the first write replaces it. */
  private mustKeepCopy: boolean;

  constructor(
    private readonly file: string | undefined,
    node: string,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.data = empty(node);
    this.mustKeepCopy = false;
    if (!file) {
      this.state = 'absent';
      return;
    }
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.state = 'absent';
        return;
      }
      this.state = 'unreadable';
      this.loadError = `cannot read checkpoint ${file}: ${(err as Error).message}`;
      this.lose(this.loadError);
      return;
    }
    const r = parseCheckpoint(text, node);
    if (r.ok) {
      this.state = 'ok';
      this.data = r.data;
      this.written = JSON.stringify(r.data);
      if (r.data.lost) log.warn({ file, lost: r.data.lost }, 'checkpoint loaded; an earlier record was lost and is still treated as unknown');
      log.info({ file, pools: Object.keys(r.data.pools), pfs: Object.keys(r.data.pfs).length }, 'checkpoint loaded');
    } else {
      this.state = 'corrupt';
      this.loadError = `checkpoint ${file} is damaged: ${r.message}`;
      this.lose(this.loadError);
    }
  }

  private lose(why: string): void {
    this.mustKeepCopy = true;
    this.data.lost = { at: this.now().toISOString(), why };
    this.log.error({ file: this.file }, `${why}; what it recorded is unknown: every slice is treated as held, and the file is kept as ${this.file}.corrupt-<time> before it is replaced`);
  }

  /**
   * True while what an earlier record held is unknown (it was damaged or unreadable, now or before
   * a restart): treat every slice that exists as held and release nothing on the strength of this
   * record. Ends only with {@link markRecovered}.
   */
  get unknown(): boolean {
    return this.data.lost !== undefined;
  }

  /** The loss behind {@link unknown}: when, why, and where the damaged file was kept. */
  get lost(): CheckpointLoss | undefined {
    return this.data.lost ? { ...this.data.lost } : undefined;
  }

  /**
   * The caller has re-learned what the lost record held from other sources (e.g. the kubelet
   * answered who holds what): ends {@link unknown}; written with the next {@link save}.
   */
  markRecovered(): void {
    if (!this.data.lost) return;
    this.log.info({ file: this.file, lost: this.data.lost }, 'checkpoint loss acknowledged; the record is trusted again');
    delete this.data.lost;
  }

  /**
   * Why the record cannot be trusted or written, for status (CheckpointUnavailable): the last write
   * error, else the loss while it is {@link unknown}.
   */
  get error(): string | undefined {
    if (this.writeError) return this.writeError;
    const l = this.data.lost;
    if (!l) return undefined;
    return `${l.why}${l.copy ? ` (kept as ${l.copy})` : ''}; every slice is treated as held until the agent re-learns who holds them`;
  }

  /** Pools served on this node, by name (their last plan). */
  pools(): ReadonlyMap<string, PoolPlan> {
    return new Map(Object.entries(this.data.pools));
  }

  setPool(pool: PoolPlan): void {
    this.data.pools[pool.name] = pool;
  }

  deletePool(name: string): void {
    delete this.data.pools[name];
  }

  retired(): { plan: PoolPlan; why: string }[] {
    return this.data.retired.map((r) => ({ plan: r.plan, why: r.why }));
  }

  setRetired(retired: readonly { plan: PoolPlan; why: string }[]): void {
    this.data.retired = retired.map((r) => ({ plan: r.plan, why: r.why }));
  }

  /** PFs whose VF count this agent set. */
  ownedPfs(): ReadonlySet<string> {
    return new Set(Object.keys(this.data.pfs));
  }

  ownPf(pf: string, pools: string[]): void {
    this.data.pfs[pf] = { pools: [...new Set([...(this.data.pfs[pf]?.pools ?? []), ...pools])].sort() };
  }

  disownPf(pf: string): void {
    delete this.data.pfs[pf];
  }

  originals(): ReadonlyMap<string, OriginalFacts> {
    return new Map(Object.entries(this.data.devices));
  }

  /** Records a function's facts before its first re-bind (kept if already recorded). */
  rememberOriginal(pci: string, facts: OriginalFacts): void {
    this.data.devices[pci] ??= facts;
  }

  forgetOriginal(pci: string): void {
    delete this.data.devices[pci];
  }

  /** On-demand parents' learned capacity (parent → type → instances when empty). */
  mdevCapacity(): Record<string, Record<string, number>> {
    return this.data.mdevCapacity ?? {};
  }

  setMdevCapacity(c: Record<string, Record<string, number>>): void {
    if (Object.keys(c).length === 0) delete this.data.mdevCapacity;
    else this.data.mdevCapacity = c;
  }

  /** On-demand mdevs and the claims they were carved for. */
  carvings(): ReadonlyMap<string, CarvingRecord> {
    return new Map(Object.entries(this.data.carvings ?? {}));
  }

  /** Records (kept if already recorded for the same claim) which claim an mdev is carved for. */
  recordCarving(uuid: string, r: CarvingRecord): void {
    const had = this.data.carvings?.[uuid];
    if (had && had.uid === r.uid) return;
    (this.data.carvings ??= {})[uuid] = r;
  }

  forgetCarving(uuid: string): void {
    if (!this.data.carvings?.[uuid]) return;
    delete this.data.carvings[uuid];
    if (Object.keys(this.data.carvings).length === 0) delete this.data.carvings;
  }

  /** The VFIO numbers record (vfio-numbers.ts): the caller updates it in place; written with the next {@link save}. */
  vfio(): VfioRecord {
    return (this.data.vfio ??= { cdevs: {}, nodes: {} });
  }

  /**
   * Writes the record when it changed, durably (see durable-file.ts). A damaged file is first kept
   * as `<file>.corrupt-<time>`; when that fails nothing is written (the error says why).
   */
  save(): void {
    if (!this.file) return;
    if (this.mustKeepCopy) {
      try {
        const copy = keepCorruptCopy(this.file, this.now());
        if (copy && this.data.lost) this.data.lost.copy = copy;
        this.mustKeepCopy = false;
        if (copy) this.log.warn({ file: this.file, copy }, 'damaged checkpoint kept before it is replaced');
      } catch (err) {
        const msg = `cannot keep a copy of the damaged checkpoint ${this.file}, so it is not replaced: ${(err as Error).message}`;
        if (msg !== this.writeError) this.log.error(msg);
        this.writeError = msg;
        return;
      }
    }
    if (this.data.vfio && Object.keys(this.data.vfio.cdevs).length === 0 && Object.keys(this.data.vfio.nodes).length === 0) delete this.data.vfio;
    const text = JSON.stringify(this.data);
    if (text === this.written) return;
    try {
      writeFileDurable(this.file, encodeChecked(this.data as unknown as Record<string, unknown>), { mode: 0o600 });
      this.written = text;
      if (this.writeError) this.log.info({ file: this.file }, 'checkpoint written again');
      this.writeError = undefined;
    } catch (err) {
      const msg = `cannot write checkpoint ${this.file}: ${(err as Error).message}`;
      if (msg !== this.writeError) this.log.error(msg);
      this.writeError = msg;
    }
  }
}
