// The operator's composition root: flags, logger, the client-node adapter, metrics and health
// endpoint, leader election, and the controllers; SIGTERM/SIGINT abort one AbortController.
// The only place that reads process.env, touches files given on the command line, or exits.
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
    log.info({ signal: sig }, 'Shutting down');
    stop.abort(new Error(sig));
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
  if (cfg.leaderElect) {
    await runLeaderElection({
      kube, namespace: cfg.namespace, name: LEASE_NAME, identity: cfg.identity, leaseDurationMs: cfg.leaseDurationMs, clock, log,
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
  } else {
    leading = true;
    metrics.setLeader(true);
    current = newOperator();
    await current.run(stop.signal);
  }
  await new Promise<void>((r) => server.close(() => r()));
  log.info({}, 'Stopped virtualio operator');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error('virtualio-operator: fatal:', err);
    process.exit(1);
  },
);
