// Garbage collection of prepared claims the kubelet will never unprepare (its state was wiped, the
// node was rebuilt under the same name), and the claim GET with a deadline that prepare also uses.
import { readFileSync } from 'node:fs';
import type { Logger } from '../log.js';
import { allocatedHere, type AllocatedClaims } from './claims.js';
import { removeClaimFiles, type Checkpoint, type ClaimObject, type ClaimRef, type PreparedClaim } from './prepare.js';
import type { VfNetSettings } from './vf-net.js';

/** The GET of the claim, abandoned (and aborted) after `ms`. */
export async function fetchClaimWithin(
  getClaim: (namespace: string, name: string, signal?: AbortSignal) => Promise<ClaimObject | undefined>,
  ref: ClaimRef,
  ms: number,
): Promise<ClaimObject | undefined> {
  const ctl = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      ctl.abort();
      reject(new Error(`no answer from the API server within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([getClaim(ref.namespace, ref.name, ctl.signal), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** What the collector works on (the driver's state and hooks). */
export interface StaleClaimsContext {
  checkpoint: Checkpoint;
  allocated: AllocatedClaims | undefined;
  nodeName: string;
  cdiDir: string;
  pluginDir: string;
  /** The kubelet's DRA state file. */
  kubeletStateFile: string;
  graceMs: number;
  nowMs: () => number;
  log: Logger;
  vfNet: VfNetSettings | undefined;
  fetchClaim: (ref: ClaimRef) => Promise<ClaimObject | undefined>;
  /** Runs `fn` serialized with prepare and unprepare. */
  serial: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Claims were forgotten: their slices are free. */
  onForgotten: () => void;
}

export class StaleClaims {
  /** Prepared claim UID → since when it looks stale (see `collect`). */
  private readonly staleSince = new Map<string, number>();
  private collecting = false;

  constructor(private readonly ctx: StaleClaimsContext) {}

  /** The kubelet's DRA state file as text, or undefined when it cannot be read. */
  private kubeletState(): string | undefined {
    try {
      return readFileSync(this.ctx.kubeletStateFile, 'utf8');
    } catch {
      return undefined;
    }
  }

  /** See DraDriver.collectStale. */
  async collect(): Promise<string[]> {
    const { checkpoint: cp, allocated, log } = this.ctx;
    if (this.collecting || cp.state === 'unloaded' || cp.unknown || !allocated || allocated.unknown() !== undefined) return [];
    this.collecting = true;
    try {
      const now = this.ctx.nowMs();
      const grace = this.ctx.graceMs;
      const kubelet = this.kubeletState();
      const present = new Set(cp.all().map((c) => c.uid));
      for (const uid of [...this.staleSince.keys()]) if (!present.has(uid)) this.staleSince.delete(uid);
      const due: PreparedClaim[] = [];
      for (const c of cp.all()) {
        if (kubelet === undefined || kubelet.includes(c.uid) || allocated.all().has(c.uid)) {
          this.staleSince.delete(c.uid);
          continue;
        }
        const since = this.staleSince.get(c.uid) ?? now;
        this.staleSince.set(c.uid, since);
        if (now - since >= grace) due.push(c);
      }
      const forgotten: string[] = [];
      for (const c of due) {
        let obj: ClaimObject | undefined;
        try {
          obj = await this.ctx.fetchClaim(c);
        } catch {
          continue; // not confirmed: next time
        }
        if (obj && obj.metadata.uid === c.uid && allocatedHere(obj, this.ctx.nodeName)) {
          this.staleSince.delete(c.uid);
          continue;
        }
        const done = await this.ctx.serial(async () => {
          // Again under the queue: the kubelet may have prepared or unprepared it meanwhile.
          const text = this.kubeletState();
          if (!cp.get(c.uid) || allocated.all().has(c.uid) || text === undefined || text.includes(c.uid)) return false;
          try {
            removeClaimFiles(this.ctx.cdiDir, this.ctx.pluginDir, c.uid);
            cp.delete(c.uid);
            await this.ctx.vfNet?.release(c.uid, `${c.namespace}/${c.name}`);
          } catch (err) {
            log.warn({ claim: `${c.namespace}/${c.name}`, uid: c.uid, err: String(err) }, 'cannot forget a stale prepared claim');
            return false;
          }
          this.staleSince.delete(c.uid);
          log.warn({ claim: `${c.namespace}/${c.name}`, uid: c.uid, devices: c.devices.map((d) => `${d.request}=${d.sliceId}`), claimNow: obj ? 'no longer allocated here' : 'gone' },
            'prepared claim forgotten: the kubelet no longer knows it and the API server no longer allocates it here');
          return true;
        });
        if (done) forgotten.push(c.uid);
      }
      if (forgotten.length) this.ctx.onForgotten();
      return forgotten;
    } finally {
      this.collecting = false;
    }
  }
}
