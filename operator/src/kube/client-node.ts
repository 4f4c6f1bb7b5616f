// The adapter: the ONLY operator module that imports @kubernetes/client-node at run time. It turns
// KubePort calls into client-node calls, returns plain JSON objects, writes Lease times as
// MicroTime (V1MicroTime, six fractional digits) and maps every failure to a KubeError.
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  ServerConfiguration,
  V1MicroTime,
  Watch,
  createConfiguration,
  setHeaderOptions,
  type CoreV1Event,
  type KubernetesListObject,
  type KubernetesObject,
  type RequestContext,
  type V1Lease,
} from '@kubernetes/client-node';
import { KubeError, classifyStatus } from './errors.js';
import { WatchSource } from './watch-source.js';
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
} from './ports.js';

/** Where the adapter gets its credentials. */
export interface ClientNodeOptions {
  /** Path of a kubeconfig file; in-cluster service account credentials when absent. */
  kubeconfig?: string;
}

/** Loads credentials the way kubectl does for a file, or in-cluster. */
export function loadKubeConfig(opts: ClientNodeOptions): KubeConfig {
  const kc = new KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

/** Converts any thrown value of client-node (ApiException, fetch errors) into a KubeError. */
export function toKubeError(err: unknown, what: string): KubeError {
  if (err instanceof KubeError) return err;
  if (err instanceof ApiException) {
    const code = (err as ApiException<unknown>).code;
    let reason: string | undefined;
    let message = `HTTP ${code}`;
    const body: unknown = (err as ApiException<unknown>).body;
    let parsed: unknown = body;
    // The body arrives as the Status object, its JSON text, or that text JSON-encoded once more.
    for (let i = 0; i < 2 && typeof parsed === 'string'; i++) {
      try {
        parsed = JSON.parse(parsed);
      } catch {
        parsed = undefined;
      }
    }
    if (parsed && typeof parsed === 'object') {
      const st = parsed as { reason?: string; message?: string };
      reason = st.reason;
      if (st.message) message = st.message;
    }
    return new KubeError(classifyStatus(code, reason), code, `${what}: ${message}`, { cause: err });
  }
  const code = typeof (err as { statusCode?: unknown })?.statusCode === 'number' ? (err as { statusCode: number }).statusCode : 0;
  const msg = err instanceof Error ? err.message : String(err);
  return new KubeError(code ? classifyStatus(code) : 'Transient', code, `${what}: ${msg}`, { cause: err });
}

/** Plain JSON (no class instances, Dates as RFC 3339 strings), as a watch would deliver it. */
function plain<T>(obj: unknown): T {
  return JSON.parse(JSON.stringify(obj)) as T;
}

function collectionPath(res: ResourceType, namespace?: string): string {
  const base = res.group === '' ? `/api/${res.version}` : `/apis/${res.group}/${res.version}`;
  return res.namespaced && namespace ? `${base}/namespaces/${namespace}/${res.plural}` : `${base}/${res.plural}`;
}

const isNodes = (res: ResourceType) => res.group === '' && res.plural === 'nodes';

function toMs(t: unknown): number | undefined {
  if (t === undefined || t === null) return undefined;
  if (t instanceof Date) return t.getTime();
  const ms = Date.parse(String(t));
  return Number.isNaN(ms) ? undefined : ms;
}

function leaseFromApi(l: V1Lease): LeaseRecord {
  return {
    holderIdentity: l.spec?.holderIdentity ?? undefined,
    leaseDurationSeconds: l.spec?.leaseDurationSeconds,
    acquireTime: toMs(l.spec?.acquireTime),
    renewTime: toMs(l.spec?.renewTime),
    leaseTransitions: l.spec?.leaseTransitions,
    resourceVersion: l.metadata?.resourceVersion,
  };
}

function leaseToApi(namespace: string, name: string, rec: LeaseRecord): V1Lease {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace, resourceVersion: rec.resourceVersion },
    spec: {
      holderIdentity: rec.holderIdentity,
      leaseDurationSeconds: rec.leaseDurationSeconds,
      // MicroTime on the wire: the API server rejects millisecond precision.
      acquireTime: rec.acquireTime === undefined ? undefined : new V1MicroTime(rec.acquireTime),
      renewTime: rec.renewTime === undefined ? undefined : new V1MicroTime(rec.renewTime),
      leaseTransitions: rec.leaseTransitions,
    },
  };
}

