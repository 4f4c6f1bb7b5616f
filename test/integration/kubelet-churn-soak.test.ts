// Churn soak on the REAL kubelet, CI budget (issue 21 "Day two"): VIO_KSOAK_CYCLES (default 40) VM
// pods of every pool mode, device plugin and DRA (claims from templates, prepared and unprepared by
// the kubelet), created and deleted on the node of test/soak/kubelet-cluster.ts (real control plane,
// kubelet on the fake CRI, two operator replicas, the agent process, the witness kernel), with an
// agent restart every 15 cycles (SIGTERM, SIGKILL) and an operator fail-over every 12 (the leader
// SIGKILLed, then SIGTERMed; a new replica in its place). The long run is `make bench`
// (test/bench/kubelet-churn-soak.ts); figures in BENCHMARKS.md.
// Asserted, each able to fail:
//  * no kernel violation (no destructive write reached a device a VM held) and no such write even
//    tried (the kernel holds one back while the VM keeps the device), no harness problem (a pod
//    Failed or not Running in time, a VM that could not open what it was handed, a pod not gone in
//    time, an Allocate or prepare the agent did not count, the plan changed);
//  * every pod created ran and every pod deleted went;
//  * every fail-over ended with a live replica holding the Lease, once per fail-over (Lease
//    transitions), and the node's plan (generation and pools) is the one from before the first;
//  * at the end, with every VM stopped and every pod gone: nothing leaked — carved devices on sysfs as
//    planned, no grant in the agent's ledger and no allocation in its /status, nothing of ours in
//    PodResources, no claim in the agent's DRA checkpoint, no CDI claim spec, no ResourceClaim left.
import { jest } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { canRunKubelet, kubeletSkipReason } from '../cluster/kubelet.js';
import { SoakCluster } from '../soak/kubelet-cluster.js';
import { kubeletSoakFigures, runKubeletChurn } from '../soak/kubelet-churn.js';

const cycles = Number(process.env.VIO_KSOAK_CYCLES ?? 40);
const restartEvery = 15;
const failoverEvery = 12;
const suite = canRunKubelet() ? describe : describe.skip;
jest.setTimeout(180_000);

suite(`churn soak on the real kubelet${kubeletSkipReason()}`, () => {
  const lines: string[] = [];
  const cluster = new SoakCluster();

  beforeAll(async () => {
    await cluster.start();
  }, 20 * 60_000); // the machine's kubelet lock may be held by another suite

  afterAll(async () => {
    await cluster.close();
  });

  test(`${cycles} VM pods of every mode on both front ends, with agent restarts and operator fail-overs: all ran and went, nothing leaked, no held device written to`, async () => {
    const r = await runKubeletChurn(cluster, { cycles, restartEvery, failoverEvery, sampleEvery: 10, log: (l) => lines.push(l) });
    const f = kubeletSoakFigures(r);
    console.log(`${lines.join('\n')}\n${JSON.stringify(f, null, 1)}`);
    if (process.env.VIO_RESULTS_DIR) writeFileSync(join(process.env.VIO_RESULTS_DIR, 'kubelet-churn-soak.json'), JSON.stringify({ figures: f, samples: r.samples, failovers: r.failovers, diagnostics: r.diagnostics }, null, 2));

    expect(r.violations).toEqual([]);
    // Nothing destructive was even tried on a device a VM held (the kernel would hold it back).
    expect(r.blockedWrites).toEqual([]);
    expect({ problems: r.problems, diagnostics: r.diagnostics }).toEqual({ problems: [], diagnostics: [] });
    expect(r.cycles).toBe(cycles);
    expect(Object.keys(r.perPool).sort()).toEqual(['fc', 'gpu', 'net', 'net-dra', 'vgpu', 'vgpu-dra']);
    expect(r.running).toBe(cycles);
    expect(r.gone).toBe(cycles);
    expect(r.allocateMs.length + r.prepareMs.length).toBe(cycles);
    expect(r.restarts).toBe(Math.floor((cycles - 1) / restartEvery));
    const wantFailovers = Math.floor((cycles - 1) / failoverEvery);
    expect(r.failovers).toHaveLength(wantFailovers);
    expect(r.leaseTransitions).toBe(wantFailovers);
    expect(r.planChanges).toBe(0);
    expect(r.planEnd).toEqual(r.planStart);
    // The readers read the real records: while VMs ran they showed what they held.
    const seen = (k: keyof typeof r.leftovers): boolean => r.samples.some((s) => s.held[k] > 0);
    const readers = ['ledger', 'agentAllocated', 'podResources', 'draCheckpoint', 'cdiClaimSpecs', 'resourceClaims'] as const;
    expect(Object.fromEntries(readers.map((k) => [k, seen(k)]))).toEqual(Object.fromEntries(readers.map((k) => [k, true])));
    expect(r.leftovers).toEqual({ sysfs: 0, ledger: 0, agentAllocated: 0, podResources: 0, draCheckpoint: 0, cdiClaimSpecs: 0, resourceClaims: 0 });
  });
});
