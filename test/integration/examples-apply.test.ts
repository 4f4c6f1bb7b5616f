// Every example against the real kube-apiserver with the real schemas: virtualio's CRDs, KubeVirt's
// CRDs (generated from KubeVirt's Go modules by test/kubevirt/crds.sh) and the
// NetworkAttachmentDefinition CRD as published in the network-attachment-definition-client Go module
// (artifacts/networks-crd.yaml, fetched through the Go module proxy; nothing hand-written). Each file
// must pass a server-side dry-run create, and each example must hang together: the VM asks for the
// resource names its pools advertise, in the form their consumption calls for.
import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { installCrds, kubectl, kubectlOk } from '../support/cluster.js';
import { ensureNamespace, kubevirtCrdDir } from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(600_000);

const EXAMPLES = join(REPO_ROOT, 'examples');
const NS = 'vio-examples';
const NAD_MODULE = 'github.com/k8snetworkplumbingwg/network-attachment-definition-client@v1.7.7';

/* eslint-disable @typescript-eslint/no-explicit-any -- example manifests are plain JSON trees */
type Any = any;

// dra-* folders consume pools through ResourceClaims instead of resource names: examples-dra.test.ts.
const folders = readdirSync(EXAMPLES, { withFileTypes: true }).filter((d) => d.isDirectory() && !d.name.startsWith('dra-')).map((d) => d.name).sort();

function docs(folder: string): Any[] {
  return readdirSync(join(EXAMPLES, folder)).filter((f) => f.endsWith('.yaml')).sort()
    .flatMap((f) => YAML.parseAllDocuments(readFileSync(join(EXAMPLES, folder, f), 'utf8')).map((d) => d.toJS()))
    .filter(Boolean);
}

/** The NetworkAttachmentDefinition CRD file from the Go module (downloaded into the module cache). */
function nadCrdFile(): string {
  const out = execFileSync('go', ['mod', 'download', '-json', NAD_MODULE], {
    encoding: 'utf8', env: { ...process.env, GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' }, cwd: '/tmp',
  });
  const dir = (JSON.parse(out) as { Dir?: string; Error?: string });
  if (!dir.Dir) throw new Error(`go mod download ${NAD_MODULE}: ${dir.Error ?? out}`);
  const file = join(dir.Dir, 'artifacts/networks-crd.yaml');
  if (!existsSync(file)) throw new Error(`${file} is missing`);
  return file;
}

beforeAll(async () => {
  await installCrds();
  const kv = kubevirtCrdDir();
  await kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', kv]);
  await kubectlOk(['apply', '--server-side', '--force-conflicts', '-f', nadCrdFile()]);
  await waitCrdsEstablished(kubectlOk, ['virtualmachines.kubevirt.io', 'network-attachment-definitions.k8s.cni.cncf.io', 'kubevirts.kubevirt.io'], 120);
  await ensureNamespace(NS);
});

test('there is one example per real use', () => {
  expect(folders).toEqual(['emulex-fc-npiv', 'intel-82599-hostdev', 'mellanox-connectx6-vfs', 'nvidia-a16-vgpu', 'nvidia-gpu-passthrough', 'nvidia-l40s-vgpu', 'nvme-sriov-vfs']);
});

describe.each(folders)('%s', (folder) => {
  const files = readdirSync(join(EXAMPLES, folder)).filter((f) => f.endsWith('.yaml')).sort();

  test.each(files)('%s passes a server-side dry-run create', async (file) => {
    const r = await kubectl(['create', '--dry-run=server', '-n', NS, '-f', join(EXAMPLES, folder, file), '-o', 'name']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n').length).toBe(YAML.parseAllDocuments(readFileSync(join(EXAMPLES, folder, file), 'utf8')).length);
  });

  test('the VM consumes exactly the pools of the example, in the form their consumption calls for', () => {
    const all = docs(folder);
    const pools = all.filter((d) => d.kind === 'VirtualIODevice');
    const vms = all.filter((d) => d.kind === 'VirtualMachine');
    expect(pools.length).toBeGreaterThan(0);
    expect(vms).toHaveLength(1);
    const vmi = vms[0].spec.template.spec;
    const devices = vmi.domain.devices;
    const wanted = new Map<string, string>(); // resource name → how the VM asks for it
    for (const g of devices.gpus ?? []) wanted.set(g.deviceName, 'gpus');
    for (const h of devices.hostDevices ?? []) wanted.set(h.deviceName, 'hostDevices');
    for (const r of Object.keys(vmi.domain.resources?.requests ?? {})) wanted.set(r, 'resources');
    const nads = all.filter((d) => d.kind === 'NetworkAttachmentDefinition');
    for (const net of vmi.networks ?? []) {
      if (!net.multus) continue;
      const nad = nads.find((n) => n.metadata.name === net.multus.networkName);
      expect(nad).toBeDefined();
      const iface = devices.interfaces.find((i: Any) => i.name === net.name);
      expect(iface.sriov).toEqual({});
      expect(JSON.parse(nad.spec.config).type).toBe('sriov');
      wanted.set(nad.metadata.annotations['k8s.v1.cni.cncf.io/resourceName'], 'sriov');
    }
    const forms = { MediatedDevice: ['gpus', 'hostDevices'], HostDevice: ['gpus', 'hostDevices'], SRIOVNetwork: ['sriov'] } as Record<string, string[]>;
    for (const p of pools) {
      const resource = p.spec.resourceName ?? `virtualio.dev/${p.metadata.name}`;
      const consumption = p.spec.kubevirt?.consumption
        ?? (p.spec.carving.mode === 'Mediated' ? 'MediatedDevice' : p.spec.class === 'NIC' && p.spec.carving.mode === 'SRIOV' ? 'SRIOVNetwork' : 'HostDevice');
      const form = wanted.get(resource);
      expect({ resource, used: form !== undefined }).toEqual({ resource, used: true });
      if (p.spec.carving.mode === 'NPIV') expect(form).toBe('resources'); // a vport is no PCI device
      else expect(forms[consumption]).toContain(form);
      wanted.delete(resource);
    }
    expect([...wanted.keys()]).toEqual([]); // nothing the example does not define
  });
});

test('the A16 vGPU type is one recorded on the real A16 server', () => {
  const recording = readFileSync(join(REPO_ROOT, 'test/fixtures/real-sysfs/vgpu-node.umockdev'), 'utf8');
  const recorded = new Set([...recording.matchAll(/mdev_type=\.\.\/mdev_supported_types\/(\S+)/g)].map((m) => m[1]));
  const pool = docs('nvidia-a16-vgpu').find((d) => d.kind === 'VirtualIODevice');
  expect(recorded.has(pool.spec.carving.mdevType)).toBe(true);
  expect(recording).toContain(`PCI_ID=10DE:${pool.spec.deviceSelector.deviceIDs[0].toUpperCase()}`);
});

test('example pools and resource names do not collide with each other or with crds/samples', () => {
  const names = folders.flatMap((f) => docs(f).filter((d) => d.kind === 'VirtualIODevice').map((d) => d.metadata.name));
  const samples = readdirSync(join(REPO_ROOT, 'crds/samples')).flatMap((f) => YAML.parseAllDocuments(readFileSync(join(REPO_ROOT, 'crds/samples', f), 'utf8')).map((d) => d.toJS()))
    .filter((d) => d?.kind === 'VirtualIODevice').map((d) => d.metadata.name);
  expect(new Set(names).size).toBe(names.length);
  expect(names.filter((n) => samples.includes(n))).toEqual([]);
});
