// The manager loop over in-memory node ops (hand-made slices) and the fake kubelet.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VirtualIONodeStatus } from '../../../crds/generated/types.js';
import { FakeKubelet, FakePodResources } from '../../../test/fakes/kubelet.js';
import { PluginDirWatcher } from '../kubelet/watcher.js';
import { silentLogger } from '../log.js';
import { createMetrics } from '../metrics.js';
import type { CarvingPlan, Inventory, PoolPlan, Slice, VirtualIONodeSpec } from '../model.js';
import { Checkpoint } from './checkpoint.js';
import { AgentManager } from './manager.js';
import type { PlanSource, PlanState } from './plan.js';
import type { NodeOps, WriteResult } from './ports.js';

class MemPlan implements PlanSource {
  state: PlanState = { kind: 'none', message: 'none yet' };
  private notify: (() => void) | undefined;
  current(): PlanState {
    return this.state;
  }
  set(s: PlanState): void {
    this.state = s;
    this.notify?.();
  }
  async run(signal: AbortSignal, onChange: () => void): Promise<void> {
    this.notify = onChange;
    onChange();
    await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }));
  }
}

/** A node whose slices are a function of the plan and a mutable health map. */
class MemNode implements NodeOps {
  health = new Map<string, Slice['health']>();
  scans = 0;
  planned: { allocated: string[] }[] = [];
  writes: string[] = [];
  /** Paths the "kernel" refuses, and every attempt at them. */
  failPaths = new Set<string>();
  refused: string[] = [];
  failScan = false;
  async scan(): Promise<Inventory> {
    this.scans++;
    if (this.failScan) throw new Error('EIO reading bus/pci/devices');
    return { devices: [{ pciAddress: '0000:81:00.0' }] };
  }
  planCarving(spec: VirtualIONodeSpec, _inv: Inventory, allocated: ReadonlySet<string>): CarvingPlan {
    this.planned.push({ allocated: [...allocated].sort() });
    const writes = (spec.pools ?? []).map((p) => ({ path: `bus/pci/devices/${p.devices[0]?.pciAddress}/sriov_numvfs`, value: String(p.count ?? 0), why: 'carve' }));
    return { writes: this.writes.length ? [] : writes, blocked: [] };
  }
  uncarved: string[] = [];
  planUncarve(pool: PoolPlan, _spec: VirtualIONodeSpec, _inv: Inventory, allocated: ReadonlySet<string>): CarvingPlan {
    const path = `bus/pci/devices/${pool.devices[0]?.pciAddress}/sriov_numvfs`;
    const done = this.uncarved.includes(pool.name);
    const held = [...allocated].filter((id) => id.startsWith(pool.devices[0]?.pciAddress.slice(0, -1) ?? '?'));
    if (done || held.length) return { writes: [], blocked: [], held };
    return { writes: [{ path, value: '0', why: `release ${pool.name}` }], blocked: [], held: [] };
  }
  async applyCarving(plan: CarvingPlan): Promise<WriteResult[]> {
    if (plan.writes.some((w) => this.failPaths.has(w.path))) {
      return plan.writes.map((write) => {
        if (!this.failPaths.has(write.path)) {
          this.writes.push(write.path);
          return { write };
        }
        this.refused.push(write.path);
        return { write, error: 'EBUSY: device busy' };
      });
    }
    for (const w of plan.writes) if (w.value === '0') this.uncarved.push(w.why.replace('release ', ''));
    this.writes.push(...plan.writes.map((w) => w.path));
    return plan.writes.map((write) => ({ write }));
  }
  buildSlices(spec: VirtualIONodeSpec): Slice[] {
    return (spec.pools ?? []).flatMap((p) =>
      Array.from({ length: p.count ?? 0 }, (_, i) => {
        const id = `${p.devices[0]?.pciAddress.slice(0, -1)}${i + 1}`;
        return { id, pool: p.name, resourceName: p.resourceName, kind: 'VF' as const, parent: p.devices[0]?.pciAddress ?? '', pciAddress: id, iommuGroup: 50 + i, deviceNodes: [`/dev/vfio/${50 + i}`], health: this.health.get(id) ?? 'Healthy' };
      }),
    );
  }
}

const pool = (name: string, addr: string, count: number): PoolPlan => ({ name, resourceName: `virtualio.dev/${name}`, class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count, devices: [{ pciAddress: addr }] });

