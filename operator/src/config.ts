// The operator's command line (docs/flags.md): flag > environment variable > default, parsed once
// into a frozen Config. Pure: argv, env and the host name come in as arguments.
import YAML from 'yaml';
import type { MediatedHostDevice, PciHostDevice, PermittedLists } from './controllers/kubevirt/entries.js';

export interface Config {
  readonly help: boolean;
  readonly kubeconfig?: string;
  readonly namespace: string;
  readonly identity: string;
  readonly leaderElect: boolean;
  readonly leaseDurationMs: number;
  readonly kubevirtNamespace: string;
  readonly kubevirtName: string;
  readonly managePermittedHostDevices: boolean;
  readonly extraPermittedHostDevices?: string;
  readonly metricsHost: string;
  readonly metricsPort: number;
  readonly logLevel: string;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

interface FlagSpec {
  env?: string;
  kind: 'string' | 'bool' | 'duration';
  def?: string;
  help: string;
}

/** The flags, in the order --help prints them. */
export const FLAGS: Readonly<Record<string, FlagSpec>> = {
  kubeconfig: { env: 'KUBECONFIG', kind: 'string', help: 'kubeconfig file (default: in-cluster service account)' },
  namespace: { env: 'POD_NAMESPACE', kind: 'string', def: 'virtualio-system', help: 'namespace of the leader election Lease and of Events about cluster-scoped objects' },
  identity: { env: 'POD_NAME', kind: 'string', help: 'leader election identity (default: host name)' },
  'leader-elect': { env: 'VIO_LEADER_ELECT', kind: 'bool', def: 'true', help: 'run leader election on Lease virtualio-operator' },
  'lease-duration': { env: 'VIO_LEASE_DURATION', kind: 'duration', def: '15s', help: 'lease duration (renew deadline 2/3 of it, retry period 1/5 of it)' },
  'kubevirt-namespace': { env: 'VIO_KUBEVIRT_NAMESPACE', kind: 'string', def: 'kubevirt', help: 'namespace of the KubeVirt CR' },
  'kubevirt-name': { env: 'VIO_KUBEVIRT_NAME', kind: 'string', def: 'kubevirt', help: 'name of the KubeVirt CR' },
  'manage-permitted-host-devices': { env: 'VIO_MANAGE_PERMITTED_HOST_DEVICES', kind: 'bool', def: 'false', help: 'own spec.configuration.permittedHostDevices (pciHostDevices, mediatedDevices) of the KubeVirt CR' },
  'extra-permitted-host-devices': { env: 'VIO_EXTRA_PERMITTED_HOST_DEVICES', kind: 'string', help: 'JSON/YAML file of admin-declared entries merged into the owned lists' },
  'metrics-address': { env: 'VIO_METRICS_ADDRESS', kind: 'string', def: '0.0.0.0:8080', help: '/metrics, /healthz, /readyz' },
  'log-level': { env: 'VIO_LOG_LEVEL', kind: 'string', def: 'info', help: 'pino level (trace, debug, info, warn, error, fatal)' },
};

export function usage(): string {
  const lines = ['Usage: node dist/operator/src/main.js [flags]', '', 'virtualio operator: plans pools onto nodes, rolls up status, manages KubeVirt permittedHostDevices.', '', 'Flags (flag > environment variable > default):'];
  for (const [name, f] of Object.entries(FLAGS)) {
    const def = f.def !== undefined ? ` (default ${f.def})` : '';
    lines.push(`  --${name}${f.kind === 'bool' ? '[=true|false]' : ' <value>'}`, `      ${f.help}${def}${f.env ? ` [env ${f.env}]` : ''}`);
  }
  lines.push('  --help', '      print this help and exit', '');
  return lines.join('\n');
}

/** Parses Go-style durations: "15s", "500ms", "1m30s", "2h". */
export function parseDuration(s: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s)) !== null) {
    const n = Number.parseFloat(m[1] ?? '0');
    total += n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[m[2] as 'ms' | 's' | 'm' | 'h'];
    matched = re.lastIndex;
  }
  if (matched === 0 || matched !== s.length) throw new ConfigError(`invalid duration "${s}" (use e.g. 15s, 500ms, 1m30s)`);
  return Math.round(total);
}

function parseBool(name: string, v: string): boolean {
  if (/^(true|1|yes)$/i.test(v)) return true;
  if (/^(false|0|no)$/i.test(v)) return false;
  throw new ConfigError(`--${name}: expected true or false, got "${v}"`);
}

