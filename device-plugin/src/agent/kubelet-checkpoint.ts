// The kubelet's own record of device plugin allocations: `<device-plugins>/kubelet_internal_checkpoint`
// (kubelet `pkg/kubelet/cm/devicemanager/checkpoint`). It is the second, independent source of "held"
// beside PodResources: it survives kubelet restarts (PodResources answers empty until the kubelet's
// pod sources have synced) and is written on every Allocate.
//
// What it does NOT do: the kubelet drops a gone pod's entries from memory only (UpdateAllocatedDevices)
// and rewrites the file at its next Allocate, so an entry can outlive its pod. A reader must therefore
// treat an entry as "held by pod UID U" until U is known to be gone, never the other way round.
//
// The file's checksum is an FNV-32a over Go's %#v dump of the structure, which cannot be recomputed
// here; a file that is not JSON of the expected shape counts as unreadable ("don't know").
import { readFileSync, statSync } from 'node:fs';

export const KUBELET_CHECKPOINT_FILE = 'kubelet_internal_checkpoint';

/** One device the kubelet checkpointed as allocated. */
export interface KubeletEntry {
  podUID: string;
  container: string;
  resourceName: string;
}

export type KubeletCheckpointState =
  | { kind: 'absent' }
  | { kind: 'ok'; entries: ReadonlyMap<string, readonly KubeletEntry[]> }
  | { kind: 'corrupt'; message: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Device IDs of one entry: `{"<numa>": [ids]}` since kubelet 1.20, a plain list before. */
function deviceIds(v: unknown): string[] | undefined {
  if (Array.isArray(v)) return v.every((x) => typeof x === 'string') ? (v as string[]) : undefined;
  if (!isRecord(v)) return undefined;
  const out: string[] = [];
  for (const ids of Object.values(v)) {
    if (ids === null) continue;
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string')) return undefined;
    out.push(...(ids as string[]));
  }
  return out;
}

/** Parses the checkpoint text; anything malformed is `corrupt` with the reason, never a throw. */
export function parseKubeletCheckpoint(text: string): KubeletCheckpointState {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { kind: 'corrupt', message: `not JSON: ${(err as Error).message}` };
  }
  if (!isRecord(doc) || !isRecord(doc.Data)) return { kind: 'corrupt', message: 'no Data object' };
  const list = doc.Data.PodDeviceEntries;
  if (list !== null && list !== undefined && !Array.isArray(list)) return { kind: 'corrupt', message: 'PodDeviceEntries is not a list' };
  const entries = new Map<string, KubeletEntry[]>();
  for (const e of (list ?? []) as unknown[]) {
    if (!isRecord(e) || typeof e.PodUID !== 'string' || typeof e.ResourceName !== 'string') return { kind: 'corrupt', message: 'an entry lacks PodUID or ResourceName' };
    const ids = deviceIds(e.DeviceIDs);
    if (!ids) return { kind: 'corrupt', message: `entry of pod ${e.PodUID} has malformed DeviceIDs` };
    for (const id of ids) {
      const l = entries.get(id) ?? [];
      l.push({ podUID: e.PodUID, container: typeof e.ContainerName === 'string' ? e.ContainerName : '', resourceName: e.ResourceName });
      entries.set(id, l);
    }
  }
  return { kind: 'ok', entries };
}

/** Reads the kubelet's checkpoint, again only when the file changed (size, mtime, inode). */
export class KubeletCheckpointReader {
  private stamp = '';
  private last: KubeletCheckpointState = { kind: 'absent' };

  constructor(private readonly file: string | undefined) {}

  read(): KubeletCheckpointState {
    if (!this.file) return { kind: 'absent' };
    let stamp: string;
    try {
      const st = statSync(this.file);
      stamp = `${st.ino}/${st.size}/${st.mtimeMs}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      this.stamp = '';
      this.last = code === 'ENOENT' ? { kind: 'absent' } : { kind: 'corrupt', message: `cannot stat ${this.file}: ${code ?? String(err)}` };
      return this.last;
    }
    if (stamp === this.stamp) return this.last;
    try {
      this.last = parseKubeletCheckpoint(readFileSync(this.file, 'utf8'));
    } catch (err) {
      this.last = { kind: 'corrupt', message: `cannot read ${this.file}: ${(err as Error).message}` };
    }
    if (this.last.kind === 'corrupt') this.last = { kind: 'corrupt', message: `kubelet checkpoint ${this.file}: ${this.last.message}` };
    this.stamp = stamp;
    return this.last;
  }
}
