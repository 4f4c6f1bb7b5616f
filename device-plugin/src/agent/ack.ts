// Local planning (--local-plan): the agent's acknowledgement of the plan it carried out, in a small
// object of its own (VirtualIONodeAck, named after the node, owned by the Node). Per pool served: a
// digest of the plan entry (planEntryDigest, the function the operator compares with) and the pool's
// state. Written apart from, and before, the VirtualIONode status: that write carries the whole
// inventory and its managedFields and costs the API server several times more, so at 1,000 nodes
// the pool status waited tens of seconds for it. Written only when its content changed; failures
// are logged and retried with backoff like the status writer's; nothing here blocks Allocate.
import type { PoolAck, VirtualIONodeStatus } from '../../../crds/generated/types.js';
import { ackPools } from '../../../operator/src/controllers/plan/ack.js';
import type { Logger } from '../log.js';
import { LatestWriter } from './latest-writer.js';

/** What the ack writer needs from the API server. */
export interface AckPort {
  /** UID of the Node object, or undefined when it does not exist. */
  getNodeUid(name: string): Promise<string | undefined>;
  /** Server-side apply of the node's VirtualIONodeAck (field manager virtualio-agent, force), owned by the Node when `nodeUid` is known. */
  applyAck(name: string, pools: PoolAck[], nodeUid: string | undefined): Promise<void>;
}

/** The ack of one published status: its served plan (status.localPlan.pools) with each pool's state. */
export function ackOfStatus(status: VirtualIONodeStatus): PoolAck[] {
  const plan = (status.localPlan?.pools ?? []).filter((p): p is { name: string } => typeof (p as { name?: unknown }).name === 'string');
  return ackPools(plan, status.pools ?? []);
}

/**
 * How long the VirtualIONode status write waits after the ack it follows changed. A pool edit makes
 * every node's agent write both at once; the status (inventory and managedFields: ~4× the API
 * server's CPU of an ack) would then compete with the acks of the other nodes for it, and the acks
 * are what the pool status reads. 5 s lets ~1,000 nodes' acks through first on a 2-core API server.
 */
export const STATUS_AFTER_ACK_MS = 5000;

export class AckWriter extends LatestWriter<PoolAck[]> {
  private uid: string | undefined;

  constructor(
    private readonly kube: AckPort,
    private readonly nodeName: string,
    logger: Logger,
    signal: AbortSignal,
  ) {
    super(logger.child({ component: 'ack-writer' }), signal, 0, 'VirtualIONodeAck');
  }

  /**
   * Queues the ack of a status just published; written at once unless it equals the last one
   * written or queued. Returns whether it is new and acks are being written (then the status write
   * can wait: STATUS_AFTER_ACK_MS; while acks fail, the status is the only report and does not wait).
   */
  submit(status: VirtualIONodeStatus): boolean {
    const pools = ackOfStatus(status);
    if (this.key(pools) === (this.pending ? this.key(this.pending) : this.written)) return false;
    this.queue(pools);
    return !this.failing;
  }

  /** Forgets what was written and the Node's UID (the VirtualIONode or Node was re-created). */
  override reset(): void {
    super.reset();
    this.uid = undefined;
  }

  protected key(pools: PoolAck[]): string {
    return JSON.stringify(pools);
  }

  protected async write(pools: PoolAck[]): Promise<void> {
    this.uid ??= await this.kube.getNodeUid(this.nodeName);
    await this.kube.applyAck(this.nodeName, pools, this.uid);
  }
}
