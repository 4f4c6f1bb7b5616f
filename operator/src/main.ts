// The operator's composition root: flags, logger, the client-node adapter, metrics and health
// endpoint, leader election, and the controllers; SIGTERM/SIGINT abort one AbortController.
// The only place that reads process.env, touches files given on the command line, or exits.
//
// Shutdown is bounded to fit the pod's grace period (the chart's terminationGracePeriodSeconds, 30 s):
// the controllers get SHUTDOWN_DRAIN_MS to finish their in-flight writes (the leader keeps its Lease
// meanwhile), the Lease is released (one bounded request), the HTTP server closes, and a watchdog
// exits at SHUTDOWN_DEADLINE_MS whatever is left. A leader whose work does not stop after a loss, or
// whose work ends by itself, exits non-zero so the Deployment restarts it clean.
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { ConfigError, parseConfig, parseExtraPermittedHostDevices, usage } from './config.js';
import { startHttpServer } from './http.js';
import { ClientNodeKube } from './kube/client-node.js';
import { CLUSTER_EVENTS_NAMESPACE, COMPONENT, LEASE_NAME } from './kube/resources.js';
import { createLogger } from './log.js';
import { OperatorMetrics } from './metrics.js';
import { Operator } from './operator.js';
import { systemClock } from './runtime/clock.js';
import { EventRecorder } from './runtime/events.js';
import { runLeaderElection } from './runtime/leader.js';

/** How long the controllers may take to finish their in-flight work once told to stop. */
const SHUTDOWN_DRAIN_MS = 10_000;
/** From SIGTERM to exit, whatever happens (under the chart's 30 s grace period). */
const SHUTDOWN_DEADLINE_MS = 25_000;
/** How long open HTTP connections (a scrape, a probe) may keep the server from closing. */
const HTTP_CLOSE_MS = 2000;

/** Resolves true when `p` settles, false when `ms` passed after `signal` aborted first. */
function settledWithin(p: Promise<unknown>, signal: AbortSignal, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      timer = setTimeout(() => resolve(false), ms);
      timer.unref();
    };
    if (signal.aborted) arm();
    else signal.addEventListener('abort', arm, { once: true });
    void p.then(() => true, () => true).then((v) => {
      signal.removeEventListener('abort', arm);
      clearTimeout(timer);
      resolve(v);
    });
  });
}

async function main(): Promise<number> {
  let cfg;
  try {
    cfg = parseConfig(process.argv.slice(2), process.env, hostname());
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`virtualio-operator: ${err.message}`);
      return 2;
    }
    throw err;
  }
  if (cfg.help) {
    process.stdout.write(usage());
    return 0;
  }
  const log = createLogger(cfg.logLevel, { identity: cfg.identity });
  let extra = { pciHostDevices: [], mediatedDevices: [] } as ReturnType<typeof parseExtraPermittedHostDevices>;
  if (cfg.extraPermittedHostDevices) {
    try {
      extra = parseExtraPermittedHostDevices(readFileSync(cfg.extraPermittedHostDevices, 'utf8'), cfg.extraPermittedHostDevices);
    } catch (err) {
      log.fatal({ err, file: cfg.extraPermittedHostDevices }, 'Failed to read --extra-permitted-host-devices');
      return 2;
    }
  }

  const stop = new AbortController();
  const onSignal = (sig: string) => {
    if (stop.signal.aborted) return;
    log.info({ signal: sig, deadlineMs: SHUTDOWN_DEADLINE_MS }, 'Shutting down');
    stop.abort(new Error(sig));
    setTimeout(() => {
      log.fatal({ deadlineMs: SHUTDOWN_DEADLINE_MS }, 'Shutdown did not finish in time; exiting');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS).unref();
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  const kube = ClientNodeKube.fromOptions({ kubeconfig: cfg.kubeconfig });
  const clock = systemClock;
  const metrics = new OperatorMetrics({ defaultMetrics: true });
  // Events about cluster-scoped objects must live in `default` (API validation; kubectl describe looks there).
  const events = new EventRecorder({ kube, namespace: CLUSTER_EVENTS_NAMESPACE, component: COMPONENT, instance: cfg.identity, clock, log });
  let leading = false;
  let current: Operator | undefined;
  const { server, port } = await startHttpServer({
    host: cfg.metricsHost, port: cfg.metricsPort, registry: metrics.registry,
    healthy: () => !stop.signal.aborted,
    // A standby replica is ready (it serves probes and waits); a leader once its caches synced.
    ready: () => !leading || (current?.ready ?? false),
  });
  log.info({ port, leaderElect: cfg.leaderElect, managePermittedHostDevices: cfg.managePermittedHostDevices }, 'Started virtualio operator');

  const newOperator = () => new Operator({
    kube, clock, log, events, metrics,
    kubevirt: { namespace: cfg.kubevirtNamespace, name: cfg.kubevirtName, manage: cfg.managePermittedHostDevices, extra },
  });
  let code = 0;
  if (cfg.leaderElect) {
    const end = await runLeaderElection({
      kube, namespace: cfg.namespace, name: LEASE_NAME, identity: cfg.identity, leaseDurationMs: cfg.leaseDurationMs, clock, log,
      drainTimeoutMs: SHUTDOWN_DRAIN_MS,
      onStartedLeading: async (signal) => {
        leading = true;
        metrics.setLeader(true);
        current = newOperator();
        await current.run(signal);
      },
      onStoppedLeading: () => {
        leading = false;
        current = undefined;
        metrics.setLeader(false);
      },
      onNewLeader: (id) => log.info({ leader: id }, 'Observed new leader'),
    }, stop.signal);
    if (end.reason !== 'shutdown') {
      // The work of the last term may still run (or failed): only a restart gives a clean replica.
      log.error({ ...end }, 'Cannot lead safely any more; exiting so that the Deployment restarts this replica');
      code = 1;
    } else if (!end.drained) {
      log.error({ ...end, drainTimeoutMs: SHUTDOWN_DRAIN_MS }, 'The controllers did not stop in time; exiting without releasing the Lease');
      code = 1;
    }
  } else {
    leading = true;
    metrics.setLeader(true);
    current = newOperator();
    const run = current.run(stop.signal);
    if (!(await settledWithin(run, stop.signal, SHUTDOWN_DRAIN_MS))) {
      log.error({ drainTimeoutMs: SHUTDOWN_DRAIN_MS }, 'The controllers did not stop in time; exiting');
      code = 1;
    } else {
      await run;
      if (!stop.signal.aborted) code = 1; // the controllers stopped by themselves
    }
  }
  stop.abort(new Error('stopping'));
  await new Promise<void>((r) => {
    const force = setTimeout(() => server.closeAllConnections(), HTTP_CLOSE_MS);
    force.unref();
    server.close(() => {
      clearTimeout(force);
      r();
    });
  });
  log.info({ code }, 'Stopped virtualio operator');
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('virtualio-operator: fatal:', err);
    process.exit(1);
  },
);
