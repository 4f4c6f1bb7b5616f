import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakePodResources } from '../../../test/fakes/kubelet.js';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import { AllocationWindow } from './allocation-window.js';
import { PodResourcesWatcher, mapHolders, sharedDevices, vmiOf } from './client.js';

const pods = [
  {
    name: 'virt-launcher-vm1-abcde',
    namespace: 'vms',
    containers: [
      { name: 'compute', devices: [{ resourceName: 'virtualio.dev/a16', deviceIds: ['u1', 'u2'] }, { resourceName: 'other.io/x', deviceIds: ['z'] }], cpuIds: [], memory: [], dynamicResources: [] },
    ],
  },
  { name: 'app', namespace: 'default', containers: [{ name: 'main', devices: [{ resourceName: 'virtualio.dev/a16', deviceIds: ['u3'] }], cpuIds: [], memory: [], dynamicResources: [] }] },
];

describe('PodResources mapping', () => {
  test('keeps only our resources', () => {
    expect([...mapHolders(pods as never, new Set(['virtualio.dev/a16']))]).toStrictEqual([
      ['u1', { resourceName: 'virtualio.dev/a16', namespace: 'vms', pod: 'virt-launcher-vm1-abcde', container: 'compute' }],
      ['u2', { resourceName: 'virtualio.dev/a16', namespace: 'vms', pod: 'virt-launcher-vm1-abcde', container: 'compute' }],
      ['u3', { resourceName: 'virtualio.dev/a16', namespace: 'default', pod: 'app', container: 'main' }],
    ]);
  });

  test('sharedDevices: a device the kubelet lists for two pods (not one reused within a pod)', () => {
    const twice = [
      ...pods,
      { name: 'virt-launcher-vm2-fghij', namespace: 'vms', containers: [{ name: 'compute', devices: [{ resourceName: 'virtualio.dev/a16', deviceIds: ['u2'] }, { resourceName: 'other.io/x', deviceIds: ['z'] }], cpuIds: [], memory: [], dynamicResources: [] }] },
      { name: 'other', namespace: 'default', containers: [{ name: 'main', devices: [{ resourceName: 'other.io/x', deviceIds: ['z'] }], cpuIds: [], memory: [], dynamicResources: [] }] },
      { name: 'app', namespace: 'default', containers: [{ name: 'side', devices: [{ resourceName: 'virtualio.dev/a16', deviceIds: ['u3'] }], cpuIds: [], memory: [], dynamicResources: [] }] },
    ];
    expect(sharedDevices(twice as never, new Set(['virtualio.dev/a16']))).toStrictEqual([{ id: 'u2', pods: ['vms/virt-launcher-vm1-abcde', 'vms/virt-launcher-vm2-fghij'] }]);
    expect(sharedDevices(pods as never, new Set(['virtualio.dev/a16']))).toStrictEqual([]);
  });

  test.each([
    ['launcher with VMI owner', { labels: { 'kubevirt.io/created-by': 'uid-1' }, ownerReferences: [{ kind: 'VirtualMachineInstance', name: 'vm1' }] }, 'vm1'],
    ['launcher without owner reference: the UID', { labels: { 'kubevirt.io/created-by': 'uid-1' } }, 'uid-1'],
    ['not a launcher', { labels: { app: 'x' }, ownerReferences: [{ kind: 'VirtualMachineInstance', name: 'vm1' }] }, undefined],
    ['unknown pod', undefined, undefined],
  ])('vmiOf: %s', (_n, info, vmi) => expect(vmiOf(info)).toBe(vmi));
});

