// The operator's composition: informers over Nodes, VirtualIONodes and VirtualIODevices (and the
// KubeVirt CR once its CRD is served, our DeviceClasses while resource.k8s.io/v1 is served, and our
// tenancy ValidatingAdmissionPolicies and bindings), five work queues fed by their change handlers,
// and five controllers: plan (per node), status (per pool), kubevirt (one key), deviceclass (per
// pool) and tenancy (per pool). Everything takes its ports, clock and
// logger as arguments, so unit tests run it against the in-memory fake.
import type { Logger } from 'pino';
import type { NodeObject, Pool, VioNode } from './api/types.js';
import { DEVICE_CLASS_SELECTOR, DeviceClasses, DeviceClassReconciler, poolOfDeviceClass } from './controllers/dra/deviceclass.js';
import { KUBEVIRT_KEY, KubeVirtReconciler, type KubeVirtContestTuning } from './controllers/kubevirt/reconciler.js';
import { PlanReconciler } from './controllers/plan/reconciler.js';
import { StatusReconciler } from './controllers/status/reconciler.js';
import { vioNodeCacheForm, withoutManagedFields } from './controllers/plan/node-view.js';
import { planOf } from './controllers/plan/shape.js';
import { ackCacheForm, type NodeAck } from './controllers/plan/ack.js';
import { AdmissionPolicies, AdmissionPolicyBindings, poolOfTenancyObject, TENANCY_SELECTOR } from './controllers/tenancy/policy.js';
import { TenancyReconciler } from './controllers/tenancy/reconciler.js';
import { World, type KubeVirtObject, type KubeVirtSettings } from './controllers/world.js';
import type { KubeObject, KubePort } from './kube/ports.js';
import { KubeVirts, Nodes, VirtualIODevices, VirtualIONodeAcks, VirtualIONodes } from './kube/resources.js';
import type { OperatorMetrics } from './metrics.js';
import { sleep, type Clock } from './runtime/clock.js';
import { runController } from './runtime/controller.js';
import type { EventRecorder } from './runtime/events.js';
import { Informer } from './runtime/informer.js';
import { ServedInformer } from './runtime/served-informer.js';
import { WorkQueue } from './runtime/workqueue.js';
import { jsonEqual } from './util/json.js';

export interface OperatorTuning {
  /** Informer watchdog: re-list after this long without any event. Default 5 min. */
  silenceMs?: number;
  /** How often to check whether the KubeVirt CRD appeared or went away. Default 60 s. */
  kubevirtRecheckMs?: number;
  /** Status and KubeVirt reconciles are debounced by this much after a change. Default 1 s. */
  debounceMs?: number;
  /** Full resync of every key. Default 10 min. */
  resyncMs?: number;
  planWorkers?: number;
  statusWorkers?: number;
  /** Backoff and give-up against another controller that changes KubeVirt's permittedHostDevices. */
  kubevirtContest?: KubeVirtContestTuning;
}

export interface OperatorOptions {
  kube: KubePort;
  clock: Clock;
  log: Logger;
  events: EventRecorder;
  kubevirt: KubeVirtSettings;
  metrics?: OperatorMetrics;
  tuning?: OperatorTuning;
}

/** Keeps only what the operator reads of a Node (its informer would otherwise cache images and status). */
function nodeMetadataOnly(n: NodeObject): NodeObject {
  const { name, uid, resourceVersion, labels, creationTimestamp } = n.metadata;
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, uid, resourceVersion, labels, creationTimestamp } };
}


export { vioNodeCacheForm };

function poolsOf(v: VioNode | undefined): string[] {
  if (!v) return [];
  return [...(planOf(v) ?? []).map((p) => p.name), ...(v.status?.pools ?? []).map((p) => p.name), ...(v.status?.slices ?? []).map((s) => s.pool)];
}

