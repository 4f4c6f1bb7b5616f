// The DRA driver's per-claim VF network settings: applied on the PF at prepare, restored when the
// claim is released and its VF is free, and recorded durably in between — the setting a VF had before
// a claim changed it is written to `vf-net.json` (plugin folder) BEFORE the change, so a crash at any
// point still knows what to restore. A record is one VF: the settings before (`previous`), what the
// claim asked (`applied`), and the claim that holds it; a record without a claim is a restore still
// to do (its VF is withheld from the ResourceSlices until done: another tenant must never get a VF
// that still carries someone's MAC or VLAN).
import { readFileSync } from 'node:fs';
import { decodeChecked, encodeChecked, keepCorruptCopy, writeFileDurable } from '../agent/durable-file.js';
import { vfNetDiff, type IpLink, type VfNetChange, type VfNetState } from '../carving/ip-link.js';
import type { Logger } from '../log.js';
import type { SliceEntry } from './prepare.js';
import { describeVfConfig, vfConfigsFor, type AllocationConfig, type VfNetworkConfig } from './vf-config.js';

/** A VF of ours that may take settings: its PCI address (slice ID), its PF's interface and its index. */
export interface VfTarget {
  vf: string;
  pf: string;
  pfNetdev: string;
  index: number;
}

export interface VfNetRecord extends VfTarget {
  /** The claim whose settings the VF carries; absent: released, restore pending. */
  claimUid?: string;
  claim?: string;
  previous: Omit<VfNetState, 'vf'>;
  applied: VfNetChange;
  /** Why the last restore failed. */
  restoreError?: string;
}

