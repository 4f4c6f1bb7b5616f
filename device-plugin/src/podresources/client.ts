// Which pod holds which slice, from the kubelet PodResources v1 API (contracts.md §2). The kubelet
// rate-limits this API (RESOURCE_EXHAUSTED), so we List at most once per `minGapMs`, every
// `intervalMs`, and shortly after each Allocate, backing off on errors.
import * as grpc from '@grpc/grpc-js';
import { loadPodResourcesApi } from '../../../proto/load.js';
import type { PodResourcesListerClient } from '../../../proto/generated/podresources/v1/PodResourcesLister.js';
import type { PodResources__Output } from '../../../proto/generated/podresources/v1/PodResources.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { AllocationWindow } from './allocation-window.js';

/** Who holds one slice. */
export interface Holder {
  resourceName: string;
  namespace: string;
  pod: string;
  container: string;
  /** The VirtualMachineInstance, for virt-launcher pods (cluster mode only). */
  vmi?: string;
}

/** KubeVirt's compute container and the label its launcher pods carry (contracts.md §2). */
export const COMPUTE_CONTAINER = 'compute';
export const CREATED_BY_LABEL = 'kubevirt.io/created-by';

/** What the agent can learn about a pod from the API server (cluster mode). */
export interface PodInfo {
  uid?: string;
  /** status.phase (Pending, Running, Succeeded, Failed). */
  phase?: string;
  labels?: Record<string, string>;
  ownerReferences?: { kind: string; name: string }[];
}

/** Port to read a pod (cluster mode); standalone mode has none. */
export type PodLookup = (namespace: string, name: string) => Promise<PodInfo | undefined>;

/** Is the pod with this name and UID gone (absent, re-created under another UID, or finished)? */
export function podGoneVia(lookup: PodLookup): (namespace: string, name: string, uid: string) => Promise<boolean> {
  return async (namespace, name, uid) => {
    const p = await lookup(namespace, name);
    if (!p) return true;
    if (p.uid && p.uid !== uid) return true;
    return p.phase === 'Succeeded' || p.phase === 'Failed';
  };
}

/**
 * Every device of a List response that is ours: by resource name, or a device of this node by its
 * ID (a PCI address, mdev UUID or WWPN held through a resource name this agent no longer
 * remembers, or another plugin's).
 */
function* ourDevices(pods: readonly PodResources__Output[], resourceNames: ReadonlySet<string>, deviceHere: (id: string) => boolean): Generator<{ id: string; resourceName: string; pod: PodResources__Output; container: string }> {
  for (const pod of pods) {
    for (const c of pod.containers ?? []) {
      for (const d of c.devices ?? []) {
        const ours = resourceNames.has(d.resourceName);
        for (const id of d.deviceIds ?? []) if (ours || deviceHere(id)) yield { id, resourceName: d.resourceName, pod, container: c.name };
      }
    }
  }
}

/**
 * Maps a List response to slice ID → holder, keeping only our devices. A device listed twice
 * (init container reused by an app container) keeps its first holder.
 */
export function mapHolders(pods: readonly PodResources__Output[], resourceNames: ReadonlySet<string>, deviceHere: (id: string) => boolean = () => false): Map<string, Holder> {
  const out = new Map<string, Holder>();
  for (const d of ourDevices(pods, resourceNames, deviceHere)) {
    if (!out.has(d.id)) out.set(d.id, { resourceName: d.resourceName, namespace: d.pod.namespace, pod: d.pod.name, container: d.container });
  }
  return out;
}

/**
 * Devices the kubelet lists for more than one pod (ours, as mapHolders keeps them), with the pods
 * (`namespace/name`), by ID: the kubelet handed a device a live pod holds to another pod (its device
 * manager can lose a reservation in flight, see allocation-window.ts).
 */
