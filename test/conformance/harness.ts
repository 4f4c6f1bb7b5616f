// TypeScript side of the conformance harnesses: builds them through test/conformance/build.sh (a
// no-op on a warm cache) and talks to them. kubelet-dm runs the kubelet's own device-plugin
// registration server and plugin client; kubevirt-hostdev runs virt-launcher's own host-device code.
import { execFile, execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from '../cluster/control-plane.js';

export type ConformanceTarget = 'kubelet-dm' | 'kubevirt-hostdev' | 'kubevirt-crds';

/**
 * Builds (first time, minutes) or finds the given harnesses in the cache and returns their paths
 * (binaries; for `kubevirt-crds` the folder of CRD YAML files). Throws with the build log on failure.
 */
export function ensureConformance<T extends ConformanceTarget>(...targets: T[]): Record<T, string> {
  let out: string;
  try {
    out = execFileSync('bash', [join(REPO_ROOT, 'test/conformance/build.sh'), ...targets], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`test/conformance/build.sh ${targets.join(' ')} failed: ${e.message}\n${e.stderr ?? ''}`, { cause: err });
  }
  const paths = {} as Record<T, string>;
  for (const line of out.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) paths[line.slice(0, eq) as T] = line.slice(eq + 1);
  }
  for (const t of targets) if (!paths[t]) throw new Error(`build.sh printed no path for ${t}:\n${out}`);
  return paths;
}

// ---------------------------------------------------------------------------------------------
// kubevirt-hostdev

/** One device as KubeVirt would put it into the libvirt domain. */
export interface KubevirtHostDevice {
  type: string;
  managed: string;
  mode: string;
  model: string;
  alias?: string;
  display: string;
  ramfb: string;
  pciAddress?: string;
  mdevUUID?: string;
  usb?: { bus: string; device: string };
  /** The `<hostdev>` element as KubeVirt's domain schema marshals it. */
  xml: string;
}

export type KubevirtDeviceList = { devices: KubevirtHostDevice[]; error?: undefined } | { error: string; devices?: undefined };

export interface KubevirtHostdevResult {
  ok: boolean;
  /** virt-launcher's first error (host devices are built before GPUs). */
  error?: string;
  hostDevices: KubevirtDeviceList;
  gpus: KubevirtDeviceList;
  /** KubeVirt's log messages, e.g. `PCI_RESOURCE_X not set for resource x`. */
  warnings: string[];
  /** With `draBasePath`: virt-launcher's DRA builders on the claim-based gpus[] and hostDevices[]. */
  dra?: { gpus: KubevirtDeviceList; hostDevices: KubevirtDeviceList };
}

export interface KubevirtHostdevCase {
  /** A VirtualMachineInstance object or just its spec (`{domain: {devices: {gpus, hostDevices}}}`). */
  vmi: unknown;
  /** The compute container's environment, exactly (nothing else is set). */
  env: Record<string, string>;
  /** Folder virt-launcher reads DRA device metadata files from (its /var/run/kubernetes.io/dra-device-attributes). */
  draBasePath?: string;
}

/** Runs KubeVirt's host-device code on each case (one process, cases in order). */
export async function runKubevirtHostdev(bin: string, cases: KubevirtHostdevCase[]): Promise<KubevirtHostdevResult[]> {
  const input = cases.map((c) => JSON.stringify(c)).join('\n') + '\n';
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = execFile(bin, [], { maxBuffer: 64 * 1024 * 1024 }, (err, out, errOut) => {
      if (err) reject(new Error(`kubevirt-hostdev failed: ${err.message}\n${errOut}`));
      else resolve(out);
    });
    child.stdin?.end(input);
  });
  const results = stdout.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as KubevirtHostdevResult);
  if (results.length !== cases.length) throw new Error(`kubevirt-hostdev answered ${results.length} of ${cases.length} cases:\n${stdout}`);
  return results;
}

// ---------------------------------------------------------------------------------------------
// kubelet-dm

export interface DmDevice {
  id: string;
  health: string;
  /** NUMA node IDs, or null when the plugin sent no topology. */
  topology: number[] | null;
}

