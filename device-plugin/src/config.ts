// The agent's command-line contract (docs/flags.md): flag > environment variable > default.
// Parsing is a pure function of argv, env and the host name so it can be tested without a process.

/** `--device-plugin-registration`: how each pool's device plugin reaches the kubelet. */
export type RegistrationMode = 'auto' | 'plugin-watcher' | 'kubelet-sock';
export const REGISTRATION_MODES: readonly RegistrationMode[] = ['auto', 'plugin-watcher', 'kubelet-sock'];

/** Everything main.ts needs to wire the agent. Durations are in milliseconds. */
export interface AgentConfig {
  nodeName: string;
  /** Standalone mode when set; cluster mode otherwise. */
  planFile?: string;
  /** Cluster mode credentials; undefined = in-cluster service account. */
  kubeconfig?: string;
  sysfsRoot: string;
  devRoot: string;
  pluginDir: string;
  podResourcesSocket: string;
  devinfoDir: string;
  cdiDir: string;
  cdi: boolean;
  rescanIntervalMs: number;
  /** Where the node-local checkpoint lives (agent-checkpoint.json). */
  stateDir: string;
  /** How long one sysfs write may take before its device is reported stuck. */
  writeTimeoutMs: number;
  /** How long no source may show a slice held before it counts as released. */
  releaseGraceMs: number;
  metricsAddress: { host: string; port: number };
  logLevel: string;
  /** Serve pools with frontEnd DRA through the kubelet's DRA plugin API (cluster mode only). */
  dra: boolean;
  /** Apply per-claim VF network settings (MAC, VLAN, ...) on NIC PFs (needs host network and CAP_NET_ADMIN). */
  vfNetConfig: boolean;
  /** The kubelet's root folder: plugins/ and plugins_registry/ (plugin-watcher registration) live here. */
  kubeletDir: string;
  /** How device plugins register: the kubelet's plugin watcher, kubelet.sock, or the first that works. */
  devicePluginRegistration: RegistrationMode;
  /** Take the node over from a running agent (rolling update with surge) instead of waiting for it to exit. */
  handover: boolean;
  /** Cluster mode: derive the plan from the VirtualIODevices and the Node's labels (the operator's planner) instead of reading spec.pools. */
  localPlan: boolean;
}

export type ConfigResult = { kind: 'config'; config: AgentConfig } | { kind: 'help'; text: string } | { kind: 'error'; message: string };

interface FlagSpec {
  flag: string;
  env: string;
  def: string | undefined;
  meaning: string;
  bool?: boolean;
}

