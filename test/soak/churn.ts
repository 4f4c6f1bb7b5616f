// Churn soak (issue 21, "churn"): the REAL agent process (standalone, as test/model/node.ts starts it:
// plan file, fake kernel daemon as the witness, fake kubelet and PodResources) through many VM
// start/stop cycles on every pool mode: SR-IOV VFs, mdevs, a passthrough GPU with its audio function,
// NPIV vports. One cycle: the kubelet Allocates a free slice to a new VM pod, the VMM stand-in opens
// its VFIO group (or uses the vport), then the oldest running VM stops (closes its groups) and its pod
// goes from the kubelet and PodResources, so the agent releases the slice after its grace.
//
// Everything is sampled from OUTSIDE the agent, every `sampleEvery` cycles: VmRSS (/proc/<pid>/status),
// open fds and how many are sockets (/proc/<pid>/fd), the agent's metrics (heap, open fds by its own
// count), slices its /status shows allocated, entries of its ledger and checkpoint, files in its state
// folder, devinfo and CDI folders, and the fake kernel's record (violations: a destructive write that
// reached a device a VM held open; must stay empty).
// The CI test (device-plugin/test/churn-soak.test.ts) asserts on the result; `make bench`
// (test/bench/churn-soak.ts) prints it.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startAgent, type AgentProcess } from '../fakes/agent-process.js';
import { NodeUnderTest } from '../model/node.js';
import { startVmFromAllocation } from '../sysfs/vmm.js';
import { chartNodeOptions, count, fdsOf, fileSize, ledgerEntries, metric, p99FirstLastTenth, pct, rssOf, sleep, slope } from './sample.js';

/** One sample of the agent, taken from outside it. */
export interface SoakSample {
  cycle: number;
  ms: number;
  rssKiB: number;
  /** Anonymous part of the RSS (heaps, malloc arenas; the rest is mapped files and shared memory). */
  rssAnonKiB: number;
  fds: number;
  sockets: number;
  /** The agent's own metrics (NaN when it did not answer). */
  heapUsedKiB: number;
  heapTotalKiB: number;
  externalKiB: number;
  metricFds: number;
  /** Slices its /status shows with an allocation, and VMs running in the harness at that moment. */
  allocatedSlices: number;
  runningVms: number;
  ledgerEntries: number;
  checkpointBytes: number;
  stateFiles: number;
  devinfoFiles: number;
  cdiFiles: number;
  mdevs: number;
  vports: number;
  vfs: number;
  violations: number;
}

export interface SoakOptions {
  cycles: number;
  /** Take a sample every this many cycles (default cycles/20, at least 1). */
  sampleEvery?: number;
  /** VMs kept running at once (the cycle stops the oldest once there are this many). Default 4. */
  concurrent?: number;
  /** The agent's --release-grace (default 1s: a freed slice is handed out again soon). */
  releaseGrace?: string;
  /**
   * Restart the agent every this many cycles while its VMs run, SIGTERM and SIGKILL in turn (an
   * upgrade's stop, a crash); the next cycle waits for the new agent's /readyz. Samples follow the
   * new process, so the leak figures of such a run are per process, not over the run.
   */
  restartEvery?: number;
  log?: (line: string) => void;
}

export interface SoakResult {
  cycles: number;
  seconds: number;
  cyclesPerSecond: number;
  /** Allocate round trips (the fake kubelet's gRPC call), ms, in cycle order. */
  allocateMs: number[];
  samples: SoakSample[];
  /** Cycles that found no free slice of the pool they picked and took the next pool instead. */
  skipped: number;
  /** Harness-seen problems: double hand-outs, Allocate refused, the agent gone. */
  problems: string[];
  /** Agent restarts made (restartEvery), and the longest wait for a restarted agent's /readyz, ms. */
  restarts: number;
  restartReadyMaxMs: number;
  /** Kernel violations as text (each a destructive write on a held device). */
  violations: string[];
  /** After every VM stopped: slices still allocated in /status, ledger entries, per pool Healthy vs planned. */
  end: { allocatedSlices: number; ledgerEntries: number; healthy: Record<string, number>; planned: Record<string, number>; facts: { vfs: number; mdevs: number; vports: number } };
  pid: number;
}

