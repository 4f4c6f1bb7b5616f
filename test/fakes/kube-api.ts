// An in-memory KubePort that behaves like the API server where the operator relies on it:
// resourceVersions and optimistic concurrency (409 on a stale PUT), the status subresource (status
// is ignored on create/PUT of the main resource, spec on status writes), generation bumps on spec
// changes, finalizers and deletionTimestamp, ownerReference garbage collection (foreground-less,
// immediate), server-side apply with per-manager field ownership (objects merge; lists are atomic
// leaves; fields a manager stops applying are removed when no one else owns them; conflicts without
// force), JSON merge patches (conditional on a metadata.resourceVersion they carry), label
// selectors on lists and watches, no-op writes that do not bump the resourceVersion, watch history
// with 410 Gone for too-old resourceVersions. Fault injection: `inject` fails chosen calls,
// `failWatches` breaks watches, `silenceWatches` makes them drop events silently (half-open TCP).
import type { Clock } from '../../operator/src/runtime/clock.js';
import { systemClock } from '../../operator/src/runtime/clock.js';
import { KubeError } from '../../operator/src/kube/errors.js';
import type {
  ApplyOptions,
  EventRecord,
  KubeObject,
  KubePort,
  LeaseRecord,
  ListOptions,
  ListResult,
  ListWatchSource,
  MergePatchOptions,
  ResourceType,
  WatchVerb,
} from '../../operator/src/kube/ports.js';

type Obj = KubeObject & Record<string, unknown>;
type Json = unknown;

const resKey = (r: ResourceType) => `${r.group}/${r.version}/${r.plural}`;
const objKey = (name: string, ns?: string) => (ns ? `${ns}/${name}` : name);
const clone = <T>(x: T): T => structuredClone(x);

function deepEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null || typeof a !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as Json[];
    return a.length === bb.length && a.every((x, i) => deepEqual(x, bb[i]));
  }
  const ka = Object.keys(a as object).filter((k) => (a as Record<string, Json>)[k] !== undefined);
  const kb = Object.keys(b as object).filter((k) => (b as Record<string, Json>)[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => deepEqual((a as Record<string, Json>)[k], (b as Record<string, Json>)[k]));
}

const isPlainObject = (x: Json): x is Record<string, Json> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Leaf paths of a JSON value: objects recurse, arrays and scalars (and empty objects) are leaves. */
function leafPaths(v: Json, prefix: string[] = [], out: string[][] = []): string[][] {
  if (isPlainObject(v) && Object.keys(v).length > 0) {
    for (const [k, x] of Object.entries(v)) if (x !== undefined) leafPaths(x, [...prefix, k], out);
  } else {
    out.push(prefix);
  }
  return out;
}

function getPath(o: Json, path: readonly string[]): Json {
  let cur = o;
  for (const p of path) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

function setPath(o: Record<string, Json>, path: readonly string[], value: Json): void {
  let cur = o;
  for (const p of path.slice(0, -1)) {
    if (!isPlainObject(cur[p])) cur[p] = {};
    cur = cur[p] as Record<string, Json>;
  }
  const last = path[path.length - 1];
  if (last !== undefined) cur[last] = clone(value);
}

function deletePath(o: Record<string, Json>, path: readonly string[]): void {
  const parents: Record<string, Json>[] = [o];
  let cur: Json = o;
  for (const p of path.slice(0, -1)) {
    if (!isPlainObject(cur)) return;
    cur = cur[p];
    if (!isPlainObject(cur)) return;
    parents.push(cur);
  }
  const last = path[path.length - 1];
  if (last === undefined) return;
  delete (parents[parents.length - 1] as Record<string, Json>)[last];
  // Prune parents left empty.
  for (let i = parents.length - 1; i > 0; i--) {
    const parent = parents[i - 1] as Record<string, Json>;
    const key = path[i - 1] as string;
    if (isPlainObject(parent[key]) && Object.keys(parent[key] as object).length === 0) delete parent[key];
    else break;
  }
}

const pathStr = (p: readonly string[]) => p.join('\u0000');
const overlaps = (a: string, b: string) => a === b || a.startsWith(`${b}\u0000`) || b.startsWith(`${a}\u0000`);

/** Equality-based label selector (`k=v`, `k!=v`, bare `k`) over an object's labels. */
function labelsMatch(labels: Record<string, string> | undefined, selector: string | undefined): boolean {
  for (const term of (selector ?? '').split(',').map((t) => t.trim()).filter(Boolean)) {
    const ne = /^([^!=]+)!=(.*)$/.exec(term);
    const eq = /^([^!=]+)==?(.*)$/.exec(term);
    if (ne) {
      if (labels?.[ne[1] ?? ''] === ne[2]) return false;
    } else if (eq) {
      if (labels?.[eq[1] ?? ''] !== eq[2]) return false;
    } else if (labels?.[term] === undefined) {
      return false;
    }
  }
  return true;
}

/** RFC 7386 JSON merge patch: objects merge, null deletes, everything else replaces. */
function mergePatchValue(target: Json, patch: Json): Json {
  if (!isPlainObject(patch)) return clone(patch);
  const out: Record<string, Json> = isPlainObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatchValue(out[k], v);
  }
  return out;
}

