// Wires the DRA driver into a running agent (main.ts, behind --dra): builds the client-node ports
// (ResourceSlices, ResourceClaim reads, the list and watch of allocated claims), feeds the driver the
// agent's slices after every cycle and the ledger's holderOf, and returns the holder set allocation
// safety reads. Kept out of main.ts so the agent core stays unaware of DRA.
import type { IpLink } from '../carving/ip-link.js';
import type { Logger } from '../log.js';
import type { Inventory, PoolPlan, Slice } from '../model.js';
import type { ClaimListWatch } from './claims.js';
import { DraDriver, type DraHoldState } from './driver.js';
import type { ClaimObject } from './prepare.js';
import type { OnDemandState, SetDeviceCondition } from './ondemand.js';
import type { ResourceSliceStore } from './publisher.js';

/** What the driver reads from the agent: kept to the manager's public surface. */
export interface AgentView {
  /** The plan's pools as last applied (undefined before the first plan). */
  pools(): readonly PoolPlan[] | undefined;
  /** The slices as last built. A new array after every cycle. */
  slices(): readonly Slice[];
  /** The inventory as last scanned. */
  inventory(): Inventory;
  /**
   * True once the agent finished a cycle (scan, carving, slices, status). Before that `slices()` is
   * empty because nothing was scanned yet, not because the node has no devices: handing it over
   * would publish every DRA pool empty, at a new generation, until the first cycle ends.
   */
  cycleDone(): boolean;
  /** On-demand pools: the parents' capacity and the claimed mdevs that could not be carved. */
  onDemand?(): OnDemandState;
}

/** The API server as the driver uses it (tests pass fakes; by default built from the kubeconfig). */
export interface DraPorts {
  store: ResourceSliceStore;
  getClaim: (namespace: string, name: string, signal?: AbortSignal) => Promise<ClaimObject | undefined>;
  claims?: ClaimListWatch;
  nodeUid?: () => Promise<string | undefined>;
  /** Sets a claim device's condition (on-demand pools' binding conditions). */
  setDeviceCondition?: SetDeviceCondition;
}

export interface DraWiring {
  driver: DraDriver;
  /** Resolves once the driver stopped (after `signal` aborts). */
  done: Promise<void>;
}

/**
 * Starts the DRA driver for a node: publishes its DRA pools, registers with the kubelet's plugin
 * watcher under `<kubeletDir>/plugins_registry` and serves prepare/unprepare. The agent's state is
 * sampled every `pollMs` (default 250 ms) and handed over when the slices or pools changed.
 */
export async function startDra(opts: {
  nodeName: string;
  kubeconfig: string | undefined;
  kubeletDir: string;
  cdiDir: string;
  sysfsRoot: string;
  agent: AgentView;
  logger: Logger;
  signal: AbortSignal;
  onHoldersChanged?: () => void;
  onRegistration?: () => void;
  /** Each claim's prepare/unprepare duration (the agent's metrics). */
  observe?: (operation: 'prepare' | 'unprepare', ok: boolean, seconds: number) => void;
  /** Who holds a slice per the agent's ledger (AgentManager.holderOf): slices held outside DRA are neither published nor prepared. */
  holderOf?: (sliceId: string) => DraHoldState;
  pollMs?: number;
  /** Per-claim VF network settings through this port (the --vf-net-config opt-in); absent: off. */
  vfNetwork?: IpLink;
  /** The API server ports (default: client-node on the kubeconfig). */
  ports?: DraPorts;
}): Promise<DraWiring> {
  const ports = opts.ports ?? (await kubePorts(opts.kubeconfig, opts.nodeName));
  const driver = new DraDriver({
    nodeName: opts.nodeName,
    kubeletDir: opts.kubeletDir,
    cdiDir: opts.cdiDir,
    sysfsRoot: opts.sysfsRoot,
    getClaim: ports.getClaim,
    ...(ports.claims ? { claims: ports.claims } : {}),
    store: ports.store,
    ...(ports.nodeUid ? { nodeUid: ports.nodeUid } : {}),
    logger: opts.logger,
    ...(opts.onHoldersChanged ? { onHoldersChanged: opts.onHoldersChanged } : {}),
    ...(opts.onRegistration ? { onRegistration: opts.onRegistration } : {}),
    ...(opts.holderOf ? { holderOf: opts.holderOf } : {}),
    ...(opts.observe ? { observe: opts.observe } : {}),
    ...(opts.vfNetwork ? { vfNetwork: opts.vfNetwork } : {}),
    ...(ports.setDeviceCondition ? { setDeviceCondition: ports.setDeviceCondition } : {}),
  });
  let lastSlices: readonly Slice[] | undefined;
  let lastPools: readonly PoolPlan[] | undefined;
  const tick = (): void => {
    if (!opts.agent.cycleDone()) return; // nothing scanned yet: the driver neither publishes nor prepares
    const pools = opts.agent.pools();
    const slices = opts.agent.slices();
    if (!pools || (slices === lastSlices && pools === lastPools)) return;
    lastSlices = slices;
    lastPools = pools;
    driver.update(pools, slices, opts.agent.inventory(), opts.agent.onDemand?.());
  };
  const timer = setInterval(tick, opts.pollMs ?? 250);
  timer.unref();
  const done = driver.run(opts.signal).finally(() => clearInterval(timer));
  return { driver, done };
}

async function kubePorts(kubeconfig: string | undefined, node: string): Promise<DraPorts> {
  const { loadKubeConfig } = await import('../kube/adapter.js');
  const { KubeClaimListWatch, KubeResourceSliceStore, claimReader, deviceConditionWriter, nodeUidReader } = await import('./kube.js');
  const kc = loadKubeConfig(kubeconfig);
  return { getClaim: claimReader(kc), claims: new KubeClaimListWatch(kc), store: new KubeResourceSliceStore(kc, node), nodeUid: nodeUidReader(kc, node), setDeviceCondition: deviceConditionWriter(kc) };
}
