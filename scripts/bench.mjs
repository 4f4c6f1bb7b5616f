#!/usr/bin/env node
// `npm run bench` / `make bench`: runs every benchmark of the project one after another (each
// streams its own progress), then prints every figure next to its target. Benchmarks are figures,
// never pass/fail: the exit code is 0 whenever the benchmarks ran, whatever the figures.
//
//   agent     device-plugin/bench/bench-agent.ts  Allocate vs the empty gRPC call, re-registration
//   start     test/bench/agent-start.ts           agent spawn → first line, registered, ready; idle RSS;
//             without a compile cache and with the image's warm one (issue 22)
//   node      test/bench/agent-node.ts            start → registered, carve, RSS, health propagation
//   operator  operator/bench/convergence.mjs      1,000 nodes × 10 pools: cold, edit, RSS
//   faults    test/bench/fault-sequences.ts       generated fault sequences, long run (issue 17)
//   soak      test/bench/churn-soak.ts            churn soak: VM start/stop cycles on every pool mode,
//             sampled from outside the agent (issue 21): VIO_SOAK_CYCLES (default 10,000; --quick 500)
//   ksoak     test/bench/kubelet-churn-soak.ts    churn soak on the REAL kubelet: VM pods of every mode on both
//             front ends created and deleted, agent restarts and operator fail-overs mixed in (issue 21);
//             VIO_KSOAK_CYCLES (default 10,000; --quick 300); needs root
//   dra       test/bench/dra-scheduler.ts         real kube-scheduler throughput at 100 and 500 nodes:
//             device plugin vs pre-carved vs on-demand (partitionable) DRA slices (issue 19)
//   claim     test/bench/dra-claim-running.ts     pod (and its claim) created → Running on the real
//             scheduler, controller manager and kubelet: on-demand vs pre-carved DRA vs device plugin
//             (issue 19); VIO_CLAIM_PODS pods per mode (default 5, at most 8; --quick 2); needs root
//   fuzz      test/unit/fuzz/*.test.ts            the hostile-input fuzzers, long run (issue 21):
//             VIO_FUZZ_RUNS inputs per target (default 10,000; --quick 1,000), a fresh seed unless
//             VIO_FUZZ_SEED is set (a failure prints its seed and counterexample)
//
// Flags: --only agent,node,operator   --quick (fewer iterations: a smoke run, not the published figures)
//        --operator-nodes <n>         (simulated nodes of the operator benchmark; default 1000, e.g. 10000)
//        --operator-max-wait <s>      (give up on an operator phase after <s> seconds and report how far it got)
//        --operator-local-plan        (the simulated agents plan locally: agent --local-plan; no spec.pools writes)
//        --out <file.json>            (default: $VIO_CACHE/bench/results-<time>.json)
// Needs Node 24 (scripts/env.sh), a build (dist/; built here when missing) and, for the operator
// benchmark, the Kubernetes binaries (test/cluster/build-bins.sh, built on first use).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const flag = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const only = new Set((flag('only', 'agent,start,node,operator,dra,claim,faults,soak,ksoak,fuzz') ?? '').split(','));
const quick = argv.includes('--quick');
const cache = process.env.VIO_CACHE ?? join(process.env.HOME ?? '/tmp', '.cache/virtualio');
const outFile = flag('out', join(cache, 'bench', `results-${new Date().toISOString().replace(/[:.]/g, '-')}.json`));
const say = (m) => process.stderr.write(`[bench] ${m}\n`);
const hooks = ['--import', join(ROOT, 'test/sysfs/ts-hooks.mjs')];
// Measure what we ship: the V8 flags the Helm chart sets for each process (values.yaml nodeOptions).
const chartValues = YAML.parse(readFileSync(join(ROOT, 'charts/virtualio/values.yaml'), 'utf8'));
const agentNodeOptions = chartValues?.agent?.nodeOptions ?? '';
const operatorNodeOptions = chartValues?.operator?.nodeOptions ?? '';
const operatorArenas = chartValues?.operator?.mallocArenaMax ? String(chartValues.operator.mallocArenaMax) : '';

