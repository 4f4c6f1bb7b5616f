// Filesystem events as rescan triggers. sysfs emits none; devtmpfs does (`/dev/vfio` changes when a
// group's last device leaves vfio-pci), and test trees do. A burst is coalesced into one rescan:
// 50 ms after the last event, at most 200 ms after the first.
import { watch, type FSWatcher } from 'node:fs';

/** Quiet time after the last filesystem event of a burst before rescanning. */
const FS_QUIET_MS = 50;
/** Longest a burst of filesystem events delays its rescan. */
const FS_MAX_WAIT_MS = 200;

export class FsTrigger {
  private readonly watchers = new Map<string, FSWatcher>();
  private debounce: NodeJS.Timeout | undefined;
  private burstStart: number | undefined;

  constructor(
    private readonly paths: readonly string[],
    private readonly fire: () => void,
    private readonly clock: () => number,
    /** Every raw event, before coalescing: the folder and the entry it names (the health fast path). */
    private readonly onEvent?: (dir: string, name: string | null) => void,
  ) {}

  /** fs.watch on each folder that exists; call again to pick up folders that appeared later. */
  attach(): void {
    for (const path of this.paths) {
      if (this.watchers.has(path)) continue;
      try {
        const w = watch(path, { persistent: false }, (_type, name) => {
          this.onEvent?.(path, name);
          this.event();
        });
        w.on('error', () => {
          w.close();
          this.watchers.delete(path);
        });
        this.watchers.set(path, w);
      } catch {
        /* not there (yet); the rescan timer covers it */
      }
    }
  }

  close(): void {
    if (this.debounce) clearTimeout(this.debounce);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  private event(): void {
    const now = this.clock();
    this.burstStart ??= now;
    if (this.debounce) clearTimeout(this.debounce);
    const wait = Math.max(0, Math.min(FS_QUIET_MS, this.burstStart + FS_MAX_WAIT_MS - now));
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.burstStart = undefined;
      this.fire();
    }, wait);
  }
}