interface Stored {
  obj: Obj;
  /** manager → owned leaf paths (per section: 'main' | 'status'). */
  owners: Map<string, Set<string>>;
}

interface Watcher {
  res: string;
  namespace?: string;
  name?: string;
  labelSelector?: string;
  silent: boolean;
  deliver(type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: Obj): void;
  fail(err: KubeError): void;
}

interface HistoryEntry {
  rv: number;
  res: string;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  obj: Obj;
}

export type FakeOp = 'list' | 'get' | 'apply' | 'patch' | 'replace' | 'create' | 'delete' | 'discovery' | 'lease' | 'event';

/** Returns an error to fail the call with, or undefined to let it through. */
export type Interceptor = (op: FakeOp, res: ResourceType | undefined, name: string | undefined) => KubeError | undefined;

export interface FakeKubeOptions {
  clock?: Clock;
  /** Resources with a status subresource. Default: every resource whose group is not ''. */
  statusSubresource?: (res: ResourceType) => boolean;
  /** Watch events kept for resuming watches (older resourceVersions get 410). Default 10000. */
  historyLimit?: number;
}

/** In-memory API server for unit tests. See the file header for what it enforces. */
export class FakeKube implements KubePort {
  private rv = 1;
  private uid = 1;
  private readonly stores = new Map<string, Map<string, Stored>>();
  private readonly resources = new Map<string, ResourceType>();
  private readonly installed = new Set<string>();
  private readonly watchers = new Set<Watcher>();
  private history: HistoryEntry[] = [];
  private readonly leases = new Map<string, LeaseRecord>();
  private readonly clock: Clock;
  private readonly statusSubresource: (res: ResourceType) => boolean;
  private readonly historyLimit: number;
  private interceptors: Interceptor[] = [];
  /** Every Event recorded, in order (repeats bump `count`). */
  readonly events: (EventRecord & { count: number })[] = [];
  /** Number of writes that changed something (create/replace/apply/delete). */
  writes = 0;

  constructor(opts: FakeKubeOptions = {}) {
    this.clock = opts.clock ?? systemClock;
    this.statusSubresource = opts.statusSubresource ?? ((r) => r.group !== '');
    this.historyLimit = opts.historyLimit ?? 10_000;
  }

  /** Makes discovery report `res` as served. */
  install(res: ResourceType): void {
    this.installed.add(resKey(res));
    this.resources.set(resKey(res), res);
  }

  uninstall(res: ResourceType): void {
    this.installed.delete(resKey(res));
  }

  /** Adds an interceptor; returns a function that removes it. */
  inject(fn: Interceptor): () => void {
    this.interceptors.push(fn);
    return () => {
      this.interceptors = this.interceptors.filter((f) => f !== fn);
    };
  }

  /** Breaks every open watch (of `res`, or all) with `err`, as a dropped connection would. */
  failWatches(res?: ResourceType, err = new KubeError('Transient', 0, 'watch connection reset')): void {
    for (const w of [...this.watchers]) {
      if (res && w.res !== resKey(res)) continue;
      this.watchers.delete(w);
      w.fail(err);
    }
  }

