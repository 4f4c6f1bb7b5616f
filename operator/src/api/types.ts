// The API objects as the operator sees them: the generated CRD types (crds/generated/types.ts) with
// metadata as plain JSON (timestamps are RFC 3339 strings, name always set), as informers deliver them.
import type { PoolPlan, VirtualIODevice, VirtualIODeviceStatus, VirtualIONode } from '../../../crds/generated/types.js';
import type { KubeObject, ObjectMeta } from '../kube/ports.js';

export type { PoolPlan, VirtualIODeviceStatus };

/** A VirtualIODevice (pool). */
export type Pool = Omit<VirtualIODevice, 'metadata'> & { metadata: ObjectMeta };
/** A VirtualIONode (one node's plan and agent report). */
export type VioNode = Omit<VirtualIONode, 'metadata'> & { metadata: ObjectMeta };
/** A core/v1 Node; only metadata is used. */
export type NodeObject = KubeObject;