if (Number(process.versions.node.split('.')[0]) < 24) {
  console.error('scripts/bench.mjs needs Node 24: run `source scripts/env.sh` first (make bench does)');
  process.exit(2);
}

/** Runs one benchmark, streaming its output; resolves with its stdout and exit code. */
function runBench(name, args, env = process.env) {
  return new Promise((resolve) => {
    say(`── ${name}: node ${args.map((a) => a.replace(`${ROOT}/`, '')).join(' ')}`);
    const t0 = Date.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (c) => {
      stdout += c;
      process.stdout.write(c);
    });
    child.on('exit', (code, signal) => {
      say(`── ${name}: finished in ${((Date.now() - t0) / 1000).toFixed(0)} s (exit ${code ?? signal})`);
      resolve({ stdout, code: code ?? 1 });
    });
  });
}

/** The last JSON object a benchmark printed: a `BENCH_RESULT {...}` line, a one-line object, or a pretty-printed one. */
function lastJson(stdout) {
  const lines = stdout.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i].trim();
    if (l.startsWith('BENCH_RESULT ')) return JSON.parse(l.slice('BENCH_RESULT '.length));
    if (l.startsWith('{') && l.endsWith('}')) {
      try {
        return JSON.parse(l);
      } catch { /* not one line */ }
    }
    if (l === '}' || l.endsWith('}')) {
      for (let j = i; j >= 0; j--) {
        if (lines[j].startsWith('{')) {
          try {
            return JSON.parse(lines.slice(j, i + 1).join('\n'));
          } catch { /* keep looking */ }
        }
      }
    }
  }
  return undefined;
}

const round = (x, d = 2) => (typeof x === 'number' && Number.isFinite(x) ? Number(x.toFixed(d)) : Number.NaN);
/** Rows: { bench, figure, value, unit, target (text), met (true/false/undefined) } */
const rows = [];
const row = (bench, figure, value, unit, max) => rows.push({ bench, figure, value: round(value), unit, target: max === undefined ? '' : `≤ ${max} ${unit}`, met: max === undefined || !Number.isFinite(value) ? undefined : value <= max });
const results = {};

function ensureBuilt() {
  const entries = ['dist/device-plugin/src/main.js', 'dist/operator/src/main.js', 'dist/image/agent/main.js', 'dist/image/operator/main.js'];
  if (entries.every((e) => existsSync(join(ROOT, e)))) return;
  say('building dist/ (tsc -p tsconfig.build.json, then the bundles: scripts/bundle.mjs)');
  spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json')], { cwd: ROOT, stdio: 'inherit' });
  spawnSync(process.execPath, [join(ROOT, 'scripts/bundle.mjs')], { cwd: ROOT, stdio: 'inherit' });
}

ensureBuilt();
const started = new Date();

if (only.has('agent')) {
  const file = join(ROOT, 'device-plugin/bench/bench-agent.ts');
  if (!existsSync(file)) {
    say('agent benchmark (device-plugin/bench/bench-agent.ts) is missing');
    results.agent = { missing: true };
  } else {
    const r = await runBench('agent: Allocate and re-registration', [...hooks, file, '--json', ...(quick ? ['--iterations', '300', '--restarts', '10'] : [])]);
    const f = lastJson(r.stdout);
    results.agent = f ?? { error: `no figures (exit ${r.code})` };
    if (f) {
      row('agent', 'empty gRPC call (GetDevicePluginOptions) p99', f.emptyCallMs?.p99, 'ms');
      row('agent', `Allocate 1 slice p99 (pool of ${f.pool?.slices ?? '?'} slices)`, f.allocate1Ms?.p99, 'ms', 2);
      row('agent', 'Allocate 8 slices p99', f.allocate8Ms?.p99, 'ms', 2);
      row('agent', 'Allocate 1 slice p50 ÷ empty call p50', f.ratioAllocate1ToEmptyP50, '×', 3);
      row('agent', 'Allocate 1 slice p99 ÷ empty call p99', (f.allocate1Ms?.p99 ?? NaN) / (f.emptyCallMs?.p99 ?? NaN), '×', 3);
      row('agent', 'Allocate 8 slices p50 ÷ empty call p50', f.ratioAllocate8ToEmptyP50, '×', 3);
      row('agent', `kubelet restart → re-registration p99 (${f.restarts ?? '?'} restarts)`, f.reRegistrationMs?.p99, 'ms', 1000);
      row('agent', 'kubelet restart → first ListAndWatch list p99', f.reRegistrationToFirstListMs?.p99, 'ms');
    }
  }
}

