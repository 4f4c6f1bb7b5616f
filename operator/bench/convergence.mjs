#!/usr/bin/env node
// Operator convergence benchmark (not a test): N simulated nodes × P pools against a private real
// kube-apiserver. Measures
//   cold:  operator start → every node's VirtualIONode carries all P plans
//   edit:  one pool spec edit → every node's plan of that pool updated
//   rss:   the operator process's peak RSS (VmHWM from /proc/<pid>/status)
// With --local-plan the simulated agents plan locally (agent --local-plan): each derives its plan from
// the pools with the operator's planner (the agent's own code, dist/device-plugin/src/agent/local-plan.js)
// and, as a real agent does after carrying a plan out, applies its VirtualIONodeAck (per pool: digest of
// the entry carried out, state) at once and its status (inventory, localPlan, pool states) after
// STATUS_AFTER_ACK_MS (5 s; 500 ms, the status writer's debounce, with --no-ack), both with server-side
// apply; the operator writes no spec.pools.
// --no-ack: agents of the previous version (status only). Then
//   cold:  operator start → every pool's status Ready on all N nodes (the agents reported before it started)
//   edit:  one pool spec edit → every simulated agent derived the new plan (reach), → every agent's ack
//          written (acked), → every agent's status written (reported), → the pool's status Ready at the
//          new generation (status; measured from the edit, concurrently with the rest)
//   planner CPU per node: what each agent pays to derive its plan (measured in the bench process).
// Simulated: the N agents share ONE pool watch in the bench process (the API server's fan-out of one
// small event to N watchers is not measured), do no carving, and write their statuses 32 at a time.
// Usage: node operator/bench/convergence.mjs [--nodes 1000] [--pools 10] [--no-build] [--max-wait <s>] [--local-plan [--no-ack]]
//          [--operator-node-options "--max-old-space-size=192"]   (V8 flags for the operator process only)
//          [--operator-malloc-arena-max 2]   (MALLOC_ARENA_MAX of the operator process, as the chart sets it)
// Needs Node 24 (type stripping: it imports test/cluster/control-plane.ts and test/support/), the
// resolve hooks (node --import ./test/sysfs/ts-hooks.mjs operator/bench/convergence.mjs) and the built binaries.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { freePort, startControlPlane } from '../../test/cluster/control-plane.ts';
import { benchInventory } from './inventory.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { values: opt } = parseArgs({ options: {
  nodes: { type: 'string', default: '1000' }, pools: { type: 'string', default: '10' },
  'no-build': { type: 'boolean', default: false }, concurrency: { type: 'string', default: '32' },
  'operator-node-options': { type: 'string', default: '' },
  'operator-malloc-arena-max': { type: 'string', default: '' },
  'local-plan': { type: 'boolean', default: false },
  'no-ack': { type: 'boolean', default: false },
  // Give up on a phase after this many seconds (0: never) and report how far it got: at 10,000 nodes
  // on a shared 2-core machine a phase can take longer than anyone waits, or the operator can die.
  'max-wait': { type: 'string', default: '0' },
} });
const maxWaitMs = Number(opt['max-wait']) * 1000;
const N = Number(opt.nodes);
const P = Number(opt.pools);
const C = Number(opt.concurrency);
const say = (m) => process.stderr.write(`[bench] ${m}\n`);

if (!opt['no-build']) {
  say('building (tsc -p tsconfig.build.json)');
  execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
}
const { ClientNodeKube } = await import(join(ROOT, 'dist/operator/src/kube/client-node.js'));
const { Nodes, VirtualIODevices, VirtualIONodes, VirtualIONodeAcks, AGENT_FIELD_MANAGER } = await import(join(ROOT, 'dist/operator/src/kube/resources.js'));
const { Informer } = await import(join(ROOT, 'dist/operator/src/runtime/informer.js'));
const { systemClock } = await import(join(ROOT, 'dist/operator/src/runtime/clock.js'));
const LOCAL = opt['local-plan'];
const ACK = LOCAL && !opt['no-ack'];
const { ackPools } = await import(join(ROOT, 'dist/operator/src/controllers/plan/ack.js'));
const { STATUS_AFTER_ACK_MS } = await import(join(ROOT, 'dist/device-plugin/src/agent/ack.js'));
const { preparePools } = await import(join(ROOT, 'dist/operator/src/controllers/plan/plan.js'));
const { deriveLocalPlan, ownView } = await import(join(ROOT, 'dist/device-plugin/src/agent/local-plan.js'));
// The test helpers are TypeScript importing './x.js': run with --import test/sysfs/ts-hooks.mjs (bench.mjs does).
const { spawnOperator, kubectlAt, installCrdFiles } = await import('../../test/support/operator-integration.ts');

