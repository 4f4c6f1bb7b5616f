// client-node implementation of what the DRA driver needs from the API server: this node's
// ResourceSlices of driver virtualio.dev, reading ResourceClaims, and listing and watching every
// ResourceClaim (the ones allocated here). Loaded only with --dra.
import { CoreV1Api, PatchStrategy, ResourceV1Api, setHeaderOptions, type ConfigurationOptions, type KubeConfig, type V1ResourceSlice } from '@kubernetes/client-node';
import { setTimeout as pause } from 'node:timers/promises';
import type { SetDeviceCondition } from './ondemand.js';
import type { ClaimEventType, ClaimListWatch } from './claims.js';
import { watchOnce } from '../kube/watch.js';
import type { ClaimObject } from './prepare.js';
import { DRA_DRIVER, type ResourceSliceObject } from './devices.js';
import type { ResourceSliceStore } from './publisher.js';

const FIELD_MANAGER = 'virtualio-agent';

function httpCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown; statusCode?: unknown }).code ?? (err as { statusCode?: unknown }).statusCode;
  return typeof c === 'number' ? c : undefined;
}

/**
 * client-node's model names the integer attribute value `_int` (JSON `int`) and its serializer drops
 * keys it does not know, so attributes are renamed on the way out and back in.
 */
function renameInts(obj: ResourceSliceObject, from: string, to: string): ResourceSliceObject {
  // An object of counter sets has no devices at all (the API refuses both in one object, even `[]`).
  if (obj.spec.devices === undefined) return obj;
  const devices = obj.spec.devices.map((d) => ({
    ...d,
    attributes: Object.fromEntries(Object.entries(d.attributes ?? {}).map(([k, v]) => {
      const rec = v as Record<string, unknown>;
      if (!(from in rec)) return [k, v];
      const { [from]: n, ...rest } = rec;
      return [k, { ...rest, [to]: n }];
    })),
  }));
  return { ...obj, spec: { ...obj.spec, devices } } as ResourceSliceObject;
}

const toApi = (o: ResourceSliceObject): V1ResourceSlice => renameInts(o, 'int', '_int') as unknown as V1ResourceSlice;
const fromApi = (o: V1ResourceSlice): ResourceSliceObject => renameInts(o as unknown as ResourceSliceObject, '_int', 'int');

/** ResourceSlices of our driver on one node (field selectors spec.nodeName and spec.driver). */
export class KubeResourceSliceStore implements ResourceSliceStore {
  private readonly api: ResourceV1Api;

  constructor(private readonly kc: KubeConfig, private readonly node: string) {
    this.api = kc.makeApiClient(ResourceV1Api);
  }

  /**
   * Watches this node's slices of our driver; any deletion makes the publisher re-list. Each watch
   * resumes from the last version seen, so a deletion between two watch requests is not missed; a
   * failed watch starts again from the current state after a second.
   */
  async watch(onChange: () => void, signal: AbortSignal): Promise<void> {
    let rv: string | undefined;
    while (!signal.aborted) {
      let expired = false;
      const failed = await watchOnce(this.kc, '/apis/resource.k8s.io/v1/resourceslices', { fieldSelector: this.selector(), resourceVersion: rv, allowWatchBookmarks: true }, (type, obj) => {
        const v = (obj as { metadata?: { resourceVersion?: string } } | undefined)?.metadata?.resourceVersion;
        if (type === 'ERROR') {
          expired = true; // 410 Gone and the like: the request ends, and the next starts afresh
          return;
        }
        if (v) rv = v;
        if (type === 'DELETED') onChange();
      }, signal);
      if (signal.aborted) break;
      if (failed || expired) {
        rv = undefined; // a fresh watch: the server sends the current slices as ADDED, which is harmless
        onChange(); // whatever was missed meanwhile, the publisher's re-list sees it
        await pause(1000, undefined, { signal }).catch(() => undefined); // a shutdown does not wait out the pause
      }
    }
  }

  private selector(): string {
    return `spec.nodeName=${this.node},spec.driver=${DRA_DRIVER}`;
  }

  async list(): Promise<ResourceSliceObject[]> {
    const l = await this.api.listResourceSlice({ fieldSelector: this.selector() });
    return l.items.map(fromApi);
  }

  /** Returns the object as the API server stored it (fields it does not know or serve are gone). */
  async create(obj: ResourceSliceObject): Promise<ResourceSliceObject> {
    return fromApi(await this.api.createResourceSlice({ body: toApi(obj), fieldManager: FIELD_MANAGER }));
  }