  /** Open watches (of `res`, or all) silently stop delivering events. */
  silenceWatches(res?: ResourceType): void {
    for (const w of this.watchers) if (!res || w.res === resKey(res)) w.silent = true;
  }

  /** Number of open watches (of `res`, or all). */
  watchCount(res?: ResourceType): number {
    return [...this.watchers].filter((w) => !res || w.res === resKey(res)).length;
  }

  /** Every stored object of `res`, cloned, sorted by key. */
  all<T extends KubeObject>(res: ResourceType): T[] {
    const store = this.stores.get(resKey(res));
    return [...(store?.entries() ?? [])].sort(([a], [b]) => a.localeCompare(b)).map(([, s]) => clone(s.obj) as unknown as T);
  }

  /** A deep copy of the whole world (for idempotence checks). */
  snapshot(): Record<string, Record<string, Obj>> {
    const out: Record<string, Record<string, Obj>> = {};
    for (const [rk, store] of [...this.stores].sort(([a], [b]) => a.localeCompare(b))) {
      out[rk] = Object.fromEntries([...store].sort(([a], [b]) => a.localeCompare(b)).map(([k, s]) => [k, clone(s.obj)]));
    }
    return out;
  }

  /** Field managers of an object (for assertions on SSA ownership). */
  managers(res: ResourceType, name: string, namespace?: string): Record<string, string[]> {
    const s = this.stores.get(resKey(res))?.get(objKey(name, namespace));
    if (!s) return {};
    return Object.fromEntries([...s.owners].map(([m, paths]) => [m, [...paths].map((p) => p.split('\u0000').join('.')).sort()]));
  }

  private check(op: FakeOp, res?: ResourceType, name?: string): void {
    for (const f of this.interceptors) {
      const err = f(op, res, name);
      if (err) throw err;
    }
  }

  private store(res: ResourceType): Map<string, Stored> {
    const k = resKey(res);
    this.resources.set(k, res);
    let s = this.stores.get(k);
    if (!s) {
      s = new Map();
      this.stores.set(k, s);
    }
    return s;
  }

  private now(): string {
    return new Date(Math.floor(this.clock.now() / 1000) * 1000).toISOString().replace('.000Z', 'Z');
  }

  private emit(res: ResourceType, type: HistoryEntry['type'], obj: Obj): void {
    const entry: HistoryEntry = { rv: Number(obj.metadata.resourceVersion), res: resKey(res), type, obj: clone(obj) };
    this.history.push(entry);
    if (this.history.length > this.historyLimit) this.history = this.history.slice(-this.historyLimit);
    for (const w of this.watchers) {
      if (w.res !== entry.res || w.silent) continue;
      if (w.namespace && obj.metadata.namespace !== w.namespace) continue;
      if (w.name && obj.metadata.name !== w.name) continue;
      if (!labelsMatch(obj.metadata.labels, w.labelSelector)) continue;
      w.deliver(type, clone(entry.obj));
    }
  }

  private matches(obj: Obj, opts: ListOptions | undefined): boolean {
    if (opts?.namespace && obj.metadata.namespace !== opts.namespace) return false;
    if (!labelsMatch(obj.metadata.labels, opts?.labelSelector)) return false;
    const name = /(?:^|,)metadata\.name=([^,]+)/.exec(opts?.fieldSelector ?? '')?.[1];
    return !name || obj.metadata.name === name;
  }

  /** Pages (limit/continue) are slices of the name-sorted list; `continue` is the next offset. */
  async list<T extends KubeObject>(res: ResourceType, opts?: ListOptions): Promise<ListResult<T>> {
    this.check('list', res);
    this.listCalls++;
    const all = [...this.store(res).values()].map((s) => s.obj).filter((o) => this.matches(o, opts))
      .sort((a, b) => objKey(a.metadata.name, a.metadata.namespace).localeCompare(objKey(b.metadata.name, b.metadata.namespace)));
    const from = Number(opts?.continue ?? 0);
    const to = opts?.limit ? from + opts.limit : all.length;
    const items = all.slice(from, to).map((o) => clone(o) as unknown as T);
    return { items, resourceVersion: String(this.rv), ...(to < all.length ? { continue: String(to) } : {}) };
  }

  /** How many list calls (pages) were served. */
  listCalls = 0;