async function pool(items, fn) {
  let i = 0;
  await Promise.all(Array.from({ length: C }, async () => {
    while (i < items.length) {
      const it = items[i++];
      for (let attempt = 0; ; attempt++) {
        try {
          await fn(it);
          break;
        } catch (err) {
          // As an agent does: failures are retried with backoff, for up to ~40 s.
          if (attempt >= 10) throw err;
          await new Promise((r) => setTimeout(r, Math.min(5000, 200 * 2 ** attempt)));
        }
      }
    }
  }));
}

/** P NIC PFs with 4 VFs each, plus a GPU: P*5+1 inventory entries per node. */
const inventory = (n) => benchInventory(P, n);

const cp = await startControlPlane({ verbose: true, apiserverArgs: ['--max-requests-inflight=800', '--max-mutating-requests-inflight=400'] });
let op;
try {
  const kc = cp.kubeconfig;
  await installCrdFiles(cp.binDir, kc, ['virtualiodevices', 'virtualionodes', 'virtualionodeacks'].map((k) => join(ROOT, `crds/virtualio.dev_${k}.yaml`)),
    ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev', 'virtualionodeacks.virtualio.dev']);
  await kubectlAt(cp.binDir, kc, ['create', 'namespace', 'virtualio-system']);
  const kube = ClientNodeKube.fromOptions({ kubeconfig: kc });
  const names = Array.from({ length: N }, (_, i) => `node-${String(i).padStart(5, '0')}`);
  let t = Date.now();
  const uids = new Map();
  await pool(names, async (name) => {
    const n = await kube.create(Nodes, { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'virtualio.dev/bench': 'yes' } } });
    uids.set(name, n.metadata.uid);
  });
  say(`created ${N} Nodes in ${Date.now() - t} ms`);
  t = Date.now();
  const createPools = async () => {
    for (let p = 0; p < P; p++) {
      await kube.create(VirtualIODevices, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', metadata: { name: `pool-${p}` },
        spec: { class: 'NIC', nodeSelector: { matchLabels: { 'virtualio.dev/bench': 'yes' } }, deviceSelector: { interfaceNames: [`ens${p}f0`] },
          carving: { mode: 'SRIOV', count: 4 }, kubevirt: { consumption: 'HostDevice' } } });
    }
  };
  // Local planning: the simulated agents. One watch of the pools for all of them (simulated).
  const agents = new Map(); // node → { status, view }
  let poolWatch;
  const plannerCpu = { runs: 0, micros: 0 };
  /** Every simulated agent derives its plan from the pools it sees; returns the nodes whose plan changed. */
  const deriveAll = () => {
    const prepared = preparePools(poolWatch.list());
    const changed = [];
    const c0 = process.cpuUsage();
    for (const name of names) {
      const a = agents.get(name);
      a.view = ownView(name, a.status, a.view);
      const plan = deriveLocalPlan({ metadata: { name, uid: uids.get(name), labels: { 'virtualio.dev/bench': 'yes' } } }, a.view, prepared);
      if (JSON.stringify(plan.pools) !== JSON.stringify(a.status.localPlan.pools)) changed.push([name, plan.pools]);
    }
    const c = process.cpuUsage(c0);
    plannerCpu.runs += names.length;
    plannerCpu.micros += c.user + c.system;
    return changed;
  };
  /** What a real agent writes once it carried the plan out: the plan it serves and each pool Ready (no carving here). */
  const serve = (name, pools) => {
    const a = agents.get(name);
    a.status = { ...a.status, localPlan: { pools }, pools: pools.map((p) => ({ name: p.name, resourceName: p.resourceName, state: 'Ready', capacity: p.count, allocatable: p.count, allocated: 0 })) };
    return a;
  };
  const report = (name) => kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name }, status: agents.get(name).status },
    { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
  /** The agent's ack (device-plugin/src/agent/ack.ts): what it carried out, owned by its Node. */
  const ack = (name) => kube.apply(VirtualIONodeAcks, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONodeAck',
    metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: uids.get(name) }] },
    status: { pools: ackPools(agents.get(name).status.localPlan.pools, agents.get(name).status.pools) } }, { fieldManager: AGENT_FIELD_MANAGER, force: true });
  if (LOCAL) {
    await createPools();
    poolWatch = new Informer({ kube, resource: VirtualIODevices, clock: systemClock, log: pino({ level: 'silent' }) });
    void poolWatch.run(new AbortController().signal);
    await poolWatch.synced();
    for (const name of names) agents.set(name, { status: { inventory: { devices: inventory(Number(name.slice(5))) }, localPlan: { pools: [] } } });
    // Their first plans, written with their first status below (one write per node to set up).
    for (const [name, pools] of deriveAll()) serve(name, pools);
    say(`${N} simulated agents derived their plans (${(plannerCpu.micros / plannerCpu.runs / 1000).toFixed(3)} ms CPU per node)`);
  }
  await pool(names, async (name) => {
    if (!(await kube.get(VirtualIONodes, name))) {
      await kube.create(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode',
        metadata: { name, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: uids.get(name) }] }, spec: {} });
    }
    await kube.apply(VirtualIONodes, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name },
      status: LOCAL ? agents.get(name).status : { inventory: { devices: inventory(Number(name.slice(5))) } } }, { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true });
    if (ACK) await ack(name);
  });
  say(`created ${N} VirtualIONodes with inventory status in ${Date.now() - t} ms`);
  if (!LOCAL) await createPools();

  // Watch the plans from the bench side with the operator's own informer.
  const watcher = new Informer({ kube, resource: VirtualIONodes, clock: systemClock, log: pino({ level: 'silent' }) });
  const ac = new AbortController();
  const watching = watcher.run(ac.signal);
  await watcher.synced();
  // Poll the local cache (cheap) rather than re-checking on every event.
  let opExit;
  const until = (pred) => new Promise((resolve) => {
    const end = maxWaitMs ? Date.now() + maxWaitMs : Infinity;
    const tick = () => {
      if (pred()) resolve(Date.now());
      else if (opExit !== undefined || Date.now() > end) resolve(undefined);
      else setTimeout(tick, 50);
    };
    tick();
  });
  const allPlanned = (fn) => () => watcher.size >= N && watcher.list().every((v) => fn(v.spec?.pools ?? []));

  const port = await freePort();
  const logDir = mkdtempSync(join(tmpdir(), 'vio-bench-'));
  const t0 = Date.now();
  op = spawnOperator({ repoRoot: ROOT, nodeBin: process.execPath, nodeArgs: opt['operator-node-options'].split(/\s+/).filter(Boolean), logFile: join(logDir, 'operator.log'),
    env: opt['operator-malloc-arena-max'] ? { MALLOC_ARENA_MAX: opt['operator-malloc-arena-max'] } : {},
    args: ['--kubeconfig', kc, '--identity', 'bench', '--namespace', 'virtualio-system', '--metrics-address', `127.0.0.1:${port}`, '--log-level', 'warn'] });
  const pid = op.child.pid;
  void op.exited.then((c) => (opExit = c));
  const rssSamples = [];
  let hwmSeenKiB = 0;
  const sampler = setInterval(() => {
    try {
      const s = readFileSync(`/proc/${pid}/status`, 'utf8');
      rssSamples.push(Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0));
      hwmSeenKiB = Math.max(hwmSeenKiB, Number(/VmHWM:\s+(\d+)/.exec(s)?.[1] ?? 0));
    } catch { /* exited */ }
  }, 250);
  const countPlanned = (fn) => watcher.list().filter((v) => fn(v.spec?.pools ?? [])).length;
  /** A phase that did not finish: what it reached, then stop. */
  const gaveUp = (phase, fn, since) => {
    clearInterval(sampler);
    const result = { nodes: N, pools: P, phase, notFinishedAfterMs: Date.now() - since, plannedNodes: countPlanned(fn),
      operatorExit: opExit ?? null, peakRssMiB: Math.round(hwmSeenKiB / 1024), pass: false };
    say(`${phase}: gave up after ${result.notFinishedAfterMs} ms with ${result.plannedNodes} of ${N} nodes planned (operator ${opExit === undefined ? 'running' : `exited ${opExit}`})`);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  };
  // CPU seconds (user + system) of the operator, kube-apiserver and etcd: where each phase's time goes
  // on a shared machine.
  const [etcdPid, apiPid] = readFileSync(join(cp.dir, 'pids'), 'utf8').split('\n').map(Number);
  const cpuOf = (p) => {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(f[11]) + Number(f[12])) / 100;
    } catch {
      return NaN;
    }
  };
  // With --local-plan, `bench` is this process: the simulated agents (planning, status writes) and the bench's watches.
  const cpuNow = () => ({ operator: cpuOf(pid), apiserver: cpuOf(apiPid), etcd: cpuOf(etcdPid), ...(LOCAL ? { bench: cpuOf(process.pid) } : {}) });
  /** Local planning: pool `name`'s status says Ready at `generation` on all N nodes (every agent reported the plan it was computed against). */
  const poolReady = (p, generation) => p?.status?.observedGeneration === generation && p.status.nodes === N &&
    p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  const cpuSince = (a) => Object.fromEntries(Object.entries(cpuNow()).map(([k, v]) => [k, Number((v - a[k]).toFixed(1))]));
  const cpu0 = cpuNow();
  const tCold = await until(LOCAL
    ? () => poolWatch.list().length === P && poolWatch.list().every((p) => poolReady(p, 1))
    : allPlanned((pools) => pools.length === P));
  if (tCold === undefined) {
    gaveUp('cold start', (pools) => pools.length === P, t0);
    process.exitCode = 1;
    throw new Error('cold start did not finish');
  }
  const cpuCold = cpuSince(cpu0);
  const hwmColdKiB = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  const cold = tCold - t0;
  say(LOCAL ? `cold start: every pool's status Ready on all ${N} nodes after ${cold} ms` : `cold start: all ${N} plans written after ${cold} ms`);
  let local;
  if (LOCAL) {
    const written = watcher.list().filter((v) => v.spec?.pools !== undefined).length;
    local = { specPoolsWrittenAtCold: written };
  }

  // Let status settle, then edit one pool.
  await new Promise((r) => setTimeout(r, 3000));
  const target = await kube.get(VirtualIODevices, 'pool-3');
  const cpu1 = cpuNow();
  const t1 = Date.now();
  // Local planning: the simulated agents see the edit through their (shared) watch, derive, carry out (nothing here) and report.
  const agentsDone = LOCAL ? new Promise((resolve, reject) => {
    const fired = { done: false };
    poolWatch.onChange((obj) => {
      if (fired.done || obj?.metadata.name !== 'pool-3' || obj.metadata.generation !== 2) return;
      fired.done = true;
      const cpuBefore = plannerCpu.micros;
      const changed = deriveAll();
      const tReach = Date.now();
      const editPlannerMsPerNode = (plannerCpu.micros - cpuBefore) / N / 1000;
      for (const [name, pools] of changed) serve(name, pools);
      // Each agent acks at once and writes its status after the status writer's debounce (500 ms), or,
      // when it acked, STATUS_AFTER_ACK_MS later (device-plugin/src/main.ts): both run side by side.
      const acked = ACK ? pool(changed, ([name]) => ack(name)).then(() => Date.now()) : Promise.resolve(undefined);
      const reported = new Promise((r) => setTimeout(r, ACK ? STATUS_AFTER_ACK_MS : 500)).then(() => pool(changed, ([name]) => report(name))).then(() => Date.now());
      void Promise.all([acked, reported]).then(([tAcked, tReported]) => resolve({ tReach, tAcked, tReported, changed: changed.length, editPlannerMsPerNode }), reject);
    });
  }) : undefined;
  // Awaited once the edit is seen done; a failure before that (the phase gave up and the control
  // plane stopped under the simulated agents' writes) must not end this process before its cleanup.
  agentsDone?.catch(() => undefined);
  await kube.replace(VirtualIODevices, { ...target, spec: { ...target.spec, carving: { ...target.spec.carving, count: 8 } } });
  // The pool's status, from the edit on (with acks it can be Ready before every status is written).
  const statusDone = new Promise((resolve) => {
    const poll = async () => {
      const p = await kube.get(VirtualIODevices, 'pool-3');
      if (LOCAL ? poolReady(p, 2) : p?.status?.observedGeneration === 2 && p.status.nodes === N) resolve(Date.now());
      else setTimeout(poll, 100);
    };
    void poll();
  });
  const tEdit = await until(LOCAL
    ? () => watcher.size >= N && watcher.list().every((v) => v.status?.localPlan?.pools?.find((p) => p.name === 'pool-3')?.count === 8)
    : allPlanned((pools) => pools.find((p) => p.name === 'pool-3')?.count === 8));
  if (tEdit === undefined) {
    gaveUp('edit', (pools) => pools.find((p) => p.name === 'pool-3')?.count === 8, t1);
    process.exitCode = 1;
    throw new Error('edit did not finish');
  }
  const edit = tEdit - t1;
  say(LOCAL ? `edit: all ${N} agents' reported plans of pool-3 updated after ${edit} ms` : `edit: all ${N} plans of pool-3 updated after ${edit} ms`);
  if (LOCAL) {
    const a = await agentsDone;
    Object.assign(local, { acks: ACK, editReachMs: a.tReach - t1, ...(ACK ? { editAgentsAckedMs: a.tAcked - t1 } : {}), editAgentsReportedMs: a.tReported - t1, agentsReplanned: a.changed, editPlannerMsPerNode: Number(a.editPlannerMsPerNode.toFixed(3)) });
  }
  const tStatus = await statusDone;
  const cpuEdit = cpuSince(cpu1);
  clearInterval(sampler);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwmKiB = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const sums = Object.fromEntries([...metrics.matchAll(/^virtualio_operator_reconcile_duration_seconds_(sum|count)\{controller="(\w+)",outcome="success"\} ([\d.e+-]+)/gm)]
    .map((m) => [`${m[2]}_${m[1]}`, Number(Number(m[3]).toFixed(3))]));
  const heapMiB = Math.round(Number(/^virtualio_operator_nodejs_heap_size_used_bytes (\d+)/m.exec(metrics)?.[1] ?? 0) / 1048576);
  const gauge = (name) => Math.round(Number(new RegExp(`^virtualio_operator_${name} (\\d+)`, 'm').exec(metrics)?.[1] ?? NaN) / 1048576);
  const errors = [...metrics.matchAll(/^virtualio_operator_reconcile_errors_total\{([^}]*)\} (\d+)/gm)].map((m) => `${m[1]}=${m[2]}`);
  const result = {
    nodes: N, pools: P, localPlan: LOCAL, coldStartMs: cold, editMs: edit, editStatusMs: tStatus - t1,
    ...(LOCAL ? {
      ...local, specPoolsWrittenAtEnd: watcher.list().filter((v) => v.spec?.pools !== undefined).length,
      plannerMsPerNode: Number((plannerCpu.micros / plannerCpu.runs / 1000).toFixed(3)),
      meaning: 'cold: operator start → every pool Ready on all nodes; editMs: edit → every agent\'s status carries the new plan; editStatusMs: edit → pool-3 Ready at generation 2 on all nodes (with acks: from the acks); editAgentsAckedMs: edit → every agent\'s ack written; editReachMs: edit → every simulated agent derived it (one shared watch); plannerMsPerNode: CPU per node per derivation',
    } : {}),
    peakRssMiB: Math.round(hwmKiB / 1024), peakRssAtColdMiB: Math.round(hwmColdKiB / 1024), lastRssMiB: Math.round((rssSamples.at(-1) ?? 0) / 1024),
    heapUsedMiB: heapMiB, heapTotalMiB: gauge('nodejs_heap_size_total_bytes'), externalMiB: gauge('nodejs_external_memory_bytes'), cpuSeconds: { cold: cpuCold, edit: cpuEdit }, reconcile: sums, reconcileErrors: errors, targets: { coldStartMs: 10_000, editMs: 5_000, editStatusMs: 5_000, peakRssMiB: 150 },
  };
  // Issue 22's targets (they apply at 1,000 nodes; larger runs are reported against the same figures).
  result.pass = cold <= 10_000 && edit <= 5_000 && result.editStatusMs <= 5_000 && result.peakRssMiB <= 150;
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  say(`operator log: ${join(logDir, 'operator.log')}`);
  ac.abort();
  await watching;
} finally {
  await op?.kill('SIGTERM');
  await cp.stop();
}
