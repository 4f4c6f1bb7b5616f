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
// Written atomically (temp file + rename), only when it changed. A missing file is an empty
// record; an unreadable or malformed one is reported and replaced on the next write, never fatal.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import type { PoolPlan } from '../model.js';

export const CHECKPOINT_FILE = 'agent-checkpoint.json';

/** Facts of a function before the agent first re-bound it. */
export interface OriginalFacts {
  driver?: string;
  interfaceNames?: string[];
}

export interface CheckpointData {
  version: 1;
  node: string;
  pools: Record<string, PoolPlan>;
  /** Pools (or their devices) that left the plan and still had slices to release or drain. */
  retired: { plan: PoolPlan; why: string }[];
  pfs: Record<string, { pools: string[] }>;
  devices: Record<string, OriginalFacts>;
}

function empty(node: string): CheckpointData {
  return { version: 1, node, pools: {}, retired: [], pfs: {}, devices: {} };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses checkpoint text; returns a reason instead of throwing on anything malformed. */
export function parseCheckpoint(text: string, node: string): { ok: true; data: CheckpointData } | { ok: false; message: string } {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { ok: false, message: `not JSON: ${(err as Error).message}` };
  }
  if (!isRecord(doc) || doc.version !== 1) return { ok: false, message: 'not a version 1 checkpoint' };
  if (doc.node !== node) return { ok: false, message: `written for node ${JSON.stringify(doc.node)}, not ${node}` };
  const data = empty(node);
  if (isRecord(doc.pools)) {
    for (const [name, p] of Object.entries(doc.pools)) {
      if (isRecord(p) && typeof p.resourceName === 'string' && typeof p.mode === 'string' && Array.isArray(p.devices)) data.pools[name] = p as unknown as PoolPlan;
    }
  }
  if (Array.isArray(doc.retired)) {
    for (const r of doc.retired) {
      if (isRecord(r) && isRecord(r.plan) && typeof r.plan.name === 'string' && typeof r.plan.resourceName === 'string' && Array.isArray(r.plan.devices)) {
        data.retired.push({ plan: r.plan as unknown as PoolPlan, why: typeof r.why === 'string' ? r.why : 'left the plan' });
      }
    }
  }
  if (isRecord(doc.pfs)) {
    for (const [addr, v] of Object.entries(doc.pfs)) {
      if (isRecord(v) && Array.isArray(v.pools)) data.pfs[addr] = { pools: v.pools.filter((x): x is string => typeof x === 'string') };
    }
  }
  if (isRecord(doc.devices)) {
    for (const [addr, v] of Object.entries(doc.devices)) {
      if (!isRecord(v)) continue;
      const f: OriginalFacts = {};
      if (typeof v.driver === 'string') f.driver = v.driver;
      if (Array.isArray(v.interfaceNames)) f.interfaceNames = v.interfaceNames.filter((x): x is string => typeof x === 'string');
      data.devices[addr] = f;
    }
  }
  return { ok: true, data };
}

export class Checkpoint {
  private data: CheckpointData;
  private written = '';
  /** Why the record could not be read or written (cleared by the next successful write). */
  error: string | undefined;

  constructor(
    private readonly file: string | undefined,
    node: string,
    private readonly log: Logger,
  ) {
    this.data = empty(node);
    if (!file) return;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.error = `cannot read checkpoint ${file}: ${(err as Error).message}`;
        log.error(this.error);
      }
      return;
    }
    const r = parseCheckpoint(text, node);
    if (r.ok) {
      this.data = r.data;
      this.written = JSON.stringify(r.data);
      log.info({ file, pools: Object.keys(r.data.pools), pfs: Object.keys(r.data.pfs).length }, 'checkpoint loaded');
    } else {
      this.error = `checkpoint ${file} ignored: ${r.message}`;
      log.error(this.error);
    }
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

  /** Writes the record when it changed: temp file + rename, so a crash leaves the old or the new one. */
  save(): void {
    if (!this.file) return;
    const text = JSON.stringify(this.data);
    if (text === this.written) return;
    const tmp = `${this.file}.tmp`;
    try {
      mkdirSync(dirname(this.file), { recursive: true });
      writeFileSync(tmp, `${JSON.stringify(this.data, null, 1)}\n`, { mode: 0o600 });
      renameSync(tmp, this.file);
      this.written = text;
      if (this.error) this.log.info({ file: this.file }, 'checkpoint written again');
      this.error = undefined;
    } catch (err) {
      const msg = `cannot write checkpoint ${this.file}: ${(err as Error).message}`;
      if (msg !== this.error) this.log.error(msg);
      this.error = msg;
    }
  }
}