if (only.has('start')) {
  const r = await runBench('agent start-up and idle memory', [...hooks, join(ROOT, 'test/bench/agent-start.ts'), '--json', ...(agentNodeOptions ? ['--agent-node-options', agentNodeOptions] : []), ...(quick ? ['--starts', '3'] : [])]);
  const f = lastJson(r.stdout);
  results.start = f ?? { error: `no figures (exit ${r.code})` };
  for (const x of f?.figures ?? []) row('start', x.label, x.value, x.unit, x.max);
}

if (only.has('node')) {
  const r = await runBench('agent, node side: start, carve, RSS, health', [...hooks, join(ROOT, 'test/bench/agent-node.ts'), ...(agentNodeOptions ? ['--agent-node-options', agentNodeOptions] : []), ...(quick ? ['--starts', '2', '--changes', '30', '--load-seconds', '5'] : [])]);
  const f = lastJson(r.stdout);
  results.node = f ?? { error: `no figures (exit ${r.code})` };
  for (const x of f?.figures ?? []) row('node', x.label, x.value, x.unit, x.max);
}

if (only.has('operator')) {
  const file = join(ROOT, 'operator/bench/convergence.mjs');
  if (!existsSync(file)) {
    say('operator benchmark (operator/bench/convergence.mjs) is missing');
    results.operator = { missing: true };
  } else {
    const scale = quick ? ['--nodes', '100', '--pools', '10'] : ['--nodes', flag('operator-nodes', '1000'), '--pools', '10', '--max-wait', flag('operator-max-wait', '0')];
    const local = argv.includes('--operator-local-plan') ? ['--local-plan'] : [];
    const r = await runBench('operator: convergence', [...hooks, file, '--no-build', ...(operatorNodeOptions ? [`--operator-node-options=${operatorNodeOptions}`] : []), ...(operatorArenas ? ['--operator-malloc-arena-max', operatorArenas] : []), ...scale, ...local]);
    const f = lastJson(r.stdout);
    results.operator = f ?? { error: `no figures (exit ${r.code})` };
    if (f) {
      // Issue 22: cold ≤ 10 s, edit → plans and status ≤ 5 s, VmHWM ≤ 150 MiB (at 1,000 nodes).
      if (f.phase) row('operator', `${f.phase} at ${f.nodes} nodes not finished after ${Math.round(f.notFinishedAfterMs / 1000)} s: nodes planned`, f.plannedNodes, 'nodes');
      row('operator', `cold start → ${f.nodes} nodes × ${f.pools} pools planned`, (f.coldStartMs ?? NaN) / 1000, 's', 10);
      row('operator', 'one pool edited → every node\'s plan updated', (f.editMs ?? NaN) / 1000, 's', 5);
      row('operator', 'one pool edited → its status rolled up', (f.editStatusMs ?? NaN) / 1000, 's', 5);
      row('operator', 'operator peak RSS (VmHWM)', f.peakRssMiB, 'MiB', 150);
      if (f.localPlan) {
        row('operator', 'local planning: one pool edited → every (simulated) agent derived it', (f.editReachMs ?? NaN) / 1000, 's', 5);
        if (f.acks) row('operator', 'local planning: one pool edited → every agent\'s ack (VirtualIONodeAck) written', (f.editAgentsAckedMs ?? NaN) / 1000, 's');
        row('operator', 'local planning: one pool edited → every agent\'s status written', (f.editAgentsReportedMs ?? NaN) / 1000, 's');
        row('operator', 'local planning: planner CPU per node (each agent)', f.plannerMsPerNode, 'ms');
        row('operator', 'local planning: spec.pools written by the operator', f.specPoolsWrittenAtEnd, 'nodes', 0);
      }
    }
  }
}

