// Cluster mode: the plan comes from the agent's own VirtualIONode and the status goes back to it.
// This module only knows the KubeAgentPort interface; src/kube/adapter.ts implements it with
// @kubernetes/client-node (the only runtime importer of that package in the agent).
import { createHash } from 'node:crypto';
import { setTimeout as pause } from 'node:timers/promises';
import type { VirtualIONode, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import type { Logger } from '../log.js';
import type { PodInfo } from '../podresources/client.js';
import { validatePlan, type PlanSource, type PlanState } from './plan.js';
import { LatestWriter } from './latest-writer.js';

/** SHA-1 of a status's JSON: what "unchanged" is compared by, without keeping the text. */
function digest(status: VirtualIONodeStatus): string {
  return createHash('sha1').update(JSON.stringify(status)).digest('hex');
}

/** What the agent needs from the API server. */
export interface KubeAgentPort {
  /** UID of the Node object, or undefined when it does not exist. */
  getNodeUid(name: string): Promise<string | undefined>;
  /** Creates the VirtualIONode (owned by the Node) when missing; returns the current object. */
  ensureVirtualIONode(name: string, nodeUid: string | undefined): Promise<VirtualIONode>;
  /**
   * Watches one VirtualIONode until `signal` aborts, re-listing and re-watching after errors.
   * `onObject(undefined)` means it was deleted.
   */
  watchVirtualIONode(name: string, onObject: (obj: VirtualIONode | undefined) => void, signal: AbortSignal): Promise<void>;
  /** Server-side apply of the status subresource (field manager virtualio-agent, force). */
  applyStatus(name: string, status: VirtualIONodeStatus): Promise<void>;
  getPod(namespace: string, name: string): Promise<PodInfo | undefined>;
}

/**
 * Whether the object carries a plan: `spec.pools` is present. The operator always writes it (an
 * empty list when no pool selects the node); an agent creates its VirtualIONode without it, so a
 * deleted and re-created object means "no plan yet", never "no pools". (Field ownership cannot tell:
 * the API server records no manager for an applied empty list.)
 */
export function hasOperatorPlan(obj: VirtualIONode): boolean {
  return Array.isArray(obj.spec?.pools);
}

/** Plan from the watched VirtualIONode's spec (validated like a plan file), with its generation. */
export class ClusterPlanSource implements PlanSource {
  private state: PlanState = { kind: 'none', message: 'VirtualIONode not read yet' };
  private readonly log: Logger;
  /** UID of the object seen last (a new UID means it was re-created). */
  uid: string | undefined;
  /** metadata.generation of the object seen last. */
  generation: number | undefined;

  constructor(
    private readonly kube: KubeAgentPort,
    private readonly nodeName: string,
    logger: Logger,
    private readonly onRecreated?: () => void,
  ) {
    this.log = logger.child({ component: 'cluster-plan', node: nodeName });
  }

  current(): PlanState {
    return this.state;
  }

  /** Applies one observed object (exposed for tests). */
  observe(obj: VirtualIONode | undefined): void {
    if (!obj) {
      this.state = { kind: 'error', message: `VirtualIONode ${this.nodeName} was deleted; serving the last plan until it is re-created` };
      this.uid = undefined;
      return;
    }
    if (obj.metadata.uid && this.uid && obj.metadata.uid !== this.uid) this.onRecreated?.();
    if (obj.metadata.uid) this.uid = obj.metadata.uid;
    this.generation = obj.metadata.generation;
    if (!hasOperatorPlan(obj)) {
      // Created (or re-created) by an agent and not planned yet: that is "no plan known", never "remove everything".
      this.state = { kind: 'none', message: `VirtualIONode ${this.nodeName} has no plan from the operator yet` };
      return;
    }
    const r = validatePlan(obj.spec ?? {});
    const generation = obj.metadata.generation;
    this.state = r.ok ? { kind: 'ok', spec: r.spec, ...(generation !== undefined ? { generation } : {}) } : { kind: 'error', message: `invalid VirtualIONode spec: ${r.message}` };
  }

  async run(signal: AbortSignal, onChange: () => void): Promise<void> {
    let delay = 500;
    // Make sure the object exists (owned by the Node), then watch it.
    while (!signal.aborted) {
      try {
        const uid = await this.kube.getNodeUid(this.nodeName);
        if (!uid) this.log.warn('Node object not found; creating the VirtualIONode without an owner');
        const obj = await this.kube.ensureVirtualIONode(this.nodeName, uid);
        this.observe(obj);
        onChange();
        break;
      } catch (err) {
        this.state = { kind: this.state.kind === 'ok' ? 'ok' : 'none', message: `cannot read VirtualIONode: ${String(err)}` } as PlanState;
        this.log.warn({ err: String(err), retryInMs: delay }, 'cannot ensure VirtualIONode; retrying');
        await pause(delay, undefined, { signal }).catch(() => undefined); // a shutdown does not wait out a backoff
        delay = Math.min(delay * 2, 30_000);
      }
    }
    let lastText = '';
    await this.kube.watchVirtualIONode(
      this.nodeName,
      (obj) => {
        const text = JSON.stringify([obj?.metadata.uid, obj?.metadata.generation, obj?.spec]);
        if (text === lastText) return;
        lastText = text;
        this.observe(obj);
        if (!obj) {
          // Re-create it (the agent owns its existence); the next watch event picks it up.
          void this.kube.getNodeUid(this.nodeName).then(
            (uid) => this.kube.ensureVirtualIONode(this.nodeName, uid),
            () => undefined,
          ).catch((err: unknown) => this.log.warn({ err: String(err) }, 'cannot re-create VirtualIONode'));
        }
        onChange();
      },
      signal,
    );
  }
}

/**
 * Writes status only when it changed since the last successful write, debounced, retrying with
 * backoff on errors. `reset()` forgets what was written (e.g. the object was re-created).
 */
export class StatusWriter extends LatestWriter<VirtualIONodeStatus> {
  /** No write before this time (Date.now() ms): see submit's `deferMs`. */
  private notBefore = 0;

  constructor(
    private readonly kube: KubeAgentPort,
    private readonly nodeName: string,
    logger: Logger,
    signal: AbortSignal,
    debounceMs = 500,
  ) {
    super(logger.child({ component: 'status-writer' }), signal, debounceMs, 'VirtualIONode status');
  }

  /**
   * Queues a status; only the newest is written. `deferMs`: write it no sooner than that (local
   * planning: its news went out in the node's ack, and the API server serves the other nodes' acks first).
   */
  submit(status: VirtualIONodeStatus, deferMs = 0): void {
    if (deferMs > 0) this.notBefore = Math.max(this.notBefore, Date.now() + deferMs);
    this.queue(status);
  }

  protected key(status: VirtualIONodeStatus): string {
    return digest(status); // a 40-char digest, not a second full copy of the status
  }

  protected write(status: VirtualIONodeStatus): Promise<void> {
    return this.kube.applyStatus(this.nodeName, status);
  }

  protected override holdMs(): number {
    return Math.max(0, this.notBefore - Date.now());
  }
}
