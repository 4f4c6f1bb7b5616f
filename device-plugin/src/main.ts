// The agent's entrypoint: parse flags (docs/flags.md), wire the ports, run one loop until SIGTERM or
// SIGINT, then shut down without withdrawing any device (the kubelet keeps them through its grace
// period until the next agent registers; CDI specs and device-info files stay for running pods). The only place that reads process.env, argv and signals, or exits.
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentManager } from './agent/manager.js';
import { CHECKPOINT_FILE, Checkpoint } from './agent/checkpoint.js';
import { AckWriter, STATUS_AFTER_ACK_MS } from './agent/ack.js';
import { ClusterPlanSource, StatusWriter } from './agent/cluster.js';
import { LocalPlanSource } from './agent/local-plan.js';
import { LEDGER_FILE } from './agent/ledger.js';
import { acquireAgentLock, type AgentLockHolder } from './agent/lock.js';
import { createNodeOps } from './agent/node-ops.js';
import { nvidiaToolRunner } from './carving/nvidia-tools.js';
import type { PlanSource } from './agent/plan.js';
import type { StatusSink } from './agent/ports.js';
import { parseAgentConfig } from './config.js';
import { detachFromKubelet } from './kubelet/detach.js';
import { PluginDirWatcher } from './kubelet/watcher.js';
import { createLogger, isLogLevel } from './log.js';
import { createMetrics, serveMetrics } from './metrics.js';
import type { PodLookup } from './podresources/client.js';
import type { DraWiring } from './dra/wire.js';
import { execIpCli, execIpLink } from './carving/ip-link.js';
import type { PoolPlan } from './model.js';

/** The version in the nearest package.json upwards (the checkout's, or the image's /app/package.json). */
function agentVersion(): string {
  try {
    for (let dir = dirname(fileURLToPath(import.meta.url)); dirname(dir) !== dir; dir = dirname(dir)) {
      const file = join(dir, 'package.json');
      if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? 'dev';
    }
  } catch {
    /* unreadable: 'dev' */
  }
  return 'dev';
}

