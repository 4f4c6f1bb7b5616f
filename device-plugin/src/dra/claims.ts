// DRA front end: the ResourceClaims the scheduler has allocated on this node's pools of driver
// virtualio.dev, kept from a list and a watch of every claim in the cluster (ResourceClaims have no
// field selector for their allocation). A claim allocated but not prepared yet protects its slices
// like a prepared one: between the scheduler's decision and the kubelet's NodePrepareResources,
// carving must not tear down the device the scheduler just gave away.
//
// Staleness rule: until the first list succeeds, nobody can tell which claims are allocated here
// (`unknown()` says so, and the agent then counts every slice as held). Once one list succeeded, the
// last known set is used even while the API server is unreachable: the scheduler allocates by
// writing to the API server, so what a stale set can miss is only what was allocated during the
// outage, and that claim cannot be prepared either before we reach the API server again (prepare
// reads it from there). Treating "API server unreachable" as "everything held" instead would stop
// all carving on every node whenever the control plane is slow, with nothing gained for the claims
// we already know. The watch resumes from the last resourceVersion; a failed or expired watch
// re-lists, with a backoff (at most one list per `minRelistMs`, doubling to `maxBackoffMs` while
// lists fail).
import type { Logger } from '../log.js';
import { DRA_DRIVER } from './devices.js';
import type { ClaimObject } from './prepare.js';

/** One device of an allocated claim on this node. */
export interface AllocatedDevice {
  request: string;
  /** Resource pool name (`<node>/<pool>`). */
  pool: string;
  device: string;
}

/** A claim allocated (at least partly) on this node's pools of our driver. */
export interface AllocatedClaim {
  uid: string;
  namespace: string;
  name: string;
  devices: AllocatedDevice[];
  /** status.reservedFor entries that are pods. */
  pods: { name: string; uid?: string }[];
}

export type ClaimEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** What the tracker needs from the API server (client-node implementation in kube.ts). */
export interface ClaimListWatch {
  /** Every ResourceClaim of the cluster, and the list's resourceVersion. */
  list(signal: AbortSignal): Promise<{ items: ClaimObject[]; resourceVersion: string }>;
  /**
   * Watches every ResourceClaim from `resourceVersion` until the server ends the watch, `signal`
   * aborts, or it fails. Resolves with the error that ended it (undefined: ended normally).
   */
  watch(resourceVersion: string, onEvent: (type: ClaimEventType, obj: unknown) => void, signal: AbortSignal): Promise<unknown>;
}

/** The part of a claim this node cares about, or undefined when none of it is allocated here. */
export function allocatedHere(claim: ClaimObject, node: string): AllocatedClaim | undefined {
  const results = claim.status?.allocation?.devices?.results ?? [];
  const devices = results
    .filter((r) => r.driver === DRA_DRIVER && typeof r.pool === 'string' && r.pool.startsWith(`${node}/`))
    .map((r) => ({ request: r.request, pool: r.pool, device: r.device }));
  const { uid, namespace, name } = claim.metadata;
  if (devices.length === 0 || !uid || !namespace || !name) return undefined;
  const pods = (claim.status?.reservedFor ?? [])
    .filter((r) => r.resource === 'pods' && r.name)
    .map((r) => ({ name: r.name!, ...(r.uid ? { uid: r.uid } : {}) }));
  return { uid, namespace, name, devices, pods };
}

export interface AllocatedClaimsOptions {
  source: ClaimListWatch;
  node: string;
  logger: Logger;
  /** Called when the set of allocated claims changed. */
  onChange?: () => void;
  /** Least time between two lists, and between two watch starts (default 1 s). */
  minRelistMs?: number;
  /** Longest wait between failed lists (default 30 s). */
  maxBackoffMs?: number;
  /** Wall clock in ms (tests). */
  now?: () => number;
}