const FLAGS: readonly FlagSpec[] = [
  { flag: 'node-name', env: 'NODE_NAME', def: undefined, meaning: 'node this agent serves; its VirtualIONode has this name (default: host name)' },
  { flag: 'plan-file', env: 'VIO_PLAN_FILE', def: undefined, meaning: 'standalone mode: read the plan (VirtualIONode.spec schema, YAML or JSON) from this file; no API server' },
  { flag: 'kubeconfig', env: 'KUBECONFIG', def: undefined, meaning: 'cluster mode credentials (default: in-cluster)' },
  { flag: 'sysfs-root', env: 'VIO_SYSFS_ROOT', def: '/sys', meaning: 'sysfs root for discovery and carving' },
  { flag: 'dev-root', env: 'VIO_DEV_ROOT', def: '/dev', meaning: 'where /dev/vfio is looked up (paths in Allocate stay /dev/vfio/...)' },
  { flag: 'plugin-dir', env: 'VIO_PLUGIN_DIR', def: '/var/lib/kubelet/device-plugins', meaning: 'kubelet device plugin directory (kubelet.sock lives here)' },
  { flag: 'pod-resources-socket', env: 'VIO_POD_RESOURCES_SOCKET', def: '/var/lib/kubelet/pod-resources/kubelet.sock', meaning: 'kubelet PodResources API' },
  { flag: 'devinfo-dir', env: 'VIO_DEVINFO_DIR', def: '/var/run/k8s.cni.cncf.io/devinfo/dp', meaning: 'Multus device-info files for NIC VFs' },
  { flag: 'cdi-dir', env: 'VIO_CDI_DIR', def: '/var/run/cdi', meaning: 'CDI spec directory (used only with --cdi)' },
  { flag: 'cdi', env: 'VIO_CDI', def: 'false', meaning: 'also return CDI device names from Allocate and write CDI specs', bool: true },
  { flag: 'rescan-interval', env: 'VIO_RESCAN_INTERVAL', def: '30s', meaning: 'full sysfs rescan period (filesystem events trigger earlier rescans)' },
  { flag: 'state-dir', env: 'VIO_STATE_DIR', def: '/var/lib/virtualio', meaning: 'node-local checkpoint of served pools, carved PFs and original drivers (a hostPath: it must survive agent restarts)' },
  { flag: 'write-timeout', env: 'VIO_WRITE_TIMEOUT', def: '5s', meaning: 'a sysfs write that takes longer leaves its device reported stuck while every other device proceeds' },
  { flag: 'release-grace', env: 'VIO_RELEASE_GRACE', def: '30s', meaning: 'a slice counts as released only after neither PodResources nor the kubelet checkpoint has shown it held for this long' },
  { flag: 'metrics-address', env: 'VIO_METRICS_ADDRESS', def: '0.0.0.0:8080', meaning: '/metrics, /healthz, /readyz' },
  { flag: 'log-level', env: 'VIO_LOG_LEVEL', def: 'info', meaning: 'pino level (fatal, error, warn, info, debug, trace, silent)' },
  { flag: 'dra', env: 'VIO_DRA', def: 'false', meaning: 'serve pools with spec.frontEnd DRA as DRA driver virtualio.dev (ResourceSlices, kubelet DRA plugin); cluster mode only', bool: true },
  { flag: 'vf-net-config', env: 'VIO_VF_NET_CONFIG', def: 'false', meaning: 'with --dra: apply the VF network settings a claim asks for (MAC, VLAN, trust, spoof check, tx rates) on the PF with iproute2 (VIO_IP_CLI, default ip); needs the host network namespace and CAP_NET_ADMIN', bool: true },
  { flag: 'kubelet-dir', env: 'VIO_KUBELET_DIR', def: '/var/lib/kubelet', meaning: 'kubelet root folder; plugins register in its plugins_registry/ and serve from plugins/virtualio.dev/' },
  { flag: 'handover', env: 'VIO_HANDOVER', def: 'false', meaning: 'agent hand-over for a DaemonSet rolling update with surge: a starting agent asks the running one for the node lock, and a running one asked for it detaches its pools from the kubelet without their devices going away, stops (devices, slices and VMs untouched) and waits for its pod to be deleted', bool: true },
  { flag: 'local-plan', env: 'VIO_LOCAL_PLAN', def: 'false', meaning: 'cluster mode: derive this node\'s plan from the VirtualIODevices and the Node\'s labels with the operator\'s planner and report it in status.localPlan; the operator then writes no spec.pools for the node (a pool edit costs no write per node). Needs list/watch on virtualiodevices and get/watch on nodes', bool: true },
  { flag: 'device-plugin-registration', env: 'VIO_DEVICE_PLUGIN_REGISTRATION', def: 'auto', meaning: 'plugin-watcher (<kubelet-dir>/plugins_registry), kubelet-sock (Register on <plugin-dir>/kubelet.sock), or auto: the watcher when <kubelet-dir>/plugins_registry exists and --plugin-dir is <kubelet-dir>/device-plugins, kubelet.sock when the kubelet refuses it or leaves it unanswered for 30 s' },
];