/**
 * Credentials that reuse one connection pool. client-node 2.0.1 builds a new undici Agent for
 * every request when the kubeconfig has TLS settings, so every call paid a TLS handshake and left
 * its sockets behind (CPU on both sides, and memory: the 1,000-node benchmark found it). This keeps
 * the first dispatcher and hands it to every later request and watch. Tokens are still applied per
 * request; TLS client certificates are fixed for the process lifetime.
 */
function sharedDispatcherAuth(kc: KubeConfig, requestTimeoutMs: number) {
  let shared: ReturnType<RequestContext['getDispatcher']> | undefined;
  return {
    getName: () => 'virtualio-shared-dispatcher',
    getCurrentCluster: () => kc.getCurrentCluster(),
    async applySecurityAuthentication(ctx: RequestContext): Promise<void> {
      await kc.applySecurityAuthentication(ctx);
      if (shared === undefined) shared = ctx.getDispatcher();
      else ctx.setDispatcher(shared);
      // Every call but a watch gets a deadline: one request the API server never answers (seen on a
      // server-side apply to a CRD created the same second, during a chart install) must fail and be
      // retried, not hold its controller's key for ever. Watches have their own silence watchdog.
      if (!ctx.getSignal() && !/[?&]watch=(true|1)\b/.test(ctx.getUrl())) ctx.setSignal(AbortSignal.timeout(requestTimeoutMs));
    },
  };
}

/** Deadline of one API call (not of a watch). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;

/** KubePort over a real API server through @kubernetes/client-node. */
export class ClientNodeKube implements KubePort {
  private readonly custom: CustomObjectsApi;
  private readonly core: CoreV1Api;
  private readonly coordination: CoordinationV1Api;
  private readonly watch: Watch;

  constructor(kc: KubeConfig, requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('kubeconfig has no current cluster');
    const auth = sharedDispatcherAuth(kc, requestTimeoutMs);
    const config = createConfiguration({ baseServer: new ServerConfiguration(cluster.server, {}), authMethods: { default: auth } });
    this.custom = new CustomObjectsApi(config);
    this.core = new CoreV1Api(config);
    this.coordination = new CoordinationV1Api(config);
    this.watch = new Watch(auth as unknown as KubeConfig);
  }

  /** Builds the adapter from a kubeconfig path or in-cluster credentials. */
  static fromOptions(opts: ClientNodeOptions): ClientNodeKube {
    return new ClientNodeKube(loadKubeConfig(opts));
  }

  async list<T extends KubeObject>(res: ResourceType, opts: ListOptions = {}): Promise<ListResult<T>> {
    try {
      let list: KubernetesListObject<KubernetesObject>;
      const page = { limit: opts.limit, _continue: opts.continue };
      if (isNodes(res)) {
        list = plain(await this.core.listNode({ fieldSelector: opts.fieldSelector, labelSelector: opts.labelSelector, ...page }));
      } else if (res.group === '') {
        throw new KubeError('Invalid', 0, `list ${res.plural}: core resource not supported by the adapter`);
      } else if (res.namespaced && opts.namespace) {
        list = (await this.custom.listNamespacedCustomObject({
          group: res.group, version: res.version, namespace: opts.namespace, plural: res.plural, fieldSelector: opts.fieldSelector,
          labelSelector: opts.labelSelector, ...page,
        })) as KubernetesListObject<KubernetesObject>;
      } else {
        list = (await this.custom.listClusterCustomObject({
          group: res.group, version: res.version, plural: res.plural, fieldSelector: opts.fieldSelector,
          labelSelector: opts.labelSelector, ...page,
        })) as KubernetesListObject<KubernetesObject>;
      }
      const apiVersion = res.group === '' ? res.version : `${res.group}/${res.version}`;
      // Typed lists drop apiVersion/kind on items; put them back so every object looks the same.
      const items = list.items ?? [];
      for (const it of items) {
        it.apiVersion ??= apiVersion;
        it.kind ??= res.kind;
      }
      const cont = list.metadata?._continue ?? (list.metadata as { continue?: string } | undefined)?.continue;
      return { items: items as unknown as T[], resourceVersion: list.metadata?.resourceVersion ?? '', ...(cont ? { continue: cont } : {}) };
    } catch (err) {
      throw toKubeError(err, `list ${res.plural}`);
    }
  }

