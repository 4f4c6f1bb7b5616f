import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadDevicePluginApi, loadPluginRegistrationApi } from '../../../proto/load.js';
import type { Device__Output } from '../../../proto/generated/deviceplugin/v1beta1/Device.js';
import type { PluginInfo__Output } from '../../../proto/generated/pluginregistration/pluginregistration/PluginInfo.js';
import { FakeKubelet } from '../../../test/fakes/kubelet.js';
import { socketPath } from '../kubelet/registration-socket.js';
import { PluginDirWatcher } from '../kubelet/watcher.js';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { Slice } from '../model.js';
import { AllocationWindow } from '../podresources/allocation-window.js';
import { PoolPlugin, initialRegistration, type PoolPluginOptions, type RegistrationOptions } from './pool.js';

const RES = 'virtualio.dev/fast-net';
function vf(i: number, health: Slice['health'] = 'Healthy'): Slice {
  const addr = `0000:81:02.${i}`;
  return { id: addr, pool: 'fast-net', resourceName: RES, kind: 'VF', parent: '0000:81:00.0', pciAddress: addr, iommuGroup: 40 + i, numaNode: 1, deviceNodes: [`/dev/vfio/${40 + i}`], health };
}

describe('PoolPlugin against the fake kubelet', () => {
  let dir: string;
  let kubelet: FakeKubelet;
  let ctl: AbortController;
  let watcher: PluginDirWatcher;
  let plugin: PoolPlugin;
  let options: PoolPluginOptions;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-pool-'));
    kubelet = await FakeKubelet.start(join(dir, 'plugins'));
    ctl = new AbortController();
    watcher = new PluginDirWatcher({ dir: kubelet.pluginDir, logger: silentLogger(), signal: ctl.signal });
    watcher.start();
    plugin = new PoolPlugin(options = {
      pool: { name: 'fast-net', resourceName: RES, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork' },
      pluginDir: kubelet.pluginDir,
      devinfoDir: join(dir, 'devinfo'),
      cdi: { enabled: true, dir: join(dir, 'cdi') },
      watcher,
      logger: silentLogger(),
      metrics: createMetrics(),
      signal: ctl.signal,
    });
  });

  afterEach(async () => {
    ctl.abort();
    await plugin.stop();
    await kubelet.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('registers, lists, pushes changes only, re-registers after a kubelet restart, empties on stop', async () => {
    plugin.update([vf(0), vf(1)]);
    plugin.start();
    const ep = await kubelet.waitFor('registration', () => kubelet.endpoints.get(RES));
    expect(ep.endpoint).toBe('virtualio-fast-net.sock');
    expect(ep.options).toStrictEqual({ preStartRequired: false, getPreferredAllocationAvailable: true });
    await kubelet.waitFor('first list', () => kubelet.lastList(RES));
    expect(kubelet.lastList(RES)).toStrictEqual([
      { ID: '0000:81:02.0', health: 'Healthy', topology: { nodes: [{ ID: 1 }] } },
      { ID: '0000:81:02.1', health: 'Healthy', topology: { nodes: [{ ID: 1 }] } },
    ]);
    await kubelet.waitFor('registered state', () => plugin.state.registered);

    // Same content: nothing sent. Changed health: one new list.
    plugin.update([vf(0), vf(1)]);
    plugin.update([vf(0), vf(1, 'Unhealthy')]);
    await kubelet.waitFor('unhealthy list', () => kubelet.lastList(RES)?.[1]?.health === 'Unhealthy');
    expect(ep.lists).toHaveLength(2);

    // Allocate writes the device-info file (0444) and the CDI spec exists.
    const res = await kubelet.allocate(RES, ['0000:81:02.0']);
    expect(res.containerResponses[0]?.envs).toStrictEqual({ 'PCI_RESOURCE_VIRTUALIO_DEV_FAST-NET': '0000:81:02.0' });
    const info = join(dir, 'devinfo', 'virtualio.dev-fast-net-0000:81:02.0-device.json');
    expect(JSON.parse(readFileSync(info, 'utf8'))).toStrictEqual({ type: 'pci', version: '1.1.0', pci: { 'pci-address': '0000:81:02.0', 'pf-pci-address': '0000:81:00.0' } });
    expect(statSync(info).mode & 0o777).toBe(0o444);
    // A second Allocate of the VF (its VM restarted) finds the file as written: not written again.
    // (Marked by its mode: a write would create it 0444 again.)
    chmodSync(info, 0o400);
    await kubelet.allocate(RES, ['0000:81:02.0']);
    expect(statSync(info).mode & 0o777).toBe(0o400);
    // One removed meanwhile (by anyone) is written again.
    rmSync(info);
    await kubelet.allocate(RES, ['0000:81:02.0']);
    expect(JSON.parse(readFileSync(info, 'utf8')).pci['pci-address']).toBe('0000:81:02.0');
    expect(statSync(info).mode & 0o777).toBe(0o444);
    const cdi = JSON.parse(readFileSync(join(dir, 'cdi', 'virtualio.dev-fast-net.json'), 'utf8'));
    expect(cdi.kind).toBe('virtualio.dev/fast-net');
    expect(cdi.devices.map((d: { name: string }) => d.name)).toStrictEqual(['0000:81:02.0', '0000:81:02.1']);

    // Bad IDs: gRPC error, server still alive.
    await expect(kubelet.allocate(RES, ['0000:81:02.1'])).rejects.toMatchObject({ code: 9, details: expect.stringContaining('unhealthy device IDs: 0000:81:02.1') });
    await expect(kubelet.allocate(RES, ['nope'])).rejects.toMatchObject({ code: 3 });
    expect(await kubelet.preferred(RES, ['0000:81:02.0'], [], 1)).toStrictEqual(['0000:81:02.0']);

    // Kubelet restart.
    await kubelet.restart();
    const ep2 = await kubelet.waitFor('re-registration', () => (kubelet.endpoints.get(RES)?.generation === 2 ? kubelet.endpoints.get(RES) : undefined));
    await kubelet.waitFor('list after restart', () => ep2.lists.length > 0);
    expect(ep2.lists[0]?.map((d) => d.health)).toStrictEqual(['Healthy', 'Unhealthy']);
    expect(existsSync(plugin.socketPath)).toBe(true);

    // A slice disappears: its device-info file goes.
    plugin.update([vf(1, 'Unhealthy')]);
    await kubelet.waitFor('shrunk list', () => ep2.lists[ep2.lists.length - 1]?.length === 1);
    expect(existsSync(info)).toBe(false);

    // Stop: an empty list, socket and CDI spec removed.
    await plugin.stop();
    await kubelet.waitFor('empty list', () => ep2.lists[ep2.lists.length - 1]?.length === 0);
    expect(existsSync(plugin.socketPath)).toBe(false);
    expect(existsSync(join(dir, 'cdi', 'virtualio.dev-fast-net.json'))).toBe(false);
  });

  // The kubelet reserves right after GetPreferredAllocation and records after Allocate; a List of
  // ours in between can make it lose the reservation (allocation-window.ts).
  test('GetPreferredAllocation is answered once a PodResources List in flight came back; both calls keep the next List out', async () => {
    const window = new AllocationWindow(200);
    plugin = new PoolPlugin({ ...options, window });
    plugin.update([vf(0), vf(1)]);
    plugin.start();
    await kubelet.waitFor('registered state', () => plugin.state.registered);
    let finish!: () => void;
    const listed = window.list(() => new Promise<void>((r) => (finish = r)));
    let answer: string[] | undefined;
    const preferred = kubelet.preferred(RES, ['0000:81:02.1', '0000:81:02.0'], [], 1).then((ids) => (answer = ids));
    await new Promise((r) => setTimeout(r, 150));
    expect(answer).toBeUndefined();
    expect(window.waitMs()).toBe(200); // the call is open
    finish();
    await listed;
    await preferred;
    expect(answer).toStrictEqual(['0000:81:02.0']);
    await new Promise((r) => setTimeout(r, 250));
    expect(window.waitMs()).toBe(200); // the kubelet holds its pick until it has our Allocate answer
    await kubelet.allocate(RES, ['0000:81:02.0']);
    expect(window.waitMs()).toBeGreaterThan(0); // settling
    await new Promise((r) => setTimeout(r, 250));
    expect(window.waitMs()).toBe(0);
    await kubelet.allocate(RES, ['0000:81:02.0']);
    expect(window.waitMs()).toBeGreaterThan(0);
    await expect(kubelet.allocate(RES, ['nope'])).rejects.toMatchObject({ code: 3 });
    await new Promise((r) => setTimeout(r, 250));
    expect(window.waitMs()).toBe(0); // a refused call ends too
  });

  test('waits for kubelet.sock, then registers', async () => {
    await kubelet.stop();
    plugin.update([vf(0)]);
    plugin.start();
    await kubelet.waitFor('serving socket', () => existsSync(plugin.socketPath));
    expect(plugin.state).toMatchObject({ registered: false, error: 'kubelet.sock is absent' });
    const k2 = await FakeKubelet.start(kubelet.pluginDir);
    try {
      await k2.waitFor('registration', () => k2.lastList(RES));
      expect(plugin.state.registered).toBe(true);
    } finally {
      await k2.stop();
    }
  });
});

describe('registration through the plugin watcher, and the fall back to kubelet.sock', () => {
  let dir: string;
  let kubeletDir: string;
  let kubelet: FakeKubelet;
  let ctl: AbortController;
  let watcher: PluginDirWatcher;
  let plugin: PoolPlugin | undefined;

  const make = (registration: RegistrationOptions): PoolPlugin => {
    plugin = new PoolPlugin({
      pool: { name: 'fast-net', resourceName: RES, class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork' },
      pluginDir: kubelet.pluginDir,
      devinfoDir: join(dir, 'devinfo'),
      cdi: { enabled: false, dir: join(dir, 'cdi') },
      watcher,
      logger: silentLogger(),
      metrics: createMetrics(),
      signal: ctl.signal,
      registration,
    });
    return plugin;
  };

  /** What the kubelet's plugin watcher does with a socket in plugins_registry: GetInfo, then the verdict. */
  const watcherVisit = async (verdict: { pluginRegistered: boolean; error: string }) => {
    const registry = join(kubeletDir, 'plugins_registry');
    const sock = await kubelet.waitFor('a registration socket', () => readdirSync(registry).find((f) => f.endsWith('.sock')));
    const client = new (loadPluginRegistrationApi().pluginregistration.Registration)(`unix:${join(registry, sock)}`, grpc.credentials.createInsecure());
    try {
      const info = await new Promise<PluginInfo__Output>((res, rej) => client.getInfo({}, (e, r) => (e || !r ? rej(e) : res(r))));
      await new Promise<void>((res, rej) => client.notifyRegistrationStatus(verdict, (e) => (e ? rej(e) : res())));
      return { info, socket: join(registry, sock) };
    } finally {
      client.close();
    }
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-pool-reg-'));
    kubeletDir = join(dir, 'kubelet');
    mkdirSync(join(kubeletDir, 'plugins_registry'), { recursive: true });
    kubelet = await FakeKubelet.start(join(kubeletDir, 'device-plugins'));
    ctl = new AbortController();
    watcher = new PluginDirWatcher({ dir: kubelet.pluginDir, logger: silentLogger(), signal: ctl.signal });
    watcher.start();
    plugin = undefined;
  });

  afterEach(async () => {
    ctl.abort();
    await plugin?.stop();
    await kubelet.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('auto picks the watcher only where the kubelet has one next to its device plugin folder', () => {
    const dp = join(kubeletDir, 'device-plugins');
    expect(initialRegistration({ mode: 'auto', kubeletDir }, dp).way).toBe('plugin-watcher');
    expect(initialRegistration({ mode: 'auto', kubeletDir }, join(dir, 'elsewhere'))).toMatchObject({ way: 'kubelet-sock', why: expect.stringContaining('is not') });
    expect(initialRegistration({ mode: 'auto', kubeletDir: join(dir, 'nokubelet') }, join(dir, 'nokubelet', 'device-plugins'))).toMatchObject({ way: 'kubelet-sock', why: expect.stringContaining('does not exist') });
    expect(initialRegistration({ mode: 'plugin-watcher', kubeletDir: join(dir, 'nokubelet') }, dp).way).toBe('plugin-watcher');
    expect(initialRegistration({ mode: 'kubelet-sock', kubeletDir }, dp).way).toBe('kubelet-sock');
  });

  test('offers the pool in plugins_registry: GetInfo names the resource and an endpoint outside device-plugins/; the verdict sets the state', async () => {
    const p = make({ mode: 'plugin-watcher', kubeletDir });
    p.update([vf(0)]);
    p.start();
    const { info, socket } = await watcherVisit({ pluginRegistered: true, error: '' });
    expect(info).toMatchObject({ type: 'DevicePlugin', name: RES, supportedVersions: ['v1beta1'], endpoint: join(kubeletDir, 'plugins/virtualio.dev/dp-fast-net.sock') });
    expect(socket).toBe(join(kubeletDir, 'plugins_registry/virtualio.dev-dp-fast-net.sock'));
    // Notified but the kubelet has no device list yet: not registered (readiness waits for the list).
    await kubelet.waitFor('waiting for ListAndWatch', () => p.state.error?.includes('waiting for it to open ListAndWatch'));
    expect(p.state.registered).toBe(false);
    // The kubelet's device manager dials the endpoint GetInfo named and opens ListAndWatch.
    const dp = new (loadDevicePluginApi().v1beta1.DevicePlugin)(`unix:${info.endpoint}`, grpc.credentials.createInsecure());
    const stream = dp.listAndWatch({});
    stream.on('error', () => undefined); // the cancel below ends it with CANCELLED
    const first = await new Promise<Device__Output[]>((res) => stream.once('data', (m: { devices: Device__Output[] }) => res(m.devices)));
    expect(first.map((d) => d.ID)).toEqual(['0000:81:02.0']);
    await kubelet.waitFor('registered', () => p.state.registered);
    expect(p.state).toMatchObject({ registered: true, via: 'PluginWatcher', registrations: 1 });
    expect(kubelet.endpoints.get(RES)).toBeUndefined(); // nothing through kubelet.sock
    stream.cancel();
    dp.close();
    // A stop removes both sockets (the kubelet deregisters the plugin).
    await p.stop();
    expect(existsSync(socket)).toBe(false);
    expect(existsSync(info.endpoint)).toBe(false);
  });

  test('auto: the kubelet refuses the watcher registration → registers through kubelet.sock instead', async () => {
    const p = make({ mode: 'auto', kubeletDir });
    p.update([vf(0)]);
    p.start();
    await watcherVisit({ pluginRegistered: false, error: 'no handler registered for plugin type: DevicePlugin' });
    const ep = await kubelet.waitFor('registration on kubelet.sock', () => kubelet.endpoints.get(RES));
    expect(ep.endpoint).toBe('virtualio-fast-net.sock');
    await kubelet.waitFor('registered', () => p.state.registered);
    expect(p.state.via).toBe('KubeletSocket');
    expect(readdirSync(join(kubeletDir, 'plugins_registry'))).toEqual([]);
  });

  test('auto: nobody picks up the registration socket while kubelet.sock is up → kubelet.sock after fallbackMs', async () => {
    const p = make({ mode: 'auto', kubeletDir, fallbackMs: 300 });
    p.update([vf(0)]);
    p.start();
    await kubelet.waitFor('registration on kubelet.sock', () => kubelet.endpoints.get(RES));
    await kubelet.waitFor('registered', () => p.state.registered);
    expect(p.state.via).toBe('KubeletSocket');
  });

  test('auto: while kubelet.sock is absent the fallback clock does not run', async () => {
    await kubelet.stop();
    const p = make({ mode: 'auto', kubeletDir, fallbackMs: 300 });
    p.update([vf(0)]);
    p.start();
    await new Promise((r) => setTimeout(r, 1500));
    expect(readdirSync(join(kubeletDir, 'plugins_registry'))).toEqual(['virtualio.dev-dp-fast-net.sock']); // still offered to the watcher
    const k2 = await FakeKubelet.start(kubelet.pluginDir);
    try {
      await k2.waitFor('registration on kubelet.sock once the kubelet is up and the watcher stays silent', () => k2.endpoints.get(RES));
      await k2.waitFor('registered', () => p.state.registered);
      expect(p.state.via).toBe('KubeletSocket');
    } finally {
      await p.stop();
      await k2.stop();
    }
  });

  test('plugin-watcher (explicit): a refusal is reported and never falls back', async () => {
    const p = make({ mode: 'plugin-watcher', kubeletDir, fallbackMs: 100 });
    p.update([vf(0)]);
    p.start();
    await watcherVisit({ pluginRegistered: false, error: 'invalid name of device plugin socket' });
    await kubelet.waitFor('refusal in state', () => p.state.error?.includes('invalid name of device plugin socket'));
    await new Promise((r) => setTimeout(r, 500));
    expect(kubelet.endpoints.get(RES)).toBeUndefined();
    expect(p.state.registered).toBe(false);
  });
});

describe('socketPath', () => {
  test('keeps short names, cuts long ones to a unix socket path with a stable hash', () => {
    expect(socketPath('/var/lib/kubelet/plugins_registry', 'virtualio.dev-dp-gpu')).toBe('/var/lib/kubelet/plugins_registry/virtualio.dev-dp-gpu.sock');
    const long = 'virtualio.dev-dp-' + 'a'.repeat(200);
    const a = socketPath('/var/lib/kubelet/plugins_registry', long);
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(107);
    expect(a).toBe(socketPath('/var/lib/kubelet/plugins_registry', long));
    expect(a).not.toBe(socketPath('/var/lib/kubelet/plugins_registry', long + 'b'));
    expect(() => socketPath('/' + 'x'.repeat(120), 'a')).toThrow(/too long/);
  });
});
