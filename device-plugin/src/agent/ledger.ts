// Who holds which slice: the one record the agent asks before anything that could destroy a device
// (the gate) and before handing a slice out (Allocate). Modelled on the kubelet's device manager
// (STYLE §3.6): small, durable, one owner, reloaded at start.
//
// Sources of "held", any one of which is enough:
//  1. our grants: every ID this agent handed out in Allocate (recorded before the answer leaves), and
//     every ID a source below ever showed as held; kept on disk;
//  2. the kubelet's PodResources List (names the pod; empty right after a kubelet restart);
//  3. the kubelet's own checkpoint (survives kubelet restarts; may outlive a pod, see
//     kubelet-checkpoint.ts);
//  4. prepared DRA claims (the DRA driver's own checkpoint).
// A grant is released only when every source agrees nobody holds the ID: PodResources answers and
// does not list it, the kubelet's checkpoint does not list it (or lists it for a pod the API server
// says is gone), and neither has shown it for `graceMs`. "Don't know" counts as held: while
// PodResources has not answered, fails, or a record is unreadable, `unknown()` says why and the
// callers protect every slice that exists.
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import type { Holder } from '../podresources/client.js';
import { syncFile, writeFileDurable } from './durable-file.js';
import type { KubeletCheckpointState } from './kubelet-checkpoint.js';

export const LEDGER_FILE = 'agent-ledger.json';

/** One slice held (or possibly held) by someone. */
export interface Grant {
  resourceName: string;
  /** How we first learned of it. */
  via: 'allocate' | 'podresources' | 'kubelet-checkpoint' | 'dra';
  grantedAt: number;
  /** Last time a source showed it held (ms since the epoch). */
  lastSeenAt: number;
  pod?: { namespace: string; name: string; container: string; vmi?: string };
  /** Pod UID from the kubelet's checkpoint. */
  podUID?: string;
}

/** What the ledger reads each refresh. */
export interface LedgerSources {
  podResources: () => { synced: boolean; error?: string | undefined; holders: ReadonlyMap<string, Holder> };
  kubeletCheckpoint: () => KubeletCheckpointState;
  /** Slices held by prepared DRA claims; `unknown` when the DRA record cannot be read. */
  dra?: () => { holders: ReadonlyMap<string, Holder>; unknown?: string | undefined };
  /** Why the agent's own record (its checkpoint) cannot be trusted now, or undefined. */
  ownRecord?: () => string | undefined;
  /** Resource names whose kubelet checkpoint entries are ours. */
  resourceNames: () => ReadonlySet<string>;
  /** Is this ID a device of this node? Its kubelet checkpoint entries count whatever the resource name. */
  deviceHere?: (id: string) => boolean;
  /**
   * Asks the kubelet to rewrite its checkpoint (a device list update makes it do so): called when
   * its checkpoint lists an ID that PodResources does not. Once its pod sources are ready, the
   * kubelet drops gone pods on a PodResources List, so the rewritten file no longer lists them.
   */
  nudgeKubelet?: () => void;
  /** Is the pod with this name and UID gone? undefined: cannot tell now (counts as not gone). */
  podGone?: (namespace: string, name: string, uid: string) => Promise<boolean | undefined>;
}

export interface LedgerOptions {
  /** Where grants are kept (absent: memory only). */
  file?: string;
  node: string;
  logger: Logger;
  sources: LedgerSources;
  /** How long no source must have shown an ID before its grant is released (default 30 s). */
  graceMs?: number;
  now?: () => number;
}

export type HoldState = { kind: 'held'; by: string; holder?: Holder | undefined } | { kind: 'free' };

function describe(h: { namespace: string; name?: string; pod?: string; vmi?: string | undefined }): string {
  const pod = `${h.namespace}/${h.name ?? h.pod ?? '?'}`;
  return h.vmi ? `VM ${h.vmi} (pod ${pod})` : `pod ${pod}`;
}

/** ISO time of a recorded timestamp; one past Date's range (a damaged or hand-edited ledger) is shown as the number, never a RangeError. */
function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `${ms} ms since the epoch` : d.toISOString();
}

