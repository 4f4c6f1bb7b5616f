import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeKubelet } from '../../../test/fakes/kubelet.js';
import { PluginDirWatcher } from '../kubelet/watcher.js';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { Slice } from '../model.js';
import { PoolPlugin } from './pool.js';

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

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-pool-'));
    kubelet = await FakeKubelet.start(join(dir, 'plugins'));
    ctl = new AbortController();
    watcher = new PluginDirWatcher({ dir: kubelet.pluginDir, logger: silentLogger(), signal: ctl.signal });
    watcher.start();
    plugin = new PoolPlugin({
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