export type DmEvent =
  | { event: 'ready'; socket: string }
  | { event: 'registered'; resource: string; endpoint: string; socket: string; options: { preStartRequired: boolean; getPreferredAllocationAvailable: boolean } }
  | { event: 'devices'; resource: string; devices: DmDevice[]; healthy: number; unhealthy: number }
  | { event: 'disconnected'; resource: string }
  | { event: 'kubelet-error'; msg: string; error?: string; keysAndValues: Record<string, string> }
  | { event: 'response'; id: number; op: string; ok: boolean; [key: string]: unknown }
  | { event: 'stopped' }
  | { event: 'fatal'; error: string };

export interface DmAllocateResponse {
  envs: Record<string, string>;
  devices: { containerPath: string; hostPath: string; permissions: string }[];
  mounts: { containerPath: string; hostPath: string; readOnly: boolean }[];
  annotations: Record<string, string>;
  cdiDevices: string[];
}

/** The kubelet harness process: events as they arrive, commands answered by id. */
export class KubeletDm {
  /** Every event received so far, in order. */
  readonly events: DmEvent[] = [];
  private readonly child: ChildProcessWithoutNullStreams;
  private waiters: { pred: (e: DmEvent) => boolean; from: number; resolve: (e: DmEvent) => void }[] = [];
  private nextId = 1;
  private stderr = '';
  private exited: Promise<number | null>;

  /** Starts the harness on `socketDir` (absolute); its registration socket is `<socketDir>/kubelet.sock`. */
  constructor(bin: string, readonly socketDir: string) {
    this.child = spawn(bin, ['--socket-dir', socketDir], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    this.exited = new Promise((res) => this.child.once('exit', (code) => res(code)));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      if (line.trim() === '') return;
      const ev = JSON.parse(line) as DmEvent;
      this.events.push(ev);
      const idx = this.events.length - 1;
      this.waiters = this.waiters.filter((w) => {
        if (idx >= w.from && w.pred(ev)) {
          w.resolve(ev);
          return false;
        }
        return true;
      });
    });
  }

  /** The kubelet code's stderr output so far (info logs, for failure messages). */
  get log(): string {
    return this.stderr;
  }

  /** Index the next event will get; pass to `waitFor` to ignore earlier events. */
  mark(): number {
    return this.events.length;
  }

  /**
   * Resolves with the first event at index ≥ `from` matching `pred` (already received or future).
   * Rejects after `limitMs` with the events seen, so a missing event fails with a useful message.
   */
  waitFor<E extends DmEvent>(pred: (e: DmEvent) => e is E, from?: number, limitMs?: number): Promise<E>;
  waitFor(pred: (e: DmEvent) => boolean, from?: number, limitMs?: number): Promise<DmEvent>;
  waitFor(pred: (e: DmEvent) => boolean, from = 0, limitMs = 30_000): Promise<DmEvent> {
    const seen = this.events.slice(from).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`kubelet-dm: no matching event within ${limitMs} ms; events:\n${this.events.slice(from).map((e) => JSON.stringify(e)).join('\n')}\nstderr:\n${this.stderr}`));
      }, limitMs);
      this.waiters.push({
        pred,
        from,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  /** Sends a command and resolves with its response event. */
  async command(cmd: Record<string, unknown> & { op: string }): Promise<Extract<DmEvent, { event: 'response' }>> {
    const id = this.nextId++;
    const from = this.mark();
    this.child.stdin.write(JSON.stringify({ ...cmd, id }) + '\n');
    return (await this.waitFor((e) => e.event === 'response' && e.id === id, from)) as Extract<DmEvent, { event: 'response' }>;
  }

  /** Allocate called the kubelet's way: one container request with these IDs. */
  allocate(resource: string, ids: string[]): Promise<Extract<DmEvent, { event: 'response' }>> {
    return this.command({ op: 'allocate', resource, ids });
  }

  /** GetPreferredAllocation called the kubelet's way (skipped when the plugin did not advertise it). */
  preferred(resource: string, available: string[], mustInclude: string[], size: number): Promise<Extract<DmEvent, { event: 'response' }>> {
    return this.command({ op: 'preferred', resource, available, mustInclude, size });
  }

  /** Stops the registration server, wipes the sockets like a starting kubelet, serves a fresh kubelet.sock. */
  restart(): Promise<Extract<DmEvent, { event: 'response' }>> {
    return this.command({ op: 'restart' });
  }

  /** Stops the harness (disconnecting every plugin) and waits for the process to exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null) {
      this.child.stdin.end(JSON.stringify({ op: 'stop' }) + '\n');
    }
    await this.exited;
  }
}