  listWatch<T extends KubeObject>(res: ResourceType, opts: ListOptions, list: () => Promise<string>): ListWatchSource<T> {
    return new FakeListWatch<T>(this, res, opts, list);
  }

  /** @internal Used by FakeListWatch: subscribe from a resourceVersion (replaying history). */
  subscribe(res: ResourceType, opts: ListOptions, fromRv: number, w: Omit<Watcher, 'res' | 'namespace' | 'name' | 'labelSelector' | 'silent'>): Watcher | KubeError {
    const oldest = this.history[0]?.rv ?? this.rv;
    if (fromRv < oldest - 1 && this.history.length >= this.historyLimit) return new KubeError('Gone', 410, 'too old resource version');
    const name = /(?:^|,)metadata\.name=([^,]+)/.exec(opts.fieldSelector ?? '')?.[1];
    const watcher: Watcher = { ...w, res: resKey(res), namespace: opts.namespace, name, labelSelector: opts.labelSelector, silent: false };
    for (const h of this.history) {
      if (h.res !== watcher.res || h.rv <= fromRv) continue;
      if (watcher.namespace && h.obj.metadata.namespace !== watcher.namespace) continue;
      if (watcher.name && h.obj.metadata.name !== watcher.name) continue;
      if (!labelsMatch(h.obj.metadata.labels, watcher.labelSelector)) continue;
      watcher.deliver(h.type, clone(h.obj));
    }
    this.watchers.add(watcher);
    return watcher;
  }

  /** @internal */
  unsubscribe(w: Watcher): void {
    this.watchers.delete(w);
  }

  async get<T extends KubeObject>(res: ResourceType, name: string, namespace?: string): Promise<T | undefined> {
    this.check('get', res, name);
    const s = this.store(res).get(objKey(name, namespace));
    return s ? (clone(s.obj) as unknown as T) : undefined;
  }

  private specOf(o: Obj): Record<string, Json> {
    const { metadata: _m, status: _s, ...rest } = o;
    return rest;
  }

  private commit(res: ResourceType, key: string, before: Stored | undefined, after: Stored, created: boolean): Obj {
    const store = this.store(res);
    if (!created && before && deepEqual(before.obj, after.obj)) {
      store.set(key, { obj: before.obj, owners: after.owners });
      return clone(before.obj);
    }
    if (!created && before && !deepEqual(this.specOf(before.obj), this.specOf(after.obj)) && res.group !== '') {
      after.obj.metadata.generation = (before.obj.metadata.generation ?? 1) + 1;
    }
    after.obj.metadata.resourceVersion = String(++this.rv);
    this.writes++;
    // Deleting and no finalizers left: the object goes away.
    if (after.obj.metadata.deletionTimestamp && (after.obj.metadata.finalizers ?? []).length === 0) {
      store.delete(key);
      this.emit(res, 'DELETED', after.obj);
      this.collectGarbage(after.obj);
      return clone(after.obj);
    }
    store.set(key, after);
    this.emit(res, created ? 'ADDED' : 'MODIFIED', after.obj);
    return clone(after.obj);
  }

  async create<T extends KubeObject>(res: ResourceType, obj: T): Promise<T> {
    this.check('create', res, obj.metadata.name);
    const store = this.store(res);
    const key = objKey(obj.metadata.name, res.namespaced ? obj.metadata.namespace : undefined);
    if (store.has(key)) throw new KubeError('AlreadyExists', 409, `${res.plural} "${obj.metadata.name}" already exists`);
    const o = clone(obj) as unknown as Obj;
    if (this.statusSubresource(res)) delete o.status;
    o.apiVersion = res.group === '' ? res.version : `${res.group}/${res.version}`;
    o.kind = res.kind;
    o.metadata = {
      ...o.metadata, uid: `uid-${this.uid++}`, creationTimestamp: this.now(),
      ...(res.group !== '' ? { generation: 1 } : {}),
    };
    delete o.metadata.deletionTimestamp;
    const owners = new Map([['update', new Set(leafPaths(this.specOf(o)).map(pathStr))]]);
    return this.commit(res, key, undefined, { obj: o, owners }, true) as unknown as T;
  }