/** The soak's pools: more slices than the fault sequences use, every mode. */
function soakPools(node: NodeUnderTest): void {
  const p = node.pools;
  if (p.net) p.net.count = 8;
  if (p.vgpu) p.vgpu.count = 4;
  if (p.fc) p.fc.count = 4;
}

/** Pool order of the cycles: VFs most often (the common case), every mode in every 6 cycles. */
const ORDER = ['net', 'vgpu', 'net', 'gpu', 'fc', 'net'];

class SoakNode extends NodeUnderTest {
  override spawnAgent(): Promise<AgentProcess> {
    return startAgent([
      '--plan-file', this.planFile,
      '--node-name', 'soak-node',
      '--sysfs-root', this.sys,
      '--dev-root', this.dev,
      '--plugin-dir', this.kubelet.pluginDir,
      '--pod-resources-socket', this.podres.socket,
      '--devinfo-dir', join(this.dir, 'devinfo'),
      '--cdi', 'true',
      '--cdi-dir', join(this.dir, 'cdi'),
      '--state-dir', this.stateDir,
      '--rescan-interval', '1s',
      '--release-grace', this.grace,
      '--metrics-address', '127.0.0.1:0',
      '--log-level', 'info',
    ], this.nodeOptions ? { NODE_OPTIONS: this.nodeOptions } : {});
  }

  /** The V8 flags the Helm chart gives the agent (values.yaml agent.nodeOptions): what ships. */
  readonly nodeOptions: string = chartNodeOptions('agent');

  grace = '1s';
}

interface AgentStatus { slices?: { id: string; pool: string; allocation?: { pod: string } }[]; pools?: { name: string; state: string; capacity?: number }[] }

async function statusOf(agent: AgentProcess): Promise<AgentStatus | undefined> {
  try {
    const r = await agent.get('/status');
    return r.status === 200 ? (JSON.parse(r.text) as AgentStatus) : undefined;
  } catch {
    return undefined;
  }
}

