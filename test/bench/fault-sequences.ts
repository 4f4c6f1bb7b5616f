// `make bench` (--only faults): the long run of generated fault sequences (the CI budget is in
// device-plugin/test/fault-sequences.test.ts). Prints progress on stderr and one BENCH_RESULT line:
// sequences, steps, faults injected, violations (kernel-witnessed destructive writes on held devices
// plus failed convergences), slowest convergence. A failure is reported with its seed and shrunk
// sequence, never thrown: benchmarks are figures.
//   node --import ./test/sysfs/ts-hooks.mjs test/bench/fault-sequences.ts [--runs 40] [--steps 25] [--seconds 1500] [--seed N]
import { ensureAgentBuilt } from '../fakes/agent-process.js';
import { runSequences, type Figures } from '../model/commands.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const runs = arg('runs', 40);
const steps = arg('steps', 25);
const seconds = arg('seconds', 1500);
const seedArg = arg('seed', NaN);

await ensureAgentBuilt();
const t0 = Date.now();
let figures: Figures | undefined;
let failure: string | undefined;
const lines: string[] = [];
try {
  figures = await runSequences({
    runs,
    maxSteps: steps,
    ...(Number.isFinite(seedArg) ? { seed: seedArg } : {}),
    timeLimitMs: seconds * 1000,
    log: (l) => {
      lines.push(l);
      process.stderr.write(`${l}\n`);
    },
  });
} catch (err) {
  failure = String(err).slice(0, 4000);
}
const done = lines.filter((l) => l.startsWith('sequence ')).length;
const result = figures ?? { sequences: done, steps: NaN, faults: NaN, violations: failure ? 1 : 0, slowestConvergenceMs: NaN };
console.log(`BENCH_RESULT ${JSON.stringify({ ...result, runsAsked: runs, maxSteps: steps, seconds: Math.round((Date.now() - t0) / 1000), ...(failure ? { failure } : {}) })}`);
