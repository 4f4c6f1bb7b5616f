// The agent's only runtime importer of @kubernetes/client-node: implements KubeAgentPort.
import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { setTimeout as pause } from 'node:timers/promises';
import type { PoolAck, VirtualIONode, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { KubeAgentPort } from '../agent/cluster.js';
import type { KubeItem } from '../agent/local-plan.js';
import type { Logger } from '../log.js';
import type { PodInfo } from '../podresources/client.js';
import { watchOnce } from './watch.js';

const GROUP = 'virtualio.dev';
const VERSION = 'v1alpha1';
const PLURAL = 'virtualionodes';
/** Field manager of everything the agent writes. */
export const FIELD_MANAGER = 'virtualio-agent';

function httpCode(err: unknown): number | undefined {
  const c = (err as { code?: unknown; statusCode?: unknown }).code ?? (err as { statusCode?: unknown }).statusCode;
  return typeof c === 'number' ? c : undefined;
}

/** Loads credentials: a kubeconfig file, or the in-cluster service account. */
export function loadKubeConfig(kubeconfig: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

/** Metadata that makes an object garbage with its Node (nothing when the Node's UID is unknown). */
function ownedByNode(name: string, uid: string | undefined): { ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string }[] } {
  return uid ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid }] } : {};
}

/** client-node implementation of the agent's API needs. */
export class KubeAdapter implements KubeAgentPort {
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly log: Logger;

  constructor(
    private readonly kc: KubeConfig,
    logger: Logger,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.log = logger.child({ component: 'kube' });
  }

  async getNodeUid(name: string): Promise<string | undefined> {
    try {
      const node = await this.core.readNode({ name });
      return node.metadata?.uid;
    } catch (err) {
      if (httpCode(err) === 404) return undefined;
      throw err;
    }
  }

