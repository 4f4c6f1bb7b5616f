// The operator's view of the Kubernetes API. Every module except the adapter (client-node.ts)
// depends on these interfaces only, so reconcilers and the runtime run unchanged against the
// in-memory fake (fake.ts) in unit tests and against a real kube-apiserver in production.

/** The metadata fields the operator reads. Objects are plain JSON as the API server sends them. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** Any Kubernetes object, as plain JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

/** Identifies an API resource (a REST collection). */
export interface ResourceType {
  /** API group; '' for the core group. */
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

export interface ListResult<T extends KubeObject> {
  items: T[];
  resourceVersion: string;
  /** Set when more items follow: pass it back as `ListOptions.continue` for the next page. */
  continue?: string;
}

export interface ListOptions {
  namespace?: string;
  fieldSelector?: string;
  /** Equality-based label selector: `key=value` and bare `key` (exists) terms, comma-separated. */
  labelSelector?: string;
  /** At most this many items per call (a page); `continue` of the result asks for the next one. */
  limit?: number;
  /** The `continue` token of the previous page. */
  continue?: string;
}

/** Verbs a list-then-watch source emits; the same contract as client-node's `ListWatch`. */
export type WatchVerb = 'add' | 'update' | 'delete';

/**
 * A list-then-watch stream of one resource that keeps no objects: `start()` calls the supplied list
 * function unless it already has a resourceVersion (the caller takes in the listed items itself; the
 * function returns the list's resourceVersion), then watches from it with bookmarks, following
 * each bookmark's resourceVersion. A watch the server ends is resumed; 410 Gone lists again. On any
 * other error it emits `error` and stops; the caller decides when to `start()` again. `connect` is
 * emitted on every (re)connection and bookmark: the stream is alive even when nothing changes.
 */
export interface ListWatchSource<T extends KubeObject> {
  on(verb: WatchVerb, cb: (obj: T) => void): void;
  on(verb: 'error' | 'connect', cb: (err?: unknown) => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface ApplyOptions {
  fieldManager: string;
  /** Take ownership of fields another manager owns (SSA `force=true`). */
  force?: boolean;
  /** Apply to the status subresource. */
  subresource?: 'status';
}

export interface MergePatchOptions {
  fieldManager: string;
  namespace?: string;
  /** Patch the status subresource. */
  subresource?: 'status';
}

/** A coordination.k8s.io/v1 Lease, with times as epoch milliseconds (the adapter writes MicroTime). */
export interface LeaseRecord {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: number;
  renewTime?: number;
  leaseTransitions?: number;
  /** Set on reads; required on update (optimistic concurrency). */
  resourceVersion?: string;
}

/** A core/v1 Event about a (cluster-scoped or namespaced) object. */
export interface EventRecord {
  /** Deterministic name; a repeated event with the same name bumps `count`. */
  name: string;
  namespace: string;
  involvedObject: { apiVersion: string; kind: string; name: string; uid?: string; namespace?: string };
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  /** Epoch milliseconds. */
  time: number;
  /** The controller that reports (`source.component` / `reportingComponent`). */
  component: string;
  /** Identity of the reporting instance (`reportingInstance`). */
  instance: string;
}

/**
 * Port for everything the operator asks of the API server. Errors are always `KubeError`
 * (see errors.ts), never transport-specific exceptions.
 */
export interface KubePort {
  list<T extends KubeObject>(res: ResourceType, opts?: ListOptions): Promise<ListResult<T>>;
  /**
   * A new list-then-watch source; `list` is called whenever the source needs a fresh list and
   * returns the resourceVersion to watch from (the listed items are the caller's business).
   */
  listWatch<T extends KubeObject>(res: ResourceType, opts: ListOptions, list: () => Promise<string>): ListWatchSource<T>;
  /** The object, or undefined when it does not exist. */
  get<T extends KubeObject>(res: ResourceType, name: string, namespace?: string): Promise<T | undefined>;
  /** Server-side apply of `obj` (which must carry apiVersion, kind and metadata.name). */
  apply<T extends KubeObject>(res: ResourceType, obj: KubeObject & Record<string, unknown>, opts: ApplyOptions): Promise<T>;
  /**
   * JSON merge patch (RFC 7386). A `metadata.resourceVersion` in the patch makes it conditional
   * (Conflict when stale), which is how the operator changes finalizers without a full update.
   */
  mergePatch<T extends KubeObject>(res: ResourceType, name: string, patch: Record<string, unknown>, opts: MergePatchOptions): Promise<T>;
  /** PUT with optimistic concurrency on `metadata.resourceVersion` (Conflict when stale). */
  replace<T extends KubeObject>(res: ResourceType, obj: T): Promise<T>;
  create<T extends KubeObject>(res: ResourceType, obj: T): Promise<T>;
  delete(res: ResourceType, name: string, namespace?: string): Promise<void>;
  /** Discovery: whether the API server serves this resource right now. */
  resourceExists(res: ResourceType): Promise<boolean>;
  getLease(namespace: string, name: string): Promise<LeaseRecord | undefined>;
  createLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord>;
  /** Replaces the lease; Conflict when `lease.resourceVersion` is stale. */
  updateLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord>;
  /** Creates the event, or bumps count and last time when one with its name exists. */
  recordEvent(ev: EventRecord): Promise<void>;
}
