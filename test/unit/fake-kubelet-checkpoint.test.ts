// The fake kubelet keeps the device manager checkpoint like the real one, and its PodResources server
// answers like a kubelet that just restarted or cannot answer.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { parseKubeletCheckpoint } from '../../device-plugin/src/agent/kubelet-checkpoint.js';
import { loadDevicePluginApi, loadPodResourcesApi } from '../../proto/load.js';
import type { Device__Input } from '../../proto/generated/deviceplugin/v1beta1/Device.js';
import type { DevicePluginHandlers } from '../../proto/generated/deviceplugin/v1beta1/DevicePlugin.js';
import type { PodResources__Output } from '../../proto/generated/podresources/v1/PodResources.js';
import { decodeContainerResponse, FakeKubelet, FakePodResources } from '../fakes/kubelet.js';

const RES = 'virtualio.dev/nic';
const DEVICES: Device__Input[] = [
  { ID: 'vf-a', health: 'Healthy', topology: { nodes: [{ ID: 1 }] } },
  { ID: 'vf-b', health: 'Healthy' },
  { ID: 'vf-c', health: 'Unhealthy', topology: { nodes: [{ ID: 0 }] } },
];

let dir: string;
let kubelet: FakeKubelet;
let plugin: grpc.Server;
/** Sends the device list again on the plugin's ListAndWatch stream. */
let resend: () => void;