  async mergePatch<T extends KubeObject>(res: ResourceType, name: string, patch: Record<string, unknown>, opts: MergePatchOptions): Promise<T> {
    this.check('patch', res, name);
    const key = objKey(name, res.namespaced ? opts.namespace : undefined);
    const cur = this.store(res).get(key);
    if (!cur) throw new KubeError('NotFound', 404, `${res.plural} "${name}" not found`);
    const meta = isPlainObject(patch.metadata) ? patch.metadata : {};
    if (typeof meta.resourceVersion === 'string' && meta.resourceVersion !== cur.obj.metadata.resourceVersion) {
      throw new KubeError('Conflict', 409, `Operation cannot be fulfilled on ${res.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    const status = opts.subresource === 'status';
    const merged = mergePatchValue(cur.obj, patch) as Obj;
    const next = clone(cur.obj);
    if (status) {
      if (merged.status === undefined) delete next.status;
      else next.status = merged.status;
    } else {
      for (const k of Object.keys(next)) if (k !== 'status' && k !== 'metadata' && !(k in merged)) delete next[k];
      for (const [k, v] of Object.entries(merged)) if (k !== 'status' && k !== 'metadata') next[k] = v;
      if (!this.statusSubresource(res)) next.status = merged.status;
      if (next.status === undefined) delete next.status;
      // Server-owned metadata stays; the rest (labels, annotations, finalizers, ownerReferences) is patched.
      next.metadata = {
        ...merged.metadata, name: cur.obj.metadata.name, uid: cur.obj.metadata.uid, resourceVersion: cur.obj.metadata.resourceVersion,
        creationTimestamp: cur.obj.metadata.creationTimestamp, generation: cur.obj.metadata.generation,
        deletionTimestamp: cur.obj.metadata.deletionTimestamp,
        ...(cur.obj.metadata.namespace ? { namespace: cur.obj.metadata.namespace } : {}),
      };
      for (const k of ['deletionTimestamp', 'generation', 'namespace'] as const) if (next.metadata[k] === undefined) delete next.metadata[k];
    }
    // Like a PUT, a patch (an Update operation) leaves the Apply managers' ownership as it was.
    return this.commit(res, key, cur, { obj: next, owners: new Map(cur.owners) }, false) as unknown as T;
  }

  async replace<T extends KubeObject>(res: ResourceType, obj: T): Promise<T> {
    this.check('replace', res, obj.metadata.name);
    const key = objKey(obj.metadata.name, res.namespaced ? obj.metadata.namespace : undefined);
    const cur = this.store(res).get(key);
    if (!cur) throw new KubeError('NotFound', 404, `${res.plural} "${obj.metadata.name}" not found`);
    if (obj.metadata.resourceVersion !== cur.obj.metadata.resourceVersion) {
      throw new KubeError('Conflict', 409, `Operation cannot be fulfilled on ${res.plural} "${obj.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    const next = clone(obj) as unknown as Obj;
    if (this.statusSubresource(res)) {
      if (cur.obj.status === undefined) delete next.status;
      else next.status = clone(cur.obj.status);
    }
    next.apiVersion = cur.obj.apiVersion;
    next.kind = cur.obj.kind;
    // Immutable or server-owned metadata.
    next.metadata = {
      ...next.metadata,
      uid: cur.obj.metadata.uid, creationTimestamp: cur.obj.metadata.creationTimestamp,
      generation: cur.obj.metadata.generation, deletionTimestamp: cur.obj.metadata.deletionTimestamp,
    };
    if (next.metadata.deletionTimestamp === undefined) delete next.metadata.deletionTimestamp;
    if (next.metadata.generation === undefined) delete next.metadata.generation;
    return this.commit(res, key, cur, { obj: next, owners: new Map(cur.owners) }, false) as unknown as T;
  }

  async apply<T extends KubeObject>(res: ResourceType, applied: KubeObject & Record<string, unknown>, opts: ApplyOptions): Promise<T> {
    this.check('apply', res, applied.metadata.name);
    if (!applied.apiVersion || !applied.kind) throw new KubeError('Invalid', 400, 'apply needs apiVersion and kind');
    const key = objKey(applied.metadata.name, res.namespaced ? applied.metadata.namespace : undefined);
    const cur = this.store(res).get(key);
    const status = opts.subresource === 'status';
    if (!cur && status) throw new KubeError('NotFound', 404, `${res.plural} "${applied.metadata.name}" not found`);
    const section = (o: Json): Record<string, Json> => {
      const x = clone(o) as Obj;
      if (status) return x.status === undefined ? {} : { status: x.status };
      const { status: _s, metadata, ...rest } = x;
      const meta: Record<string, Json> = {};
      for (const k of ['labels', 'annotations', 'ownerReferences', 'finalizers'] as const) if (metadata[k] !== undefined) meta[k] = metadata[k];
      return Object.keys(meta).length > 0 ? { ...rest, metadata: meta } : rest;
    };
    const ignore = new Set(['apiVersion', 'kind']);
    const desired = section(applied);
    const newPaths = leafPaths(desired).filter((p) => p.length > 0 && !ignore.has(p[0] ?? ''));
    const manager = `${opts.fieldManager}${status ? '/status' : ''}`;
    let base: Obj;
    let owners: Map<string, Set<string>>;
    if (cur) {
      base = clone(cur.obj);
      owners = new Map([...cur.owners].map(([m, s]) => [m, new Set(s)]));
    } else {
      base = {
        apiVersion: applied.apiVersion, kind: applied.kind,
        metadata: { name: applied.metadata.name, ...(res.namespaced ? { namespace: applied.metadata.namespace } : {}) },
      };
      owners = new Map();
    }
    const sameSection = (m: string) => m.endsWith('/status') === status;
    // Conflicts with other managers of the same section.
    for (const p of newPaths) {
      const ps = pathStr(p);
      for (const [m, paths] of owners) {
        if (m === manager || !sameSection(m)) continue;
        for (const q of [...paths]) {
          if (!overlaps(ps, q)) continue;
          if (deepEqual(getPath(base, q.split('\u0000')), getPath(desired, q.split('\u0000')))) continue;
          if (!opts.force) {
            throw new KubeError('Conflict', 409, `Apply failed with 1 conflict: conflict with "${m}": .${q.split('\u0000').join('.')}`);
          }
          paths.delete(q);
        }
      }
    }
    // Fields this manager no longer applies are removed unless another manager owns them.
    const mine = owners.get(manager) ?? new Set<string>();
    const newSet = new Set(newPaths.map(pathStr));
    for (const q of mine) {
      if (newSet.has(q)) continue;
      const ownedElsewhere = [...owners].some(([m, paths]) => m !== manager && [...paths].some((x) => overlaps(x, q)));
      if (!ownedElsewhere) deletePath(base as unknown as Record<string, Json>, q.split('\u0000'));
    }
    for (const p of newPaths) setPath(base as unknown as Record<string, Json>, p, getPath(desired, p));
    owners.set(manager, newSet);
    if (!cur) {
      base.metadata = { ...base.metadata, uid: `uid-${this.uid++}`, creationTimestamp: this.now(), ...(res.group !== '' ? { generation: 1 } : {}) };
      if (this.statusSubresource(res)) delete base.status;
    }
    return this.commit(res, key, cur, { obj: base, owners }, !cur) as unknown as T;
  }

  async delete(res: ResourceType, name: string, namespace?: string): Promise<void> {
    this.check('delete', res, name);
    const key = objKey(name, namespace);
    const cur = this.store(res).get(key);
    if (!cur) return;
    if ((cur.obj.metadata.finalizers ?? []).length > 0) {
      if (cur.obj.metadata.deletionTimestamp) return;
      const next = clone(cur.obj);
      next.metadata.deletionTimestamp = this.now();
      this.commit(res, key, cur, { obj: next, owners: cur.owners }, false);
      return;
    }
    this.store(res).delete(key);
    const gone = clone(cur.obj);
    gone.metadata.resourceVersion = String(++this.rv);
    this.writes++;
    this.emit(res, 'DELETED', gone);
    this.collectGarbage(gone);
  }

  /** Deletes objects whose owner (by uid) just went away. */
  private collectGarbage(owner: Obj): void {
    const uid = owner.metadata.uid;
    if (!uid) return;
    for (const [rk, store] of this.stores) {
      const res = this.resources.get(rk);
      if (!res) continue;
      for (const s of [...store.values()]) {
        if ((s.obj.metadata.ownerReferences ?? []).some((o) => o.uid === uid)) {
          void this.delete(res, s.obj.metadata.name, s.obj.metadata.namespace);
        }
      }
    }
  }

  async resourceExists(res: ResourceType): Promise<boolean> {
    this.check('discovery', res);
    return res.group === '' || this.installed.has(resKey(res));
  }

  async getLease(namespace: string, name: string): Promise<LeaseRecord | undefined> {
    this.check('lease', undefined, name);
    const l = this.leases.get(`${namespace}/${name}`);
    return l ? { ...l } : undefined;
  }

  async createLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord> {
    this.check('lease', undefined, name);
    const k = `${namespace}/${name}`;
    if (this.leases.has(k)) throw new KubeError('AlreadyExists', 409, `leases "${name}" already exists`);
    const rec = { ...lease, resourceVersion: String(++this.rv) };
    this.leases.set(k, rec);
    return { ...rec };
  }

  async updateLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord> {
    this.check('lease', undefined, name);
    const k = `${namespace}/${name}`;
    const cur = this.leases.get(k);
    if (!cur) throw new KubeError('NotFound', 404, `leases "${name}" not found`);
    if (cur.resourceVersion !== lease.resourceVersion) throw new KubeError('Conflict', 409, `leases "${name}": the object has been modified`);
    const rec = { ...lease, resourceVersion: String(++this.rv) };
    this.leases.set(k, rec);
    return { ...rec };
  }

  /** The stored lease (for assertions). */
  lease(namespace: string, name: string): LeaseRecord | undefined {
    const l = this.leases.get(`${namespace}/${name}`);
    return l ? { ...l } : undefined;
  }

  async recordEvent(ev: EventRecord): Promise<void> {
    this.check('event', undefined, ev.name);
    const prev = this.events.find((e) => e.name === ev.name && e.namespace === ev.namespace);
    if (prev) {
      prev.count++;
      prev.time = ev.time;
    } else {
      this.events.push({ ...ev, count: 1 });
    }
  }
}

/** The port's list-then-watch semantics over the fake: list (via the supplied function) unless resuming, then watch. Keeps no objects. */
class FakeListWatch<T extends KubeObject> implements ListWatchSource<T> {
  private readonly cbs: Record<string, ((x: never) => void)[]> = { add: [], update: [], delete: [], error: [], connect: [] };
  private rv = '';
  private watcher: Watcher | undefined;
  private stopped = false;

  constructor(
    private readonly kube: FakeKube,
    private readonly res: ResourceType,
    private readonly opts: ListOptions,
    private readonly listFn: () => Promise<string>,
  ) {}

  on(verb: WatchVerb | 'error' | 'connect', cb: (x: never) => void): void {
    this.cbs[verb]?.push(cb);
  }

  private fire(verb: string, x: unknown): void {
    for (const cb of [...(this.cbs[verb] ?? [])]) (cb as (y: unknown) => void)(x);
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.fire('connect', undefined);
    if (!this.rv) {
      let rv: string;
      try {
        rv = await this.listFn();
      } catch (err) {
        this.fire('error', err);
        return;
      }
      if (this.stopped) return;
      this.rv = rv;
    }
    if (this.stopped) return;
    const w = this.kube.subscribe(this.res, this.opts, Number(this.rv), {
      deliver: (type, obj) => {
        if (this.stopped) return;
        const o = obj as unknown as T;
        // Deliver asynchronously, as a network stream would.
        queueMicrotask(() => {
          if (this.stopped) return;
          this.rv = o.metadata.resourceVersion ?? this.rv;
          this.fire(type === 'DELETED' ? 'delete' : type === 'ADDED' ? 'add' : 'update', o);
        });
      },
      fail: (err) => {
        this.watcher = undefined;
        queueMicrotask(() => !this.stopped && this.fire('error', err));
      },
    });
    if (w instanceof KubeError) {
      // 410: re-list.
      this.rv = '';
      await this.start();
      return;
    }
    this.watcher = w;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.watcher) this.kube.unsubscribe(this.watcher);
    this.watcher = undefined;
  }
}
