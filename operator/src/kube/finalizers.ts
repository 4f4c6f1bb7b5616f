// Finalizers without a full update. Informers cache objects without annotations and managedFields
// (operator.ts), so a PUT of a cached copy deletes every annotation: kubectl's
// last-applied-configuration, Helm's release annotations, Argo CD's tracking id. A JSON merge patch
// of metadata.finalizers touches nothing else, and the resourceVersion it carries makes it
// conditional on the object the decision was made on (Conflict, and a retry, when it changed since).
import type { KubeObject, KubePort, ResourceType } from './ports.js';

async function patchFinalizers(kube: KubePort, res: ResourceType, obj: KubeObject, finalizers: string[], fieldManager: string): Promise<void> {
  const { name, namespace, resourceVersion } = obj.metadata;
  await kube.mergePatch(res, name, {
    metadata: { resourceVersion, finalizers: finalizers.length > 0 ? finalizers : null },
  }, { fieldManager, ...(namespace ? { namespace } : {}) });
}

/** Adds `finalizer` unless present; true when it wrote. */
export async function addFinalizer(kube: KubePort, res: ResourceType, obj: KubeObject, finalizer: string, fieldManager: string): Promise<boolean> {
  const current = obj.metadata.finalizers ?? [];
  if (current.includes(finalizer)) return false;
  await patchFinalizers(kube, res, obj, [...current, finalizer], fieldManager);
  return true;
}

/** Removes `finalizer` when present; true when it wrote. */
export async function removeFinalizer(kube: KubePort, res: ResourceType, obj: KubeObject, finalizer: string, fieldManager: string): Promise<boolean> {
  const current = obj.metadata.finalizers ?? [];
  if (!current.includes(finalizer)) return false;
  await patchFinalizers(kube, res, obj, current.filter((f) => f !== finalizer), fieldManager);
  return true;
}
