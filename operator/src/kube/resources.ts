// The API resources the operator works with, and its names on the API (field manager, finalizer).
import type { ResourceType } from './ports.js';

export const VIRTUALIO_GROUP = 'virtualio.dev';
export const VIRTUALIO_VERSION = 'v1alpha1';
export const VIRTUALIO_API_VERSION = `${VIRTUALIO_GROUP}/${VIRTUALIO_VERSION}`;

export const VirtualIODevices: ResourceType = {
  group: VIRTUALIO_GROUP, version: VIRTUALIO_VERSION, plural: 'virtualiodevices', kind: 'VirtualIODevice', namespaced: false,
};
export const VirtualIONodes: ResourceType = {
  group: VIRTUALIO_GROUP, version: VIRTUALIO_VERSION, plural: 'virtualionodes', kind: 'VirtualIONode', namespaced: false,
};
/** One small object per node whose agent plans locally: what it carried out (controllers/plan/ack.ts). */
export const VirtualIONodeAcks: ResourceType = {
  group: VIRTUALIO_GROUP, version: VIRTUALIO_VERSION, plural: 'virtualionodeacks', kind: 'VirtualIONodeAck', namespaced: false,
};
export const Nodes: ResourceType = { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false };
export const KubeVirts: ResourceType = { group: 'kubevirt.io', version: 'v1', plural: 'kubevirts', kind: 'KubeVirt', namespaced: true };

/** Field manager of everything the operator applies (VirtualIONode.spec, pool status, KubeVirt lists). */
export const FIELD_MANAGER = 'virtualio-operator';
/** Field manager of the agents (VirtualIONode.status). */
export const AGENT_FIELD_MANAGER = 'virtualio-agent';
/** Finalizer the operator keeps on every VirtualIODevice until its slices are released everywhere. */
export const POOL_FINALIZER = 'virtualio.dev/pool-protection';
/** Name of the leader election Lease. */
export const LEASE_NAME = 'virtualio-operator';
/** Reporting component of Events. */
export const COMPONENT = 'virtualio-operator';

export function apiVersionOf(res: ResourceType): string {
  return res.group === '' ? res.version : `${res.group}/${res.version}`;
}
/**
 * Namespace of Events about cluster-scoped objects (VirtualIODevices): the API server rejects
 * core/v1 Events with an empty involvedObject.namespace anywhere else.
 */
export const CLUSTER_EVENTS_NAMESPACE = 'default';