describe('AgentManager', () => {
  let dir: string;
  let kubelet: FakeKubelet;
  let podres: FakePodResources;
  let ctl: AbortController;
  let running: Promise<void>;
  let plan: MemPlan;
  let node: MemNode;
  let manager: AgentManager;
  const statuses: VirtualIONodeStatus[] = [];
  let fakeNow = 0;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vio-mgr-'));
    kubelet = await FakeKubelet.start(join(dir, 'plugins'));
    podres = await FakePodResources.start(join(dir, 'pod-resources', 'kubelet.sock'));
    ctl = new AbortController();
    plan = new MemPlan();
    node = new MemNode();
    statuses.length = 0;
    fakeNow = 0;
    const logger = silentLogger();
    manager = new AgentManager({
      nodeName: 'n1',
      agentVersion: 'test',
      ops: node,
      plan,
      pluginDir: kubelet.pluginDir,
      podResourcesSocket: podres.socket,
      devinfoDir: join(dir, 'devinfo'),
      cdi: { enabled: false, dir: join(dir, 'cdi') },
      watcher: new PluginDirWatcher({ dir: kubelet.pluginDir, logger, signal: ctl.signal }),
      logger,
      metrics: createMetrics(),
      rescanIntervalMs: 60_000,
      watchPaths: [],
      statusSink: (s) => statuses.push(s),
      podResources: { intervalMs: 100, minGapMs: 50 },
      releaseGraceMs: 0,
      clock: () => fakeNow,
    });
    running = manager.run(ctl.signal);
  });

  afterEach(async () => {
    ctl.abort();
    await running;
    await kubelet.stop();
    await podres.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('plan → carve → one server per pool; health changes pushed; pools added and removed; bad plan keeps the last good one', async () => {
    expect(manager.readiness()).toMatchObject({ ready: false });
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('net-a list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    expect(node.writes).toStrictEqual(['bus/pci/devices/0000:81:00.0/sriov_numvfs']);
    await kubelet.waitFor('ready', () => manager.readiness().ready);

    // Health flips are pushed after a rescan.
    node.health.set('0000:81:00.1', 'Unhealthy');
    manager.trigger('fs');
    await kubelet.waitFor('unhealthy', () => kubelet.lastList('virtualio.dev/net-a')?.[0]?.health === 'Unhealthy');

    // A second pool appears; the first keeps its registration.
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2), pool('net-b', '0000:82:00.0', 1)] }, generation: 2 });
    await kubelet.waitFor('net-b', () => kubelet.lastList('virtualio.dev/net-b')?.length === 1);
    expect(kubelet.history.filter((e) => e.resourceName === 'virtualio.dev/net-a')).toHaveLength(1);

    // Invalid plan: nothing is torn down, status says why.
    plan.set({ kind: 'error', message: 'invalid plan file: broken' });
    await kubelet.waitFor('status with plan error', () => statuses.at(-1)?.conditions?.find((c) => c.type === 'Ready' && c.reason === 'InvalidPlan'));
    expect(kubelet.endpoints.get('virtualio.dev/net-b')?.connected).toBe(true);

    // net-a removed: its server sends an empty list and its socket goes.
    plan.set({ kind: 'ok', spec: { pools: [pool('net-b', '0000:82:00.0', 1)] }, generation: 3 });
    await kubelet.waitFor('net-a emptied', () => kubelet.lastList('virtualio.dev/net-a')?.length === 0);
    await kubelet.waitFor('net-a socket gone', () => !existsSync(join(kubelet.pluginDir, 'virtualio-net-a.sock')));
    const last = await kubelet.waitFor('status gen 3', () => statuses.findLast((s) => s.observedGeneration === 3 && s.pools?.[0]?.registered));
    expect(last.pools?.map((p) => p.name)).toStrictEqual(['net-b']);
    expect(node.uncarved).toStrictEqual(['net-a']);
  });

  test('PodResources unknown: every existing slice counts as held; then holders come from the kubelet', async () => {
    await podres.stop();
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] } });
    await kubelet.waitFor('list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    // Everything that exists is protected, the pool's VFs included.
    expect(node.planned[0]?.allocated).toEqual(expect.arrayContaining(['0000:81:00.1', '0000:81:00.2']));
    const again = await FakePodResources.start(podres.socket);
    podres = again;
    again.setPods([{ name: 'p', namespace: 'ns', containers: [{ name: 'compute', devices: [{ resourceName: 'virtualio.dev/net-a', deviceIds: ['0000:81:00.2'] }] }] }]);
    await kubelet.waitFor('planned with holders', () => node.planned.find((p) => p.allocated.length === 1));
    const st = await kubelet.waitFor('status allocation', () => statuses.findLast((s) => s.summary?.allocated === 1));
    expect(st.slices?.find((s) => s.id === '0000:81:00.2')?.allocation).toStrictEqual({ namespace: 'ns', pod: 'p', container: 'compute' });
  });

  test('a failing scan keeps serving and is reported', async () => {
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 1)] } });
    await kubelet.waitFor('list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 1);
    node.failScan = true;
    manager.trigger('timer');
    const st = await kubelet.waitFor('scan error in status', () => statuses.findLast((s) => s.conditions?.some((c) => c.reason === 'ScanFailed')));
    expect(st.conditions?.find((c) => c.type === 'Ready')?.message).toContain('EIO');
    expect(kubelet.endpoints.get('virtualio.dev/net-a')?.connected).toBe(true);
  });

  test('a refused carving write backs off (1 s, 2 s, ...) per path+value, keeps its reason in status, resets on a plan change', async () => {
    const path = 'bus/pci/devices/0000:81:00.0/sriov_numvfs';
    node.failPaths.add(path);
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('first refusal', () => node.refused.length === 1);
    const cyclesAt = async (n: number): Promise<void> => {
      const target = manager.cycles + n;
      for (let i = 0; i < n; i++) manager.trigger('timer');
      await kubelet.waitFor(`cycle ${target}`, () => manager.cycles >= target);
    };
    // Many triggers within the first second: no new attempt.
    for (let i = 0; i < 5; i++) await cyclesAt(1);
    expect(node.refused).toHaveLength(1);
    const st = await kubelet.waitFor('reason in status', () => statuses.findLast((s) => s.pools?.[0]?.state === 'Error'));
    expect(st.pools?.[0]?.message).toContain(`${path}=2: EBUSY: device busy`);
    fakeNow = 1000;
    await cyclesAt(1);
    expect(node.refused).toHaveLength(2);
    fakeNow = 2500; // second delay is 2 s (due at 3000)
    await cyclesAt(1);
    expect(node.refused).toHaveLength(2);
    fakeNow = 3000;
    await cyclesAt(1);
    expect(node.refused).toHaveLength(3);
    // A plan change tries again at once.
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2), pool('net-b', '0000:82:00.0', 1)] }, generation: 2 });
    await kubelet.waitFor('retry after plan change', () => node.refused.length === 4);
    expect(node.writes).toContain('bus/pci/devices/0000:82:00.0/sriov_numvfs'); // other writes proceed
  });

  test('a carving pass that wrote nothing is not followed by a rescan (one scan per cycle)', async () => {
    node.failPaths.add('bus/pci/devices/0000:81:00.0/sriov_numvfs');
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('refusal', () => node.refused.length === 1);
    const target = manager.cycles + 3;
    for (let i = 0; i < 3; i++) manager.trigger('timer');
    await kubelet.waitFor('cycles', () => manager.cycles >= target);
    expect(node.scans).toBe(manager.cycles);
  });

  const holdPod = (ids: string[], resource = 'virtualio.dev/net-a'): void =>
    podres.setPods([{ name: 'virt-launcher-vm1-abcde', namespace: 'vms', containers: [{ name: 'compute', devices: [{ resourceName: resource, deviceIds: ids }] }] }]);

  test('an Allocate does not rescan the node; the pod the kubelet then reports does, once', async () => {
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('listed', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    await kubelet.waitFor('registered in status', () => statuses.findLast((s) => s.pools?.[0]?.registered));
    const scans = node.scans;
    await kubelet.allocate('virtualio.dev/net-a', ['0000:81:00.2']);
    holdPod(['0000:81:00.2']);
    const st = await kubelet.waitFor('the pod in status', () => statuses.findLast((s) => s.summary?.allocated === 1));
    expect(st.slices?.find((s) => s.id === '0000:81:00.2')?.allocation).toMatchObject({ pod: 'virt-launcher-vm1-abcde' });
    // One cycle for the changed PodResources answer; none for the Allocate itself (it made two before).
    expect(node.scans - scans).toBe(1);
  });

  test('a pool that leaves the plan while a pod holds a slice keeps it (draining: listed Unhealthy, not uncarved) and releases it once the pod is gone', async () => {
    holdPod(['0000:81:00.2']);
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('net-a list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    await kubelet.waitFor('holder known', () => statuses.findLast((s) => s.summary?.allocated === 1));

    plan.set({ kind: 'ok', spec: { pools: [] }, generation: 2 });
    const st = await kubelet.waitFor('draining status', () => statuses.findLast((s) => s.observedGeneration === 2 && s.pools?.some((p) => p.name === 'net-a' && p.state === 'Draining')));
    expect(node.uncarved).toStrictEqual([]);
    // Only the held slice stays listed, Unhealthy so the kubelet never hands it out again.
    await kubelet.waitFor('only held slice listed', () => kubelet.lastList('virtualio.dev/net-a')?.length === 1);
    expect(kubelet.lastList('virtualio.dev/net-a')).toStrictEqual([expect.objectContaining({ ID: '0000:81:00.2', health: 'Unhealthy' })]);
    const slice = st.slices?.find((s) => s.id === '0000:81:00.2');
    expect(slice?.allocation).toMatchObject({ namespace: 'vms', pod: 'virt-launcher-vm1-abcde' });
    expect(slice?.draining).toContain('no longer in this node');
    expect(st.pools?.find((p) => p.name === 'net-a')?.message).toContain('virt-launcher-vm1-abcde');

    // The pod goes: the pool is released (uncarved) and its server withdrawn.
    podres.setPods([]);
    await kubelet.waitFor('released', () => node.uncarved.includes('net-a'));
    await kubelet.waitFor('net-a emptied', () => kubelet.lastList('virtualio.dev/net-a')?.length === 0);
  });

  test('"no plan" after a plan (VirtualIONode re-created, plan file gone) keeps serving the last plan and removes nothing', async () => {
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    await kubelet.waitFor('net-a list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    plan.set({ kind: 'none', message: 'VirtualIONode n1 has no plan from the operator yet' });
    const st = await kubelet.waitFor('status says why', () => statuses.findLast((s) => s.conditions?.some((c) => c.type === 'Ready' && c.message.includes('no plan from the operator'))));
    expect(st.pools?.map((p) => p.name)).toStrictEqual(['net-a']);
    expect(node.uncarved).toStrictEqual([]);
    expect(kubelet.lastList('virtualio.dev/net-a')?.length).toBe(2);
  });

  test('a slice held through another pool\'s resource is never offered by this pool', async () => {
    holdPod(['0000:81:00.1'], 'virtualio.dev/net-b');
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2), pool('net-b', '0000:81:00.0', 1)] }, generation: 1 });
    await kubelet.waitFor('held through net-b is Unhealthy in net-a', () => kubelet.lastList('virtualio.dev/net-a')?.find((d) => d.ID === '0000:81:00.1')?.health === 'Unhealthy');
    await kubelet.waitFor('net-b offers it to its own holder', () => kubelet.lastList('virtualio.dev/net-b')?.find((d) => d.ID === '0000:81:00.1')?.health === 'Healthy');
  });

  test('checkpoint: a restarted agent learns holders of a pool that left the plan while it was down, and drains instead of uncarving', async () => {
    ctl.abort();
    await running;
    const file = join(dir, 'state', 'agent-checkpoint.json');
    const logger = silentLogger();
    const start = (cp: Checkpoint): { ctl: AbortController; run: Promise<void>; m: AgentManager } => {
      const c = new AbortController();
      const m = new AgentManager({
        nodeName: 'n1', agentVersion: 'test', ops: node, plan, pluginDir: kubelet.pluginDir, podResourcesSocket: podres.socket,
        devinfoDir: join(dir, 'devinfo'), cdi: { enabled: false, dir: join(dir, 'cdi') },
        watcher: new PluginDirWatcher({ dir: kubelet.pluginDir, logger, signal: c.signal }), logger, metrics: createMetrics(),
        rescanIntervalMs: 60_000, watchPaths: [], statusSink: (s) => statuses.push(s), podResources: { intervalMs: 100, minGapMs: 50 },
        clock: () => fakeNow, checkpoint: cp, releaseGraceMs: 0,
      });
      return { ctl: c, run: m.run(c.signal), m };
    };
    plan.set({ kind: 'ok', spec: { pools: [pool('net-a', '0000:81:00.0', 2)] }, generation: 1 });
    const first = start(new Checkpoint(file, 'n1', logger));
    await kubelet.waitFor('net-a list', () => kubelet.lastList('virtualio.dev/net-a')?.length === 2);
    first.ctl.abort();
    await first.run;
    expect(kubelet.lastList('virtualio.dev/net-a')?.length).toBe(2); // shutdown withdrew nothing
    // While the agent is down: the pool leaves the plan, and a pod holds a slice of it.
    plan.state = { kind: 'ok', spec: { pools: [] }, generation: 2 };
    holdPod(['0000:81:00.1']);
    statuses.length = 0;
    const second = start(new Checkpoint(file, 'n1', logger));
    const st = await kubelet.waitFor('draining after restart', () => statuses.findLast((s) => s.slices?.some((x) => x.id === '0000:81:00.1' && x.draining && x.allocation)));
    expect(st.pools?.find((p) => p.name === 'net-a')?.state).toBe('Draining');
    expect(node.uncarved).toStrictEqual([]);
    podres.setPods([]);
    await kubelet.waitFor('released after the pod is gone', () => node.uncarved.includes('net-a'));
    second.ctl.abort();
    await second.run;
    running = Promise.resolve();
  });
});
