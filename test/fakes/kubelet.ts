// A fake kubelet for tests and benchmarks. It behaves like the real device manager where a plugin
// can tell (the device plugin v1beta1 wire contract):
// - serves Registration on <pluginDir>/kubelet.sock; Register checks version and resource name,
//   then, synchronously inside the call, dials back <pluginDir>/<endpoint>, calls
//   GetDevicePluginOptions, and only then answers; afterwards it opens ListAndWatch once and
//   records every list it receives;
// - a newer registration of the same resource replaces (and disconnects) the older one;
// - when the stream ends, the resource's devices become unhealthy (capacity kept, allocatable 0);
// - restart() wipes every unix socket in the plugin dir (like CleanupPluginDirectory) and serves a
//   fresh kubelet.sock;
// - calls GetPreferredAllocation / Allocate like the kubelet at pod admission.
// A fake PodResources server (List/Get/GetAllocatableResources, with the real rate limiter's
// RESOURCE_EXHAUSTED behaviour) is in the same file.
import { EventEmitter } from 'node:events';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi, loadPodResourcesApi } from '../../proto/load.js';
import type { AllocateResponse__Output } from '../../proto/generated/deviceplugin/v1beta1/AllocateResponse.js';
import type { Device__Output } from '../../proto/generated/deviceplugin/v1beta1/Device.js';
import type { DevicePluginClient } from '../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import type { DevicePluginOptions__Output } from '../../proto/generated/deviceplugin/v1beta1/DevicePluginOptions.js';
import type { RegistrationHandlers } from '../../proto/generated/deviceplugin/v1beta1/Registration.js';
import type { PodResources__Input } from '../../proto/generated/podresources/v1/PodResources.js';
import type { PodResourcesListerHandlers } from '../../proto/generated/podresources/v1/PodResourcesLister.js';

/** One accepted registration of a resource and what the kubelet saw on its stream. */
export interface Endpoint {
  resourceName: string;
  endpoint: string;
  options: DevicePluginOptions__Output;
  /** Every ListAndWatch message, in order. */
  lists: Device__Output[][];
  /** True while the ListAndWatch stream is open. */
  connected: boolean;
  /** Ordinal of this registration across the fake kubelet's life (1-based). */
  seq: number;
  /** Kubelet generation (restart count) that accepted it. */
  generation: number;
  client: DevicePluginClient;
}

/** Like the real `IsExtendedResourceName` (simplified): domain/name, not kubernetes.io, no requests. prefix. */
export function isExtendedResourceName(name: string): boolean {
  const i = name.indexOf('/');
  if (i <= 0 || i !== name.lastIndexOf('/')) return false;
  const domain = name.slice(0, i);
  const local = name.slice(i + 1);
  if (domain === 'kubernetes.io' || domain.endsWith('.kubernetes.io') || name.startsWith('requests.')) return false;
  return /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(domain) && domain.length <= 253 && /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(local) && local.length <= 63;
}

function unary<Req, Res>(fn: (req: Req, opts: grpc.CallOptions, cb: grpc.requestCallback<Res>) => void, req: Req, timeoutMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) =>
    fn(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : res === undefined ? reject(new Error('empty response')) : resolve(res))),
  );
}

export class FakeKubelet extends EventEmitter {
  readonly socket: string;
  /** Current endpoint per resource name (the newest registration wins, like the real kubelet). */
  readonly endpoints = new Map<string, Endpoint>();
  /** Every registration ever accepted, in order. */
  readonly history: Endpoint[] = [];
  /** Every Register call that failed, with the error text. */
  readonly rejected: { resourceName: string; error: string }[] = [];
  generation = 0;
  private server: grpc.Server | undefined;
  private readonly clients = new Set<grpc.Client>();

  readonly pluginDir: string;

  private constructor(pluginDir: string) {
    super();
    this.pluginDir = pluginDir;
    this.setMaxListeners(100);
    this.socket = join(pluginDir, 'kubelet.sock');
  }

  /** Creates the plugin dir and serves Registration on kubelet.sock. */
  static async start(pluginDir: string): Promise<FakeKubelet> {
    const k = new FakeKubelet(pluginDir);
    await k.serve();
    return k;
  }