/** A minimal device plugin: lists DEVICES, answers Allocate with an env naming the IDs. */
async function startPlugin(): Promise<void> {
  const api = loadDevicePluginApi();
  plugin = new grpc.Server();
  const handlers: DevicePluginHandlers = {
    GetDevicePluginOptions: (_c, cb) => cb(null, {}),
    ListAndWatch: (call) => {
      resend = () => void call.write({ devices: DEVICES });
      resend();
    },
    GetPreferredAllocation: (_c, cb) => cb(null, { containerResponses: [] }),
    Allocate: (call, cb) =>
      cb(null, {
        containerResponses: (call.request.containerRequests ?? []).map((r) => ({
          envs: { PCI_RESOURCE_VIRTUALIO_DEV_NIC: (r.devicesIds ?? []).join(',') },
          devices: [{ containerPath: '/dev/vfio/vfio', hostPath: '/dev/vfio/vfio', permissions: 'mrw' }],
        })),
      }),
    PreStartContainer: (_c, cb) => cb(null, {}),
  };
  plugin.addService(api.v1beta1.DevicePlugin.service, handlers);
  await new Promise<void>((resolve, reject) => plugin.bindAsync(`unix:${join(kubelet.pluginDir, 'nic.sock')}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  const reg = new api.v1beta1.Registration(`unix:${kubelet.socket}`, grpc.credentials.createInsecure());
  await new Promise<void>((resolve, reject) => reg.register({ version: 'v1beta1', endpoint: 'nic.sock', resourceName: RES }, (e) => (e ? reject(e) : resolve())));
  reg.close();
  await kubelet.waitFor('the list', () => kubelet.lastList(RES));
}

type Checkpoint = { Data: { PodDeviceEntries: { PodUID: string; ContainerName: string; ResourceName: string; DeviceIDs: Record<string, string[]>; AllocResp: string }[] | null; RegisteredDevices: Record<string, string[]> }; Checksum: number };
const read = (): Checkpoint => JSON.parse(readFileSync(kubelet.checkpointFile, 'utf8')) as Checkpoint;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vio-kubelet-'));
  kubelet = await FakeKubelet.start(join(dir, 'device-plugins'));
  await startPlugin();
});
afterEach(async () => {
  plugin.forceShutdown();
  await kubelet.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kubelet_internal_checkpoint', () => {
  test('written on ListAndWatch and on every Allocate, in the kubelet 1.36 shape', async () => {
    const first = read();
    expect(Object.keys(first)).toEqual(['Data', 'Checksum']);
    expect(first.Data).toEqual({ PodDeviceEntries: null, RegisteredDevices: { [RES]: ['vf-a', 'vf-b'] } });
    const res = await kubelet.allocate(RES, ['vf-a', 'vf-b'], { uid: 'uid-1', name: 'virt-launcher-vm1-x', namespace: 'vms' });
    const cp = read();
    expect(Object.keys(cp.Data)).toEqual(['PodDeviceEntries', 'RegisteredDevices']);
    expect(cp.Data.PodDeviceEntries).toEqual([{ PodUID: 'uid-1', ContainerName: 'compute', ResourceName: RES, DeviceIDs: { '-1': ['vf-b'], '1': ['vf-a'] }, AllocResp: expect.any(String) }]);
    expect(Object.keys(cp.Data.PodDeviceEntries?.[0] ?? {})).toEqual(['PodUID', 'ContainerName', 'ResourceName', 'DeviceIDs', 'AllocResp']);
    expect(Number.isInteger(cp.Checksum) && cp.Checksum >= 0 && cp.Checksum < 2 ** 32).toBe(true);
    expect(decodeContainerResponse(Buffer.from(cp.Data.PodDeviceEntries?.[0]?.AllocResp ?? '', 'base64'))).toEqual(res.containerResponses[0]);
    // The agent's reader takes it.
    const parsed = parseKubeletCheckpoint(readFileSync(kubelet.checkpointFile, 'utf8'));
    expect(parsed.kind === 'ok' && [...parsed.entries.keys()].sort()).toEqual(['vf-a', 'vf-b']);
    // Temp file + rename: a new inode each write, no temp file left.
    const ino = statSync(kubelet.checkpointFile).ino;
    await kubelet.allocate(RES, ['vf-a']);
    expect(statSync(kubelet.checkpointFile).ino).not.toBe(ino);
    expect(readdirSync(kubelet.pluginDir).filter((n) => n.includes('tmp'))).toEqual([]);
    // Without a pod UID every Allocate is a new pod.
    await kubelet.allocate(RES, ['vf-b']);
    const uids = read().Data.PodDeviceEntries?.map((e) => e.PodUID) ?? [];
    expect(new Set(uids).size).toBe(3);
  });

  test("a removed pod's entries stay in the file until the next Allocate", async () => {
    await kubelet.allocate(RES, ['vf-a'], { uid: 'gone' });
    const before = readFileSync(kubelet.checkpointFile, 'utf8');
    const writes = kubelet.checkpointWrites;
    kubelet.removePod('gone');
    await new Promise((r) => setTimeout(r, 100));
    expect(readFileSync(kubelet.checkpointFile, 'utf8')).toBe(before);
    expect(kubelet.checkpointWrites).toBe(writes);
    expect(kubelet.podResources()).toEqual([]);
    await kubelet.allocate(RES, ['vf-b'], { uid: 'new', name: 'p2', namespace: 'ns' });
    expect(read().Data.PodDeviceEntries?.map((e) => e.PodUID)).toEqual(['new']);
    expect(kubelet.podResources()).toEqual([{ name: 'p2', namespace: 'ns', containers: [{ name: 'compute', devices: [{ resourceName: RES, deviceIds: ['vf-b'] }] }] }]);
  });

  test('restart reads the file back (a lost file loses the record); checkpoint: false keeps none', async () => {
    await kubelet.allocate(RES, ['vf-a'], { uid: 'u1' });
    await kubelet.restart();
    expect(kubelet.entries.map((e) => e.podUID)).toEqual(['u1']);
    rmSync(kubelet.checkpointFile);
    await kubelet.restart();
    expect(kubelet.entries).toEqual([]);
    const other = await FakeKubelet.start(join(dir, 'other'), { checkpoint: false });
    other.writeCheckpoint();
    expect(existsSync(other.checkpointFile)).toBe(false);
    await other.stop();
  });
});

describe('FakePodResources', () => {
  let server: FakePodResources;
  let client: InstanceType<ReturnType<typeof loadPodResourcesApi>['v1']['PodResourcesLister']>;
  const list = (): Promise<PodResources__Output[]> =>
    new Promise((resolve, reject) => client.list({}, (e, r) => (e ? reject(e) : resolve(r?.podResources ?? []))));

  beforeEach(async () => {
    server = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'), { qps: 1000, burst: 1000 });
    client = new (loadPodResourcesApi().v1.PodResourcesLister)(`unix:${server.socket}`, grpc.credentials.createInsecure());
  });
  afterEach(async () => {
    client.close();
    await server.stop();
  });

  test('an attached List drops gone pods from memory (sources ready); the next device list rewrites the file without them', async () => {
    server.attach(kubelet);
    await kubelet.allocate(RES, ['vf-a'], { uid: 'gone' });
    await kubelet.allocate(RES, ['vf-b'], { uid: 'alive' });
    kubelet.removePod('gone');
    kubelet.sourcesReady = false; // right after a kubelet restart
    await list();
    expect(kubelet.entries.map((e) => e.podUID)).toEqual(['gone', 'alive']);
    kubelet.sourcesReady = true;
    await list();
    expect(kubelet.entries.map((e) => e.podUID)).toEqual(['alive']);
    expect(read().Data.PodDeviceEntries?.map((e) => e.PodUID)).toEqual(['gone', 'alive']); // not written by List
    const writes = kubelet.checkpointWrites;
    resend();
    await kubelet.waitFor('a rewrite', () => kubelet.checkpointWrites > writes);
    expect(read().Data.PodDeviceEntries?.map((e) => e.PodUID)).toEqual(['alive']);
  });

  test('hold / removePod; restart answers empty until synced; fail answers UNAVAILABLE until recover', async () => {
    server.hold({ namespace: 'vms', name: 'virt-launcher-vm1' }, RES, ['vf-a']);
    server.hold({ namespace: 'vms', name: 'virt-launcher-vm1' }, RES, ['vf-b']);
    expect((await list()).map((p) => [p.name, p.containers[0]?.devices[0]?.deviceIds])).toEqual([['virt-launcher-vm1', ['vf-a', 'vf-b']]]);
    await server.restart({ emptyForMs: Infinity });
    expect(await list()).toEqual([]);
    expect(server.emptyListCalls).toBe(1);
    server.synced();
    expect(await list()).toHaveLength(1);
    await server.restart({ emptyForMs: 200 });
    expect(await list()).toEqual([]);
    await new Promise((r) => setTimeout(r, 250));
    expect(await list()).toHaveLength(1);
    server.fail();
    await expect(list()).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    server.recover();
    server.removePod('vms', 'virt-launcher-vm1');
    expect(await list()).toEqual([]);
  });

  test("feeds from the fake kubelet's active pods", async () => {
    await kubelet.allocate(RES, ['vf-a'], { uid: 'u1', name: 'p1', namespace: 'ns' });
    server.setPods(kubelet.podResources());
    expect((await list()).map((p) => [p.namespace, p.name, p.containers[0]?.devices[0]?.topology?.nodes])).toEqual([['ns', 'p1', [{ ID: 1 }]]]);
  });
});