if (only.has('dra')) {
  const r = await runBench('DRA: scheduler throughput', [...hooks, join(ROOT, 'test/bench/dra-scheduler.ts'), '--json', ...(quick ? ['--nodes', '100', '--pods', '30', '--dp-pods', '200'] : [])]);
  const f = lastJson(r.stdout);
  results.dra = f ?? { error: `no figures (exit ${r.code})` };
  const what = { dp: 'device plugin', precarved: 'DRA pre-carved', dra: 'DRA on demand (counters)', match: 'DRA on demand, 2 × 2Q matchAttribute' };
  for (const x of f?.figures ?? []) {
    row('dra', `${x.nodes} nodes, ${what[x.mode] ?? x.mode}: ${x.bound}/${x.pods} pods bound`, x.podsPerSecond, 'pods/s');
    row('dra', `${x.nodes} nodes, ${what[x.mode] ?? x.mode}: create → bound p90`, x.createToBindMs?.p90, 'ms');
  }
}

if (only.has('claim')) {
  const n = process.env.VIO_CLAIM_PODS ?? (quick ? '2' : '5');
  const r = await runBench(`DRA: claim → pod Running (${n} pods per mode)`, [...hooks, join(ROOT, 'test/bench/dra-claim-running.ts'), '--json', '--pods', n]);
  const f = lastJson(r.stdout);
  results.claim = f ?? { error: `no figures (exit ${r.code})` };
  const what = { ondemand: 'DRA on demand (carved after allocation)', precarved: 'DRA pre-carved', dp: 'device plugin' };
  for (const x of f?.figures ?? []) {
    row('claim', `${what[x.mode] ?? x.mode}: create → Running p50 (${x.pods} pods)`, x.ms?.createToRunning?.p50, 'ms');
    row('claim', `${what[x.mode] ?? x.mode}: create → Running max`, x.ms?.createToRunning?.max, 'ms');
  }
}

if (only.has('faults')) {
  const r = await runBench('generated fault sequences (long run)', [...hooks, join(ROOT, 'test/bench/fault-sequences.ts'), ...(quick ? ['--runs', '4', '--steps', '12', '--seconds', '300'] : [])]);
  const f = lastJson(r.stdout);
  results.faults = f ?? { error: `no figures (exit ${r.code})` };
  if (f) {
    row('faults', 'sequences run', f.sequences, '');
    row('faults', 'steps run', f.steps, '');
    row('faults', 'faults injected', f.faults, '');
    row('faults', 'violations (kernel-witnessed, or no convergence)', f.violations, '', 0);
    row('faults', 'slowest convergence once the faults stop', (f.slowestConvergenceMs ?? NaN) / 1000, 's');
  }
}

