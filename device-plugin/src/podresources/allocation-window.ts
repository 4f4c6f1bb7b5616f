// Keeps the agent's own PodResources Lists out of the kubelet's device allocations.
//
// Why: the kubelet's device manager (v1.36.3 pkg/kubelet/cm/devicemanager/manager.go) reserves the
// devices of the pod it admits in `allocatedDevices` (devicesToAllocate, right after our
// GetPreferredAllocation answer), calls our Allocate outside its lock, and records the pod's devices
// in `podDevices` only once the answer is back. A PodResources List runs UpdateAllocatedDevices
// (pkg/kubelet/apis/podresources/server_v1.go), which, when a pod has gone inactive since the last
// call, rebuilds `allocatedDevices` from `podDevices` alone: the reservation in flight is lost, and
// until the next rebuild the kubelet offers that device to the next pod of the resource while the
// first pod holds it (kubernetes/kubernetes pull request 137534, open; test/soak/kubelet-double-grant.ts
// shows it on the real kubelet). The agent Lists shortly after each Allocate and every few seconds,
// so its own List could land there: in the real-kubelet churn soak a VM was handed the mdev the VM
// started one cycle before held (BENCHMARKS.md).
//
// So no List of ours starts while an allocation call is being answered, between a
// GetPreferredAllocation answer and the Allocate that follows it (at most `preferredMs`), nor
// `settleMs` after the last call; and GetPreferredAllocation is answered only once a List of ours
// already in flight has come back (its rebuild then comes before the reservation). Not covered: other
// PodResources clients (monitoring agents), and a kubelet that reserves without asking
// GetPreferredAllocation first (NUMA-aligned picks, devices reused from init containers), which this
// sees from its Allocate on.
export class AllocationWindow {
  private open = 0;
  private lastEnd = Number.NEGATIVE_INFINITY;
  /** Until when each answered GetPreferredAllocation still expects its Allocate, oldest first. */
  private awaiting: number[] = [];
  private inFlight: Promise<unknown> | undefined;

  constructor(
    /** Quiet time after the last allocation call, for the kubelet to record what Allocate answered. */
    private readonly settleMs = 500,
    /** How long an answered GetPreferredAllocation keeps Lists out while its Allocate has not come. */
    private readonly preferredMs = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** An allocation call came in; call the result once it is answered. */
  begin(call: 'GetPreferredAllocation' | 'Allocate'): () => void {
    this.open++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.open--;
      this.lastEnd = this.now();
      if (call === 'GetPreferredAllocation') this.awaiting.push(this.lastEnd + this.preferredMs);
      else this.awaiting.shift();
    };
  }

  /** Resolves once no List of ours is in flight (a List started meanwhile is waited for too). */
  async listsDone(): Promise<void> {
    while (this.inFlight) await this.inFlight.catch(() => undefined);
  }

  /** How long a List must wait before it may start (0: now); while a call is open or an Allocate awaited, `settleMs` (ask again then). */
  waitMs(): number {
    const t = this.now();
    while (this.awaiting.length > 0 && (this.awaiting[0] as number) <= t) this.awaiting.shift();
    if (this.open > 0 || this.awaiting.length > 0) return this.settleMs;
    return Math.max(0, this.lastEnd + this.settleMs - t);
  }

  /** Runs one List (the caller found waitMs() 0), so that GetPreferredAllocation can wait for it. */
  async list<T>(run: () => Promise<T>): Promise<T> {
    const p = run();
    this.inFlight = p;
    try {
      return await p;
    } finally {
      if (this.inFlight === p) this.inFlight = undefined;
    }
  }
}