export async function runChurn(o: SoakOptions): Promise<SoakResult> {
  const log = o.log ?? ((): void => {});
  const concurrent = o.concurrent ?? 4;
  const sampleEvery = Math.max(1, o.sampleEvery ?? Math.floor(o.cycles / 20));
  const node = new SoakNode();
  node.grace = o.releaseGrace ?? '1s';
  soakPools(node);
  const samples: SoakSample[] = [];
  const allocateMs: number[] = [];
  const problems: string[] = [];
  let skipped = 0;
  let seq = 0;
  /** Running VMs, oldest first. */
  const running: { uid: string; name: string; ids: string[]; stop: () => Promise<void> }[] = [];
  try {
    await node.start();
    let agent = node.agent as AgentProcess;
    let pid = agent.proc.pid as number;
    let restarts = 0;
    let restartReadyMaxMs = 0;
    /** The agent goes while VMs hold slices, a new one starts and must serve them all again. */
    const restart = async (): Promise<void> => {
      const how: NodeJS.Signals = restarts % 2 === 0 ? 'SIGTERM' : 'SIGKILL';
      await agent.stop(how);
      node.agent = await node.spawnAgent();
      agent = node.agent;
      pid = agent.proc.pid as number;
      restarts++;
      const r0 = performance.now();
      for (;;) {
        if (!agent.alive) throw new Error(`the agent restarted after ${how} exited (${agent.exitCode})\n${agent.tail()}`);
        const ready = await agent.get('/readyz').then((x) => x.status === 200, () => false);
        if (ready) break;
        if (performance.now() - r0 > 30_000) throw new Error(`the agent restarted after ${how} was not ready within 30 s\n${agent.tail()}`);
        await sleep(50);
      }
      restartReadyMaxMs = Math.max(restartReadyMaxMs, performance.now() - r0);
      log(`restart ${restarts} (${how}): ready in ${Math.round(performance.now() - r0)} ms, pid ${pid}, ${running.length} VMs running`);
    };
    log(`agent pid ${pid}, NODE_OPTIONS "${node.nodeOptions}"`);
    const t0 = performance.now();

    const sample = async (cycle: number): Promise<void> => {
      await node.kernel.idle();
      const { fds, sockets } = fdsOf(pid);
      let text = '';
      try {
        text = (await agent.get('/metrics')).text;
      } catch {
        /* counted as NaN */
      }
      const st = await statusOf(agent);
      const f = node.facts();
      const s: SoakSample = {
        cycle,
        ms: Math.round(performance.now() - t0),
        ...rssOf(pid),
        fds,
        sockets,
        heapUsedKiB: Math.round(metric(text, 'virtualio_agent_nodejs_heap_size_used_bytes') / 1024),
        heapTotalKiB: Math.round(metric(text, 'virtualio_agent_nodejs_heap_size_total_bytes') / 1024),
        externalKiB: Math.round(metric(text, 'virtualio_agent_nodejs_external_memory_bytes') / 1024),
        metricFds: metric(text, 'virtualio_agent_process_open_fds'),
        allocatedSlices: st?.slices?.filter((x) => x.allocation).length ?? Number.NaN,
        runningVms: running.length,
        ledgerEntries: ledgerEntries(node.stateDir),
        checkpointBytes: fileSize(join(node.stateDir, 'agent-checkpoint.json')),
        stateFiles: count(node.stateDir, true),
        devinfoFiles: count(join(node.dir, 'devinfo'), true),
        cdiFiles: count(join(node.dir, 'cdi'), true),
        mdevs: f.mdevs.length,
        vports: f.vports.length,
        vfs: f.vfs,
        violations: node.kernel.violations.length,
      };
      samples.push(s);
      log(`cycle ${cycle}: RSS ${(s.rssKiB / 1024).toFixed(1)} MiB (anon ${(s.rssAnonKiB / 1024).toFixed(1)}), fds ${s.fds} (sockets ${s.sockets}), heap ${(s.heapUsedKiB / 1024).toFixed(1)}/${(s.heapTotalKiB / 1024).toFixed(1)} MiB, external ${(s.externalKiB / 1024).toFixed(1)} MiB, allocated ${s.allocatedSlices}/${s.runningVms} VMs, ledger ${s.ledgerEntries}, state files ${s.stateFiles}, devinfo ${s.devinfoFiles}, cdi ${s.cdiFiles}, violations ${s.violations}`);
    };

    const stopOldest = async (): Promise<void> => {
      const v = running.shift();
      if (!v) return;
      await v.stop();
      node.kubelet.removePod(v.uid);
      node.syncPodResources();
    };

    /** Starts one VM on `pool` (1 slice); false when the pool has no free slice now. */
    const startOne = async (pool: string): Promise<boolean> => {
      const p = node.pools[pool];
      if (!p) return false;
      const taken = new Set(running.flatMap((v) => v.ids));
      const free = (node.kubelet.lastList(p.resourceName) ?? []).filter((d) => d.health === 'Healthy' && !taken.has(d.ID)).map((d) => d.ID);
      if (free.length === 0) return false;
      const ids = [free[seq % free.length] as string];
      const uid = `uid-${++seq}`;
      const name = `virt-launcher-soak${seq}`;
      const a0 = performance.now();
      let res;
      try {
        res = await node.kubelet.allocate(p.resourceName, ids, { uid, name, namespace: 'vms', container: 'compute' });
      } catch (err) {
        // A slice the agent still counts as held (its grace has not passed): the kubelet would fail
        // the pod; the harness counts it and takes another pool.
        problems.push(`Allocate of ${ids.join(',')} refused: ${String(err).slice(0, 200)}`);
        return false;
      }
      allocateMs.push(performance.now() - a0);
      try {
        const vm = await startVmFromAllocation(node.kernel, res, { name });
        running.push({ uid, name, ids, stop: () => vm.stop() });
        // PodResources answers the kubelet's view (the new pod), as the real one does.
        node.podres.setPods(node.kubelet.podResources());
      } catch (err) {
        problems.push(`VM ${name} could not open ${ids.join(',')}: ${String(err).slice(0, 200)}`);
        node.kubelet.removePod(uid);
        return false;
      }
      return true;
    };

    await sample(0);
    for (let c = 1; c <= o.cycles; c++) {
      if (!agent.alive) {
        problems.push(`the agent exited (${agent.exitCode}) at cycle ${c}\n${agent.tail()}`);
        break;
      }
      while (running.length >= concurrent) await stopOldest();
      let started = false;
      for (let k = 0; k < ORDER.length && !started; k++) {
        started = await startOne(ORDER[(c + k) % ORDER.length] as string);
        if (!started) skipped++;
      }
      if (!started) {
        // Everything free is still in its release grace: wait for it rather than spin.
        await sleep(100);
        c--;
        continue;
      }
      if (c % sampleEvery === 0 || c === o.cycles) await sample(c);
      if (problems.length > 20) break;
      if (o.restartEvery && c % o.restartEvery === 0 && c < o.cycles) await restart();
    }
    const seconds = (performance.now() - t0) / 1000;

    // The end: every VM stops; every slice must come back free (after the release grace).
    while (running.length > 0) await stopOldest();
    const planned: Record<string, number> = {};
    for (const p of Object.values(node.pools)) planned[p.name] = p.mode === 'Passthrough' ? 1 : (p.count ?? 1);
    let end: SoakResult['end'] | undefined;
    const deadline = Date.now() + 30_000;
    for (;;) {
      await node.kernel.idle();
      const st = await statusOf(agent);
      const healthy: Record<string, number> = {};
      for (const p of Object.values(node.pools)) healthy[p.name] = (node.kubelet.lastList(p.resourceName) ?? []).filter((d) => d.health === 'Healthy').length;
      const f = node.facts();
      end = {
        allocatedSlices: st?.slices?.filter((x) => x.allocation).length ?? Number.NaN,
        ledgerEntries: ledgerEntries(node.stateDir),
        healthy,
        planned,
        facts: { vfs: f.vfs, mdevs: f.mdevs.length, vports: f.vports.length },
      };
      const settled = end.allocatedSlices === 0 && end.ledgerEntries === 0 && Object.keys(planned).every((k) => healthy[k] === planned[k]);
      if (settled || Date.now() > deadline) break;
      await sleep(250);
    }
    await sample(o.cycles + 1);
    const violations = node.kernel.violations.map((v) => `${v.path}=${JSON.stringify(v.value)} reached ${v.device} held by ${v.holder}`);
    return { cycles: allocateMs.length, seconds, cyclesPerSecond: allocateMs.length / seconds, allocateMs, samples, skipped, problems, restarts, restartReadyMaxMs, violations, end: end as SoakResult['end'], pid };
  } finally {
    for (const v of running) await v.stop().catch(() => undefined);
    await node.close();
  }
}