export function sharedDevices(pods: readonly PodResources__Output[], resourceNames: ReadonlySet<string>, deviceHere: (id: string) => boolean = () => false): { id: string; pods: string[] }[] {
  const byId = new Map<string, Set<string>>();
  for (const d of ourDevices(pods, resourceNames, deviceHere)) {
    const set = byId.get(d.id) ?? new Set<string>();
    set.add(`${d.pod.namespace}/${d.pod.name}`);
    byId.set(d.id, set);
  }
  return [...byId].filter(([, s]) => s.size > 1).map(([id, s]) => ({ id, pods: [...s].sort() })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * The VMI of a virt-launcher pod: a pod labelled `kubevirt.io/created-by` (the VMI UID) is a launcher;
 * its VMI is named by its VirtualMachineInstance owner reference, else the label (UID) is reported.
 */
export function vmiOf(info: PodInfo | undefined): string | undefined {
  const uid = info?.labels?.[CREATED_BY_LABEL];
  if (!uid) return undefined;
  return info?.ownerReferences?.find((o) => o.kind === 'VirtualMachineInstance')?.name ?? uid;
}

export interface PodResourcesWatcherOptions {
  socket: string;
  logger: Logger;
  metrics: AgentMetrics;
  /** Resource names to keep (read on every List). */
  resourceNames: () => ReadonlySet<string>;
  /** Is this device ID a device of this node (then its holder counts whatever the resource name)? */
  deviceHere?: (id: string) => boolean;
  /** Called when the holders changed. */
  onChange: () => void;
  lookupPod?: PodLookup;
  /** Periodic List (default 5 s). */
  intervalMs?: number;
  /** Minimum gap between two Lists (default 1 s). */
  minGapMs?: number;
  /** Delay of the List after an Allocate (default 300 ms, still respecting the gap). */
  afterAllocateMs?: number;
  /** Keeps Lists out of the kubelet's device allocations (see allocation-window.ts). */
  window?: AllocationWindow;
  /** A List kept out of allocations this long goes anyway (default 30 s): the agent must learn its holders. */
  maxDeferMs?: number;
}

const sleep = (ms: number, signal: AbortSignal, wake: { fn?: () => void }): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      wake.fn = undefined;
      resolve();
    };
    const t = setTimeout(done, Math.max(0, ms));
    wake.fn = done;
    signal.addEventListener('abort', done, { once: true });
  });

/** Keeps `holders()` up to date from the kubelet. */
export class PodResourcesWatcher {
  private holdersMap = new Map<string, Holder>();
  private lastText = '';
  private lastShared = '[]';
  private client: PodResourcesListerClient | undefined;
  private nextAt = 0;
  private lastCallAt = 0;
  private backoffMs = 0;
  private readonly wake: { fn?: () => void } = {};
  private readonly podCache = new Map<string, PodInfo | undefined>();
  private readonly log: Logger;
  /** True after the first successful List. */
  synced = false;
  /** Last error, cleared by a successful List. */
  error: string | undefined;

  constructor(private readonly opts: PodResourcesWatcherOptions) {
    this.log = opts.logger.child({ component: 'podresources' });
  }

  /** Slice ID → holder, as of the last successful List. */
  holders(): ReadonlyMap<string, Holder> {
    return this.holdersMap;
  }

  /** Asks for a List soon (after an Allocate); the gap and any backoff still apply. */
  kick(delayMs = this.opts.afterAllocateMs ?? 300): void {
    const at = Date.now() + delayMs;
    if (at < this.nextAt) {
      this.nextAt = at;
      this.wake.fn?.();
    }
  }

