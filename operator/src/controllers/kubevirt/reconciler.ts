// KubeVirt controller: a single key. With --manage-permitted-host-devices it applies the whole
// pciHostDevices and mediatedDevices lists (atomic lists) of the KubeVirt CR under our field
// manager, forcing ownership; without the flag it writes nothing (pools report what to add).
import type { Logger } from 'pino';
import type { KubePort } from '../../kube/ports.js';
import { FIELD_MANAGER, KubeVirts } from '../../kube/resources.js';
import { done, type Reconciler, type Result } from '../../runtime/result.js';
import { jsonEqual } from '../../util/json.js';
import type { World } from '../world.js';
import { desiredLists, poolEntries, type PermittedLists } from './entries.js';

/** The single key of the KubeVirt controller. */
export const KUBEVIRT_KEY = 'kubevirt';

/** The permittedHostDevices object to apply: empty lists are left out (not owned). */
export function permittedHostDevicesBody(lists: PermittedLists): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  if (lists.pciHostDevices.length > 0) out.pciHostDevices = lists.pciHostDevices;
  if (lists.mediatedDevices.length > 0) out.mediatedDevices = lists.mediatedDevices;
  return Object.keys(out).length > 0 ? out : undefined;
}

export class KubeVirtReconciler implements Reconciler {
  /** What this process applied last (after a restart the first reconcile always applies). */
  private lastApplied: string | undefined;

  constructor(private readonly deps: { kube: KubePort; world: World; log: Logger }) {}

  async reconcile(): Promise<Result> {
    const { kube, world, log } = this.deps;
    const settings = world.kubevirtSettings;
    if (!settings.manage || !world.kubevirt.installed) return done;
    const cr = world.kubevirtObject();
    // Never create the KubeVirt CR: apply would, so only patch one that exists.
    if (!cr) return done;
    const index = world.poolIndex();
    const entries = world.prepared().ordered.flatMap((p) => poolEntries(p, index.get(p.name)?.nodes ?? []));
    const desired = desiredLists(entries, settings.extra);
    const current = world.kubevirtView().current;
    const body = permittedHostDevicesBody(desired);
    // A list we do not apply is left to whoever else set it, so only the applied ones must match;
    // a list we stop applying must be applied away once (SSA removes fields we owned).
    const applied = JSON.stringify(body ?? null);
    const matches = (desired.pciHostDevices.length === 0 || jsonEqual(current.pciHostDevices, desired.pciHostDevices)) &&
      (desired.mediatedDevices.length === 0 || jsonEqual(current.mediatedDevices, desired.mediatedDevices));
    if (matches && this.lastApplied === applied) return done;
    await kube.apply(KubeVirts, {
      apiVersion: 'kubevirt.io/v1', kind: 'KubeVirt',
      metadata: { name: settings.name, namespace: settings.namespace },
      ...(body ? { spec: { configuration: { permittedHostDevices: body } } } : {}),
    }, { fieldManager: FIELD_MANAGER, force: true });
    this.lastApplied = applied;
    log.info({
      kubevirt: `${settings.namespace}/${settings.name}`,
      pciHostDevices: desired.pciHostDevices.length, mediatedDevices: desired.mediatedDevices.length,
    }, 'Applied KubeVirt permittedHostDevices');
    return done;
  }
}