function sameClaim(a: AllocatedClaim | undefined, b: AllocatedClaim | undefined): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class AllocatedClaims {
  private readonly log: Logger;
  private claims = new Map<string, AllocatedClaim>();
  /** When the last list succeeded (ms); undefined: never. */
  listedAt: number | undefined;
  /** Why the last list or watch failed (cleared by the next successful list). */
  lastError: string | undefined;
  /** Lists done (tests). */
  lists = 0;

  constructor(private readonly opts: AllocatedClaimsOptions) {
    this.log = opts.logger.child({ component: 'dra-claims' });
  }

  /** Claims allocated on this node, by UID (the last known set; see the staleness rule above). */
  all(): ReadonlyMap<string, AllocatedClaim> {
    return this.claims;
  }

  /** Why it is unknown which claims are allocated here: only before the first successful list. */
  unknown(): string | undefined {
    if (this.listedAt !== undefined) return undefined;
    return `ResourceClaims not listed yet${this.lastError ? ` (${this.lastError})` : ''}: claims the scheduler allocated on this node are unknown`;
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private apply(type: ClaimEventType, obj: unknown): void {
    const c = obj as ClaimObject | undefined;
    const uid = c?.metadata?.uid;
    if (!uid) return;
    const before = this.claims.get(uid);
    const here = type === 'DELETED' ? undefined : allocatedHere(c, this.opts.node);
    if (here) this.claims.set(uid, here);
    else this.claims.delete(uid);
    if (!sameClaim(before, here)) this.opts.onChange?.();
  }

  /** Lists and watches until `signal` aborts. Never throws. */
  async run(signal: AbortSignal): Promise<void> {
    const minGap = this.opts.minRelistMs ?? 1000;
    const maxBackoff = this.opts.maxBackoffMs ?? 30_000;
    let backoff = minGap;
    let lastList = -Infinity;
    while (!signal.aborted) {
      await sleep(Math.max(0, lastList + minGap - this.now()), signal);
      if (signal.aborted) break;
      lastList = this.now();
      let rv: string;
      try {
        const l = await this.opts.source.list(signal);
        const next = new Map<string, AllocatedClaim>();
        for (const c of l.items) {
          const here = allocatedHere(c, this.opts.node);
          if (here) next.set(here.uid, here);
        }
        const changed = next.size !== this.claims.size || [...next].some(([uid, c]) => !sameClaim(c, this.claims.get(uid)));
        this.claims = next;
        if (this.listedAt === undefined) this.log.info({ allocated: next.size }, 'ResourceClaims listed');
        this.listedAt = this.now();
        this.lastError = undefined;
        this.lists++;
        rv = l.resourceVersion;
        backoff = minGap;
        if (changed || this.lists === 1) this.opts.onChange?.();
      } catch (err) {
        if (signal.aborted) break;
        this.lastError = `listing ResourceClaims: ${String(err)}`;
        this.log.warn({ err: String(err), retryInMs: backoff, stale: this.listedAt !== undefined }, 'cannot list ResourceClaims; using the last known set');
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, maxBackoff);
        continue;
      }
      // Watch from the list's resourceVersion; a normal end (server timeout) resumes from the last
      // version seen, an error or an expired version (ERROR event, 410) lists again.
      for (;;) {
        if (signal.aborted) break;
        const started = this.now();
        let failed: unknown;
        const ended = await this.opts.source.watch(rv, (type, obj) => {
          if (type === 'ERROR') {
            failed ??= (obj as { message?: string } | undefined)?.message ?? 'watch error';
            return;
          }
          const v = (obj as { metadata?: { resourceVersion?: string } } | undefined)?.metadata?.resourceVersion;
          if (v) rv = v;
          if (type !== 'BOOKMARK') this.apply(type, obj);
        }, signal).catch((err: unknown) => err);
        if (signal.aborted) break;
        if (ended || failed) {
          this.lastError = `watching ResourceClaims: ${String(ended ?? failed)}`;
          this.log.info({ err: this.lastError }, 'ResourceClaim watch ended; listing again');
          break;
        }
        await sleep(Math.max(0, started + minGap - this.now()), signal);
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
