// `make bench` (--only ksoak): the long churn soak on the REAL kubelet (issue 21 "Day two"):
// VIO_KSOAK_CYCLES (default 10,000) VM pods of every pool mode on both front ends (device plugin,
// DRA claims prepared and unprepared by the kubelet) created and deleted on the node of
// test/soak/kubelet-cluster.ts, with an agent restart every --restart-every cycles (SIGTERM and
// SIGKILL in turn) and an operator fail-over every --failover-every cycles (two replicas; the leader
// SIGKILLed or SIGTERMed in turn, a new replica in its place). Prints progress on stderr and one
// BENCH_RESULT line with the figures (test/soak/kubelet-churn.ts, kubeletSoakFigures); every sample
// goes to a file. Figures, not pass/fail (the bounded CI run with assertions is
// test/integration/kubelet-churn-soak.test.ts). Needs root; takes the machine's kubelet lock.
//   node --import ./test/sysfs/ts-hooks.mjs test/bench/kubelet-churn-soak.ts [--cycles 10000] [--samples 50]
//        [--restart-every 250] [--failover-every 200]
// RSS and fds are per process: after a restart or fail-over the samples follow the new process.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { canRunKubelet } from '../cluster/kubelet.js';
import { SoakCluster } from '../soak/kubelet-cluster.js';
import { kubeletSoakFigures, runKubeletChurn } from '../soak/kubelet-churn.js';
import { machine } from './lib.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const cycles = arg('cycles', Number(process.env.VIO_KSOAK_CYCLES ?? 10_000));
const samples = arg('samples', 50);
const restartEvery = arg('restart-every', 250);
const failoverEvery = arg('failover-every', 200);
const say = (l: string): void => void process.stderr.write(`[bench ksoak] ${l}\n`);

if (!canRunKubelet()) throw new Error('this benchmark runs a real kubelet: it needs root on Linux');
const m = machine();
say(`${cycles} cycles, an agent restart every ${restartEvery}, an operator fail-over every ${failoverEvery}; machine ${m.nproc} CPUs, load ${m.load1}`);
const cluster = new SoakCluster();
let out: string;
try {
  await cluster.start();
  const r = await runKubeletChurn(cluster, { cycles, restartEvery, failoverEvery, sampleEvery: Math.max(1, Math.floor(cycles / samples)), log: say });
  const f = kubeletSoakFigures(r);
  for (const [k, v] of Object.entries(f)) say(`  ${k}: ${v}`);
  if (r.problems.length) say(`problems:\n  ${r.problems.slice(0, 10).join('\n  ')}`);
  if (r.violations.length) say(`violations:\n  ${r.violations.slice(0, 10).join('\n  ')}`);
  const dir = join(process.env.VIO_CACHE ?? join(process.env.HOME ?? '/tmp', '.cache/virtualio'), 'bench');
  mkdirSync(dir, { recursive: true });
  const samplesFile = join(dir, `ksoak-samples-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(samplesFile, JSON.stringify({ samples: r.samples, failovers: r.failovers, leftovers: r.leftovers, problems: r.problems, diagnostics: r.diagnostics }, null, 1));
  say(`samples: ${samplesFile}`);
  out = `BENCH_RESULT ${JSON.stringify({ ...f, loadAverageAtEnd: machine().load1, samplesFile })}`;
} finally {
  await cluster.close();
}
console.log(out);
