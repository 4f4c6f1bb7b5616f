// Churn soak, CI budget (issue 21): the REAL agent process through VIO_SOAK_CYCLES (default 200) VM
// start/stop cycles on VFs, mdevs, a passthrough GPU and NPIV vports, sampled from outside the agent
// (test/soak/churn.ts). The long run is `make bench` (test/bench/churn-soak.ts); its figures are in
// BENCHMARKS.md.
// Asserted, each able to fail:
//  * the fake kernel saw no violation (no destructive write reached a device a VM held open), and the
//    harness saw no double hand-out and no refused Allocate;
//  * at the end, with every VM stopped: no slice allocated in the agent's /status, no grant in its
//    ledger, every planned slice listed Healthy to the kubelet, the kernel holding exactly the plan;
//  * after warm-up (the first 10 % of cycles): the floor of open fds and of sockets (their lowest over
//    the last third of the cycles against the first third) grows by at most FLOOR_SLACK, and their
//    peak stays within TRANSIENT_SLACK of the first sample (the agent's fixed set is ~35 fds; what
//    comes and goes is an HTTP keep-alive of the sampler's own requests, a PodResources call in
//    flight: 3 seen over 10,000 cycles); no new file in its state folder, devinfo files at most
//    one per VF, CDI specs at most one per pool, ledger grants at most one per slice;
//  * memory: the RSS slope is printed; the only bound is RSS_GROWTH_MIB over the run, because V8 grows
//    its heap lazily up to its limits before collecting, so a short run cannot tell a small leak from
//    a heap still growing; the bound catches a gross one (≥ 300 KiB a cycle over 200 cycles). The
//    slope over 10,000 cycles (make bench) is the figure that says more.
import { jest } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureAgentBuilt } from '../../test/fakes/agent-process.js';
import { figuresOf, runChurn } from '../../test/soak/churn.js';

const cycles = Number(process.env.VIO_SOAK_CYCLES ?? 200);
const FLOOR_SLACK = 1;
const TRANSIENT_SLACK = 6;
const RSS_GROWTH_MIB = 64;
jest.setTimeout(180_000 + cycles * 200);

beforeAll(async () => {
  await ensureAgentBuilt();
});

test(`churn soak: ${cycles} VM start/stop cycles on every pool mode leak no slice, fd, socket or state file, and no held slice is ever written to`, async () => {
  const lines: string[] = [];
  const r = await runChurn({ cycles, sampleEvery: Math.max(1, Math.floor(cycles / 20)), log: (l) => lines.push(l) });
  const f = figuresOf(r);
  console.log(`${lines.join('\n')}\n${JSON.stringify(f, null, 1)}`);
  if (process.env.VIO_RESULTS_DIR) writeFileSync(join(process.env.VIO_RESULTS_DIR, 'churn-soak.json'), JSON.stringify({ figures: f, samples: r.samples }, null, 2));

  expect(r.violations).toEqual([]);
  expect(r.problems).toEqual([]);
  expect(r.cycles).toBe(cycles);
  // Every slice back to free.
  expect(r.end.allocatedSlices).toBe(0);
  expect(r.end.ledgerEntries).toBe(0);
  expect(r.end.healthy).toEqual(r.end.planned);
  expect(r.end.facts).toEqual({ vfs: r.end.planned.net, mdevs: r.end.planned.vgpu, vports: r.end.planned.fc });
  // No growth after warm-up.
  expect(f.fdsFloorGrowth).toBeLessThanOrEqual(FLOOR_SLACK);
  expect(f.socketsFloorGrowth).toBeLessThanOrEqual(FLOOR_SLACK);
  expect(f.fdsMaxAfterWarmup - f.fdsAfterWarmup).toBeLessThanOrEqual(TRANSIENT_SLACK);
  expect(f.fdsEnd - f.fdsAfterWarmup).toBeLessThanOrEqual(TRANSIENT_SLACK);
  expect(f.socketsMaxAfterWarmup - f.socketsAfterWarmup).toBeLessThanOrEqual(TRANSIENT_SLACK);
  expect(f.stateFilesMax).toBe(f.stateFilesAfterWarmup);
  // The ledger keys its grants by slice: a released pod's grant lasts its grace, never longer.
  expect(f.ledgerEntriesMax).toBeLessThanOrEqual(Object.values(r.end.planned).reduce((a, b) => a + b, 0));
  expect(f.devinfoFilesMax).toBeLessThanOrEqual(r.end.planned.net ?? 0);
  expect(f.cdiFilesMax).toBeLessThanOrEqual(Object.keys(r.end.planned).length);
  expect(f.rssMaxMiB - f.rssStartMiB).toBeLessThanOrEqual(RSS_GROWTH_MIB);
});

// Agent restarts mixed into the churn (issue 21): SIGTERM and SIGKILL in turn while VMs hold slices
// of every mode. Each restarted agent must serve every pool again (its /readyz), hand out nothing a
// running VM holds, write nothing to a held slice, and release everything once the VMs are gone.
const restartCycles = Number(process.env.VIO_SOAK_RESTART_CYCLES ?? 60);
const restartEvery = 15;

test(`churn with agent restarts: ${Math.floor((restartCycles - 1) / restartEvery)} restarts (SIGTERM, SIGKILL) in ${restartCycles} cycles lose no slice and hand none out twice`, async () => {
  const lines: string[] = [];
  const r = await runChurn({ cycles: restartCycles, restartEvery, sampleEvery: restartEvery, log: (l) => lines.push(l) });
  const f = figuresOf(r);
  console.log(`${lines.join('\n')}\n${JSON.stringify({ cycles: f.cycles, restarts: f.restarts, restartReadyMaxMs: f.restartReadyMaxMs, allocateP50Ms: f.allocateP50Ms, allocateP99Ms: f.allocateP99Ms, violations: f.violations, problems: f.problems })}`);
  expect(r.violations).toEqual([]);
  expect(r.problems).toEqual([]);
  expect(r.restarts).toBe(Math.floor((restartCycles - 1) / restartEvery));
  expect(r.cycles).toBe(restartCycles);
  expect(r.end.allocatedSlices).toBe(0);
  expect(r.end.ledgerEntries).toBe(0);
  expect(r.end.healthy).toEqual(r.end.planned);
  expect(r.end.facts).toEqual({ vfs: r.end.planned.net, mdevs: r.end.planned.vgpu, vports: r.end.planned.fc });
}, 180_000 + restartCycles * 1_000);