  private async get(name: string): Promise<VirtualIONode | undefined> {
    try {
      return (await this.custom.getClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, name })) as VirtualIONode;
    } catch (err) {
      if (httpCode(err) === 404) return undefined;
      throw err;
    }
  }

  async ensureVirtualIONode(name: string, nodeUid: string | undefined): Promise<VirtualIONode> {
    const existing = await this.get(name);
    if (existing) return existing;
    const body: VirtualIONode = {
      apiVersion: `${GROUP}/${VERSION}`,
      kind: 'VirtualIONode',
      metadata: {
        name,
        labels: { 'app.kubernetes.io/managed-by': FIELD_MANAGER },
        ...ownedByNode(name, nodeUid),
      },
      // No spec.pools: the agent never writes a plan; "no plan yet" keeps whatever exists.
      spec: {},
    };
    try {
      const created = (await this.custom.createClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, body, fieldManager: FIELD_MANAGER })) as VirtualIONode;
      this.log.info({ name }, 'created VirtualIONode');
      return created;
    } catch (err) {
      if (httpCode(err) === 409) {
        const again = await this.get(name);
        if (again) return again;
      }
      throw err;
    }
  }

  async watchVirtualIONode(name: string, onObject: (obj: VirtualIONode | undefined) => void, signal: AbortSignal): Promise<void> {
    await this.listAndWatch('VirtualIONode', `/apis/${GROUP}/${VERSION}/${PLURAL}`, { fieldSelector: `metadata.name=${name}` }, async () => {
      const obj = await this.get(name);
      onObject(obj);
      const list = (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, fieldSelector: `metadata.name=${name}` })) as { metadata?: { resourceVersion?: string } };
      return list.metadata?.resourceVersion ?? obj?.metadata.resourceVersion;
    }, (phase, o) => onObject(phase === 'DELETED' ? undefined : (o as unknown as VirtualIONode)), signal);
  }

  /**
   * Keeps `onItems` told of every VirtualIODevice (local planning): a list, then a watch resumed from
   * the last version seen; a watch that fails or expires lists again. Each change passes the whole set.
   */
  async watchPools(onItems: (pools: KubeItem[]) => void, signal: AbortSignal): Promise<void> {
    const items = new Map<string, KubeItem>();
    await this.listAndWatch('VirtualIODevices', `/apis/${GROUP}/${VERSION}/virtualiodevices`, {}, async () => {
      const list = (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: 'virtualiodevices' })) as { items?: KubeItem[]; metadata?: { resourceVersion?: string } };
      items.clear();
      for (const o of list.items ?? []) items.set(o.metadata.name, o);
      onItems([...items.values()]);
      return list.metadata?.resourceVersion;
    }, (phase, o) => {
      if (phase === 'DELETED') items.delete(o.metadata.name);
      else items.set(o.metadata.name, o);
      onItems([...items.values()]);
    }, signal);
  }

  /** Keeps `onNode` told of this node's Node object (undefined: it does not exist): a get, then a watch of that one name. */
  async watchNode(name: string, onNode: (node: KubeItem | undefined) => void, signal: AbortSignal): Promise<void> {
    await this.listAndWatch('Node', '/api/v1/nodes', { fieldSelector: `metadata.name=${name}` }, async () => {
      let node: KubeItem | undefined;
      try {
        node = (await this.core.readNode({ name })) as unknown as KubeItem;
      } catch (err) {
        if (httpCode(err) !== 404) throw err;
      }
      onNode(node);
      // A watch from the object's version; with no object, from now (a 404 carries no version: list the name).
      if (node?.metadata.resourceVersion) return node.metadata.resourceVersion;
      const list = await this.core.listNode({ fieldSelector: `metadata.name=${name}` });
      return list.metadata?.resourceVersion;
    }, (phase, o) => onNode(phase === 'DELETED' ? undefined : o), signal);
  }

  /**
   * Read (`read` returns the version to watch from), then watch from there. A watch the server ends
   * on schedule resumes from the last version seen (bookmarks included); a failed or expired one
   * (ERROR event, 410) reads again.
   */
  private async listAndWatch(what: string, path: string, params: Record<string, string>, read: () => Promise<string | undefined>,
    onEvent: (phase: string, obj: KubeItem) => void, signal: AbortSignal): Promise<void> {
    let delay = 500;
    let rv: string | undefined;
    while (!signal.aborted) {
      if (rv === undefined) {
        try {
          rv = await read();
        } catch (err) {
          this.log.warn({ err: String(err), retryInMs: delay }, `cannot read ${what}; retrying`);
          await pause(delay, undefined, { signal }).catch(() => undefined); // a shutdown does not wait out a backoff
          delay = Math.min(delay * 2, 30_000);
          continue;
        }
      }
      let expired = false;
      const ended = await watchOnce(this.kc, path, { ...params, resourceVersion: rv, allowWatchBookmarks: true }, (phase, o) => {
        if (phase === 'ERROR') {
          expired = true;
          return;
        }
        const obj = o as KubeItem;
        if (obj?.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
        if (phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') onEvent(phase, obj);
      }, signal);
      if (signal.aborted) break;
      if (ended || expired) {
        this.log.debug({ err: String(ended ?? 'expired') }, `${what} watch ended; reading again`);
        rv = undefined;
        await pause(delay, undefined, { signal }).catch(() => undefined);
        delay = Math.min(delay * 2, 30_000);
      } else delay = 500;
    }
  }

  async applyStatus(name: string, status: VirtualIONodeStatus): Promise<void> {
    await this.custom.patchClusterCustomObjectStatus(
      {
        group: GROUP,
        version: VERSION,
        plural: PLURAL,
        name,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'VirtualIONode', metadata: { name }, status },
        fieldManager: FIELD_MANAGER,
        force: true,
      },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
  }

  async applyAck(name: string, pools: PoolAck[], nodeUid: string | undefined): Promise<void> {
    await this.custom.patchClusterCustomObject(
      {
        group: GROUP,
        version: VERSION,
        plural: 'virtualionodeacks',
        name,
        body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'VirtualIONodeAck', metadata: { name, ...ownedByNode(name, nodeUid) }, status: { pools } },
        fieldManager: FIELD_MANAGER,
        force: true,
      },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
  }

  async getPod(namespace: string, name: string): Promise<PodInfo | undefined> {
    try {
      const pod = await this.core.readNamespacedPod({ namespace, name });
      const info: PodInfo = {};
      if (pod.metadata?.uid) info.uid = pod.metadata.uid;
      if (pod.status?.phase) info.phase = pod.status.phase;
      if (pod.metadata?.labels) info.labels = pod.metadata.labels;
      if (pod.metadata?.ownerReferences) info.ownerReferences = pod.metadata.ownerReferences.map((o) => ({ kind: o.kind, name: o.name }));
      return info;
    } catch (err) {
      if (httpCode(err) === 404) return undefined;
      throw err;
    }
  }
}
