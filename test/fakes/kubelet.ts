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
// - calls GetPreferredAllocation / Allocate like the kubelet at pod admission, for a pod (given or
//   generated) that stays active until removePod();
// - keeps the device manager checkpoint `<pluginDir>/kubelet_internal_checkpoint` like kubelet 1.36
//   (pkg/kubelet/cm/devicemanager/checkpoint): written (temp file + rename) after every Allocate and
//   every ListAndWatch message (genericDeviceUpdateCallback), never when a pod goes; the entries of
//   pods no longer active are dropped from memory only by UpdateAllocatedDevices (at the next
//   Allocate, or on a PodResources List of a FakePodResources attached to this kubelet; not while
//   `sourcesReady` is false), so the file keeps a gone pod's devices until the next write after that;
//   read back on restart(). See writeCheckpoint() for what differs (the checksum).
// A fake PodResources server (List/Get/GetAllocatableResources, with the real rate limiter's
// RESOURCE_EXHAUSTED behaviour, the empty list after a kubelet restart, and UNAVAILABLE) is in the
// same file.
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi, loadPodResourcesApi } from '../../proto/load.js';
import type { AllocateResponse__Output } from '../../proto/generated/deviceplugin/v1beta1/AllocateResponse.js';
import type { ContainerAllocateResponse__Output } from '../../proto/generated/deviceplugin/v1beta1/ContainerAllocateResponse.js';
import type { Device__Output } from '../../proto/generated/deviceplugin/v1beta1/Device.js';
import type { DevicePluginClient } from '../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import type { DevicePluginOptions__Output } from '../../proto/generated/deviceplugin/v1beta1/DevicePluginOptions.js';
import type { RegistrationHandlers } from '../../proto/generated/deviceplugin/v1beta1/Registration.js';
import type { ContainerDevices__Input } from '../../proto/generated/podresources/v1/ContainerDevices.js';
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

/** Who a container allocation is for; every field has a default (a new pod per allocate). */
export interface PodIdentity {
  uid?: string;
  name?: string;
  namespace?: string;
  /** Default `compute` (virt-launcher's container). */
  container?: string;
}

/** A pod the fake kubelet admitted. */
export interface FakePod {
  uid: string;
  name: string;
  namespace: string;
  /** False once removePod() was called. */
  active: boolean;
}

/** One PodDevicesEntry of the device manager (its memory and its checkpoint). */
export interface PodDevicesEntry {
  podUID: string;
  container: string;
  resourceName: string;
  /** NUMA node ("-1": the device reported no topology) → device IDs. */
  deviceIds: Record<string, string[]>;
  /** The plugin's ContainerAllocateResponse, protobuf-encoded. */
  allocResp: Buffer;
}

export const KUBELET_CHECKPOINT = 'kubelet_internal_checkpoint';