async function main(): Promise<number> {
  const parsed = parseAgentConfig(process.argv.slice(2), process.env, hostname());
  if (parsed.kind === 'help') {
    process.stdout.write(`${parsed.text}\n`);
    return 0;
  }
  if (parsed.kind === 'error') {
    process.stderr.write(`virtualio-agent: ${parsed.message}\nRun with --help for the flags.\n`);
    return 2;
  }
  const cfg = parsed.config;
  const logger = createLogger(isLogLevel(cfg.logLevel) ? cfg.logLevel : 'info');
  const controller = new AbortController();
  const { signal } = controller;
  // The HTTP endpoint outlives a hand-over (the liveness probe must keep passing until the pod goes).
  const served = new AbortController();
  let signals = 0;
  /** Set once this agent handed the node over (--handover): it then waits for its pod's deletion. */
  let handedOver: string | undefined;
  /**
   * Set while this agent (--handover) waits for a lock holder that cannot hand over (a version before
   * hand-over): it then reads Ready as a standby, so the rolling update deletes the old pod instead of
   * stalling; it still serves nothing until the lock is released (never two active agents).
   */
  let standby: string | undefined;
  const onSignal = (name: string): void => {
    if (handedOver !== undefined && controller.signal.aborted) {
      logger.info({ signal: name }, 'stopped after handing the node over');
      process.exit(0);
    }
    signals++;
    if (signals > 1) {
      logger.warn({ signal: name }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal: name }, 'shutting down');
    controller.abort();
    served.abort();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));

  const mode = cfg.planFile ? 'standalone' : 'cluster';
  const version = agentVersion();
  logger.info({ mode, node: cfg.nodeName, version, config: cfg }, 'virtualio agent starting');
  const metrics = createMetrics({ processMetrics: true });
  const watcher = new PluginDirWatcher({ dir: cfg.pluginDir, logger: logger.child({ component: 'plugin-dir' }), signal });

  let plan: PlanSource;
  let statusSink: StatusSink | undefined;
  let lookupPod: PodLookup | undefined;
  if (cfg.planFile) {
    // Loaded lazily so cluster mode never loads the YAML parser.
    const { FilePlanSource } = await import('./agent/plan-file.js');
    plan = new FilePlanSource(cfg.planFile, logger);
  } else {
    // Loaded lazily so standalone mode never loads client-node.
    const { KubeAdapter, loadKubeConfig } = await import('./kube/adapter.js');
    let kube;
    try {
      kube = new KubeAdapter(loadKubeConfig(cfg.kubeconfig), logger);
    } catch (err) {
      logger.fatal({ err }, 'cannot load Kubernetes credentials (use --kubeconfig, or --plan-file for standalone mode)');
      return 2;
    }
    const writer = new StatusWriter(kube, cfg.nodeName, logger, signal);
    if (cfg.localPlan) {
      // The ack (a small object of its own) first: the pool status reads it before this status lands.
      const acker = new AckWriter(kube, cfg.nodeName, logger, signal);
      const local = new LocalPlanSource(kube, cfg.nodeName, logger, () => {
        writer.reset();
        acker.reset();
      });
      plan = local;
      statusSink = (s) => {
        writer.submit(s, acker.submit(s) ? STATUS_AFTER_ACK_MS : 0);
        local.observeStatus(s);
      };
    } else {
      plan = new ClusterPlanSource(kube, cfg.nodeName, logger, () => writer.reset());
      statusSink = (s) => writer.submit(s);
    }
    lookupPod = (ns, name) => kube.getPod(ns, name);
  }

  let rescan = (): void => undefined;
  // --dra: set before the manager runs; allocation safety may read dra?.driver.preparedSliceIds().
  let dra: DraWiring | undefined;
  // One agent per node: the state folder's records and the devices have one writer. /healthz and
  // /readyz answer while a second agent waits (a rolling update with surge), so it is not restarted.
  const started: { manager?: AgentManager } = {};
  try {
    await serveMetrics({
      ...cfg.metricsAddress,
      metrics,
      readiness: () => (handedOver !== undefined ? { ready: false, reason: handedOver } : undefined)
        ?? started.manager?.readiness()
        ?? (standby !== undefined ? { ready: true, reason: standby } : { ready: false, reason: 'waiting for the node lock: another agent runs on this node' }),
      status: () => started.manager?.status(),
      logger,
      signal: served.signal,
    });
  } catch (err) {
    logger.fatal({ err, address: cfg.metricsAddress }, 'cannot serve metrics');
    return 1;
  }
  // Hand-over (docs/design-decisions.md): detach every pool from the kubelet first, so that the
  // graceful stop that follows (devices kept) ends our streams with no client of the kubelet to
  // disconnect: its devices stay healthy and allocatable until the new agent registers.
  const handOver = async (to: AgentLockHolder | undefined): Promise<void> => {
    if (signal.aborted) return;
    const who = to ? `pid ${to.pid}${to.pod ? ` (pod ${to.pod})` : ''}` : 'a new agent';
    const resources = started.manager?.servedResourceNames() ?? [];
    logger.info({ to, resources }, 'handing the node over to a new agent');
    const results = await detachFromKubelet({ kubeletSocket: join(cfg.pluginDir, 'kubelet.sock'), pluginDir: cfg.pluginDir, resourceNames: resources })
      .catch((err: unknown) => resources.map((resourceName) => ({ resourceName, detached: false, answer: String(err) })));
    for (const r of results) {
      if (r.detached) logger.info(r, 'detached the pool from the kubelet; its devices stay allocatable');
      else logger.warn(r, 'the kubelet did not detach the pool: its devices may read unhealthy until the new agent registers');
    }
    handedOver = `handed the node over to ${who}; waiting for this pod to be deleted`;
    controller.abort();
  };
  let lock;
  try {
    lock = await acquireAgentLock(cfg.stateDir, {
      identity: { node: cfg.nodeName, ...(process.env.VIO_POD_NAME ? { pod: process.env.VIO_POD_NAME } : {}) },
      onWait: (m, h) => {
        if (h?.handsOver) standby = undefined; // a holder that will hand over: wait unready as usual
        logger.warn({ holder: h }, m);
      },
      onAcquired: (m) => {
        standby = undefined;
        logger.info(m);
      },
      signal,
      requestHandover: cfg.handover,
      // Upgrading from an agent before hand-over: a one-time capacity gap (the old agent stops when its
      // pod is deleted, then this one takes the lock and starts) instead of a rollout that never ends.
      onHolderCannotHandOver: (m, h) => {
        standby = `standby: the agent holding this node (pid ${h.pid}${h.pod ? `, pod ${h.pod}` : ''}) cannot hand it over; this agent starts once it stops`;
        logger.warn({ holder: h }, `${m}. Reporting Ready as a standby so the rolling update deletes the old agent's pod; `
          + 'this agent takes the node once it has stopped: the pools read unallocatable for the seconds in between (once, for this upgrade)');
      },
      ...(cfg.handover ? { onHandoverRequest: (to: AgentLockHolder | undefined) => void handOver(to) } : {}),
    });
  } catch (err) {
    if (signal.aborted) return 0;
    logger.fatal({ err, dir: cfg.stateDir }, 'cannot take the node lock');
    served.abort();
    return 1;
  }
  const agent = new AgentManager({
    nodeName: cfg.nodeName,
    agentVersion: version,
    // Each sysfs write runs in a helper process with a timeout: a write the kernel blocks never freezes the agent.
    ops: createNodeOps({ sysfsRoot: cfg.sysfsRoot, devRoot: cfg.devRoot, nodeName: cfg.nodeName, logger, nvmeCli: process.env.VIO_NVME_CLI ?? 'nvme', tools: nvidiaToolRunner({ ...(process.env.VIO_NVIDIA_SRIOV_MANAGE ? { sriovManage: process.env.VIO_NVIDIA_SRIOV_MANAGE } : {}), ...(process.env.VIO_NVIDIA_SMI ? { nvidiaSmi: process.env.VIO_NVIDIA_SMI } : {}) }), writer: { isolated: { timeoutMs: cfg.writeTimeoutMs, onUnstuck: () => rescan() } } }),
    checkpoint: new Checkpoint(join(cfg.stateDir, CHECKPOINT_FILE), cfg.nodeName, logger.child({ component: 'checkpoint' })),
    plan,
    pluginDir: cfg.pluginDir,
    registration: { mode: cfg.devicePluginRegistration, kubeletDir: cfg.kubeletDir },
    podResourcesSocket: cfg.podResourcesSocket,
    devinfoDir: cfg.devinfoDir,
    cdi: { enabled: cfg.cdi, dir: cfg.cdiDir },
    watcher,
    logger,
    metrics,
    rescanIntervalMs: cfg.rescanIntervalMs,
    devRoot: cfg.devRoot,
    watchPaths: [
      join(cfg.devRoot, 'vfio'),
      join(cfg.sysfsRoot, 'bus/pci/devices'),
      join(cfg.sysfsRoot, 'bus/pci/drivers/vfio-pci'),
      join(cfg.sysfsRoot, 'bus/mdev/devices'),
      join(cfg.sysfsRoot, 'class/fc_host'),
    ],
    ...(statusSink ? { statusSink } : {}),
    ...(cfg.localPlan ? { reportPlan: true } : {}),
    ...(lookupPod ? { lookupPod } : {}),
    ledgerFile: join(cfg.stateDir, LEDGER_FILE),
    releaseGraceMs: cfg.releaseGraceMs,
    // Slices of claims the kubelet had the DRA driver prepare are held like allocated ones; until the
    // driver has read its record, nobody can tell which those are.
    ...(cfg.dra
      ? {
          extraHolderInfo: () => dra?.driver.preparedHolders() ?? new Map(),
          draUnknown: () => (dra ? dra.driver.holdersUnknown() : 'the DRA driver has not read its prepared claims yet'),
          draRegistration: () => dra?.driver.registrationState() ?? { registered: false, error: 'DRA driver starting' },
          onDemandWanted: () => dra?.driver.onDemandWanted() ?? new Map(),
        }
      : {}),
  });
  started.manager = agent;
  rescan = () => agent.trigger('fs');
  if (cfg.dra) {
    const { startDra } = await import('./dra/wire.js');
    dra = await startDra({
      nodeName: cfg.nodeName, kubeconfig: cfg.kubeconfig, kubeletDir: cfg.kubeletDir, cdiDir: cfg.cdiDir, sysfsRoot: cfg.sysfsRoot,
      agent: {
        pools: (): PoolPlan[] | undefined => {
          const st = plan.current();
          return st.kind === 'ok' ? (st.spec.pools ?? []) : undefined;
        },
        slices: () => agent.currentSlices(),
        inventory: () => ({ devices: agent.status()?.inventory?.devices ?? [] }),
        // The status exists once the first cycle ended: before it, no slices means "not scanned yet".
        cycleDone: () => agent.status() !== undefined,
        onDemand: () => agent.onDemandState(),
      },
      logger, signal,
      onHoldersChanged: () => agent.trigger('podresources'),
      onRegistration: () => agent.trigger('registration'),
      // One slice, one holder: what the ledger says is held outside DRA is neither published nor prepared.
      holderOf: (id) => agent.holderOf(id),
      observe: (operation, ok, seconds) => metrics.draOperationSeconds.observe({ operation, result: ok ? 'ok' : 'error' }, seconds),
      // --vf-net-config: claims may set a VF's MAC, VLAN, ... on its PF (iproute2, VIO_IP_CLI).
      ...(cfg.vfNetConfig ? { vfNetwork: execIpLink(execIpCli(process.env.VIO_IP_CLI ?? 'ip')) } : {}),
    });
  }
  await agent.run(signal);
  await dra?.done;
  await lock.release();
  if (handedOver !== undefined) {
    // Exiting now would only restart this container (the pod stays until the DaemonSet deletes it,
    // once the new agent is Ready) and make it ask for the node back.
    logger.info(handedOver);
    await new Promise<void>((resolve) => served.signal.addEventListener('abort', () => resolve(), { once: true }));
  } else served.abort();
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error('virtualio-agent: fatal:', err);
    process.exitCode = 1;
  },
);