describe('PodResourcesWatcher against a fake PodResources server', () => {
  test('lists, maps VMIs of compute containers, survives rate limiting and a missing server', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-podres-'));
    const socket = join(dir, 'pod-resources', 'kubelet.sock');
    const ctl = new AbortController();
    let changes = 0;
    const lookups: string[] = [];
    const w = new PodResourcesWatcher({
      socket,
      logger: silentLogger(),
      metrics: createMetrics(),
      resourceNames: () => new Set(['virtualio.dev/a16']),
      onChange: () => changes++,
      lookupPod: async (ns, name) => {
        lookups.push(`${ns}/${name}`);
        return { labels: { 'kubevirt.io/created-by': 'uid-1' }, ownerReferences: [{ kind: 'VirtualMachineInstance', name: 'vm1' }] };
      },
      intervalMs: 50,
      minGapMs: 20,
    });
    const running = w.run(ctl.signal);
    try {
      // No server yet: an error is recorded, nothing crashes.
      await waitUntil(() => w.error !== undefined);
      expect(w.error).toMatch(/UNAVAILABLE/);
      const server = await FakePodResources.start(socket, { qps: 1000, burst: 1000 });
      server.setPods(pods as never);
      await waitUntil(() => w.synced);
      expect(w.holders().get('u1')).toStrictEqual({ resourceName: 'virtualio.dev/a16', namespace: 'vms', pod: 'virt-launcher-vm1-abcde', container: 'compute', vmi: 'vm1' });
      expect(w.holders().get('u3')?.vmi).toBeUndefined();
      expect(lookups).toStrictEqual(['vms/virt-launcher-vm1-abcde']);
      expect(w.error).toBeUndefined();
      server.setPods([]);
      await waitUntil(() => w.holders().size === 0);
      expect(changes).toBeGreaterThanOrEqual(2);
      await server.stop();
      // Rate limited: RESOURCE_EXHAUSTED is reported and retried.
      const limited = await FakePodResources.start(socket, { qps: 0.0001, burst: 1 });
      await waitUntil(() => limited.rejectedCalls > 0);
      await waitUntil(() => /RESOURCE_EXHAUSTED/.test(w.error ?? ''));
      await limited.stop();
    } finally {
      ctl.abort();
      await running;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('PodResourcesWatcher and allocations', () => {
  // The kubelet loses a reservation in flight when a List meets its Allocate (allocation-window.ts).
  test('no List while an allocation call is open nor settleMs after it; after maxDeferMs it goes anyway', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-podres-'));
    const socket = join(dir, 'pod-resources', 'kubelet.sock');
    const server = await FakePodResources.start(socket, { qps: 1000, burst: 1000 });
    server.setPods(pods as never);
    const ctl = new AbortController();
    const window = new AllocationWindow(150);
    const opts = { socket, logger: silentLogger(), metrics: createMetrics(), resourceNames: () => new Set(['virtualio.dev/a16']), onChange: () => undefined, intervalMs: 20, minGapMs: 10, window };
    const w = new PodResourcesWatcher({ ...opts, maxDeferMs: 60_000 });
    const running = w.run(ctl.signal);
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    try {
      await waitUntil(() => server.listCalls >= 2);
      const end = window.begin('Allocate');
      await window.listsDone();
      const before = server.listCalls;
      await sleep(300);
      expect(server.listCalls).toBe(before); // every 20 ms otherwise
      w.kick(0);
      await sleep(50);
      expect(server.listCalls).toBe(before);
      end();
      await sleep(60);
      expect(server.listCalls).toBe(before); // settling
      await waitUntil(() => server.listCalls > before);
      ctl.abort();
      await running;
      // A kubelet allocating without end: the agent must still learn its holders.
      const ctl2 = new AbortController();
      window.begin('Allocate');
      const n = server.listCalls;
      const w2 = new PodResourcesWatcher({ ...opts, maxDeferMs: 200 });
      const running2 = w2.run(ctl2.signal);
      await sleep(100);
      expect(server.listCalls).toBe(n);
      await waitUntil(() => w2.synced);
      ctl2.abort();
      await running2;
    } finally {
      ctl.abort();
      await running;
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function waitUntil(cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`condition not met: ${cond.toString()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