/** What a soak run shows, after warm-up (the first `warmupFraction` of the cycles, default 10 %). */
export interface SoakFigures {
  cycles: number;
  seconds: number;
  cyclesPerSecond: number;
  allocateP50Ms: number;
  allocateP99Ms: number;
  allocateP99FirstTenthMs: number;
  allocateP99LastTenthMs: number;
  /** RSS at the first sample after warm-up, at the last sample of the run, and its least-squares slope. */
  rssStartMiB: number;
  rssEndMiB: number;
  rssMaxMiB: number;
  rssSlopeKiBPer1000Cycles: number;
  /** The same over the second half of the run only (past the heap's growth to its limits). */
  rssSlopeLastHalfKiBPer1000Cycles: number;
  rssAnonSlopeLastHalfKiBPer1000Cycles: number;
  heapSlopeKiBPer1000Cycles: number;
  fdsAfterWarmup: number;
  fdsMaxAfterWarmup: number;
  fdsEnd: number;
  /**
   * Lowest open fds (and sockets) over the last third of the cycles minus the lowest over the first
   * third after warm-up: transient ones (an HTTP keep-alive of the sampler, a PodResources call in
   * flight) come and go, a leak raises the floor.
   */
  fdsFloorGrowth: number;
  socketsFloorGrowth: number;
  socketsAfterWarmup: number;
  socketsMaxAfterWarmup: number;
  stateFilesAfterWarmup: number;
  stateFilesMax: number;
  checkpointBytesMax: number;
  ledgerEntriesMax: number;
  devinfoFilesMax: number;
  cdiFilesMax: number;
  violations: number;
  problems: number;
  restarts: number;
  restartReadyMaxMs: number;
  slicesAllocatedAtEnd: number;
  ledgerEntriesAtEnd: number;
  slicesNotHealthyAtEnd: number;
}