/** The `--help` text. */
export function usage(): string {
  const rows = FLAGS.map((f) => {
    const name = f.bool ? `--${f.flag}[=true|false]` : `--${f.flag} <value>`;
    const def = f.def === undefined ? '' : ` (default ${f.def})`;
    return `  ${name.padEnd(34)} ${f.meaning}${def} [env ${f.env}]`;
  });
  return [
    'virtualio agent: carves devices on this node and serves them to the kubelet as device plugins.',
    '',
    'Usage: node dist/device-plugin/src/main.js [flags]',
    '',
    'Modes: with --plan-file the agent runs standalone (plan from the file, no API server);',
    'without it, it runs in cluster mode and follows its own VirtualIONode.',
    '',
    'Flags (flag > environment variable > default):',
    ...rows,
    '  --help                             print this text and exit',
  ].join('\n');
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;

/** Parses a Go-style duration ("30s", "1m30s", "500ms", "2h"); a bare number means seconds. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (/^\d+(\.\d+)?$/.test(t)) return Math.round(Number(t) * 1000);
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let pos = 0;
  DURATION_PART.lastIndex = 0;
  while (pos < t.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(t);
    if (!m) return undefined;
    total += Number(m[1]) * (unit[m[2] ?? ''] ?? Number.NaN);
    pos = DURATION_PART.lastIndex;
  }
  return t.length > 0 && Number.isFinite(total) ? Math.round(total) : undefined;
}

function parseBool(text: string): boolean | undefined {
  const t = text.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(t)) return true;
  if (['false', '0', 'no', 'off', ''].includes(t)) return false;
  return undefined;
}

/** Parses "host:port", "[v6]:port" or ":port" (all interfaces). */
export function parseAddress(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Parses the agent's flags. Never throws: bad input gives `{kind:'error'}` with a message naming the
 * flag, `--help`/`-h` gives `{kind:'help'}`.
 */
export function parseAgentConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, hostname: string): ConfigResult {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--help' || arg === '-h') return { kind: 'help', text: usage() };
    if (!arg.startsWith('--')) return { kind: 'error', message: `unexpected argument ${JSON.stringify(arg)}` };
    const eq = arg.indexOf('=');
    const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    const spec = FLAGS.find((f) => f.flag === name);
    if (!spec) return { kind: 'error', message: `unknown flag --${name}` };
    let value: string;
    if (eq >= 0) value = arg.slice(eq + 1);
    else if (spec.bool) {
      const next = argv[i + 1];
      if (next !== undefined && parseBool(next) !== undefined && !next.startsWith('--')) {
        value = next;
        i++;
      } else value = 'true';
    } else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) return { kind: 'error', message: `flag --${name} needs a value` };
      value = next;
      i++;
    }
    given.set(name, value);
  }
  const get = (flag: string): string | undefined => {
    const spec = FLAGS.find((f) => f.flag === flag);
    if (!spec) return undefined;
    const v = given.get(flag) ?? env[spec.env];
    return v !== undefined && v !== '' ? v : spec.def;
  };
  const cdi = parseBool(get('cdi') ?? 'false');
  if (cdi === undefined) return { kind: 'error', message: `--cdi: expected true or false, got ${JSON.stringify(get('cdi'))}` };
  const rescan = parseDuration(get('rescan-interval') ?? '');
  if (rescan === undefined || rescan <= 0) {
    return { kind: 'error', message: `--rescan-interval: expected a positive duration like 30s or 1m, got ${JSON.stringify(get('rescan-interval'))}` };
  }
  const writeTimeout = parseDuration(get('write-timeout') ?? '');
  if (writeTimeout === undefined || writeTimeout <= 0) {
    return { kind: 'error', message: `--write-timeout: expected a positive duration like 5s, got ${JSON.stringify(get('write-timeout'))}` };
  }
  const releaseGrace = parseDuration(get('release-grace') ?? '');
  if (releaseGrace === undefined || releaseGrace < 0) {
    return { kind: 'error', message: `--release-grace: expected a duration like 30s, got ${JSON.stringify(get('release-grace'))}` };
  }
  const stateDir = get('state-dir') ?? '/var/lib/virtualio';
  if (!stateDir.startsWith('/')) return { kind: 'error', message: `--state-dir: expected an absolute path, got ${JSON.stringify(stateDir)}` };
  const metrics = parseAddress(get('metrics-address') ?? '');
  if (!metrics) return { kind: 'error', message: `--metrics-address: expected host:port, got ${JSON.stringify(get('metrics-address'))}` };
  const logLevel = get('log-level') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) return { kind: 'error', message: `--log-level: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}` };
  const dra = parseBool(get('dra') ?? 'false');
  if (dra === undefined) return { kind: 'error', message: `--dra: expected true or false, got ${JSON.stringify(get('dra'))}` };
  const vfNetConfig = parseBool(get('vf-net-config') ?? 'false');
  if (vfNetConfig === undefined) return { kind: 'error', message: `--vf-net-config: expected true or false, got ${JSON.stringify(get('vf-net-config'))}` };
  if (vfNetConfig && !dra) return { kind: 'error', message: '--vf-net-config applies the VF settings of DRA claims: it needs --dra' };
  const kubeletDir = get('kubelet-dir') ?? '/var/lib/kubelet';
  if (!kubeletDir.startsWith('/')) return { kind: 'error', message: `--kubelet-dir: expected an absolute path, got ${JSON.stringify(kubeletDir)}` };
  const registration = get('device-plugin-registration') ?? 'auto';
  if (!(REGISTRATION_MODES as readonly string[]).includes(registration)) {
    return { kind: 'error', message: `--device-plugin-registration: expected one of ${REGISTRATION_MODES.join(', ')}, got ${JSON.stringify(registration)}` };
  }
  const handover = parseBool(get('handover') ?? 'false');
  if (handover === undefined) return { kind: 'error', message: `--handover: expected true or false, got ${JSON.stringify(get('handover'))}` };
  const localPlan = parseBool(get('local-plan') ?? 'false');
  if (localPlan === undefined) return { kind: 'error', message: `--local-plan: expected true or false, got ${JSON.stringify(get('local-plan'))}` };
  if (localPlan && get('plan-file') !== undefined) return { kind: 'error', message: '--local-plan derives the plan from the API server\'s VirtualIODevices: drop --plan-file' };
  if (dra && get('plan-file') !== undefined) return { kind: 'error', message: '--dra needs cluster mode (ResourceSlices and claims live in the API server); drop --plan-file' };
  const nodeName = get('node-name') ?? hostname;
  if (!nodeName) return { kind: 'error', message: '--node-name is empty and the host name is unknown' };
  const planFile = get('plan-file');
  const kubeconfig = get('kubeconfig');
  const config: AgentConfig = {
    nodeName,
    sysfsRoot: get('sysfs-root') ?? '/sys',
    devRoot: get('dev-root') ?? '/dev',
    pluginDir: get('plugin-dir') ?? '/var/lib/kubelet/device-plugins',
    podResourcesSocket: get('pod-resources-socket') ?? '/var/lib/kubelet/pod-resources/kubelet.sock',
    devinfoDir: get('devinfo-dir') ?? '/var/run/k8s.cni.cncf.io/devinfo/dp',
    cdiDir: get('cdi-dir') ?? '/var/run/cdi',
    cdi,
    rescanIntervalMs: rescan,
    stateDir,
    writeTimeoutMs: writeTimeout,
    releaseGraceMs: releaseGrace,
    metricsAddress: metrics,
    logLevel,
    dra,
    vfNetConfig,
    kubeletDir,
    devicePluginRegistration: registration as RegistrationMode,
    handover,
    localPlan,
  };
  if (planFile !== undefined) config.planFile = planFile;
  if (kubeconfig !== undefined) config.kubeconfig = kubeconfig;
  return { kind: 'config', config };
}
