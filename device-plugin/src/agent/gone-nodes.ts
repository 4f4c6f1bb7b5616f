// The fast path of device health (issue 22: "an event about one device re-examines that device").
// When a function leaves vfio-pci, the kernel removes its group node from /dev/vfio at once, and
// devtmpfs reports it. Rather than wait for the coalesced rescan and a full cycle, the event names
// the node; every served slice that needs it turns Unhealthy in the kubelet's list right away. The
// full cycle follows as before (it repairs what it can and gives the precise reason). A path stays
// known-gone until it exists again, so a cycle built from a scan taken before the event cannot
// flip the slice back to Healthy in between.
import { existsSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { devPathUnder } from '../discovery/scan.js';
import type { Slice } from '../model.js';

export class GoneNodes {
  /** Canonical paths (`/dev/vfio/60`, as slices name them) known gone. */
  private readonly gone = new Set<string>();

  /** `devRoot`: where the node's /dev is seen (the slices name nodes by their /dev path). */
  constructor(
    private readonly devRoot = '/dev',
    private readonly exists: (path: string) => boolean = existsSync,
  ) {}

  /**
   * A filesystem event in `dir` about `name`: true when it is a device node a Healthy slice in
   * `slices` needs and the node is gone (the caller then pushes `apply(slices)` to the front ends).
   * Returns the node's /dev path in that case.
   */
  note(dir: string, name: string | null, slices: readonly Slice[]): string | undefined {
    if (!name) return undefined;
    const rel = relative(this.devRoot, join(dir, name));
    if (rel.startsWith('..') || rel === '') return undefined;
    const canonical = `/dev/${rel.split(sep).join('/')}`;
    if (!slices.some((s) => s.health === 'Healthy' && s.deviceNodes.includes(canonical))) return undefined;
    if (this.present(canonical)) return undefined;
    this.gone.add(canonical);
    return canonical;
  }

  private present(canonical: string): boolean {
    return this.exists(devPathUnder(this.devRoot, canonical));
  }

  /** `slices` with every slice that needs a node known gone marked Unhealthy; nodes back again are forgotten. */
  apply(slices: readonly Slice[]): Slice[] {
    if (this.gone.size === 0) return [...slices];
    for (const p of [...this.gone]) if (this.present(p)) this.gone.delete(p);
    return slices.map((s) => {
      if (s.health !== 'Healthy') return s;
      const missing = s.deviceNodes.find((n) => this.gone.has(n));
      return missing === undefined ? s : { ...s, health: 'Unhealthy', reason: `${missing} is missing` };
    });
  }
}