  /** Lists until `signal` aborts. Never throws. */
  async run(signal: AbortSignal): Promise<void> {
    const interval = this.opts.intervalMs ?? 5000;
    const gap = this.opts.minGapMs ?? 1000;
    this.nextAt = Date.now();
    /** When a due List was first kept back for an allocation. */
    let deferredSince: number | undefined;
    try {
      while (!signal.aborted) {
        const earliest = Math.max(this.nextAt, this.lastCallAt + gap + this.backoffMs);
        if (Date.now() < earliest) {
          await sleep(earliest - Date.now(), signal, this.wake);
          continue;
        }
        const quiet = this.opts.window?.waitMs() ?? 0;
        if (quiet > 0 && Date.now() - (deferredSince ??= Date.now()) < (this.opts.maxDeferMs ?? 30_000)) {
          await sleep(quiet, signal, {});
          continue;
        }
        deferredSince = undefined;
        this.lastCallAt = Date.now();
        this.nextAt = this.lastCallAt + interval;
        await this.listOnce();
      }
    } finally {
      this.client?.close();
      this.client = undefined;
    }
  }

  private async listOnce(): Promise<void> {
    this.client ??= new (loadPodResourcesApi().v1.PodResourcesLister)(`unix:${this.opts.socket}`, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    });
    const client = this.client;
    try {
      const list = (): Promise<PodResources__Output[]> => new Promise((resolve, reject) =>
        client.list({}, { deadline: Date.now() + 5000 }, (err, r) => (err ? reject(err) : resolve(r?.podResources ?? []))),
      );
      const res = await (this.opts.window ? this.opts.window.list(list) : list());
      this.opts.metrics.podResourcesLists.inc({ result: 'ok' });
      const names = this.opts.resourceNames();
      const holders = mapHolders(res, names, this.opts.deviceHere);
      const shared = sharedDevices(res, names, this.opts.deviceHere);
      const sharedText = JSON.stringify(shared);
      if (shared.length > 0 && sharedText !== this.lastShared) {
        this.log.error({ shared }, 'the kubelet lists one device for two pods: it handed out a device a live pod holds (its device manager lost the reservation of an Allocate in flight, kubernetes/kubernetes pull request 137534): the pod admitted later was given a device the other holds');
      }
      this.lastShared = sharedText;
      await this.enrich(holders);
      this.backoffMs = 0;
      if (this.error) this.log.info('PodResources List works again');
      this.error = undefined;
      const text = JSON.stringify([...holders].sort(([a], [b]) => (a < b ? -1 : 1)));
      const first = !this.synced;
      this.synced = true;
      this.holdersMap = holders;
      if (text !== this.lastText || first) {
        this.lastText = text;
        this.opts.onChange();
      }
    } catch (err) {
      const e = err as grpc.ServiceError;
      const code = typeof e.code === 'number' ? (grpc.status[e.code] ?? String(e.code)) : 'ERROR';
      this.opts.metrics.podResourcesLists.inc({ result: code });
      // A fresh channel for the next try: a failed gRPC channel backs off on its own (up to 2 min)
      // and would hide a kubelet that is back; the socket is local, so reconnecting is cheap.
      client.close();
      if (this.client === client) this.client = undefined;
      this.backoffMs = Math.min(Math.max(1000, this.backoffMs * 2), 10_000);
      const msg = `PodResources List failed (${code}): ${e.details || e.message}`;
      if (msg !== this.error) this.log.warn({ retryInMs: this.backoffMs }, msg);
      this.error = msg;
    }
  }

  /** Adds the VMI of compute containers of launcher pods (cluster mode), with a per-pod cache. */
  private async enrich(holders: Map<string, Holder>): Promise<void> {
    const lookup = this.opts.lookupPod;
    if (!lookup) return;
    const seen = new Set<string>();
    for (const h of holders.values()) {
      if (h.container !== COMPUTE_CONTAINER) continue;
      const key = `${h.namespace}/${h.pod}`;
      seen.add(key);
      if (!this.podCache.has(key)) {
        try {
          this.podCache.set(key, await lookup(h.namespace, h.pod));
        } catch (err) {
          this.log.debug({ err, pod: key }, 'cannot read pod; VMI unknown for now');
          continue;
        }
      }
      const vmi = vmiOf(this.podCache.get(key));
      if (vmi) h.vmi = vmi;
    }
    for (const k of [...this.podCache.keys()]) if (!seen.has(k)) this.podCache.delete(k);
  }
}
