// Fakes of the API server's side of DRA for the driver's unit tests: ResourceSlices in memory, the
// ResourceClaim list and watch, claim objects, and a short poll.
import type { Slice } from '../../device-plugin/src/model.js';
import type { ClaimEventType, ClaimListWatch } from '../../device-plugin/src/dra/claims.js';
import { draDeviceName, type ResourceSliceObject } from '../../device-plugin/src/dra/devices.js';
import type { ClaimObject } from '../../device-plugin/src/dra/prepare.js';
import type { ResourceSliceStore } from '../../device-plugin/src/dra/publisher.js';

/** A claim in namespace `vms` allocated from `pool` (`<node>/<pool>`), reserved for `pods`. */
export function claimObj(pool: string, uid: string, name: string, devices: Slice[], pods: string[] = []): ClaimObject {
  return {
    metadata: { name, namespace: 'vms', uid },
    status: {
      allocation: { devices: { results: devices.map((s) => ({ request: 'gpu', driver: 'virtualio.dev', pool, device: draDeviceName(s) })) } },
      reservedFor: pods.map((p) => ({ resource: 'pods', name: p, uid: `uid-${p}` })),
    },
  };
}

/** ResourceSlices in memory; `writes` logs every write, as `create|update|delete <name> ...`. */
export class MemoryStore implements ResourceSliceStore {
  objects = new Map<string, ResourceSliceObject>();
  writes: string[] = [];
  private seq = 0;
  async list(): Promise<ResourceSliceObject[]> {
    return [...this.objects.values()].map((o) => structuredClone(o));
  }
  async create(o: ResourceSliceObject): Promise<ResourceSliceObject> {
    const name = o.metadata.name ?? `${o.metadata.generateName}${String(++this.seq).padStart(5, '0')}`;
    this.writes.push(`create ${name} gen ${o.spec.pool.generation} devices ${(o.spec.devices ?? []).length}`);
    const stored = structuredClone({ ...o, metadata: { ...o.metadata, name, resourceVersion: String(this.seq) } });
    this.objects.set(name, stored);
    return structuredClone(stored);
  }
  async update(o: ResourceSliceObject): Promise<ResourceSliceObject> {
    this.writes.push(`update ${o.metadata.name} gen ${o.spec.pool.generation} devices ${(o.spec.devices ?? []).length}`);
    this.objects.set(o.metadata.name!, structuredClone(o));
    return structuredClone(o);
  }
  async remove(name: string): Promise<void> {
    this.writes.push(`delete ${name}`);
    this.objects.delete(name);
  }
  /** Every published device name, sorted. */
  devices(): string[] {
    return [...this.objects.values()].flatMap((o) => (o.spec.devices ?? []).map((d) => d.name)).sort();
  }
}

/** The API server's ResourceClaims: a list that can fail, and one watch the test feeds. */
export class FakeClaims implements ClaimListWatch {
  items = new Map<string, ClaimObject>();
  failLists = false;
  listCalls = 0;
  private emit: ((t: ClaimEventType, o: unknown) => void) | undefined;
  async list(): Promise<{ items: ClaimObject[]; resourceVersion: string }> {
    this.listCalls++;
    if (this.failLists) throw new Error('connect ECONNREFUSED');
    return { items: [...this.items.values()].map((c) => structuredClone(c)), resourceVersion: '1' };
  }
  watch(_rv: string, onEvent: (t: ClaimEventType, o: unknown) => void, signal: AbortSignal): Promise<unknown> {
    this.emit = onEvent;
    return new Promise((resolve) => signal.addEventListener('abort', () => resolve(undefined), { once: true }));
  }
  set(c: ClaimObject): void {
    this.items.set(c.metadata.uid!, c);
    this.emit?.('MODIFIED', structuredClone(c));
  }
  remove(uid: string): void {
    const c = this.items.get(uid);
    this.items.delete(uid);
    if (c) this.emit?.('DELETED', structuredClone(c));
  }
  get watching(): boolean {
    return this.emit !== undefined;
  }
}

/** Polls `get` every 10 ms until it gives a value (not undefined or false). */
export async function until<T>(what: string, get: () => T | undefined | false, ms = 3000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = get();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