  private async serve(): Promise<void> {
    mkdirSync(this.pluginDir, { recursive: true, mode: 0o750 });
    this.generation++;
    const generation = this.generation;
    const api = loadDevicePluginApi();
    const server = new grpc.Server();
    const handlers: RegistrationHandlers = {
      Register: (call, cb) => {
        const r = call.request;
        const fail = (msg: string): void => {
          this.rejected.push({ resourceName: r.resourceName, error: msg });
          this.emit('change');
          cb({ code: grpc.status.UNKNOWN, details: msg });
        };
        if (r.version !== 'v1beta1') return fail(`requested API version "${r.version}" is not supported by kubelet. Supported version is "v1beta1"`);
        if (!isExtendedResourceName(r.resourceName)) return fail(`the ResourceName "${r.resourceName}" is invalid`);
        this.connect(r.resourceName, r.endpoint, generation).then(
          () => cb(null, {}),
          (err: unknown) => fail(`failed to dial device plugin: ${String(err)}`),
        );
      },
    };
    server.addService(api.v1beta1.Registration.service, handlers);
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${this.socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.server = server;
  }

  /** Dial back, GetDevicePluginOptions (inside Register), then ListAndWatch in the background. */
  private async connect(resourceName: string, endpoint: string, generation: number): Promise<void> {
    const api = loadDevicePluginApi();
    const client = new api.v1beta1.DevicePlugin(`unix:${join(this.pluginDir, endpoint)}`, grpc.credentials.createInsecure(), {
      'grpc.default_authority': 'localhost',
    });
    this.clients.add(client);
    let options: DevicePluginOptions__Output;
    try {
      await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())));
      options = await unary(client.getDevicePluginOptions.bind(client), {});
    } catch (err) {
      client.close();
      this.clients.delete(client);
      throw err;
    }
    const old = this.endpoints.get(resourceName);
    if (old) {
      old.client.close();
      this.clients.delete(old.client);
    }
    const ep: Endpoint = { resourceName, endpoint, options, lists: [], connected: true, seq: this.history.length + 1, generation, client };
    this.endpoints.set(resourceName, ep);
    this.history.push(ep);
    // Like the kubelet's goroutine: ListAndWatch starts after Register's handler stored the endpoint.
    setImmediate(() => {
      const stream = client.listAndWatch({});
      stream.on('data', (msg: { devices: Device__Output[] }) => {
        ep.lists.push(msg.devices);
        this.emit('change');
      });
      const end = (): void => {
        if (!ep.connected) return;
        ep.connected = false;
        this.emit('change');
      };
      stream.on('error', end);
      stream.on('end', end);
      stream.on('close', end);
    });
    this.emit('change');
  }

  /** The last list seen for a resource (undefined before the first message). */
  lastList(resourceName: string): Device__Output[] | undefined {
    const ep = this.endpoints.get(resourceName);
    return ep?.lists[ep.lists.length - 1];
  }

  /** Capacity and allocatable as the kubelet's GetCapacity computes them. */
  capacity(resourceName: string): { capacity: number; allocatable: number } {
    const ep = this.endpoints.get(resourceName);
    const list = this.lastList(resourceName) ?? [];
    const healthy = ep?.connected ? list.filter((d) => d.health === 'Healthy').length : 0;
    return { capacity: list.length, allocatable: healthy };
  }

  /**
   * Resolves once `predicate` holds (re-checked on every recorded event and every 50 ms); rejects
   * after `timeoutMs` with `what` and the current state, so a failing test says what it waited for.
   */
  async waitFor<T>(what: string, predicate: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
    const first = predicate();
    if (first) return first;
    return new Promise<T>((resolve, reject) => {
      const check = (): void => {
        let v: T | undefined | false;
        try {
          v = predicate();
        } catch (err) {
          cleanup();
          reject(err as Error);
          return;
        }
        if (v) {
          cleanup();
          resolve(v);
        }
      };
      const timer = setInterval(check, 50);
      const deadline = setTimeout(() => {
        cleanup();
        const state = [...this.endpoints.values()].map((e) => ({ resource: e.resourceName, seq: e.seq, connected: e.connected, lists: e.lists.length, last: e.lists[e.lists.length - 1] }));
        reject(new Error(`fake kubelet: timed out waiting for ${what}; endpoints: ${JSON.stringify(state)}; rejected: ${JSON.stringify(this.rejected)}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearInterval(timer);
        clearTimeout(deadline);
        this.off('change', check);
      };
      this.on('change', check);
    });
  }

  private client(resourceName: string): DevicePluginClient {
    const ep = this.endpoints.get(resourceName);
    if (!ep) throw new Error(`fake kubelet: ${resourceName} is not registered`);
    return ep.client;
  }

  /** Calls Allocate for one container, like pod admission does. */
  async allocate(resourceName: string, ids: string[]): Promise<AllocateResponse__Output> {
    const c = this.client(resourceName);
    return unary(c.allocate.bind(c), { containerRequests: [{ devicesIds: ids }] });
  }

  /** Calls GetPreferredAllocation for one container. */
  async preferred(resourceName: string, available: string[], mustInclude: string[], size: number): Promise<string[]> {
    const c = this.client(resourceName);
    const res = await unary<object, { containerResponses: { deviceIDs: string[] }[] }>(c.getPreferredAllocation.bind(c), { containerRequests: [{ availableDeviceIDs: available, mustIncludeDeviceIDs: mustInclude, allocationSize: size }] });
    return res.containerResponses[0]?.deviceIDs ?? [];
  }

  /** Calls GetDevicePluginOptions (an empty-ish round trip on the plugin socket). */
  async options(resourceName: string): Promise<DevicePluginOptions__Output> {
    const c = this.client(resourceName);
    return unary<object, DevicePluginOptions__Output>(c.getDevicePluginOptions.bind(c), {});
  }

  private async shutdownServer(): Promise<void> {
    for (const c of this.clients) c.close();
    this.clients.clear();
    for (const ep of this.endpoints.values()) ep.connected = false;
    const s = this.server;
    this.server = undefined;
    s?.forceShutdown();
  }

  /** Removes every unix socket in the plugin dir, like the kubelet's CleanupPluginDirectory. */
  wipeSockets(): void {
    let names: string[];
    try {
      names = readdirSync(this.pluginDir);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(this.pluginDir, n);
      try {
        const st = statSync(p);
        if (st.isSocket()) rmSync(p, { force: true });
      } catch {
        /* raced */
      }
    }
  }

  /**
   * A kubelet restart: the old process dies (connections close), the new one wipes the sockets and
   * serves a new kubelet.sock. Endpoints are kept (like the checkpoint) but disconnected.
   */
  async restart(): Promise<void> {
    await this.shutdownServer();
    this.wipeSockets();
    await this.serve();
    this.emit('change');
  }

  /** Stops serving and closes plugin connections (the plugin dir is left as is). */
  async stop(): Promise<void> {
    await this.shutdownServer();
    rmSync(this.socket, { force: true });
  }
}

/** A PodResources v1 server with the real kubelet's rate limiter (QPS 100, burst 10 by default). */
export class FakePodResources {
  pods: PodResources__Input[] = [];
  listCalls = 0;
  rejectedCalls = 0;
  private tokens: number;
  private last = Date.now();
  private server: grpc.Server | undefined;

  readonly socket: string;
  private readonly qps: number;
  private readonly burst: number;

  private constructor(socket: string, qps: number, burst: number) {
    this.socket = socket;
    this.qps = qps;
    this.burst = burst;
    this.tokens = burst;
  }

  static async start(socket: string, opts: { qps?: number; burst?: number } = {}): Promise<FakePodResources> {
    const f = new FakePodResources(socket, opts.qps ?? 100, opts.burst ?? 10);
    mkdirSync(join(socket, '..'), { recursive: true });
    rmSync(socket, { force: true });
    const api = loadPodResourcesApi();
    const server = new grpc.Server();
    const limited = <A extends unknown[]>(fn: (...a: A) => void, cbIndex: number) => (...a: A) => {
      if (!f.take()) {
        f.rejectedCalls++;
        (a[cbIndex] as grpc.sendUnaryData<never>)({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'rejected by rate limit' });
        return;
      }
      fn(...a);
    };
    const handlers: PodResourcesListerHandlers = {
      List: limited((_call: unknown, cb: grpc.sendUnaryData<{ podResources: PodResources__Input[] }>) => {
        f.listCalls++;
        cb(null, { podResources: f.pods });
      }, 1),
      Get: limited((call: grpc.ServerUnaryCall<{ podName: string; podNamespace: string }, unknown>, cb: grpc.sendUnaryData<{ podResources: PodResources__Input }>) => {
        const pod = f.pods.find((p) => p.name === call.request.podName && p.namespace === call.request.podNamespace);
        if (!pod) cb({ code: grpc.status.NOT_FOUND, details: `pod ${call.request.podNamespace}/${call.request.podName} not found` });
        else cb(null, { podResources: pod });
      }, 1),
      GetAllocatableResources: limited((_call: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { devices: [] }), 1),
    };
    server.addService(api.v1.PodResourcesLister.service, handlers);
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    f.server = server;
    return f;
  }

  private take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.qps);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Sets the pods List returns: `[namespace, pod, container, resourceName, ids]` tuples grouped by pod. */
  setPods(pods: PodResources__Input[]): void {
    this.pods = pods;
  }

  async stop(): Promise<void> {
    this.server?.forceShutdown();
    this.server = undefined;
    rmSync(this.socket, { force: true });
  }
}