  async update(obj: ResourceSliceObject): Promise<ResourceSliceObject> {
    if (!obj.metadata.name) throw new Error('updating a ResourceSlice needs its name');
    return fromApi(await this.api.replaceResourceSlice({ name: obj.metadata.name, body: toApi(obj), fieldManager: FIELD_MANAGER }));
  }

  async remove(name: string): Promise<void> {
    try {
      await this.api.deleteResourceSlice({ name });
    } catch (err) {
      if (httpCode(err) !== 404) throw err;
    }
  }
}

/**
 * Request options that abort the HTTP request when `signal` aborts (client-node runs the request
 * through fetch, which takes the signal from the request context).
 */
function abortable(signal: AbortSignal | undefined): ConfigurationOptions | undefined {
  if (!signal) return undefined;
  // client-node's middleware returns its own minimal Observable: anything with toPromise() will do.
  const pass = <T>(v: T) => ({ toPromise: () => Promise.resolve(v) });
  return {
    middleware: [{
      pre: (ctx: { setSignal(s: AbortSignal): void }) => {
        ctx.setSignal(signal);
        return pass(ctx);
      },
      post: <T>(rsp: T) => pass(rsp),
    }],
    middlewareMergeStrategy: 'append',
  } as unknown as ConfigurationOptions;
}

/** Reads a ResourceClaim (resource.k8s.io/v1); undefined when it does not exist. `signal` aborts the request. */
export function claimReader(kc: KubeConfig): (namespace: string, name: string, signal?: AbortSignal) => Promise<ClaimObject | undefined> {
  const api = kc.makeApiClient(ResourceV1Api);
  return async (namespace, name, signal) => {
    try {
      return (await api.readNamespacedResourceClaim({ namespace, name }, abortable(signal))) as unknown as ClaimObject;
    } catch (err) {
      if (httpCode(err) === 404) return undefined;
      throw err;
    }
  };
}

/** Every ResourceClaim of the cluster, listed in pages of 500 and watched (the DRA driver's allocated claims). */
export class KubeClaimListWatch implements ClaimListWatch {
  private readonly api: ResourceV1Api;

  constructor(private readonly kc: KubeConfig) {
    this.api = kc.makeApiClient(ResourceV1Api);
  }

  async list(signal: AbortSignal): Promise<{ items: ClaimObject[]; resourceVersion: string }> {
    const items: ClaimObject[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await this.api.listResourceClaimForAllNamespaces({ limit: 500, ...(cont ? { _continue: cont } : {}) }, abortable(signal));
      items.push(...(page.items as unknown as ClaimObject[]));
      rv ||= page.metadata?.resourceVersion ?? ''; // the first page's version: the snapshot every page comes from
      cont = page.metadata?._continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  watch(resourceVersion: string, onEvent: (type: ClaimEventType, obj: unknown) => void, signal: AbortSignal): Promise<unknown> {
    return watchOnce(this.kc, '/apis/resource.k8s.io/v1/resourceclaims', { resourceVersion, allowWatchBookmarks: true }, (type, obj) => onEvent(type as ClaimEventType, obj), signal);
  }
}

/** The Node's UID (owner of our ResourceSlices), or undefined when it cannot be read. */
export function nodeUidReader(kc: KubeConfig, node: string): () => Promise<string | undefined> {
  const core = kc.makeApiClient(CoreV1Api);
  return async () => {
    try {
      return (await core.readNode({ name: node })).metadata?.uid;
    } catch {
      return undefined;
    }
  };
}

/**
 * Sets one condition of one allocated device in a claim's status (server-side apply on the status
 * subresource, field manager virtualio-agent): the entry is keyed by driver, pool and device, so
 * other drivers' entries and the scheduler's fields are untouched. The claim's UID is a
 * precondition: a claim re-created under the same name is another claim.
 */
export function deviceConditionWriter(kc: KubeConfig): SetDeviceCondition {
  const api = kc.makeApiClient(ResourceV1Api);
  return async (claim, device, cond) => {
    const body = {
      apiVersion: 'resource.k8s.io/v1',
      kind: 'ResourceClaim',
      metadata: { name: claim.name, namespace: claim.namespace, uid: claim.uid },
      status: { devices: [{ ...device, conditions: [{ ...cond, lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }] }] },
    };
    await api.patchNamespacedResourceClaimStatus(
      { name: claim.name, namespace: claim.namespace, body, fieldManager: FIELD_MANAGER, force: true },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
  };
}