if (only.has('soak')) {
  const cycles = process.env.VIO_SOAK_CYCLES ?? (quick ? '500' : '10000');
  const r = await runBench(`churn soak (${cycles} VM start/stop cycles)`, [...hooks, join(ROOT, 'test/bench/churn-soak.ts'), '--cycles', cycles]);
  const f = lastJson(r.stdout);
  results.soak = f ?? { error: `no figures (exit ${r.code})` };
  if (f) {
    row('soak', 'VM start/stop cycles', f.cycles, '');
    row('soak', 'cycles per second', f.cyclesPerSecond, '/s');
    row('soak', 'Allocate p50', f.allocateP50Ms, 'ms');
    row('soak', 'Allocate p99', f.allocateP99Ms, 'ms');
    row('soak', 'Allocate p99, first tenth of the cycles', f.allocateP99FirstTenthMs, 'ms');
    row('soak', 'Allocate p99, last tenth of the cycles', f.allocateP99LastTenthMs, 'ms');
    row('soak', 'agent RSS after warm-up', f.rssStartMiB, 'MiB');
    row('soak', 'agent RSS at the end', f.rssEndMiB, 'MiB');
    row('soak', 'agent RSS slope after warm-up', f.rssSlopeKiBPer1000Cycles, 'KiB/1000 cycles');
    row('soak', 'agent RSS slope, second half', f.rssSlopeLastHalfKiBPer1000Cycles, 'KiB/1000 cycles');
    row('soak', 'agent RssAnon slope, second half', f.rssAnonSlopeLastHalfKiBPer1000Cycles, 'KiB/1000 cycles');
    row('soak', 'open fds: floor growth, last third vs first third', f.fdsFloorGrowth, 'fds', 1);
    row('soak', 'sockets: floor growth, last third vs first third', f.socketsFloorGrowth, 'sockets', 1);
    row('soak', 'open fds: peak above the first sample after warm-up', f.fdsMaxAfterWarmup - f.fdsAfterWarmup, 'fds', 6);
    row('soak', 'state files growth after warm-up', f.stateFilesMax - f.stateFilesAfterWarmup, 'files', 0);
    row('soak', 'kernel violations (held slice written to)', f.violations, '', 0);
    row('soak', 'slices still allocated at the end', f.slicesAllocatedAtEnd, '', 0);
    row('soak', 'ledger grants left at the end', f.ledgerEntriesAtEnd, '', 0);
  }
}

if (only.has('ksoak')) {
  const cycles = process.env.VIO_KSOAK_CYCLES ?? (quick ? '300' : '10000');
  const r = await runBench(`churn soak on the real kubelet (${cycles} VM pods)`, [...hooks, join(ROOT, 'test/bench/kubelet-churn-soak.ts'), '--cycles', cycles]);
  const f = lastJson(r.stdout);
  results.ksoak = f ?? { error: `no figures (exit ${r.code})` };
  if (f) {
    row('ksoak', 'VM pods created and deleted', f.cycles, '');
    row('ksoak', 'cycles per minute', f.cyclesPerMinute, '/min');
    row('ksoak', 'Allocate p99, first tenth', f.allocateP99FirstTenthMs, 'ms');
    row('ksoak', 'Allocate p99, last tenth', f.allocateP99LastTenthMs, 'ms');
    row('ksoak', 'NodePrepareResources p99, first tenth', f.prepareP99FirstTenthMs, 'ms');
    row('ksoak', 'NodePrepareResources p99, last tenth', f.prepareP99LastTenthMs, 'ms');
    row('ksoak', 'pod create → Running p99', f.createToRunningP99Ms, 'ms');
    row('ksoak', 'agent RSS first sample', f.agentRssFirstMiB, 'MiB');
    row('ksoak', 'agent RSS last sample', f.agentRssLastMiB, 'MiB');
    row('ksoak', 'agent open fds first sample', f.agentFdsFirst, 'fds');
    row('ksoak', 'agent open fds last sample', f.agentFdsLast, 'fds');
    row('ksoak', 'operator RSS first sample (larger replica)', f.operatorRssFirstMaxMiB, 'MiB');
    row('ksoak', 'operator RSS last sample (larger replica)', f.operatorRssLastMaxMiB, 'MiB');
    row('ksoak', 'operator open fds first / last sample (larger replica)', f.operatorFdsFirstMax, `/ ${f.operatorFdsLastMax} fds`);
    row('ksoak', 'agent restarts', f.restarts, '');
    row('ksoak', 'operator fail-overs', f.failovers, '');
    row('ksoak', 'plan changes through the fail-overs', f.planChanges, '', 0);
    row('ksoak', 'kernel violations (held slice written to)', f.violations, '', 0);
    row('ksoak', 'harness problems (pod not Running/gone, ...)', f.problems, '', 0);
    row('ksoak', 'slices leaked: sysfs', f.leakedSysfs, '', 0);
    row('ksoak', 'slices leaked: ledger', f.leakedLedger, '', 0);
    row('ksoak', 'slices leaked: PodResources', f.leakedPodResources, '', 0);
    row('ksoak', 'slices leaked: DRA (checkpoint, CDI, claims)', f.leakedDra, '', 0);
  }
}

