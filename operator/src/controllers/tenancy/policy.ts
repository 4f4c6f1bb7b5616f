// Tenancy, the objects: a pool with spec.tenancy gets one ValidatingAdmissionPolicy and one binding,
// both "<pool>.tenancy.virtualio.dev", so that the API server itself (no webhook of ours to keep
// alive) refuses, in a namespace the pool does not grant, a Pod that requests the pool's extended
// resource (and a KubeVirt VM or VMI that names it as a host device or GPU) and a ResourceClaim or
// ResourceClaimTemplate that names the pool's DeviceClass. The pool's
// grant is compiled into the policy's CEL as constants; the namespace's labels are read from
// `namespaceObject` at each admission, so relabelling a namespace takes effect at once.
import type { Pool } from '../../api/types.js';
import type { KubeObject, ResourceType } from '../../kube/ports.js';
import { FIELD_MANAGER, VIRTUALIO_API_VERSION } from '../../kube/resources.js';
import { deviceClassName } from '../dra/deviceclass.js';
import { effectiveResourceName } from '../plan/plan.js';

const ADMISSION = { group: 'admissionregistration.k8s.io', version: 'v1', namespaced: false } as const;
export const AdmissionPolicies: ResourceType = { ...ADMISSION, plural: 'validatingadmissionpolicies', kind: 'ValidatingAdmissionPolicy' };
export const AdmissionPolicyBindings: ResourceType = { ...ADMISSION, plural: 'validatingadmissionpolicybindings', kind: 'ValidatingAdmissionPolicyBinding' };

const POOL_LABEL = 'virtualio.dev/pool';
const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
const COMPONENT_LABEL = 'app.kubernetes.io/component';
/** Label selector of the policies and bindings this controller writes (what the operator watches). */
export const TENANCY_SELECTOR = `${POOL_LABEL},${COMPONENT_LABEL}=tenancy,${MANAGED_BY_LABEL}=${FIELD_MANAGER}`;

export type Tenancy = NonNullable<Pool['spec']['tenancy']>;
type Selector = NonNullable<Tenancy['namespaceSelector']>;

/** Name of the pool's policy and of its binding. */
export function tenancyPolicyName(pool: string): string {
  return `${pool}.tenancy.virtualio.dev`;
}

/** The pool a watched policy or binding belongs to. */
export function poolOfTenancyObject(o: KubeObject): string | undefined {
  return o.metadata.labels?.[POOL_LABEL];
}

/**
 * A CEL string literal. Label keys, values and namespace names are restricted by the CRD schema to
 * characters that need no escape, but the literal is escaped anyway (JSON's escapes are CEL's).
 */
export function celString(s: string): string {
  return JSON.stringify(s);
}

function celList(items: readonly string[]): string {
  return `[${items.map(celString).join(', ')}]`;
}

/**
 * A label selector as a CEL expression over the map `labels` (Kubernetes LabelSelector semantics:
 * every term must hold; no term matches everything).
 */
