#!/usr/bin/env node
// What one agent status write costs the kube-apiserver, by the shape of the write (not a test; issue 22,
// "edit → status"). A private real etcd + kube-apiserver; N VirtualIONodes carrying the status an agent
// with 10 pools reports (the inventory of operator/bench/convergence.mjs: 10 PFs × 4 VFs + a GPU, the
// plan it serves, its pool states); then N writes of each variant, 8 at a time, and the kube-apiserver's
// CPU seconds (/proc/<pid>/stat) and the wall clock per write:
//   full        the agent's write today: server-side apply of the whole status (inventory, plan, pools)
//   plan-only   server-side apply of the plan and pool states only, under a second field manager
//   merge       a JSON merge patch of the plan and pool states
//   no-inventory  server-side apply of plan and pools on an object that carries no inventory
//   small-crd   server-side apply of the pool states to a small object of its own (a CRD made here)
//   configmap   a JSON merge patch of a ConfigMap holding the same states (a built-in type: the floor)
// Run: source scripts/env.sh && npm run build && node --import ./test/sysfs/ts-hooks.mjs operator/bench/status-write-cost.mjs [--objects 200]
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { startControlPlane } from '../../test/cluster/control-plane.ts';
import { benchInventory } from './inventory.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
const { values: opt } = parseArgs({ options: { objects: { type: 'string', default: '200' } } });
const N = Number(opt.objects);
const P = 10;
const { ClientNodeKube } = await import(join(ROOT, 'dist/operator/src/kube/client-node.js'));
const { VirtualIONodes, AGENT_FIELD_MANAGER } = await import(join(ROOT, 'dist/operator/src/kube/resources.js'));
const { installCrdFiles } = await import('../../test/support/operator-integration.ts');

const Small = { group: 'virtualio.dev', version: 'v1alpha1', plural: 'benchnodeacks', kind: 'BenchNodeAck', namespaced: false };
const SMALL_CRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: benchnodeacks.virtualio.dev}
spec:
  group: virtualio.dev
  names: {kind: BenchNodeAck, listKind: BenchNodeAckList, plural: benchnodeacks, singular: benchnodeack}
  scope: Cluster
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          status:
            type: object
            properties:
              pools:
                type: array
                maxItems: 64
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string, maxLength: 253}
                    resourceName: {type: string, maxLength: 253}
                    generation: {type: integer}
                    state: {type: string, maxLength: 32}
                    capacity: {type: integer}
                    allocatable: {type: integer}
                    allocated: {type: integer}
`;

const inventory = () => benchInventory(P, 0);
const plan = (g) => Array.from({ length: P }, (_, p) => ({ name: `pool-${p}`, resourceName: `virtualio.dev/pool-${p}`, class: 'NIC', mode: 'SRIOV',
  consumption: 'HostDevice', count: p === 3 ? g : 4, devices: [{ pciAddress: `0000:${(0x10 + p).toString(16)}:00.0` }] }));
const pools = (g) => Array.from({ length: P }, (_, p) => ({ name: `pool-${p}`, resourceName: `virtualio.dev/pool-${p}`, state: 'Ready',
  capacity: p === 3 ? g : 4, allocatable: p === 3 ? g : 4, allocated: 0 }));
const node = (name, status) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name }, status });

const cp = await startControlPlane({ verbose: false });
try {
  const kc = cp.kubeconfig;
  const crdFile = join(mkdtempSync(join(tmpdir(), 'vio-writecost-')), 'small.yaml');
  writeFileSync(crdFile, SMALL_CRD);
  await installCrdFiles(cp.binDir, kc, [join(ROOT, 'crds/virtualio.dev_virtualionodes.yaml'), crdFile], ['virtualionodes.virtualio.dev', 'benchnodeacks.virtualio.dev']);
  const kube = ClientNodeKube.fromOptions({ kubeconfig: kc });
  const raw = new k8s.KubeConfig();
  raw.loadFromFile(kc);
  const core = raw.makeApiClient(k8s.CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'bench' } } });
  const [, apiPid] = readFileSync(join(cp.dir, 'pids'), 'utf8').split('\n').map(Number);
  const cpu = () => {
    const f = readFileSync(`/proc/${apiPid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  };
  const full = Array.from({ length: N }, (_, i) => `full-${i}`);
  const lean = Array.from({ length: N }, (_, i) => `lean-${i}`);
  const ssa = { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status', force: true };
  const states = (g) => Object.fromEntries(pools(g).map((p) => [p.name, JSON.stringify({ generation: g, state: p.state, capacity: p.capacity })]));
  for (let i = 0; i < N; i++) {
    await kube.create(VirtualIONodes, node(full[i], undefined));
    await kube.apply(VirtualIONodes, node(full[i], { inventory: { devices: inventory() }, localPlan: { pools: plan(4) }, pools: pools(4) }), ssa);
    await kube.create(VirtualIONodes, node(lean[i], undefined));
    await kube.apply(VirtualIONodes, node(lean[i], { localPlan: { pools: plan(4) }, pools: pools(4) }), ssa);
    await kube.create(Small, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'BenchNodeAck', metadata: { name: full[i] } });
    await core.createNamespacedConfigMap({ namespace: 'bench', body: { metadata: { name: full[i] }, data: states(4) } });
  }
  const size = (o) => JSON.stringify(o).length;
  const result = { objects: N, bytes: { full: size(await kube.get(VirtualIONodes, full[0])), noInventory: size(await kube.get(VirtualIONodes, lean[0])) }, perWrite: {} };
  const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
  let g = 5;
  const run = async (label, names, write) => {
    await new Promise((r) => setTimeout(r, 1000));
    const c0 = cpu();
    const t0 = performance.now();
    let i = 0;
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (i < names.length) await write(names[i++], g);
    }));
    result.perWrite[label] = { apiserverCpuMs: Number(((cpu() - c0) * 1000 / N).toFixed(1)), wallMs: Number(((performance.now() - t0) / N).toFixed(1)) };
    process.stderr.write(`[bench] ${label}: ${result.perWrite[label].apiserverCpuMs} ms kube-apiserver CPU, ${result.perWrite[label].wallMs} ms wall per write\n`);
    g++;
  };
  await run('full', full, (n, gen) => kube.apply(VirtualIONodes, node(n, { inventory: { devices: inventory() }, localPlan: { pools: plan(gen) }, pools: pools(gen) }), ssa));
  await run('plan-only', full, (n, gen) => kube.apply(VirtualIONodes, node(n, { localPlan: { pools: plan(gen) }, pools: pools(gen) }), { ...ssa, fieldManager: 'bench-plan' }));
  await run('merge', full, (n, gen) => kube.mergePatch(VirtualIONodes, n, { status: { localPlan: { pools: plan(gen) }, pools: pools(gen) } }, { fieldManager: AGENT_FIELD_MANAGER, subresource: 'status' }));
  await run('no-inventory', lean, (n, gen) => kube.apply(VirtualIONodes, node(n, { localPlan: { pools: plan(gen) }, pools: pools(gen) }), ssa));
  await run('small-crd', full, (n, gen) => kube.apply(Small, { apiVersion: 'virtualio.dev/v1alpha1', kind: 'BenchNodeAck', metadata: { name: n },
    status: { pools: pools(gen).map((p) => ({ ...p, generation: gen })) } }, ssa));
  await run('configmap', full, (n, gen) => core.patchNamespacedConfigMap({ namespace: 'bench', name: n, body: { data: states(gen) } }, merge));
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} finally {
  await cp.stop();
}
