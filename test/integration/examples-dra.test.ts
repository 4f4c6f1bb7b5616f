// The DRA examples (examples/dra-*) against the real kube-apiserver with the real schemas:
// virtualio's CRDs, resource.k8s.io/v1 and KubeVirt's CRDs (generated from KubeVirt's Go modules).
// Each file must pass a server-side dry-run create, and each example must hang together: its
// DeviceClasses are exactly what the operator creates for its DRA pools, its claim templates ask
// for those classes, and its VM names the claims and requests that exist, a vGPU as gpus[].
import { jest } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { parseVfNetworkConfig } from '../../device-plugin/src/dra/vf-config.js';
import { desiredDeviceClass } from '../../operator/src/controllers/dra/deviceclass.js';
import type { Pool } from '../../operator/src/api/types.js';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { installCrds, kubectl, kubectlOk } from '../support/cluster.js';
import { ensureNamespace, kubevirtCrdDir } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(600_000);

const EXAMPLES = join(REPO_ROOT, 'examples');
const NS = 'vio-examples-dra';

/* eslint-disable @typescript-eslint/no-explicit-any -- example manifests are plain JSON trees */
type Any = any;

const folders = readdirSync(EXAMPLES, { withFileTypes: true }).filter((d) => d.isDirectory() && d.name.startsWith('dra-')).map((d) => d.name).sort();

function docs(folder: string): Any[] {
  return readdirSync(join(EXAMPLES, folder)).filter((f) => f.endsWith('.yaml')).sort()
    .flatMap((f) => YAML.parseAllDocuments(readFileSync(join(EXAMPLES, folder, f), 'utf8')).map((d) => d.toJS()))
    .filter(Boolean);
}

beforeAll(async () => {
  await installCrds();
  await kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', kubevirtCrdDir()]);
  await waitCrdsEstablished(kubectlOk, ['virtualmachines.kubevirt.io'], 120);
  await ensureNamespace(NS);
});

test('one DRA example per device kind, the PCIe-root alignment one and the on-demand vGPUs (mdev and vGPU profiles)', () => {
  expect(folders).toEqual(['dra-a16-ondemand', 'dra-a16-vgpu', 'dra-gpu-nic-aligned', 'dra-l40s-vgpu-profiles', 'dra-nic-vf-vlan', 'dra-nvme-vfs']);
});

describe.each(folders)('%s', (folder) => {
  const files = readdirSync(join(EXAMPLES, folder)).filter((f) => f.endsWith('.yaml')).sort();

  test.each(files)('%s passes a server-side dry-run create', async (file) => {
    const r = await kubectl(['create', '--dry-run=server', '-n', NS, '-f', join(EXAMPLES, folder, file), '-o', 'name']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n').length).toBe(YAML.parseAllDocuments(readFileSync(join(EXAMPLES, folder, file), 'utf8')).length);
  });

  test('classes, claim templates and the VM hang together', () => {
    const all = docs(folder);
    const pools = all.filter((d) => d.kind === 'VirtualIODevice');
    const classes = all.filter((d) => d.kind === 'DeviceClass');
    const templates = all.filter((d) => d.kind === 'ResourceClaimTemplate');
    const vms = all.filter((d) => d.kind === 'VirtualMachine');
    expect(pools.length).toBeGreaterThan(0);
    for (const p of pools) expect(p.spec.frontEnd).toBe('DRA');
    // Exactly the operator's classes, one per pool.
    const want = pools.map((p) => desiredDeviceClass({ ...p, metadata: { ...p.metadata, uid: 'x' } } as Pool)).map((c) => ({ name: c.metadata.name, spec: c.spec }));
    expect(classes.map((c) => ({ name: c.metadata.name, spec: c.spec }))).toEqual(want);
    const classNames = new Set(classes.map((c) => c.metadata.name));
    const requests = new Map<string, Set<string>>(); // template → request names
    for (const t of templates) {
      const reqs = t.spec.spec.devices.requests as Any[];
      for (const r of reqs) expect(classNames.has(r.exactly.deviceClassName)).toBe(true);
      for (const c of t.spec.spec.devices.constraints ?? []) for (const r of c.requests) expect(reqs.map((x) => x.name)).toContain(r);
      requests.set(t.metadata.name, new Set(reqs.map((r) => r.name)));
    }
    expect(vms).toHaveLength(1);
    const vmi = vms[0].spec.template.spec;
    const claims = new Map<string, string>((vmi.resourceClaims as Any[]).map((c) => [c.name, c.resourceClaimTemplateName]));
    const used: string[] = [];
    for (const [list, entries] of [['gpus', vmi.domain.devices.gpus ?? []], ['hostDevices', vmi.domain.devices.hostDevices ?? []]] as const) {
      for (const e of entries as Any[]) {
        expect(e.deviceName).toBeUndefined();
        const template = claims.get(e.claimName);
        expect(template && requests.get(template)?.has(e.requestName)).toBe(true);
        used.push(`${template}/${e.requestName}`);
        // A vGPU (Mediated pool) is consumed as gpus[]: KubeVirt builds an mdev host device from it.
        const cls = templates.find((t) => t.metadata.name === template).spec.spec.devices.requests.find((r: Any) => r.name === e.requestName).exactly.deviceClassName;
        const pool = pools.find((p) => `${p.metadata.name}.virtualio.dev` === cls);
        if (pool.spec.carving.mode === 'Mediated') expect(list).toBe('gpus');
      }
    }
    // Every request of every template is consumed exactly once.
    expect(used.sort()).toEqual([...requests].flatMap(([t, rs]) => [...rs].map((r) => `${t}/${r}`)).sort());
    // Our opaque parameters are ones the agent takes (the API server stores them unread).
    for (const t of templates) {
      for (const c of (t.spec.spec.devices.config ?? []) as Any[]) {
        if (c.opaque?.driver !== 'virtualio.dev') continue;
        expect(parseVfNetworkConfig(c.opaque.parameters)).not.toHaveProperty('error');
        for (const r of c.requests ?? []) expect(requests.get(t.metadata.name)?.has(r)).toBe(true);
      }
    }
  });
});