/** FNV-1a, 32 bits. */
function fnv32a(text: string): number {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(text, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** A ContainerAllocateResponse as the kubelet stores it: its protobuf bytes. */
export function encodeContainerResponse(cr: ContainerAllocateResponse__Output): Buffer {
  // AllocateResponse{container_responses: [cr]} is field 1 (tag 0x0a), a varint length, then cr's bytes.
  const whole = loadDevicePluginApi().v1beta1.DevicePlugin.service.Allocate.responseSerialize({ containerResponses: [cr] });
  let i = 1;
  while ((whole[i] as number) & 0x80) i++;
  return whole.subarray(i + 1);
}

/** The inverse of {@link encodeContainerResponse}. */
export function decodeContainerResponse(bytes: Buffer): ContainerAllocateResponse__Output | undefined {
  const len: number[] = [];
  for (let n = bytes.length; ; n >>>= 7) {
    if (n < 0x80) {
      len.push(n);
      break;
    }
    len.push((n & 0x7f) | 0x80);
  }
  const res = loadDevicePluginApi().v1beta1.DevicePlugin.service.Allocate.responseDeserialize(Buffer.concat([Buffer.from([0x0a, ...len]), bytes])) as AllocateResponse__Output;
  return res.containerResponses[0];
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
  /** `<pluginDir>/kubelet_internal_checkpoint`. */
  readonly checkpointFile: string;
  /** Pods admitted, by UID. */
  readonly pods = new Map<string, FakePod>();
  /** The device manager's podDevices (what the next checkpoint write holds). */
  entries: PodDevicesEntry[] = [];
  /** How many times the checkpoint was written; the last write error, if any. */
  checkpointWrites = 0;
  checkpointError: string | undefined;
  /**
   * The kubelet's pod sources have delivered the pods (sourcesReady.AllReady()): until then
   * UpdateAllocatedDevices drops nothing. Default true.
   */
  sourcesReady = true;
  private readonly keepCheckpoint: boolean;
  private podSeq = 0;

  private constructor(pluginDir: string, keepCheckpoint: boolean) {
    super();
    this.pluginDir = pluginDir;
    this.keepCheckpoint = keepCheckpoint;
    this.setMaxListeners(100);
    this.socket = join(pluginDir, 'kubelet.sock');
    this.checkpointFile = join(pluginDir, KUBELET_CHECKPOINT);
  }

  /**
   * Creates the plugin dir and serves Registration on kubelet.sock. `checkpoint: false` keeps no
   * kubelet_internal_checkpoint (default: kept, like the real kubelet).
   */
  static async start(pluginDir: string, opts: { checkpoint?: boolean } = {}): Promise<FakeKubelet> {
    const k = new FakeKubelet(pluginDir, opts.checkpoint ?? true);
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
      if (!this.clients.has(client)) return; // replaced or stopped meanwhile: its channel is closed
      const stream = client.listAndWatch({});
      stream.on('data', (msg: { devices: Device__Output[] }) => {
        ep.lists.push(msg.devices);
        this.writeCheckpoint(); // genericDeviceUpdateCallback
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

  /**
   * Calls Allocate for one container, like pod admission does: first drops the entries of pods no
   * longer active (UpdateAllocatedDevices), then records the answer for the pod (a new one when
   * `pod` gives no UID) and writes the checkpoint.
   */
  async allocate(resourceName: string, ids: string[], pod: PodIdentity = {}): Promise<AllocateResponse__Output> {
    const c = this.client(resourceName);
    this.updateAllocatedDevices();
    const res = await unary<object, AllocateResponse__Output>(c.allocate.bind(c), { containerRequests: [{ devicesIds: ids }] });
    const seq = ++this.podSeq;
    const uid = pod.uid ?? randomUUID();
    const prev = this.pods.get(uid);
    this.pods.set(uid, { uid, name: pod.name ?? prev?.name ?? `pod-${seq}`, namespace: pod.namespace ?? prev?.namespace ?? 'default', active: true });
    const container = pod.container ?? 'compute';
    const cr = res.containerResponses[0];
    this.entries = this.entries.filter((e) => !(e.podUID === uid && e.container === container && e.resourceName === resourceName));
    this.entries.push({ podUID: uid, container, resourceName, deviceIds: this.numaOf(resourceName, ids), allocResp: cr ? encodeContainerResponse(cr) : Buffer.alloc(0) });
    this.writeCheckpoint();
    return res;
  }

  /** The pod is gone (deleted, or its containers ended): inactive. The checkpoint is NOT rewritten. */
  removePod(uid: string): void {
    const p = this.pods.get(uid);
    if (p) p.active = false;
  }

  /**
   * UpdateAllocatedDevices: forget (in memory; the checkpoint keeps them until its next write) the
   * devices of pods no longer active, once the pod sources are ready. The kubelet runs it before
   * an allocation and on every PodResources List.
   */
  updateAllocatedDevices(): void {
    if (!this.sourcesReady) return;
    this.entries = this.entries.filter((e) => this.pods.get(e.podUID)?.active !== false);
  }

  /** Device IDs per NUMA node, from the devices' topology in the plugin's last list. */
  private numaOf(resourceName: string, ids: string[]): Record<string, string[]> {
    const byId = new Map((this.lastList(resourceName) ?? []).map((d) => [d.ID, d]));
    const out: Record<string, string[]> = {};
    for (const id of ids) {
      const nodes = byId.get(id)?.topology?.nodes ?? [];
      for (const n of nodes.length > 0 ? nodes.map((x) => String(x.ID)) : ['-1']) (out[n] ??= []).push(id);
    }
    return out;
  }

  /** What a PodResources List would answer: the devices of active pods (for FakePodResources.setPods). */
  podResources(): PodResources__Input[] {
    type Container = { name: string; devices: ContainerDevices__Input[] };
    const out: { name: string; namespace: string; containers: Container[] }[] = [];
    for (const e of this.entries) {
      const p = this.pods.get(e.podUID);
      if (!p?.active) continue;
      let pr = out.find((x) => x.name === p.name && x.namespace === p.namespace);
      if (!pr) out.push((pr = { name: p.name, namespace: p.namespace, containers: [] }));
      let c = pr.containers.find((x) => x.name === e.container);
      if (!c) pr.containers.push((c = { name: e.container, devices: [] }));
      const numa = Object.keys(e.deviceIds).filter((n) => n !== '-1');
      c.devices.push({ resourceName: e.resourceName, deviceIds: Object.values(e.deviceIds).flat(), ...(numa.length > 0 ? { topology: { nodes: numa.map((n) => ({ ID: Number(n) })) } } : {}) });
    }
    return out;
  }

  /**
   * Writes the checkpoint as the kubelet's checkpoint manager does: Go's JSON of
   * `{Data: {PodDeviceEntries, RegisteredDevices}, Checksum}` (PodDeviceEntries null when empty,
   * AllocResp base64, RegisteredDevices the healthy IDs per resource) to a temp file renamed over
   * the old one. Differences: the real Checksum is an FNV-32a over Go's `%#v` dump of Data, which
   * cannot be reproduced here, so this writes FNV-32a over the Data JSON (some uint32; a reader must
   * not verify it); no fsync; no BootID (newer kubelets add one outside Data).
   */
  writeCheckpoint(): void {
    if (!this.keepCheckpoint) return;
    const registered: Record<string, string[]> = {};
    for (const name of [...this.endpoints.keys()].sort()) {
      const ep = this.endpoints.get(name);
      registered[name] = ep?.connected ? (this.lastList(name) ?? []).filter((d) => d.health === 'Healthy').map((d) => d.ID) : [];
    }
    const entries = this.entries.map((e) => ({
      PodUID: e.podUID,
      ContainerName: e.container,
      ResourceName: e.resourceName,
      DeviceIDs: Object.fromEntries(Object.entries(e.deviceIds).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
      AllocResp: e.allocResp.toString('base64'),
    }));
    const data = { PodDeviceEntries: entries.length > 0 ? entries : null, RegisteredDevices: registered };
    const tmp = join(this.pluginDir, `.${KUBELET_CHECKPOINT}.tmp`);
    try {
      writeFileSync(tmp, JSON.stringify({ Data: data, Checksum: fnv32a(JSON.stringify(data)) }));
      renameSync(tmp, this.checkpointFile);
      this.checkpointWrites++;
      this.checkpointError = undefined;
    } catch (err) {
      this.checkpointError = String(err);
    }
  }

  /** readCheckpoint at kubelet start: podDevices from the file; none when it is missing or unreadable. */
  private readCheckpoint(): void {
    if (!this.keepCheckpoint) return;
    let doc: { Data?: { PodDeviceEntries?: { PodUID: string; ContainerName: string; ResourceName: string; DeviceIDs: Record<string, string[]>; AllocResp?: string }[] | null } };
    try {
      doc = JSON.parse(readFileSync(this.checkpointFile, 'utf8')) as typeof doc;
    } catch {
      this.entries = [];
      return;
    }
    this.entries = (doc.Data?.PodDeviceEntries ?? []).map((e) => ({
      podUID: e.PodUID,
      container: e.ContainerName,
      resourceName: e.ResourceName,
      deviceIds: e.DeviceIDs,
      allocResp: Buffer.from(e.AllocResp ?? '', 'base64'),
    }));
    for (const e of this.entries) if (!this.pods.has(e.podUID)) this.pods.set(e.podUID, { uid: e.podUID, name: '', namespace: '', active: true });
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
   * A kubelet restart: the old process dies (connections close), the new one reads its device
   * checkpoint back (podDevices; none when the file is missing or unreadable), wipes the sockets and
   * serves a new kubelet.sock. Endpoints are kept (like the checkpoint) but disconnected.
   */
  async restart(): Promise<void> {
    await this.shutdownServer();
    this.readCheckpoint();
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

/**
 * A PodResources v1 server with the real kubelet's rate limiter (QPS 100, burst 10 by default).
 * A test says which pods hold what (`setPods`, `hold`, `removePod`, or `setPods(kubelet.podResources())`).
 * Like the real kubelet it can also:
 *  - restart({ emptyForMs }): the socket goes away and comes back, and List answers an empty list
 *    (Get: NOT_FOUND) for `emptyForMs` (Infinity: until `synced()`), what the kubelet's pod manager
 *    holds before its config sources have delivered the pods (pkg/kubelet/apis/podresources);
 *  - fail(code): List and Get fail (default UNAVAILABLE) until `recover()`;
 *  - attached to a FakeKubelet (`start(socket, { kubelet })` or `attach`), every List answered runs
 *    the kubelet's UpdateAllocatedDevices, as the real List does (server_v1.go), outside the empty
 *    window of a restart (the kubelet's sources are not ready then).
 */
export class FakePodResources {
  pods: PodResources__Input[] = [];
  listCalls = 0;
  rejectedCalls = 0;
  /** List calls answered with the empty list of a restart. */
  emptyListCalls = 0;
  private tokens: number;
  private last = Date.now();
  private server: grpc.Server | undefined;
  private emptyUntil = 0;
  private failure: { code: grpc.status; details: string } | undefined;
  private kubelet: FakeKubelet | undefined;

  readonly socket: string;
  private readonly qps: number;
  private readonly burst: number;

  private constructor(socket: string, qps: number, burst: number) {
    this.socket = socket;
    this.qps = qps;
    this.burst = burst;
    this.tokens = burst;
  }

  static async start(socket: string, opts: { qps?: number; burst?: number; kubelet?: FakeKubelet } = {}): Promise<FakePodResources> {
    const f = new FakePodResources(socket, opts.qps ?? 100, opts.burst ?? 10);
    f.kubelet = opts.kubelet;
    await f.serve();
    return f;
  }

  /** From now on every List answered runs `kubelet.updateAllocatedDevices()`. */
  attach(kubelet: FakeKubelet): void {
    this.kubelet = kubelet;
  }

  private async serve(): Promise<void> {
    mkdirSync(join(this.socket, '..'), { recursive: true });
    rmSync(this.socket, { force: true });
    const api = loadPodResourcesApi();
    const server = new grpc.Server();
    const limited = <A extends unknown[]>(fn: (...a: A) => void, cbIndex: number) => (...a: A) => {
      if (!this.take()) {
        this.rejectedCalls++;
        (a[cbIndex] as grpc.sendUnaryData<never>)({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'rejected by rate limit' });
        return;
      }
      fn(...a);
    };
    const handlers: PodResourcesListerHandlers = {
      List: limited((_call: unknown, cb: grpc.sendUnaryData<{ podResources: PodResources__Input[] }>) => {
        this.listCalls++;
        if (this.failure) return cb(this.failure);
        if (this.empty()) {
          this.emptyListCalls++;
          return cb(null, { podResources: [] });
        }
        this.kubelet?.updateAllocatedDevices();
        cb(null, { podResources: this.pods });
      }, 1),
      Get: limited((call: grpc.ServerUnaryCall<{ podName: string; podNamespace: string }, unknown>, cb: grpc.sendUnaryData<{ podResources: PodResources__Input }>) => {
        if (this.failure) return cb(this.failure);
        const pod = this.empty() ? undefined : this.pods.find((p) => p.name === call.request.podName && p.namespace === call.request.podNamespace);
        if (!pod) cb({ code: grpc.status.NOT_FOUND, details: `pod ${call.request.podNamespace}/${call.request.podName} not found` });
        else cb(null, { podResources: pod });
      }, 1),
      GetAllocatableResources: limited((_call: unknown, cb: grpc.sendUnaryData<object>) => cb(null, { devices: [] }), 1),
    };
    server.addService(api.v1.PodResourcesLister.service, handlers);
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${this.socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
    this.server = server;
  }

  private take(): boolean {
    const now = Date.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.qps);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private empty(): boolean {
    return Date.now() < this.emptyUntil;
  }

  /** Sets the pods List returns: `[namespace, pod, container, resourceName, ids]` tuples grouped by pod. */
  setPods(pods: PodResources__Input[]): void {
    this.pods = pods;
  }

  /** Adds `ids` of `resourceName` to what the pod's container holds (the pod is created if new). */
  hold(pod: { namespace: string; name: string; container?: string }, resourceName: string, ids: string[]): void {
    let p = this.pods.find((x) => x.name === pod.name && x.namespace === pod.namespace);
    if (!p) this.pods = [...this.pods, (p = { name: pod.name, namespace: pod.namespace, containers: [] })];
    const containers = (p.containers ??= []);
    const cname = pod.container ?? 'compute';
    let c = containers.find((x) => x.name === cname);
    if (!c) containers.push((c = { name: cname, devices: [] }));
    const devices = (c.devices ??= []);
    const d = devices.find((x) => x.resourceName === resourceName);
    if (d) d.deviceIds = [...(d.deviceIds ?? []), ...ids.filter((id) => !(d.deviceIds ?? []).includes(id))];
    else devices.push({ resourceName, deviceIds: [...ids] });
  }

  /** The pod is gone: List no longer shows it. */
  removePod(namespace: string, name: string): void {
    this.pods = this.pods.filter((p) => !(p.name === name && p.namespace === namespace));
  }

  /**
   * A kubelet restart: the server goes away for `downMs` (default 0) and comes back on a fresh socket;
   * then List answers an empty list for `emptyForMs` (default 0; Infinity: until synced()).
   */
  async restart(o: { emptyForMs?: number; downMs?: number } = {}): Promise<void> {
    this.server?.forceShutdown();
    this.server = undefined;
    rmSync(this.socket, { force: true });
    this.emptyUntil = Date.now() + (o.downMs ?? 0) + (o.emptyForMs ?? 0);
    if (o.downMs) await new Promise((r) => setTimeout(r, o.downMs));
    await this.serve();
  }

  /** The kubelet's pod sources have synced: List answers the pods again. */
  synced(): void {
    this.emptyUntil = 0;
  }

  /** List and Get fail with `code` (default UNAVAILABLE) until recover(). */
  fail(code: grpc.status = grpc.status.UNAVAILABLE, details = 'pod resources are not available'): void {
    this.failure = { code, details };
  }

  recover(): void {
    this.failure = undefined;
  }

  async stop(): Promise<void> {
    this.server?.forceShutdown();
    this.server = undefined;
    rmSync(this.socket, { force: true });
  }
}