if (only.has('fuzz')) {
  const runs = process.env.VIO_FUZZ_RUNS ?? (quick ? '1000' : '10000');
  const dir = join(cache, 'bench');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const report = join(dir, `fuzz-${stamp}.jsonl`);
  const jestJson = join(dir, `fuzz-${stamp}-jest.json`);
  const seed = process.env.VIO_FUZZ_SEED ?? 'random';
  // Jest's per-test limit is the CI one; the long run takes longer on purpose (about 45 ms an input
  // for the sysfs trees), so it gets an hour.
  const r = await runBench(`hostile-input fuzzers (${runs} inputs per target, seed ${seed})`,
    [join(ROOT, 'node_modules/jest/bin/jest.js'), '--selectProjects', 'unit', '--testTimeout', '3600000', '--json', '--outputFile', jestJson, 'test/unit/fuzz/'],
    { ...process.env, NODE_OPTIONS: '--experimental-vm-modules', VIO_FUZZ_RUNS: runs, VIO_FUZZ_SEED: seed, VIO_FUZZ_REPORT: report });
  const lines = existsSync(report) ? readFileSync(report, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  let failed = Number.NaN;
  try {
    failed = JSON.parse(readFileSync(jestJson, 'utf8')).numFailedTests;
  } catch { /* jest wrote nothing */ }
  results.fuzz = { runs: Number(runs), seed, targets: lines, failedTests: failed, exit: r.code };
  for (const l of lines) row('fuzz', `${l.target}: inputs (${(l.ms / 1000).toFixed(0)} s)`, l.runs, '');
  row('fuzz', 'failing fuzz tests (counterexample in the log above)', failed, '', 0);
}

const machine = {
  cpuModel: (/^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? '?').trim(),
  nproc: cpus().length,
  memGiB: Math.round(totalmem() / 2 ** 30),
  node: process.version,
  loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
};
const widths = [8, Math.max(...rows.map((r) => r.figure.length), 6), 12, 14];
const line = (c) => `  ${c[0].padEnd(widths[0])}  ${c[1].padEnd(widths[1])}  ${c[2].padStart(widths[2])}  ${c[3].padEnd(widths[3])}  ${c[4]}`;
const text = [
  '',
  `virtualio benchmarks, ${started.toISOString()}${quick ? ' (QUICK run: fewer iterations)' : ''}`,
  `machine: ${machine.cpuModel}, ${machine.nproc} CPUs, ${machine.memGiB} GiB, Node ${machine.node}, load average now ${machine.loadAverage}`,
  line(['BENCH', 'FIGURE', 'VALUE', 'TARGET', '']),
  ...rows.map((r) => line([r.bench, r.figure, `${Number.isFinite(r.value) ? r.value : 'n/a'} ${r.unit}`, r.target, r.met === undefined ? '' : r.met ? 'met' : 'MISSED'])),
  ...Object.entries(results).filter(([, v]) => v.missing || v.error).map(([k, v]) => `  ${k}: ${v.missing ? 'benchmark missing' : v.error}`),
  '',
].join('\n');
process.stdout.write(text);
mkdirSync(dirname(outFile), { recursive: true });
writeFileSync(outFile, JSON.stringify({ started: started.toISOString(), quick, machine, rows, results }, null, 2));
say(`all figures: ${outFile}`);
