// Start-up restore (after a reboot, or any start that finds held slices missing): a pool is not
// registered with the kubelet while one of its held slices is not back yet, so the kubelet's first
// list from this agent already shows every held device Healthy (docs/design-decisions.md, "Reboot
// brings back the same slices").
//
// Why: after a reboot the kubelet re-admits the VM pods it had, with the devices of its checkpoint.
// A held device it is told is Unhealthy (or not told about) fails that admission, and the VM's
// controller then makes a new pod, which may get another device. The agent re-creates slices with
// their identity (deterministic VF indexes, mdev UUIDs and vport WWNs from the plan in its
// checkpoint), but the kernel's effects can take a few rounds (VFs appear, then are bound).
//
// The wait is bounded: past `waitMs` from the agent's first carving round, every pool registers, a
// slice that could not be restored listed Unhealthy with its reason (it is never served as something
// else: its ID names its identity). A pool already registered is never held back (an upgrade's
// hand-over is unaffected). The wait counts from that first round, not from the agent's construction:
// loading the plan, the first scan and the first PodResources answer can take longer than the whole
// wait on a loaded node (seen on the real-kernel harness under load: first round 16 s after the
// start), and the pools then registered at that round with their held slices not restored. (The
// VFIO-number ordering has its own window, counted from the first pass that binds: vfio-numbers.ts.)
import type { PoolPlan, Slice, SliceKind } from '../model.js';

function kindOf(id: string): SliceKind {
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-/i.test(id)) return 'Mdev';
  if (/^[0-9a-f]{16}$/i.test(id)) return 'VPort';
  return 'Function';
}

/**
 * Held IDs of a served pool that its slices no longer include (after a reboot: a slot that could not
 * be re-created, e.g. an mdev type the parent no longer offers or a VF index beyond the PF's count):
 * listed Unhealthy with the reason, so the kubelet and the status say so, instead of vanishing.
 * Nothing is created for them and nothing else is served under their IDs.
 */
export function unrestoredHeld(slices: readonly Slice[], pools: readonly PoolPlan[], held: Iterable<string>, resourceOf: (id: string) => string | undefined, by: (id: string) => string): Slice[] {
  const listed = new Set(slices.map((s) => s.id));
  const out: Slice[] = [];
  for (const id of held) {
    if (listed.has(id)) continue;
    const r = resourceOf(id);
    const pool = r === undefined ? undefined : pools.find((p) => p.resourceName === r && !p.deleting && p.frontEnd !== 'DRA');
    if (!pool) continue;
    const kind = kindOf(id);
    out.push({
      id, pool: pool.name, resourceName: pool.resourceName, kind, parent: '', deviceNodes: [], health: 'Unhealthy',
      reason: `${by(id)}, but this node no longer has it and the pool's plan cannot re-create it with the identity it had; it is not served as anything else`,
      ...(kind === 'Mdev' ? { mdevUuid: id } : kind === 'Function' ? { pciAddress: id } : {}),
    });
  }
  return out;
}

export class StartupRestore {
  private startedAt: number | undefined;
  private gaveUp = false;

  constructor(private readonly waitMs: number) {}

  /** The wait starts: the agent's first carving round begins at `now`. Later calls change nothing. */
  begin(now: number): void {
    this.startedAt ??= now;
  }

  /** Whether `now` is within the wait (restoring still goes on); true before it starts. */
  within(now: number): boolean {
    return this.startedAt === undefined || now < this.startedAt + this.waitMs;
  }

  /**
   * Pools (by name) not to register yet, each with why: not registered so far, and a slice of theirs
   * that a holder has is not Healthy. Empty once the wait is over. `onGiveUp` is told once, with what
   * was still missing.
   */
  holdBack(slices: readonly Slice[], held: ReadonlySet<string>, registered: (pool: string) => boolean, now: number, onGiveUp: (missing: Map<string, string>) => void): Map<string, string> {
    const out = new Map<string, string>();
    if (this.gaveUp) return out;
    for (const s of slices) {
      if (s.health === 'Healthy' || !held.has(s.id) || registered(s.pool) || out.has(s.pool)) continue;
      out.set(s.pool, `held slice ${s.id} is not restored yet (${s.reason ?? 'unhealthy'})`);
    }
    if (out.size > 0 && !this.within(now)) {
      this.gaveUp = true;
      onGiveUp(out);
      return new Map();
    }
    return out;
  }

  /** When to look again while pools are held back. */
  recheckMs(): number {
    return Math.min(500, this.waitMs);
  }
}
