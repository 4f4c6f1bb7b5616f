// Conditions as in apimachinery's SetStatusCondition: lastTransitionTime moves only when the status
// changes; reason, message and observedGeneration are updated in place.
import type { VirtualIODeviceStatus } from '../../../crds/generated/types.js';

export type Condition = NonNullable<VirtualIODeviceStatus['conditions']>[number];

export const ConditionType = {
  Ready: 'Ready',
  Progressing: 'Progressing',
  Degraded: 'Degraded',
  Conflict: 'Conflict',
  KubeVirtPermitted: 'KubeVirtPermitted',
  /** kstatus: True while the nodes carry out the latest plan (InProgress). */
  Reconciling: 'Reconciling',
  /** kstatus: True when waiting will not help: a conflict or a failed carving (Failed). */
  Stalled: 'Stalled',
  /** Pools with spec.tenancy: True while the API server enforces it (the admission policy is written). */
  TenancyEnforced: 'TenancyEnforced',
} as const;
export type ConditionType = (typeof ConditionType)[keyof typeof ConditionType];

/** Stable CamelCase reasons, one vocabulary for conditions and Events. */
export const Reason = {
  AllNodesReady: 'AllNodesReady',
  NodesNotReady: 'NodesNotReady',
  NoMatchingNodes: 'NoMatchingNodes',
  NoMatchingDevices: 'NoMatchingDevices',
  Carving: 'Carving',
  Stable: 'Stable',
  AsExpected: 'AsExpected',
  CarvingFailed: 'CarvingFailed',
  CarvingBlocked: 'CarvingBlocked',
  UnhealthySlices: 'UnhealthySlices',
  NoConflict: 'NoConflict',
  DeviceConflict: 'DeviceConflict',
  ResourceNameConflict: 'ResourceNameConflict',
  Deleting: 'Deleting',
  DeletionBlocked: 'DeletionBlocked',
  Permitted: 'Permitted',
  NotRequired: 'NotRequired',
  PermitDisabled: 'PermitDisabled',
  KubeVirtNotInstalled: 'KubeVirtNotInstalled',
  KubeVirtNotFound: 'KubeVirtNotFound',
  NotManaged: 'NotManaged',
  ApplyPending: 'ApplyPending',
  Contested: 'Contested',
  WaitingForInventory: 'WaitingForInventory',
  PolicyInForce: 'PolicyInForce',
  PolicyWriteFailed: 'PolicyWriteFailed',
  TenancyPending: 'TenancyPending',
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

export interface ConditionInput {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  reason: Reason;
  message: string;
  observedGeneration?: number;
}

/** RFC 3339 with second precision, as metav1.Time serializes. */
export function rfc3339(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/**
 * Returns a new list with `cond` set: its lastTransitionTime is kept when the status did not change
 * and set to `now` otherwise. The input list is not modified. Order: by type.
 */
export function setCondition(list: readonly Condition[] | undefined, cond: ConditionInput, now: number): Condition[] {
  const prev = (list ?? []).find((c) => c.type === cond.type);
  const next: Condition = {
    type: cond.type,
    status: cond.status,
    reason: cond.reason,
    message: cond.message,
    lastTransitionTime: prev && prev.status === cond.status ? prev.lastTransitionTime : rfc3339(now),
    ...(cond.observedGeneration !== undefined ? { observedGeneration: cond.observedGeneration } : {}),
  };
  return [...(list ?? []).filter((c) => c.type !== cond.type), next].sort((a, b) => a.type.localeCompare(b.type));
}

export function findCondition(list: readonly Condition[] | undefined, type: ConditionType): Condition | undefined {
  return (list ?? []).find((c) => c.type === type);
}