/** Parses argv (without node and script) and env into a Config; throws ConfigError on bad input. */
export function parseConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, hostname: string): Config {
  const given = new Map<string, string>();
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--help' || a === '-h') {
      help = true;
      continue;
    }
    if (!a.startsWith('--')) throw new ConfigError(`unexpected argument "${a}" (see --help)`);
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    const spec = FLAGS[name];
    if (!spec) throw new ConfigError(`unknown flag --${name} (see --help)`);
    if (eq >= 0) given.set(name, a.slice(eq + 1));
    else if (spec.kind === 'bool' && (argv[i + 1] === undefined || !/^(true|false)$/i.test(argv[i + 1] ?? ''))) given.set(name, 'true');
    else {
      const v = argv[++i];
      if (v === undefined) throw new ConfigError(`--${name} needs a value`);
      given.set(name, v);
    }
  }
  const value = (name: string): string | undefined => {
    const spec = FLAGS[name];
    return given.get(name) ?? (spec?.env ? env[spec.env] || undefined : undefined) ?? spec?.def;
  };
  const addr = value('metrics-address') ?? '0.0.0.0:8080';
  const colon = addr.lastIndexOf(':');
  const port = Number.parseInt(addr.slice(colon + 1), 10);
  if (colon < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new ConfigError(`--metrics-address: expected host:port, got "${addr}"`);
  const leaseDurationMs = parseDuration(value('lease-duration') ?? '15s');
  if (leaseDurationMs < 1000) throw new ConfigError('--lease-duration must be at least 1s');
  const level = value('log-level') ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new ConfigError(`--log-level: unknown level "${level}"`);
  return Object.freeze({
    help,
    kubeconfig: value('kubeconfig'),
    namespace: value('namespace') ?? 'virtualio-system',
    identity: value('identity') ?? hostname,
    leaderElect: parseBool('leader-elect', value('leader-elect') ?? 'true'),
    leaseDurationMs,
    kubevirtNamespace: value('kubevirt-namespace') ?? 'kubevirt',
    kubevirtName: value('kubevirt-name') ?? 'kubevirt',
    managePermittedHostDevices: parseBool('manage-permitted-host-devices', value('manage-permitted-host-devices') ?? 'false'),
    extraPermittedHostDevices: value('extra-permitted-host-devices'),
    metricsHost: addr.slice(0, colon).replace(/^\[|\]$/g, '') || '0.0.0.0',
    metricsPort: port,
    logLevel: level,
  });
}

/**
 * Parses the --extra-permitted-host-devices file: JSON or YAML, either the lists themselves or
 * wrapped in `permittedHostDevices`. Entries keep their externalResourceProvider as given.
 */
export function parseExtraPermittedHostDevices(text: string, source = 'extra permitted host devices'): PermittedLists {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`${source}: not valid YAML or JSON: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return { pciHostDevices: [], mediatedDevices: [] };
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`${source}: expected an object with pciHostDevices and/or mediatedDevices`);
  const root = ('permittedHostDevices' in doc ? (doc as { permittedHostDevices: unknown }).permittedHostDevices : doc) as Record<string, unknown>;
  for (const k of Object.keys(root ?? {})) {
    if (k !== 'pciHostDevices' && k !== 'mediatedDevices') throw new ConfigError(`${source}: unknown key "${k}" (only pciHostDevices and mediatedDevices are owned)`);
  }
  const list = (k: string): Record<string, unknown>[] => {
    const v = root?.[k];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) throw new ConfigError(`${source}: ${k} must be a list`);
    return v.map((e, i) => {
      if (!e || typeof e !== 'object') throw new ConfigError(`${source}: ${k}[${i}] must be an object`);
      return e as Record<string, unknown>;
    });
  };
  const str = (e: Record<string, unknown>, f: string, where: string): string => {
    const v = e[f];
    if (typeof v !== 'string' || v === '') throw new ConfigError(`${source}: ${where}.${f} must be a non-empty string`);
    return v;
  };
  const erp = (e: Record<string, unknown>, where: string) => {
    const v = e.externalResourceProvider;
    if (v === undefined) return {};
    if (typeof v !== 'boolean') throw new ConfigError(`${source}: ${where}.externalResourceProvider must be true or false`);
    return { externalResourceProvider: v };
  };
  const pciHostDevices: PciHostDevice[] = list('pciHostDevices').map((e, i) => {
    const where = `pciHostDevices[${i}]`;
    const sel = str(e, 'pciVendorSelector', where);
    if (!/^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$/.test(sel)) throw new ConfigError(`${source}: ${where}.pciVendorSelector must be "vvvv:dddd" (hex), got "${sel}"`);
    return { pciVendorSelector: sel.toLowerCase(), resourceName: str(e, 'resourceName', where), ...erp(e, where) };
  });
  const mediatedDevices: MediatedHostDevice[] = list('mediatedDevices').map((e, i) => {
    const where = `mediatedDevices[${i}]`;
    return { mdevNameSelector: str(e, 'mdevNameSelector', where), resourceName: str(e, 'resourceName', where), ...erp(e, where) };
  });
  return { pciHostDevices, mediatedDevices };
}