async function untilSynced(inf: { synced(): Promise<void> }, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  let onAbort: () => void = () => undefined;
  const aborted = new Promise<boolean>((r) => {
    onAbort = () => r(false);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  const ok = await Promise.race([inf.synced().then(() => true), aborted]);
  signal.removeEventListener('abort', onAbort);
  return ok;
}

export class Operator {
  private readyFlag = false;

  constructor(private readonly opts: OperatorOptions) {}

  /** True once the caches are synced and the controllers run. */
  get ready(): boolean {
    return this.readyFlag;
  }

  /** Runs until `signal` aborts; resolves after every worker and watch has stopped. */
  async run(signal: AbortSignal): Promise<void> {
    const { kube, clock, log, metrics, events } = this.opts;
    const t = this.opts.tuning ?? {};
    const debounce = t.debounceMs ?? 1000;
    const informerOpts = { kube, clock, silenceMs: t.silenceMs, observer: metrics };
    const nodes = new Informer<NodeObject>({ ...informerOpts, resource: Nodes, log: log.child({ informer: 'nodes' }), transform: nodeMetadataOnly });
    const vioNodes: Informer<VioNode> = new Informer<VioNode>({
      ...informerOpts, resource: VirtualIONodes, log: log.child({ informer: 'virtualionodes' }),
      transform: (v) => vioNodeCacheForm(vioNodes.get(v.metadata.name), v),
    });
    const pools = new Informer<Pool>({ ...informerOpts, resource: VirtualIODevices, log: log.child({ informer: 'virtualiodevices' }), transform: withoutManagedFields });
    // The acks of agents that plan locally (small objects; only what the pool status reads is cached).
    // Served only once the chart installed the CRD: an operator on older CRDs reads VirtualIONodes only.
    const acks = new ServedInformer<NodeAck>({
      ...informerOpts, resource: VirtualIONodeAcks, log: log.child({ informer: 'virtualionodeacks' }), transform: ackCacheForm,
      recheckMs: t.kubevirtRecheckMs,
      onServedChange: () => {
        world.acksChanged();
        statusAll();
      },
    });
    const world = new World(nodes, vioNodes, pools, this.opts.kubevirt, acks);

    const planQ = new WorkQueue({ clock });
    const statusQ = new WorkQueue({ clock });
    const kubevirtQ = new WorkQueue({ clock });
    const draQ = new WorkQueue({ clock }); // DeviceClasses of DRA pools, one key per pool
    const tenancyQ = new WorkQueue({ clock }); // admission policies of pools with spec.tenancy, one key per pool
    metrics?.watchQueue('plan', planQ);
    metrics?.watchQueue('status', statusQ);
    metrics?.watchQueue('kubevirt', kubevirtQ);
    metrics?.watchQueue('tenancy', tenancyQ);
    metrics?.watchPools(() => pools.list()); // virtualio_operator_pool_condition, read at each scrape
    const planAll = () => {
      for (const n of nodes.list()) planQ.add(n.metadata.name);
    };
    const statusAll = () => {
      for (const p of pools.list()) statusQ.addAfter(p.metadata.name, debounce);
    };
    const kubevirtSoon = () => kubevirtQ.addAfter(KUBEVIRT_KEY, debounce);
    const draAll = () => {
      for (const p of pools.list()) draQ.add(p.metadata.name);
    };
    // The DeviceClasses we wrote (by label): one deleted or changed by anyone is ensured again.
    const deviceClasses = new ServedInformer<KubeObject>({
      ...informerOpts, resource: DeviceClasses, log: log.child({ informer: 'deviceclasses' }), transform: withoutManagedFields,
      list: { labelSelector: DEVICE_CLASS_SELECTOR }, recheckMs: t.kubevirtRecheckMs, onServedChange: draAll,
    });
    deviceClasses.onChange((obj, old) => {
      const dc = obj ?? old;
      const pool = dc && poolOfDeviceClass(dc);
      if (pool && pools.get(pool)) draQ.add(pool);
    });

    const tenancyAll = () => {
      for (const p of pools.list()) tenancyQ.add(p.metadata.name);
    };
    // Our tenancy policies and bindings (by label): one deleted or changed by anyone is ensured
    // again, and one left by a pool that is gone (or lost spec.tenancy) is deleted.
    const tenancyInformers = [AdmissionPolicies, AdmissionPolicyBindings].map((resource) => {
      const inf = new ServedInformer<KubeObject>({
        ...informerOpts, resource, log: log.child({ informer: resource.plural }), transform: withoutManagedFields,
        list: { labelSelector: TENANCY_SELECTOR }, recheckMs: t.kubevirtRecheckMs, onServedChange: tenancyAll,
      });
      inf.onChange((obj, old) => {
        const pool = poolOfTenancyObject((obj ?? old) as KubeObject);
        if (pool) tenancyQ.add(pool);
      });
      return inf;
    });
    const [tenancyPolicies, tenancyBindings] = tenancyInformers as [ServedInformer<KubeObject>, ServedInformer<KubeObject>];

    nodes.onChange((obj, old) => {
      planQ.add((obj ?? old)?.metadata.name ?? '');
      if (!obj || !old || !jsonEqual(obj.metadata.labels, old.metadata.labels)) statusAll();
    });
    vioNodes.onChange((obj, old) => {
      const name = (obj ?? old)?.metadata.name ?? '';
      if (nodes.get(name)) planQ.add(name);
      for (const p of new Set([...poolsOf(obj), ...poolsOf(old)])) if (pools.get(p)) statusQ.addAfter(p, debounce);
      const inventoryChanged = !jsonEqual(obj?.status?.inventory, old?.status?.inventory);
      if (inventoryChanged) statusAll();
      if (inventoryChanged || !jsonEqual(planOf(obj), planOf(old))) kubevirtSoon();
    });
    acks.onChange((obj, old) => {
      world.acksChanged();
      for (const p of new Set([...obj?.status?.pools ?? [], ...old?.status?.pools ?? []].map((x) => x.name))) if (pools.get(p)) statusQ.addAfter(p, debounce);
    });
    pools.onChange((obj, old) => {
      const specChanged = !obj || !old || obj.metadata.generation !== old.metadata.generation ||
        !!obj.metadata.deletionTimestamp !== !!old.metadata.deletionTimestamp;
      if (specChanged) {
        draQ.add((obj ?? old)?.metadata.name ?? ''); // DeviceClass: only spec (frontEnd) and deletion matter
        tenancyQ.add((obj ?? old)?.metadata.name ?? '');
        world.poolsChanged();
        planAll();
        statusAll();
        kubevirtSoon();
      } else if (obj) {
        statusQ.addAfter(obj.metadata.name, debounce);
      }
    });

    const runs: Promise<void>[] = [nodes.run(signal), vioNodes.run(signal), pools.run(signal)];
    const synced = await Promise.all([untilSynced(nodes, signal), untilSynced(vioNodes, signal), untilSynced(pools, signal)]);
    if (!synced.every(Boolean)) {
      await Promise.all(runs);
      return;
    }
    log.info({ nodes: nodes.size, virtualionodes: vioNodes.size, virtualiodevices: pools.size }, 'Synced caches');

    // KubeVirt: watch its CR only while the CRD is served; look again periodically.
    let kv: { abort: AbortController; run: Promise<void> } | undefined;
    const settings = this.opts.kubevirt;
    const kubevirtReconciler = new KubeVirtReconciler({
      kube, world, clock, events, tuning: t.kubevirtContest, onContestChange: statusAll, log: log.child({ controller: 'kubevirt' }),
    });
    const checkKubeVirt = async () => {
      let exists: boolean;
      try {
        exists = await kube.resourceExists(KubeVirts);
      } catch (err) {
        log.warn({ err }, 'Failed to discover the KubeVirt API');
        return;
      }
      if (exists && !kv) {
        const abort = new AbortController();
        const stop = () => abort.abort();
        signal.addEventListener('abort', stop, { once: true });
        const inf = new Informer<KubeVirtObject>({
          ...informerOpts, resource: KubeVirts, log: log.child({ informer: 'kubevirts' }),
          list: { namespace: settings.namespace, fieldSelector: `metadata.name=${settings.name}` },
        });
        inf.onChange(() => {
          kubevirtQ.add(KUBEVIRT_KEY);
          statusAll();
        });
        kv = { abort, run: inf.run(abort.signal).finally(() => signal.removeEventListener('abort', stop)) };
        if (!(await untilSynced(inf, abort.signal))) return;
        world.kubevirt.installed = true;
        world.kubevirt.informer = inf;
        // Before any status write of this process can replace a Contested condition it reads.
        kubevirtReconciler.restore();
        log.info({ kubevirt: `${settings.namespace}/${settings.name}`, found: !!inf.get(settings.name, settings.namespace) }, 'Found KubeVirt API');
        kubevirtQ.add(KUBEVIRT_KEY);
        statusAll();
      } else if (!exists && kv) {
        kv.abort.abort();
        await kv.run;
        kv = undefined;
        world.kubevirt.installed = false;
        world.kubevirt.informer = undefined;
        log.info({}, 'KubeVirt API went away');
        statusAll();
      }
    };
    await checkKubeVirt();
    const recheck = (async () => {
      while (!signal.aborted) {
        await sleep(clock, t.kubevirtRecheckMs ?? 60_000, signal).catch(() => undefined);
        if (!signal.aborted) await checkKubeVirt();
      }
    })();
    const resync = (async () => {
      while (!signal.aborted) {
        await sleep(clock, t.resyncMs ?? 10 * 60_000, signal).catch(() => undefined);
        if (signal.aborted) break;
        planAll();
        statusAll();
        kubevirtSoon();
        draAll();
        tenancyAll();
      }
    })();

    planAll();
    statusAll();
    kubevirtQ.add(KUBEVIRT_KEY);
    draAll();
    tenancyAll();
    this.readyFlag = true;
    const common = { clock, observer: metrics };
    await Promise.all([
      runController({ ...common, name: 'plan', queue: planQ, workers: t.planWorkers ?? 8, log: log.child({ controller: 'plan' }),
        reconciler: new PlanReconciler({ kube, world, log: log.child({ controller: 'plan' }) }) }, signal),
      runController({ ...common, name: 'status', queue: statusQ, workers: t.statusWorkers ?? 2, log: log.child({ controller: 'status' }),
        reconciler: new StatusReconciler({ kube, world, clock, events, log: log.child({ controller: 'status' }) }) }, signal),
      runController({ ...common, name: 'kubevirt', queue: kubevirtQ, workers: 1, log: log.child({ controller: 'kubevirt' }),
        reconciler: kubevirtReconciler }, signal),
      runController({ ...common, name: 'deviceclass', queue: draQ, workers: 1, log: log.child({ controller: 'deviceclass' }),
        reconciler: new DeviceClassReconciler({ kube, world, log: log.child({ controller: 'deviceclass' }) }) }, signal),
      runController({ ...common, name: 'tenancy', queue: tenancyQ, workers: 1, log: log.child({ controller: 'tenancy' }),
        reconciler: new TenancyReconciler({
          kube, world, events, log: log.child({ controller: 'tenancy' }),
          cached: (res, name) => (res === AdmissionPolicies ? tenancyPolicies : tenancyBindings).get(name),
          onOutcomeChange: (pool) => statusQ.add(pool),
        }) }, signal),
      recheck, resync, acks.run(signal), deviceClasses.run(signal), tenancyPolicies.run(signal), tenancyBindings.run(signal), ...runs,
    ]);
    if (kv) await kv.run;
    metrics?.watchPools(undefined);
    this.readyFlag = false;
  }
}