  listWatch<T extends KubeObject>(res: ResourceType, opts: ListOptions, list: () => Promise<string>): ListWatchSource<T> {
    return new WatchSource<T>(this.watch, {
      path: collectionPath(res, opts.namespace), labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, list,
    });
  }

  async get<T extends KubeObject>(res: ResourceType, name: string, namespace?: string): Promise<T | undefined> {
    try {
      if (isNodes(res)) return plain<T>({ apiVersion: 'v1', kind: 'Node', ...(await this.core.readNode({ name })) });
      if (res.namespaced) {
        return (await this.custom.getNamespacedCustomObject({
          group: res.group, version: res.version, namespace: namespace ?? '', plural: res.plural, name,
        })) as T;
      }
      return (await this.custom.getClusterCustomObject({ group: res.group, version: res.version, plural: res.plural, name })) as T;
    } catch (err) {
      const e = toKubeError(err, `get ${res.plural}/${name}`);
      if (e.kind === 'NotFound') return undefined;
      throw e;
    }
  }

  async apply<T extends KubeObject>(res: ResourceType, obj: KubeObject & Record<string, unknown>, opts: ApplyOptions): Promise<T> {
    const name = obj.metadata.name;
    const ssa = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
    const common = {
      group: res.group, version: res.version, plural: res.plural, name, body: obj,
      fieldManager: opts.fieldManager, force: opts.force ?? false,
    };
    try {
      if (res.group === '') throw new KubeError('Invalid', 0, `apply ${res.plural}: core resource not supported by the adapter`);
      if (res.namespaced) {
        const namespace = obj.metadata.namespace ?? '';
        return (opts.subresource === 'status'
          ? await this.custom.patchNamespacedCustomObjectStatus({ ...common, namespace }, ssa)
          : await this.custom.patchNamespacedCustomObject({ ...common, namespace }, ssa)) as T;
      }
      return (opts.subresource === 'status'
        ? await this.custom.patchClusterCustomObjectStatus(common, ssa)
        : await this.custom.patchClusterCustomObject(common, ssa)) as T;
    } catch (err) {
      throw toKubeError(err, `apply ${res.plural}/${name}${opts.subresource ? '/status' : ''}`);
    }
  }

  async mergePatch<T extends KubeObject>(res: ResourceType, name: string, patch: Record<string, unknown>, opts: MergePatchOptions): Promise<T> {
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const common = { group: res.group, version: res.version, plural: res.plural, name, body: patch, fieldManager: opts.fieldManager };
    try {
      if (res.group === '') throw new KubeError('Invalid', 0, `patch ${res.plural}: core resource not supported by the adapter`);
      if (res.namespaced) {
        const namespace = opts.namespace ?? '';
        return (opts.subresource === 'status'
          ? await this.custom.patchNamespacedCustomObjectStatus({ ...common, namespace }, merge)
          : await this.custom.patchNamespacedCustomObject({ ...common, namespace }, merge)) as T;
      }
      return (opts.subresource === 'status'
        ? await this.custom.patchClusterCustomObjectStatus(common, merge)
        : await this.custom.patchClusterCustomObject(common, merge)) as T;
    } catch (err) {
      throw toKubeError(err, `patch ${res.plural}/${name}${opts.subresource ? '/status' : ''}`);
    }
  }

  async replace<T extends KubeObject>(res: ResourceType, obj: T): Promise<T> {
    const name = obj.metadata.name;
    try {
      if (isNodes(res)) return plain<T>(await this.core.replaceNode({ name, body: obj as never }));
      if (res.namespaced) {
        return (await this.custom.replaceNamespacedCustomObject({
          group: res.group, version: res.version, namespace: obj.metadata.namespace ?? '', plural: res.plural, name, body: obj,
        })) as T;
      }
      return (await this.custom.replaceClusterCustomObject({
        group: res.group, version: res.version, plural: res.plural, name, body: obj,
      })) as T;
    } catch (err) {
      throw toKubeError(err, `replace ${res.plural}/${name}`);
    }
  }