function parse(text: string, node: string): Map<string, Grant> | string {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return `not JSON: ${(err as Error).message}`;
  }
  const d = doc as { version?: unknown; node?: unknown; grants?: unknown };
  if (typeof doc !== 'object' || doc === null || d.version !== 1 || d.node !== node || typeof d.grants !== 'object' || d.grants === null) return 'not a version 1 ledger of this node';
  const out = new Map<string, Grant>();
  for (const [id, g] of Object.entries(d.grants as Record<string, Partial<Grant>>)) {
    if (typeof g?.resourceName !== 'string' || typeof g.grantedAt !== 'number') return `grant ${id} is malformed`;
    out.set(id, g as Grant);
  }
  return out;
}

export class Ledger {
  private readonly grants: Map<string, Grant>;
  private readonly fenced = new Map<string, string>();
  private readonly log: Logger;
  private readonly graceMs: number;
  private readonly now: () => number;
  private written = '';
  private podResources: ReturnType<LedgerSources['podResources']> = { synced: false, holders: new Map() };
  private kubelet: KubeletCheckpointState = { kind: 'absent' };
  private dra: { holders: ReadonlyMap<string, Holder>; unknown?: string | undefined } = { holders: new Map() };
  /** Why the ledger file could not be read at start (its grants are lost: protect everything for a grace period). */
  private loadError: string | undefined;
  private readonly loadedAt: number;
  private readonly goneCache = new Map<string, { gone: boolean | undefined; at: number }>();
  private lastNudge = 0;
  private unsynced = false;
  private syncing: Promise<void> | undefined;

