// `make bench` (--only soak): the long churn soak (issue 21). The REAL agent process through
// VIO_SOAK_CYCLES (default 10,000) VM start/stop cycles on every pool mode, sampled from outside
// (test/soak/churn.ts); prints progress on stderr and one BENCH_RESULT line with the figures.
// Figures, not pass/fail (the bounded CI run with assertions is device-plugin/test/churn-soak.test.ts).
//   node --import ./test/sysfs/ts-hooks.mjs test/bench/churn-soak.ts [--cycles 10000] [--samples 50] [--restart-every N]
// --restart-every N: the agent is restarted every N cycles (SIGTERM and SIGKILL in turn) while its VMs
// run; the leak figures are then per process (samples follow the new agent).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureAgentBuilt } from '../fakes/agent-process.js';
import { figuresOf, runChurn } from '../soak/churn.js';
import { machine } from './lib.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const cycles = arg('cycles', Number(process.env.VIO_SOAK_CYCLES ?? 10_000));
const samples = arg('samples', 50);
const restartEvery = arg('restart-every', 0);

await ensureAgentBuilt();
const m = machine();
process.stderr.write(`[bench soak] ${cycles} cycles${restartEvery ? `, an agent restart every ${restartEvery}` : ''}; machine ${m.nproc} CPUs, load ${m.load1}\n`);
const r = await runChurn({ cycles, sampleEvery: Math.max(1, Math.floor(cycles / samples)), ...(restartEvery > 0 ? { restartEvery } : {}), log: (l) => process.stderr.write(`[bench soak] ${l}\n`) });
const f = figuresOf(r);
for (const [k, v] of Object.entries(f)) process.stderr.write(`[bench soak]   ${k}: ${v}\n`);
if (r.problems.length) process.stderr.write(`[bench soak] problems:\n  ${r.problems.slice(0, 10).join('\n  ')}\n`);
if (r.violations.length) process.stderr.write(`[bench soak] violations:\n  ${r.violations.slice(0, 10).join('\n  ')}\n`);
// Every sample goes to a file (the BENCH_RESULT line stays short).
const dir = join(process.env.VIO_CACHE ?? join(process.env.HOME ?? '/tmp', '.cache/virtualio'), 'bench');
mkdirSync(dir, { recursive: true });
const samplesFile = join(dir, `soak-samples-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(samplesFile, JSON.stringify(r.samples, null, 1));
process.stderr.write(`[bench soak] samples: ${samplesFile}\n`);
console.log(`BENCH_RESULT ${JSON.stringify({ ...f, loadAverageAtEnd: machine().load1, samplesFile })}`);
