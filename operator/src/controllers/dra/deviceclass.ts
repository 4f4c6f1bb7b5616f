// DeviceClass controller (pools with spec.frontEnd DRA): one key per pool. A DRA pool gets the
// DeviceClass "<pool>.virtualio.dev" selecting every device of driver virtualio.dev whose `pool`
// attribute names it (the agents publish those devices in ResourceSlices). The class is owned by the
// pool, so it goes away with it; a pool switched back to DevicePlugin has its class deleted.
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
      labels: { [POOL_LABEL]: name, 'app.kubernetes.io/part-of': 'virtualio', 'app.kubernetes.io/managed-by': FIELD_MANAGER },
      ownerReferences: [{ apiVersion: VIRTUALIO_API_VERSION, kind: 'VirtualIODevice', name, uid: pool.metadata.uid ?? '' }],
    },
    spec: { selectors: [{ cel: { expression: `device.driver == "${DRA_DRIVER}" && device.attributes["${DRA_DRIVER}"].pool == "${name}"` } }] },
  };
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
    if (current && jsonEqual(current.spec?.selectors, (body.spec as DeviceClassObject['spec'])?.selectors)) return done;
    await kube.apply(DeviceClasses, body, { fieldManager: FIELD_MANAGER, force: true });
    log.info({ pool: name, deviceClass: deviceClassName(name) }, current ? 'Updated DeviceClass' : 'Created DeviceClass');
    return done;
  }
}
