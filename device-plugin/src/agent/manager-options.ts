// What the agent's loop (manager.ts) is built from: its collaborators, paths and timings.
import type { BackoffOptions } from '../carving/backoff.js';
import type { WantedMdev } from '../carving/ondemand.js';
import type { PluginDirWatcher } from '../kubelet/watcher.js';
import type { Logger } from '../log.js';
import type { AgentMetrics } from '../metrics.js';
import type { RegistrationOptions } from '../plugin/pool.js';
import type { Holder, PodLookup } from '../podresources/client.js';
import type { Checkpoint } from './checkpoint.js';
import type { PlanSource } from './plan.js';
import type { NodeOps, StatusSink } from './ports.js';

export interface ManagerOptions {
  nodeName: string;
  agentVersion: string;
  ops: NodeOps;
  plan: PlanSource;
  pluginDir: string;
  /** How pool device plugins register with the kubelet (default: kubelet.sock). */
  registration?: RegistrationOptions;
  podResourcesSocket: string;
  devinfoDir: string;
  cdi: { enabled: boolean; dir: string };
  watcher: PluginDirWatcher;
  logger: Logger;
  metrics: AgentMetrics;
  rescanIntervalMs: number;
  /** Folders whose changes trigger a rescan (e.g. <dev-root>/vfio, <sysfs>/bus/pci/devices). */
  watchPaths: string[];
  /** Where the node's /dev is seen (default /dev): the health fast path maps events to slices' nodes. */
  devRoot?: string;
  statusSink?: StatusSink;
  /** Report the plan being served in status.localPlan (the agent derives its own plan: --local-plan). */
  reportPlan?: boolean;
  lookupPod?: PodLookup;
  /** Wall clock for condition timestamps. */
  now?: () => Date;
  /** Monotonic clock in ms for carving retry backoff (default performance.now). */
  clock?: () => number;
  /** Backoff of refused carving writes (default 1 s doubling to 5 min). */
  backoff?: BackoffOptions;
  /** PodResources timings (tests and benchmarks shorten them). */
  podResources?: { intervalMs?: number; minGapMs?: number; afterAllocateMs?: number };
  /** The node-local record of served pools, owned PFs and original driver facts (default: in memory only). */
  checkpoint?: Checkpoint;
  /** Where the ledger of who holds what is kept (default: memory only). */
  ledgerFile?: string;
  /** The kubelet's device manager checkpoint (default `<pluginDir>/kubelet_internal_checkpoint`). */
  kubeletCheckpoint?: string;
  /** How long no source must show a slice held before it counts as released (default 30 s). */
  releaseGraceMs?: number;
  /** At start, how long a pool waits to register while a held slice of it is not restored (default 10 s). */
  restoreWaitMs?: number;
  /** Slices held by prepared DRA claims, with who holds them (holders under the same safety rules). */
  extraHolderInfo?: () => ReadonlyMap<string, Holder>;
  /** Why the DRA driver cannot tell which claims it prepared (then every slice counts as held). */
  draUnknown?: () => string | undefined;
  /**
   * Registration of the DRA driver, which stands for the device plugin registration of every pool
   * with frontEnd DRA. Absent: this agent does not serve DRA, and such pools report that.
   */
  draRegistration?: () => { registered: boolean; error?: string };
  /** On-demand pools: the mdevs the scheduler allocated claims on this node (the DRA driver's view). */
  onDemandWanted?: () => ReadonlyMap<string, WantedMdev>;
}
