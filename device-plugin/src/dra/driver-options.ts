// The DRA driver's public types: its options (DraDriverOptions), the holder shapes it shares with the
// agent's ledger (PreparedHolder, DraHoldState), the gRPC services it offers and the answer one
// claim's prepare gets. driver.ts re-exports them.
import type { NodePrepareResourceResponse__Input } from '../../../proto/generated/dra-v1/k8s/io/kubelet/pkg/apis/dra/v1/NodePrepareResourceResponse.js';
import type { Logger } from '../log.js';
import type { IpLink } from '../carving/ip-link.js';
import type { ClaimListWatch } from './claims.js';
import type { SetDeviceCondition } from './ondemand.js';
import type { ClaimObject } from './prepare.js';
import type { ResourceSliceStore } from './publisher.js';

/** A slice held through one of our claims (prepared or allocated), shaped like the agent's PodResources holders. */
export interface PreparedHolder {
  resourceName: string;
  namespace: string;
  pod: string;
  container: string;
  /** The ResourceClaim that holds it. */
  claim: string;
}

/**
 * Who holds a slice according to the agent's ledger (AgentManager.holderOf). A holder with `claim`
 * is one of our DRA claims (the agent got it from `preparedHolders()`).
 */
export type DraHoldState = { kind: 'held'; by: string; holder?: { resourceName: string; claim?: string } | undefined } | { kind: 'free' };

/** The gRPC services we offer, preferred first (PluginInfo.supported_versions). */
export const DRA_SERVICES = ['v1.DRAPlugin', 'v1beta1.DRAPlugin'];

export interface DraDriverOptions {
  nodeName: string;
  /** The kubelet's root folder (default /var/lib/kubelet): plugins/ and plugins_registry/ live there. */
  kubeletDir: string;
  cdiDir: string;
  sysfsRoot: string;
  /** Reads a ResourceClaim; undefined when it does not exist. `signal` aborts it at the deadline. */
  getClaim: (namespace: string, name: string, signal?: AbortSignal) => Promise<ClaimObject | undefined>;
  /** How long prepare waits for that read (default 10 s); the claim then gets an error and the kubelet retries. */
  claimTimeoutMs?: number;
  /**
   * Lists and watches ResourceClaims: a claim the scheduler allocated on this node counts as a
   * holder before the kubelet prepares it. Absent: only prepared claims hold slices.
   */
  claims?: ClaimListWatch;
  /** Who holds a slice per the agent's ledger; slices held by anyone but our claims are neither published nor prepared. */
  holderOf?: (sliceId: string) => DraHoldState;
  /**
   * A hold the ledger keeps without naming its holder (a released claim's grace period) counts as our
   * claim's while one of our claims held the slice less than this long ago, in a pool that has been a
   * DRA pool since (default 10 min). Otherwise the slice would be withdrawn after every unprepare.
   */
  recentHoldMs?: number;
  /** Wall clock in ms (tests). */
  nowMs?: () => number;
  store: ResourceSliceStore;
  nodeUid?: () => Promise<string | undefined>;
  logger: Logger;
  /** ResourceSlice re-list period (default 30 s). */
  resyncMs?: number;
  /** How often the registration socket is checked for removal (default 1 s). */
  socketCheckMs?: number;
  /** Called when the set of prepared slices changed (the agent re-plans carving). */
  onHoldersChanged?: () => void;
  /** Called when the kubelet reported a registration outcome (the agent refreshes its status). */
  onRegistration?: () => void;
  /** Called after each claim's prepare or unprepare with its duration (the agent's latency histogram). */
  observe?: (operation: 'prepare' | 'unprepare', ok: boolean, seconds: number) => void;
  /** Health stream: a full device list is re-sent at least this often (default 10 s; the kubelet's timeout is 30 s). */
  healthRefreshMs?: number;
  /** Wall clock in Unix seconds (tests). */
  nowSeconds?: () => number;
  /**
   * How long NodePrepareResources waits for the agent's first cycle (the first `update`) before it
   * answers with an error the kubelet retries (default 30 s, within the kubelet's 45 s call timeout).
   * Until then nothing is published and the health stream stays silent: the driver does not know the
   * node's slices yet.
   */
  readyTimeoutMs?: number;
  /**
   * The kubelet's DRA state file (default `<kubeletDir>/dra_manager_state`): a prepared claim whose
   * UID it does not name is one the kubelet will never unprepare. Missing or unreadable: no claim is
   * ever taken for stale.
   */
  kubeletDraStateFile?: string;
  /**
   * A prepared claim is forgotten once, for this long (default 10 min), the kubelet's state file has
   * not named it, ResourceClaims were listed without it allocated here, and a GET confirms the claim
   * is gone or no longer allocated here.
   */
  staleClaimGraceMs?: number;
  /** How often stale prepared claims are looked for (default 60 s). */
  gcIntervalMs?: number;
  /**
   * Per-claim VF network settings (MAC, VLAN, trust, spoof check, rates) on the PF, through this
   * port (`ip`). Absent: the opt-in is off, and a claim that asks for settings fails prepare saying so.
   */
  vfNetwork?: IpLink;
  /**
   * Sets a condition on one allocated device of a claim (status.devices[]): on-demand devices report
   * Carved (the scheduler then binds the pod) or CarveFailed (it tries elsewhere). Absent: never set.
   */
  setDeviceCondition?: SetDeviceCondition;
}

/** What NodePrepareResources answers for one claim. */
export type PrepareOutcome = { devices: NodePrepareResourceResponse__Input['devices']; error: string };