export function selectorToCel(sel: Selector, labels: string): string {
  const terms: string[] = [];
  for (const [k, v] of Object.entries(sel.matchLabels ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    terms.push(`(${celString(k)} in ${labels} && ${labels}[${celString(k)}] == ${celString(v ?? '')})`);
  }
  for (const e of sel.matchExpressions ?? []) {
    const k = celString(e.key);
    const values = celList(e.values ?? []);
    switch (e.operator) {
      case 'In':
        terms.push(`(${k} in ${labels} && ${labels}[${k}] in ${values})`);
        break;
      case 'NotIn':
        terms.push(`!(${k} in ${labels} && ${labels}[${k}] in ${values})`);
        break;
      case 'Exists':
        terms.push(`(${k} in ${labels})`);
        break;
      case 'DoesNotExist':
        terms.push(`!(${k} in ${labels})`);
        break;
      default:
        // An operator the schema does not allow: grant nothing rather than everything.
        terms.push('false');
    }
  }
  return terms.length ? terms.join(' && ') : 'true';
}

/** Whether the request's namespace is granted: listed by name, or selected by its labels. */
export function grantCel(t: Tenancy): string {
  const parts: string[] = [];
  if (t.namespaces?.length) parts.push(`request.namespace in ${celList([...t.namespaces].sort())}`);
  if (t.namespaceSelector) parts.push(`(${selectorToCel(t.namespaceSelector, 'variables.namespaceLabels')})`);
  return parts.length ? parts.join(' || ') : 'false';
}

/** Whether a container (CEL variable `c`) requests or limits the extended resource. */
function containerUses(resource: string): string {
  const r = celString(resource);
  return `has(c.resources) && ((has(c.resources.limits) && ${r} in c.resources.limits) || (has(c.resources.requests) && ${r} in c.resources.requests))`;
}

/** Whether a claim spec (a CEL path to a ResourceClaimSpec) asks for a device of the class. */
function claimSpecUses(spec: string, className: string): string {
  const dc = celString(className);
  return `has(${spec}.devices) && has(${spec}.devices.requests) && ${spec}.devices.requests.exists(r, ` +
    `(has(r.exactly) && r.exactly.deviceClassName == ${dc}) || (has(r.firstAvailable) && r.firstAvailable.exists(s, s.deviceClassName == ${dc})))`;
}

/**
 * Whether a KubeVirt VMI spec (a CEL path) names the resource as a host device or GPU
 * (spec.domain.devices.{hostDevices,gpus}[].deviceName is the extended resource name).
 */
function vmiSpecUses(spec: string, resource: string): string {
  const r = celString(resource);
  const devices = `${spec}.domain.devices`;
  const list = (field: string) => `(has(${devices}.${field}) && ${devices}.${field}.exists(d, has(d.deviceName) && d.deviceName == ${r}))`;
  return `has(${spec}.domain) && has(${devices}) && (${list('hostDevices')} || ${list('gpus')})`;
}

/** What the request asks of the pool, by kind of object (evaluated only for the kind at hand). */
export function usesCel(resource: string, className: string): string {
  const c = containerUses(resource);
  return `request.resource.resource == 'pods' ? ` +
    `(object.spec.containers.exists(c, ${c}) || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, ${c}))) : ` +
    `request.resource.resource == 'virtualmachineinstances' ? (has(object.spec) && ${vmiSpecUses('object.spec', resource)}) : ` +
    `request.resource.resource == 'virtualmachines' ? ` +
    `(has(object.spec) && has(object.spec.template) && has(object.spec.template.spec) && ${vmiSpecUses('object.spec.template.spec', resource)}) : ` +
    `request.resource.resource == 'resourceclaims' ? (${claimSpecUses('object.spec', className)}) : ` +
    `(has(object.spec.spec) && ${claimSpecUses('object.spec.spec', className)})`;
}

function ownedMetadata(pool: Pool): KubeObject['metadata'] {
  const name = pool.metadata.name;
  return {
    name: tenancyPolicyName(name),
    labels: { [POOL_LABEL]: name, [COMPONENT_LABEL]: 'tenancy', 'app.kubernetes.io/part-of': 'virtualio', [MANAGED_BY_LABEL]: FIELD_MANAGER },
    ownerReferences: [{ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', name, uid: pool.metadata.uid ?? '' }],
  };
}

/** The pool's ValidatingAdmissionPolicy (server-side apply body); the pool must have spec.tenancy. */
export function desiredPolicy(pool: Pool, tenancy: Tenancy): KubeObject & Record<string, unknown> {
  const name = pool.metadata.name;
  const resource = effectiveResourceName(pool);
  const className = deviceClassName(name);
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicy',
    metadata: ownedMetadata(pool),
    spec: {
      // Evaluated in the API server: failing closed costs no availability. An expression that
      // errors refuses only requests it matched, and every path is guarded with has().
      failurePolicy: 'Fail',
      matchConstraints: {
        resourceRules: [
          { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'] },
          // Claim specs are immutable: CREATE is where a claim names its class. Requests in older
          // versions are converted to v1 before evaluation (matchPolicy Equivalent).
          { apiGroups: ['resource.k8s.io'], apiVersions: ['v1'], operations: ['CREATE'], resources: ['resourceclaims', 'resourceclaimtemplates'] },
          // KubeVirt (when installed): refused at creation of the VM or VMI, not only of its
          // virt-launcher pod, so the user sees why on the object they wrote. CREATE only: a VM
          // admitted before a grant narrowed can still be started, stopped and edited.
          { apiGroups: ['kubevirt.io'], apiVersions: ['v1'], operations: ['CREATE'], resources: ['virtualmachines', 'virtualmachineinstances'] },
        ],
      },
      variables: [
        { name: 'uses', expression: usesCel(resource, className) },
        { name: 'namespaceLabels', expression: 'has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}' },
        { name: 'granted', expression: grantCel(tenancy) },
      ],
      validations: [{
        expression: '!variables.uses || variables.granted',
        messageExpression: `'pool ${name} (VirtualIODevice) is not granted to namespace ' + request.namespace + ` +
          `': its spec.tenancy neither lists the namespace nor selects its labels (asked for ' + ` +
          `(request.resource.resource.startsWith('resourceclaim') ? 'DeviceClass ${className}' : 'extended resource ${resource}') + ')'`,
        reason: 'Forbidden',
      }],
    },
  };
}

/** The binding that puts the pool's policy in force (Deny: the request is refused). */
export function desiredBinding(pool: Pool): KubeObject & Record<string, unknown> {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'ValidatingAdmissionPolicyBinding',
    metadata: ownedMetadata(pool),
    spec: { policyName: tenancyPolicyName(pool.metadata.name), validationActions: ['Deny'] },
  };
}