export function figuresOf(r: SoakResult, warmupFraction = 0.1): SoakFigures {
  const during = r.samples.filter((s) => s.cycle <= r.cycles);
  const warm = during.filter((s) => s.cycle >= r.cycles * warmupFraction);
  const half = during.filter((s) => s.cycle >= r.cycles / 2);
  const first = warm[0] ?? during[0];
  const last = during[during.length - 1];
  const endSample = r.samples[r.samples.length - 1];
  const tenths = p99FirstLastTenth(r.allocateMs);
  const max = (f: (s: SoakSample) => number): number => Math.max(...warm.map(f));
  const floor = (xs: SoakSample[], f: (s: SoakSample) => number): number => Math.min(...xs.map(f));
  const span = r.cycles - r.cycles * warmupFraction;
  const firstThird = warm.filter((s) => s.cycle <= r.cycles * warmupFraction + span / 3);
  const lastThird = warm.filter((s) => s.cycle >= r.cycles - span / 3);
  const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;
  return {
    cycles: r.cycles,
    seconds: round(r.seconds),
    cyclesPerSecond: round(r.cyclesPerSecond),
    allocateP50Ms: round(pct(r.allocateMs, 50), 2),
    allocateP99Ms: round(pct(r.allocateMs, 99), 2),
    allocateP99FirstTenthMs: tenths.first,
    allocateP99LastTenthMs: tenths.last,
    rssStartMiB: round((first?.rssKiB ?? Number.NaN) / 1024),
    rssEndMiB: round((last?.rssKiB ?? Number.NaN) / 1024),
    rssMaxMiB: round(max((s) => s.rssKiB) / 1024),
    rssSlopeKiBPer1000Cycles: round(slope(warm.map((s) => s.cycle), warm.map((s) => s.rssKiB)) * 1000),
    rssSlopeLastHalfKiBPer1000Cycles: round(slope(half.map((s) => s.cycle), half.map((s) => s.rssKiB)) * 1000),
    rssAnonSlopeLastHalfKiBPer1000Cycles: round(slope(half.map((s) => s.cycle), half.map((s) => s.rssAnonKiB)) * 1000),
    heapSlopeKiBPer1000Cycles: round(slope(warm.map((s) => s.cycle), warm.map((s) => s.heapUsedKiB)) * 1000),
    fdsAfterWarmup: first?.fds ?? Number.NaN,
    fdsMaxAfterWarmup: max((s) => s.fds),
    fdsEnd: endSample?.fds ?? Number.NaN,
    fdsFloorGrowth: floor(lastThird, (s) => s.fds) - floor(firstThird, (s) => s.fds),
    socketsFloorGrowth: floor(lastThird, (s) => s.sockets) - floor(firstThird, (s) => s.sockets),
    socketsAfterWarmup: first?.sockets ?? Number.NaN,
    socketsMaxAfterWarmup: max((s) => s.sockets),
    stateFilesAfterWarmup: first?.stateFiles ?? Number.NaN,
    stateFilesMax: max((s) => s.stateFiles),
    checkpointBytesMax: max((s) => s.checkpointBytes),
    ledgerEntriesMax: max((s) => s.ledgerEntries),
    devinfoFilesMax: max((s) => s.devinfoFiles),
    cdiFilesMax: max((s) => s.cdiFiles),
    violations: r.violations.length,
    problems: r.problems.length,
    restarts: r.restarts,
    restartReadyMaxMs: Math.round(r.restartReadyMaxMs),
    slicesAllocatedAtEnd: r.end.allocatedSlices,
    ledgerEntriesAtEnd: r.end.ledgerEntries,
    slicesNotHealthyAtEnd: Object.keys(r.end.planned).reduce((a, k) => a + Math.abs((r.end.planned[k] ?? 0) - (r.end.healthy[k] ?? 0)), 0),
  };
}
