// DeviceClass controller (pools with spec.frontEnd DRA): one key per pool. A DRA pool gets the
// DeviceClass "<pool>.virtualio.dev" selecting every device of driver virtualio.dev whose `pool`
// attribute names it (the agents publish those devices in ResourceSlices). The class is owned by the
// pool, so it goes away with it; a pool switched back to DevicePlugin has its class deleted.
// Classes carrying our labels are watched (operator.ts), so a class deleted or changed by anyone
// (or by the garbage collector, after a pool was re-created under the same name and the class still
// named the old pool's UID) is ensured again, with the current pool's UID as owner.
import type { Logger } from 'pino';
import type { Pool } from '../../api/types.js';
import type { KubeObject, KubePort, ResourceType } from '../../kube/ports.js';
import { FIELD_MANAGER, VIRTUALIO_API_VERSION } from '../../kube/resources.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import type { World } from '../world.js';

/** The DRA driver name the agents publish under. */
export const DRA_DRIVER = 'virtualio.dev';
export const DeviceClasses: ResourceType = { group: 'resource.k8s.io', version: 'v1', plural: 'deviceclasses', kind: 'DeviceClass', namespaced: false };
const POOL_LABEL = 'virtualio.dev/pool';
const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
/** Label selector of the classes this controller writes (what the operator watches). */
export const DEVICE_CLASS_SELECTOR = `${POOL_LABEL},${MANAGED_BY_LABEL}=${FIELD_MANAGER}`;

/** The pool a watched DeviceClass belongs to (its key in the DeviceClass queue). */
export function poolOfDeviceClass(dc: KubeObject): string | undefined {
  return dc.metadata.labels?.[POOL_LABEL];
}

export function deviceClassName(pool: string): string {
  return `${pool}.${DRA_DRIVER}`;
}

interface DeviceClassObject extends KubeObject {
  spec?: { selectors?: { cel?: { expression?: string } }[] };
}

/** The DeviceClass of a DRA pool (server-side apply body). */
export function desiredDeviceClass(pool: Pool): KubeObject & Record<string, unknown> {
  const name = pool.metadata.name ?? '';
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'DeviceClass',
    metadata: {
      name: deviceClassName(name),
      labels: { [POOL_LABEL]: name, 'app.kubernetes.io/part-of': 'virtualio', [MANAGED_BY_LABEL]: FIELD_MANAGER },
      ownerReferences: [{ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', name, uid: pool.metadata.uid ?? '' }],
    },
    spec: { selectors: [{ cel: { expression: `device.driver == "${DRA_DRIVER}" && device.attributes["${DRA_DRIVER}"].pool == "${name}"` } }] },
  };
}

/** Selectors, our labels and the owner (by UID: a re-created pool has a new one) are as desired. */
function upToDate(current: DeviceClassObject, body: KubeObject & Record<string, unknown>): boolean {
  const labels = current.metadata.labels ?? {};
  const owners = current.metadata.ownerReferences ?? [];
  const want = body.metadata.ownerReferences?.[0];
  return jsonEqual(current.spec?.selectors, (body.spec as DeviceClassObject['spec'])?.selectors) &&
    Object.entries(body.metadata.labels ?? {}).every(([k, v]) => labels[k] === v) &&
    owners.some((o) => o.uid === want?.uid) && !owners.some((o) => o.kind === want?.kind && o.uid !== want?.uid);
}

export class DeviceClassReconciler implements Reconciler {
  constructor(private readonly deps: { kube: KubePort; world: World; log: Logger }) {}

  async reconcile(name: string): Promise<Result> {
    const { kube, world, log } = this.deps;
    const pool = world.pools.get(name);
    // A deleted pool's class is garbage-collected through its ownerReference.
    if (!pool) return done;
    const wants = pool.spec.frontEnd === 'DRA' && !pool.metadata.deletionTimestamp;
    const current = await kube.get<DeviceClassObject>(DeviceClasses, deviceClassName(name));
    if (!wants) {
      if (current && current.metadata.labels?.[POOL_LABEL] === name) {
        await kube.delete(DeviceClasses, deviceClassName(name));
        log.info({ pool: name, deviceClass: deviceClassName(name) }, 'Deleted DeviceClass (pool no longer uses DRA)');
      }
      return done;
    }
    const body = desiredDeviceClass(pool);
    if (current && upToDate(current, body)) return done;
    await kube.apply(DeviceClasses, body, { fieldManager: FIELD_MANAGER, force: true });
    log.info({ pool: name, deviceClass: deviceClassName(name) }, current ? 'Updated DeviceClass' : 'Created DeviceClass');
    return done;
  }
}
