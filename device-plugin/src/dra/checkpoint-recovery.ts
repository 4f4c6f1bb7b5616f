// Start-up cleanup and checkpoint recovery of the DRA driver: what a crash left on disk is removed
// before serving, and after a lost checkpoint the prepared claims are re-learned from the CDI specs
// and metadata still on disk (prepare writes them, unprepare removes them).
import type { Logger } from '../log.js';
import type { AllocatedClaims } from './claims.js';
import { cdiSpecPath, sweepLeftovers, type Checkpoint } from './prepare.js';
import { claimUidsOnDisk, relearnClaim } from './recover.js';

export interface RecoveryContext {
  checkpoint: Checkpoint;
  allocated: AllocatedClaims | undefined;
  cdiDir: string;
  pluginDir: string;
  log: Logger;
  lookup: (pool: string, device: string) => { sliceId: string; resourceName?: string } | undefined;
  /** The checkpoint was recovered: holders are known again. */
  onRecovered: () => void;
}

export class CheckpointRecovery {
  /** Why a lost checkpoint is not recovered yet. */
  blocker: string | undefined;

  constructor(private readonly ctx: RecoveryContext) {}

  /**
   * After a lost checkpoint: re-learns the claims whose CDI specs are still on disk and ends the loss
   * once every such claim is recorded again and ResourceClaims were listed since the start (claims
   * allocated here count as held from then on, prepared or not). What blocks it is in `blocker`
   * (DraDriver.holdersUnknown); docs/dra.md has the way out by hand.
   */
  attempt(): void {
    const { checkpoint: cp, cdiDir, log } = this.ctx;
    if (cp.state === 'unloaded' || !cp.unknown) return;
    let uids: string[];
    try {
      uids = claimUidsOnDisk(cdiDir);
    } catch (err) {
      this.blocker = `cannot list the CDI folder ${cdiDir}: ${String(err)}`;
      return;
    }
    const stuck: string[] = [];
    for (const uid of uids) {
      if (cp.get(uid)) continue;
      const c = relearnClaim(uid, cdiDir, this.ctx.pluginDir, (pool, device) => this.ctx.lookup(pool, device), this.ctx.allocated?.all().get(uid));
      if (typeof c === 'string') {
        stuck.push(`claim ${uid} (${cdiSpecPath(cdiDir, uid)}): ${c}`);
        continue;
      }
      try {
        cp.put(c);
        log.warn({ claim: `${c.namespace}/${c.name}`, uid, devices: c.devices.map((d) => `${d.request}=${d.sliceId}`) }, 'prepared claim re-learned from its CDI spec and metadata');
      } catch (err) {
        stuck.push(`claim ${uid}: cannot record it: ${String(err)}`);
      }
    }
    const blocker = stuck.length ? stuck.join('; ') : this.ctx.allocated?.unknown();
    if (blocker) {
      if (blocker !== this.blocker) log.warn({ blocker }, 'DRA checkpoint not recovered yet: every slice still counts as held');
      this.blocker = blocker;
      return;
    }
    const lost = cp.lost;
    cp.markRecovered();
    this.blocker = undefined;
    log.warn({ lost, claims: cp.all().length }, 'DRA checkpoint recovered: prepared claims re-learned from the CDI specs on disk; claims allocated here are known from the API server');
    this.ctx.onRecovered();
  }

  /**
   * Before serving: removes temp files a crash left, and — with a checkpoint that was read and is
   * trusted — the CDI specs and metadata of claims it does not record (a prepare that died before
   * recording, so never answered). A lost checkpoint keeps them: claims are re-learned from them.
   */
  sweep(): void {
    const { checkpoint: cp, log } = this.ctx;
    const trusted = cp.state === 'ok' && !cp.unknown;
    try {
      const r = sweepLeftovers(this.ctx.cdiDir, this.ctx.pluginDir, trusted ? new Set(cp.all().map((c) => c.uid)) : undefined);
      if (r.tempFiles.length || r.orphanClaims.length) log.warn({ tempFiles: r.tempFiles, orphanClaims: r.orphanClaims }, 'removed what an interrupted write or prepare left behind');
    } catch (err) {
      log.warn({ err: String(err) }, 'cannot clean up after an interrupted write or prepare');
    }
  }
}