  async create<T extends KubeObject>(res: ResourceType, obj: T): Promise<T> {
    const name = obj.metadata.name;
    try {
      if (isNodes(res)) return plain<T>(await this.core.createNode({ body: obj as never }));
      if (res.namespaced) {
        return (await this.custom.createNamespacedCustomObject({
          group: res.group, version: res.version, namespace: obj.metadata.namespace ?? '', plural: res.plural, body: obj,
        })) as T;
      }
      return (await this.custom.createClusterCustomObject({ group: res.group, version: res.version, plural: res.plural, body: obj })) as T;
    } catch (err) {
      throw toKubeError(err, `create ${res.plural}/${name}`);
    }
  }

  async delete(res: ResourceType, name: string, namespace?: string): Promise<void> {
    try {
      if (isNodes(res)) await this.core.deleteNode({ name });
      else if (res.namespaced) {
        await this.custom.deleteNamespacedCustomObject({ group: res.group, version: res.version, namespace: namespace ?? '', plural: res.plural, name });
      } else {
        await this.custom.deleteClusterCustomObject({ group: res.group, version: res.version, plural: res.plural, name });
      }
    } catch (err) {
      const e = toKubeError(err, `delete ${res.plural}/${name}`);
      if (e.kind !== 'NotFound') throw e;
    }
  }

  async resourceExists(res: ResourceType): Promise<boolean> {
    if (res.group === '') return true;
    try {
      const list = await this.custom.getAPIResources({ group: res.group, version: res.version });
      return (list.resources ?? []).some((r) => r.name === res.plural);
    } catch (err) {
      const e = toKubeError(err, `discover ${res.group}/${res.version}`);
      if (e.kind === 'NotFound') return false;
      throw e;
    }
  }

  async getLease(namespace: string, name: string): Promise<LeaseRecord | undefined> {
    try {
      return leaseFromApi(await this.coordination.readNamespacedLease({ name, namespace }));
    } catch (err) {
      const e = toKubeError(err, `get lease ${namespace}/${name}`);
      if (e.kind === 'NotFound') return undefined;
      throw e;
    }
  }

  async createLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord> {
    try {
      const body = leaseToApi(namespace, name, { ...lease, resourceVersion: undefined });
      return leaseFromApi(await this.coordination.createNamespacedLease({ namespace, body }));
    } catch (err) {
      throw toKubeError(err, `create lease ${namespace}/${name}`);
    }
  }

  async updateLease(namespace: string, name: string, lease: LeaseRecord): Promise<LeaseRecord> {
    try {
      return leaseFromApi(await this.coordination.replaceNamespacedLease({ name, namespace, body: leaseToApi(namespace, name, lease) }));
    } catch (err) {
      throw toKubeError(err, `update lease ${namespace}/${name}`);
    }
  }

  async recordEvent(ev: EventRecord): Promise<void> {
    const when = new Date(ev.time);
    const body: CoreV1Event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name: ev.name, namespace: ev.namespace },
      involvedObject: ev.involvedObject,
      type: ev.type,
      reason: ev.reason,
      message: ev.message,
      count: 1,
      firstTimestamp: when,
      lastTimestamp: when,
      source: { component: ev.component },
      reportingComponent: ev.component,
      reportingInstance: ev.instance,
    };
    try {
      await this.core.createNamespacedEvent({ namespace: ev.namespace, body });
      return;
    } catch (err) {
      const e = toKubeError(err, `create event ${ev.namespace}/${ev.name}`);
      if (e.kind !== 'AlreadyExists') throw e;
    }
    try {
      const cur = await this.core.readNamespacedEvent({ name: ev.name, namespace: ev.namespace });
      cur.count = (cur.count ?? 1) + 1;
      cur.lastTimestamp = when;
      await this.core.replaceNamespacedEvent({ name: ev.name, namespace: ev.namespace, body: cur });
    } catch (err) {
      throw toKubeError(err, `update event ${ev.namespace}/${ev.name}`);
    }
  }
}