function toChange(c: VfNetworkConfig): VfNetChange {
  const out: VfNetChange = {};
  for (const [k, v] of Object.entries(c)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

/** The previous values of the fields `applied` changed (a VLAN change restores its priority and protocol too). */
function restoreOf(r: VfNetRecord): VfNetChange {
  const keys = new Set(Object.keys(r.applied) as (keyof VfNetChange)[]);
  if (keys.has('vlan') || keys.has('qos') || keys.has('vlanProtocol')) ['vlan', 'qos', 'vlanProtocol'].forEach((k) => keys.add(k as keyof VfNetChange));
  const out: VfNetChange = {};
  for (const k of keys) {
    const v = r.previous[k];
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class VfNetSettings {
  private records = new Map<string, VfNetRecord>();
  /** Why the file could not be read at start (its records are lost), if it could not. */
  loadError: string | undefined;

  constructor(
    private readonly file: string,
    private readonly ip: IpLink,
    private readonly log: Logger,
  ) {}

  /** Reads the records; a damaged file is kept as `.corrupt-<time>` and reported (its restores are lost). */
  load(): void {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.loadError = `cannot read ${this.file}: ${errText(err)}`;
      return;
    }
    const d = decodeChecked(text);
    const list = d.ok ? d.doc.records : undefined;
    if (!d.ok || !Array.isArray(list)) {
      let copy: string | undefined;
      try {
        copy = keepCorruptCopy(this.file);
      } catch {
        /* reported below */
      }
      this.loadError = `${this.file} is damaged (${d.ok ? 'no records list' : d.message}); kept as ${copy ?? '(copy failed)'}: the VF settings it recorded will not be restored`;
      return;
    }
    for (const r of list as VfNetRecord[]) if (r && typeof r.vf === 'string') this.records.set(r.vf, r);
  }

  private save(next: Map<string, VfNetRecord>): void {
    writeFileDurable(this.file, encodeChecked({ records: [...next.values()].sort((a, b) => a.vf.localeCompare(b.vf)) }));
    this.records = next;
  }

  /** Every record (tests and status). */
  all(): VfNetRecord[] {
    return [...this.records.values()].map((r) => structuredClone(r));
  }

  /** VFs with a restore still to do, and why: left out of the ResourceSlices until done. */
  pending(): Map<string, string> {
    const out = new Map<string, string>();
    for (const r of this.records.values()) {
      if (r.claimUid) continue;
      out.set(r.vf, `VF ${r.vf} (${r.pfNetdev} vf ${r.index}) still carries the network settings of ${r.claim ? `ResourceClaim ${r.claim}` : 'a released claim'}; restoring them${r.restoreError ? ` failed: ${r.restoreError}` : ' waits for the VF to be free'}`);
    }
    return out;
  }

  /** Claim UIDs that hold records (the driver releases those its checkpoint does not know at start). */
  claimUids(): Set<string> {
    return new Set([...this.records.values()].flatMap((r) => (r.claimUid ? [r.claimUid] : [])));
  }

  private async stateOf(t: VfTarget): Promise<VfNetState> {
    const s = (await this.ip.show(t.pfNetdev)).find((v) => v.vf === t.index);
    if (!s) throw new Error(`${t.pfNetdev} lists no VF ${t.index} (VF ${t.vf})`);
    return s;
  }

  /** Sets `want` on a VF and checks what the kernel reports afterwards. */
  private async converge(t: VfTarget, want: VfNetChange): Promise<void> {
    const before = await this.stateOf(t);
    const d = vfNetDiff(before, want);
    if (Object.keys(d).length === 0) return;
    await this.ip.set(t.pfNetdev, t.index, d);
    const left = vfNetDiff(await this.stateOf(t), want);
    if (Object.keys(left).length) throw new Error(`after setting ${JSON.stringify(d)} on ${t.pfNetdev} vf ${t.index}, the kernel reports ${JSON.stringify(Object.fromEntries(Object.keys(left).map((k) => [k, (before as unknown as Record<string, unknown>)[k]])))} unchanged`);
  }

  /**
   * Gives the VFs of a claim their settings (prepare). `targets` are the claim's NIC VFs: those with
   * a config get it (the previous settings recorded first), those without one but carrying an
   * earlier claim's settings are restored first. All or nothing: on any failure what this call
   * changed is restored and the error returned.
   */
  async apply(uid: string, claim: string, targets: readonly { target: VfTarget; config?: VfNetworkConfig }[]): Promise<string | undefined> {
    try {
      for (const { target: t, config } of targets) {
        const rec = this.records.get(t.vf);
        if (!config) {
          if (!rec) continue;
          if (rec.claimUid && rec.claimUid !== uid) return `VF ${t.vf} carries the network settings of ResourceClaim ${rec.claim ?? rec.claimUid}, which still holds it`;
          await this.restore(rec);
          continue;
        }
        if (rec?.claimUid && rec.claimUid !== uid) return `VF ${t.vf} carries the network settings of ResourceClaim ${rec.claim ?? rec.claimUid}, which still holds it`;
        const previous = rec?.previous ?? (({ vf: _vf, ...rest }) => rest)(await this.stateOf(t));
        const want = toChange(config);
        const next = new Map(this.records);
        next.set(t.vf, { ...t, claimUid: uid, claim, previous, applied: want });
        this.save(next); // before the change: a crash after it still knows what to restore
        await this.converge(t, want);
        this.log.info({ claim, vf: t.vf, pf: t.pfNetdev, index: t.index, settings: describeVfConfig(config) }, 'VF network settings applied');
      }
      return undefined;
    } catch (err) {
      const why = errText(err);
      // Nothing holds these VFs yet (prepare has not answered): back to what they had, at once.
      const mine = [...this.records.values()].filter((r) => r.claimUid === uid).map((r) => r.vf);
      await this.release(uid, claim);
      for (const vf of mine) {
        const r = this.records.get(vf);
        if (r) await this.restore(r);
      }
      const left = mine.flatMap((vf) => this.records.get(vf) ?? []);
      return `${why}${left.length ? `; restoring the earlier settings failed too (${left.map((r) => `${r.vf}: ${r.restoreError}`).join('; ')}), so the VF stays out of the ResourceSlices until a restore succeeds` : ''}`;
    }
  }

  /** Restores one record's previous settings and drops it; on failure keeps it released with the reason. */
  private async restore(rec: VfNetRecord): Promise<boolean> {
    try {
      await this.converge(rec, restoreOf(rec));
      const next = new Map(this.records);
      next.delete(rec.vf);
      this.save(next);
      this.log.info({ vf: rec.vf, pf: rec.pfNetdev, index: rec.index, claim: rec.claim }, 'VF network settings restored');
      return true;
    } catch (err) {
      const next = new Map(this.records);
      const { claimUid: _u, ...rest } = rec;
      next.set(rec.vf, { ...rest, restoreError: errText(err) });
      try {
        this.save(next);
      } catch {
        this.records = next; // kept in memory; the next restore saves it
      }
      this.log.warn({ vf: rec.vf, pf: rec.pfNetdev, index: rec.index, claim: rec.claim, err: errText(err) }, 'cannot restore VF network settings; the VF stays out of the ResourceSlices');
      return false;
    }
  }

  /** The claim no longer holds its VFs (unprepare): their records become restores to do. */
  async release(uid: string, claim?: string): Promise<void> {
    const mine = [...this.records.values()].filter((r) => r.claimUid === uid);
    if (mine.length === 0) return;
    const next = new Map(this.records);
    for (const r of mine) {
      const { claimUid: _u, ...rest } = r;
      next.set(r.vf, { ...rest, ...(claim && !r.claim ? { claim } : {}) });
    }
    this.save(next);
  }

  /** Restores released records whose VF is free (`free` asks the ledger: the VM must be gone). */
  async settle(free: (vf: string) => boolean): Promise<void> {
    for (const r of [...this.records.values()]) {
      if (r.claimUid || !free(r.vf)) continue;
      await this.restore(r);
    }
  }
}

/**
 * The NIC VFs among a claim's prepared devices with the settings each gets from the allocation's
 * configs, or why the configs cannot be used. `enabled` false (no opt-in on this node) makes any
 * setting an error that says what to turn on.
 */
export function claimVfTargets(
  devices: readonly { request: string; pool: string; device: string }[],
  index: ReadonlyMap<string, SliceEntry>,
  configs: readonly AllocationConfig[] | undefined,
  enabled: boolean,
): { targets: { target: VfTarget; config?: VfNetworkConfig }[] } | { error: string } {
  const entries = devices.map((d) => ({ d, e: index.get(`${d.pool}\n${d.device}`) }));
  const notNic = (e: SliceEntry | undefined): string | undefined => {
    if (!e) return 'it is not published by this agent';
    if (e.slice.kind !== 'VF' || e.pool.class !== 'NIC') return `it is a ${e.slice.kind} of pool ${e.pool.name} (class ${e.pool.class}), not a NIC VF`;
    if (!e.slice.pfNetdev || e.slice.index === undefined) return `its PF ${e.slice.parent} has no network interface (bound to a network driver, in the host's network namespace)`;
    return undefined;
  };
  const byDevice = vfConfigsFor(configs, entries.map(({ d, e }) => {
    const why = notNic(e);
    return { request: d.request, device: d.device, ...(why ? { notNicVf: why } : {}) };
  }));
  if ('error' in byDevice) return byDevice;
  if (byDevice.size > 0 && !enabled) {
    const [dev, c] = [...byDevice][0]!;
    return { error: `device ${dev} is asked for VF network settings (${describeVfConfig(c)}), but VF network configuration is off on this node: the agent needs the host's network namespace and CAP_NET_ADMIN for it (chart value agent.dra.vfNetworkConfig=true, agent flag --vf-net-config; docs/security.md)` };
  }
  const targets: { target: VfTarget; config?: VfNetworkConfig }[] = [];
  for (const { d, e } of entries) {
    if (!e || notNic(e)) continue;
    const c = byDevice.get(d.device);
    targets.push({ target: { vf: e.slice.id, pf: e.slice.parent, pfNetdev: e.slice.pfNetdev!, index: e.slice.index! }, ...(c ? { config: c } : {}) });
  }
  return { targets };
}
