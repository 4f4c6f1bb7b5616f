// One shared copy of equal JSON values (issue 22, operator memory at scale). Nodes of one hardware
// model report the same inventory devices, plan entries and pool states; the cache keeps one frozen
// object for each distinct value instead of one per node. Values are held weakly: a value no node
// uses any more is collected and its entry removed.

const table = new Map<string, WeakRef<object>>();
const registry = new FinalizationRegistry<string>((key) => {
  if (table.get(key)?.deref() === undefined) table.delete(key);
});

function deepFreeze<T>(v: T): T {
  if (typeof v === 'object' && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

/**
 * The shared copy of `v` (a JSON value; its key order counts): a frozen copy of the first one seen,
 * so that no reader can change what every node shares. `v` itself is left as it is.
 */
export function intern<T extends object>(v: T): T {
  const key = JSON.stringify(v);
  const hit = table.get(key)?.deref();
  if (hit !== undefined) return hit as T;
  const copy = deepFreeze(structuredClone(v));
  table.set(key, new WeakRef(copy));
  registry.register(copy, key);
  return copy;
}

/** Distinct values held now (for tests and the bench). */
export function internedCount(): number {
  return table.size;
}
