// The agent's only runtime importer of @kubernetes/client-node: implements KubeAgentPort.
import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { VirtualIONode, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { KubeAgentPort } from '../agent/cluster.js';
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
        ...(nodeUid ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: nodeUid }] } : {}),
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
    let delay = 500;
    let rv: string | undefined; // undefined: read the object and list for a version to watch from
    while (!signal.aborted) {
      if (rv === undefined) {
        try {
          const obj = await this.get(name);
          onObject(obj);
          rv = obj?.metadata.resourceVersion;
          const list = (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, fieldSelector: `metadata.name=${name}` })) as { metadata?: { resourceVersion?: string } };
          rv = list.metadata?.resourceVersion ?? rv;
        } catch (err) {
          this.log.warn({ err: String(err), retryInMs: delay }, 'cannot read VirtualIONode; retrying');
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 30_000);
          continue;
        }
      }
      // A watch the server ends on schedule resumes from the last version seen (bookmarks
      // included); a failed or expired one (ERROR event, 410) reads the object again.
      let expired = false;
      const ended = await watchOnce(
        this.kc,
        `/apis/${GROUP}/${VERSION}/${PLURAL}`,
        { fieldSelector: `metadata.name=${name}`, resourceVersion: rv, allowWatchBookmarks: true },
        (phase, o) => {
          if (phase === 'ERROR') {
            expired = true;
            return;
          }
          const obj = o as VirtualIONode;
          if (obj?.metadata?.resourceVersion) rv = obj.metadata.resourceVersion;
          if (phase === 'ADDED' || phase === 'MODIFIED') onObject(obj);
          else if (phase === 'DELETED') onObject(undefined);
        },
        signal,
      );
      if (signal.aborted) break;
      if (ended || expired) {
        this.log.debug({ err: String(ended ?? 'expired') }, 'VirtualIONode watch ended; re-listing');
        rv = undefined;
        await new Promise((r) => setTimeout(r, delay));
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