  constructor(private readonly opts: LedgerOptions) {
    this.log = opts.logger.child({ component: 'ledger' });
    this.graceMs = opts.graceMs ?? 30_000;
    this.now = opts.now ?? Date.now;
    this.loadedAt = this.now();
    this.grants = new Map();
    if (!opts.file) return;
    let text: string | undefined;
    try {
      text = readFileSync(opts.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.loadError = `cannot read ${opts.file}: ${(err as Error).message}`;
    }
    if (text !== undefined) {
      const r = parse(text, opts.node);
      if (typeof r === 'string') this.loadError = `ledger ${opts.file} unreadable (${r})`;
      else {
        // We were not watching while down: every grant starts its grace period again.
        for (const [id, g] of r) this.grants.set(id, { ...g, lastSeenAt: this.loadedAt });
        this.written = this.serialize();
      }
    }
    if (this.loadError) this.log.error({ file: opts.file }, `${this.loadError}; every existing slice counts as held for ${this.graceMs} ms`);
    else this.log.info({ grants: this.grants.size }, 'ledger loaded');
  }

  /**
   * Why nobody can say now who holds what (then every existing slice counts as held), or undefined.
   */
  unknown(o: { ignoreCheckpoint?: boolean } = {}): string | undefined {
    const own = o.ignoreCheckpoint ? undefined : this.opts.sources.ownRecord?.();
    if (own) return own;
    const pr = this.podResources;
    if (!pr.synced) return 'the kubelet has not answered PodResources yet';
    if (pr.error) return pr.error;
    if (this.kubelet.kind === 'corrupt') return this.kubelet.message;
    if (this.dra.unknown) return this.dra.unknown;
    if (this.loadError && this.now() - this.loadedAt < this.graceMs) return this.loadError;
    return undefined;
  }

  /** Records IDs handed out by Allocate, durably, before the answer goes back to the kubelet. */
  granted(resourceName: string, ids: readonly string[]): void {
    const at = this.now();
    for (const id of ids) {
      const g = this.grants.get(id);
      if (g && g.resourceName === resourceName) g.lastSeenAt = at;
      else this.grants.set(id, { resourceName, via: 'allocate', grantedAt: at, lastSeenAt: at });
    }
    // On the Allocate path: the record is replaced atomically before the answer leaves, which is
    // what a crash of this process needs (the next agent reads it from the page cache), and made
    // durable just after, off the answer's path. A power loss in between loses the grant from this
    // file, but then every VM dies with the node, and the kubelet's own checkpoint (which the
    // kubelet fsyncs) still lists what it restarts them with: the ledger reads it as a second source.
    // Measured: 5–8 ms p50 (58–136 ms p99 on a loaded disk) with both fsyncs, 0.06 ms without.
    this.save(false);
  }

  /** Marks IDs a destructive write is about to hit: Allocate refuses them until unfenced. */
  fence(ids: Iterable<string>, why: string): void {
    for (const id of ids) this.fenced.set(id, why);
  }

  unfence(ids: Iterable<string>): void {
    for (const id of ids) this.fenced.delete(id);
  }

  /** Why `ids` may not be handed out through `resourceName` now, or undefined. */
  refuseAllocate(resourceName: string, ids: readonly string[]): string | undefined {
    for (const id of ids) {
      const f = this.fenced.get(id);
      if (f) return `${id} is being changed (${f})`;
      const d = this.dra.holders.get(id);
      if (d) return `${id} is held by DRA claim ${d.namespace}/${d.pod}`;
      const h = this.podResources.holders.get(id);
      if (h && h.resourceName !== resourceName) return `${id} is held by ${describe(h)} through ${h.resourceName}`;
      // A hold known only from the kubelet's own checkpoint does not refuse: the kubelet keeps that
      // record itself, we advertise such a slice Unhealthy, and the entry may be a gone pod's.
      const g = this.grants.get(id);
      if (g && g.resourceName !== resourceName && g.via !== 'kubelet-checkpoint') return `${id} was handed out through ${g.resourceName}${g.pod ? ` to ${describe(g.pod)}` : ''}`;
    }
    return undefined;
  }

  /** Is the ID held, and by whom (ignores `unknown()`: callers decide what to protect then). */
  state(id: string): HoldState {
    const h = this.podResources.holders.get(id);
    if (h) return { kind: 'held', by: describe(h), holder: h };
    const d = this.dra.holders.get(id);
    if (d) return { kind: 'held', by: `DRA claim ${d.namespace}/${d.pod}`, holder: d };
    const g = this.grants.get(id);
    if (g) {
      const by = g.pod ? `${describe(g.pod)} (last seen ${Math.round((this.now() - g.lastSeenAt) / 1000)} s ago)` : g.via === 'allocate' ? `an Allocate answered at ${isoTime(g.grantedAt)}` : `pod ${g.podUID ?? '?'} in the kubelet's checkpoint`;
      return { kind: 'held', by, ...(g.pod ? { holder: { resourceName: g.resourceName, namespace: g.pod.namespace, pod: g.pod.name, container: g.pod.container, ...(g.pod.vmi ? { vmi: g.pod.vmi } : {}) } } : {}) };
    }
    return { kind: 'free' };
  }

  /** The resource name a held ID was handed out under, as far as a source says. */
  resourceOf(id: string): string | undefined {
    return this.podResources.holders.get(id)?.resourceName ?? this.dra.holders.get(id)?.resourceName ?? this.grants.get(id)?.resourceName;
  }

  /** Every ID held by any source. */
  heldIds(): Set<string> {
    return new Set([...this.grants.keys(), ...this.podResources.holders.keys(), ...this.dra.holders.keys()]);
  }

  /** Holders for status: PodResources first, then DRA claims, then the last known holder of a grant. */
  holders(): Map<string, Holder> {
    const out = new Map<string, Holder>();
    for (const [id] of this.grants) {
      const s = this.state(id);
      if (s.kind === 'held' && s.holder) out.set(id, s.holder);
    }
    for (const [id, h] of this.dra.holders) out.set(id, h);
    for (const [id, h] of this.podResources.holders) out.set(id, h);
    return out;
  }

  /**
   * Reads every source and updates the grants: adds what a source shows held, releases what no
   * source has shown for the grace period while every source answers. Never throws.
   */
  async refresh(): Promise<void> {
    const now = this.now();
    const s = this.opts.sources;
    this.podResources = s.podResources();
    this.kubelet = s.kubeletCheckpoint();
    try {
      this.dra = s.dra?.() ?? { holders: new Map() };
    } catch (err) {
      this.dra = { holders: new Map(), unknown: `DRA claims unreadable: ${String(err)}` };
    }
    const seen = new Set<string>();
    const see = (id: string, g: Omit<Grant, 'grantedAt' | 'lastSeenAt'>): void => {
      seen.add(id);
      const cur = this.grants.get(id);
      if (cur && cur.resourceName === g.resourceName) {
        cur.lastSeenAt = now;
        if (g.pod) cur.pod = g.pod;
        if (g.podUID) cur.podUID = g.podUID;
      } else {
        this.grants.set(id, { ...g, grantedAt: now, lastSeenAt: now });
      }
    };
    for (const [id, h] of this.podResources.holders) see(id, { resourceName: h.resourceName, via: 'podresources', pod: { namespace: h.namespace, name: h.pod, container: h.container, ...(h.vmi ? { vmi: h.vmi } : {}) } });
    for (const [id, h] of this.dra.holders) see(id, { resourceName: h.resourceName, via: 'dra' });
    if (this.kubelet.kind === 'ok') {
      const ours = s.resourceNames();
      let disputed = false;
      for (const [id, entries] of this.kubelet.entries) {
        if (seen.has(id)) continue;
        for (const e of entries) {
          if (!ours.has(e.resourceName) && !s.deviceHere?.(id)) continue;
          disputed = true;
          const g = this.grants.get(id);
          if (g?.pod && (await this.isGone(g.pod.namespace, g.pod.name, e.podUID, now))) continue; // its pod is gone: a stale entry
          see(id, { resourceName: e.resourceName, via: 'kubelet-checkpoint', podUID: e.podUID });
          break;
        }
      }
      // The kubelet's record and PodResources disagree: have the kubelet write its record again
      // (at most every 5 s); if the pod is really gone and the kubelet's sources are ready, the
      // entry goes, else it stays and keeps holding.
      if (disputed && !this.unknown() && s.nudgeKubelet && now - this.lastNudge >= 5_000) {
        this.lastNudge = now;
        s.nudgeKubelet();
      }
    }
    const unknown = this.unknown();
    for (const [id, g] of [...this.grants]) {
      if (seen.has(id)) continue;
      if (unknown) {
        g.lastSeenAt = now; // nobody can tell: the grace starts once every source answers again
        continue;
      }
      if (now - g.lastSeenAt < this.graceMs) continue;
      this.grants.delete(id);
      this.log.info({ id, resourceName: g.resourceName, ...(g.pod ? { pod: `${g.pod.namespace}/${g.pod.name}` } : {}) }, 'released: no source has shown it held');
    }
    this.save();
  }

  /** The earliest time a grant could be released (to wake the loop then), or undefined. */
  nextRelease(): number | undefined {
    let at: number | undefined;
    for (const g of this.grants.values()) at = Math.min(at ?? Infinity, g.lastSeenAt + this.graceMs);
    return at;
  }

  private async isGone(namespace: string, name: string, uid: string, now: number): Promise<boolean> {
    const lookup = this.opts.sources.podGone;
    if (!lookup) return false;
    const key = `${namespace}/${name}/${uid}`;
    const c = this.goneCache.get(key);
    if (c && now - c.at < 5_000) return c.gone === true;
    let gone: boolean | undefined;
    try {
      gone = await lookup(namespace, name, uid);
    } catch {
      gone = undefined;
    }
    this.goneCache.set(key, { gone, at: now });
    if (this.goneCache.size > 4096) this.goneCache.clear();
    return gone === true;
  }

  private serialize(): string {
    const grants = Object.fromEntries([...this.grants].sort(([a], [b]) => (a < b ? -1 : 1)).map(([id, g]) => [id, { ...g, lastSeenAt: 0 }]));
    return JSON.stringify({ version: 1, node: this.opts.node, grants });
  }

  private save(sync = true): void {
    if (!this.opts.file) return;
    const text = this.serialize(); // lastSeenAt is not persisted: it restarts at load
    if (text === this.written) return;
    try {
      writeFileDurable(this.opts.file, text, { sync });
      this.written = text;
      if (sync) this.unsynced = false;
      else this.syncSoon();
    } catch (err) {
      this.log.error({ err, file: this.opts.file }, 'cannot write the ledger; grants stay in memory and the write is tried again at the next refresh');
    }
  }

  /** fsyncs what save(false) wrote, one sync at a time, again while writes came in meanwhile. */
  private syncSoon(): void {
    this.unsynced = true;
    if (this.syncing || !this.opts.file) return;
    const file = this.opts.file;
    this.syncing = (async () => {
      while (this.unsynced) {
        this.unsynced = false;
        try {
          await syncFile(file);
        } catch (err) {
          this.log.warn({ err: String(err), file }, 'cannot fsync the ledger; the next write tries again');
          break;
        }
      }
      this.syncing = undefined;
    })();
  }

  /** Resolves once every ledger write so far is on disk (tests, shutdown). */
  async flushed(): Promise<void> {
    while (this.syncing) await this.syncing;
  }
}
