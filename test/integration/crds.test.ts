// The API against a real kube-apiserver: the CRDs install and become Established, the samples are
// accepted, invalid objects are rejected at admission with a message that names the field, and the
// printer columns show through `kubectl get`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from '../cluster/control-plane.js';
import { installCrds, kubectl, kubectlOk } from '../support/cluster.js';

const SAMPLES = join(REPO_ROOT, 'crds/samples');

/** A valid VirtualIODevice to mutate into invalid ones. */
function pool(name: string, spec: Record<string, unknown>): string {
  return YAML.stringify({
    apiVersion: 'virtualio.dev/v1alpha1',
    kind: 'VirtualIODevice',
    metadata: { name },
    spec: {
      class: 'NIC',
      deviceSelector: { vendorIDs: ['8086'] },
      carving: { mode: 'SRIOV', count: 8 },
      ...spec,
    },
  });
}

beforeAll(async () => {
  await installCrds();
});

test('the control plane is a real kube-apiserver v1.36', async () => {
  const out = JSON.parse(await kubectlOk(['version', '-o', 'json']));
  expect(out.serverVersion.gitVersion).toMatch(/^v1\.36\.\d+$/);
});

test('the three CRDs are Established with short names; pools and nodes have a status subresource, the agent-written ack does not', async () => {
  for (const crd of ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev', 'virtualionodeacks.virtualio.dev']) {
    const obj = JSON.parse(await kubectlOk(['get', 'crd', crd, '-o', 'json']));
    const established = obj.status.conditions.find((c: { type: string }) => c.type === 'Established');
    expect(established.status).toBe('True');
    expect(obj.spec.scope).toBe('Cluster');
    expect(obj.spec.names.shortNames.length).toBeGreaterThan(0);
    // An ack has one writer (its node's agent), so it is written whole.
    expect(obj.spec.versions[0].subresources?.status).toEqual(crd.startsWith('virtualionodeacks.') ? undefined : {});
  }
  const resources = await kubectlOk(['api-resources', '--api-group=virtualio.dev', '-o', 'name']);
  expect(resources.split('\n').filter(Boolean).sort()).toEqual(['virtualiodevices.virtualio.dev', 'virtualionodeacks.virtualio.dev', 'virtualionodes.virtualio.dev']);
});

describe('samples', () => {
  const files = readdirSync(SAMPLES).filter((f) => f.endsWith('.yaml')).sort();
  test.each(files)('%s is accepted', async (file) => {
    const text = readFileSync(join(SAMPLES, file), 'utf8');
    const r = await kubectl(['apply', '--server-side', '-f', '-'], { input: text });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const doc = YAML.parse(text);
    const back = JSON.parse(await kubectlOk(['get', `${doc.kind.toLowerCase()}.virtualio.dev`, doc.metadata.name, '-o', 'json']));
    expect(back.spec.deviceSelector ?? back.spec.pools).toBeDefined();
  });

  test('defaults are applied by the API server', async () => {
    const obj = JSON.parse(await kubectlOk(['get', 'virtualiodevice', 'nvme-passthrough', '-o', 'json']));
    expect(obj.spec.allocation).toBeUndefined(); // only nested defaults apply when the parent object exists
    const x520 = JSON.parse(await kubectlOk(['get', 'virtualiodevice', 'x520-vfs', '-o', 'json']));
    expect(x520.spec.kubevirt.permit).toBe(true);
  });
});

interface InvalidCase {
  name: string;
  doc: string;
  /** Substrings the API server's message must contain, the field path first. */
  expect: string[];
}

const invalid: InvalidCase[] = [
  { name: 'resourceName without a domain', doc: pool('bad-rn-1', { resourceName: 'gpu' }), expect: ['spec.resourceName', '<dns-subdomain>/<name>'] },
  { name: 'resourceName in kubernetes.io', doc: pool('bad-rn-2', { resourceName: 'kubernetes.io/gpu' }), expect: ['spec.resourceName', 'kubernetes.io'] },
  { name: 'resourceName name part over 63 chars', doc: pool('bad-rn-3', { resourceName: `virtualio.dev/${'a'.repeat(64)}` }), expect: ['spec.resourceName', '63'] },
  { name: 'resourceName starting with requests.', doc: pool('bad-rn-4', { resourceName: 'requests.virtualio.dev/x' }), expect: ['spec.resourceName', 'requests.'] },
  { name: 'unknown class', doc: pool('bad-class', { class: 'FPGA' }), expect: ['spec.class', 'Unsupported value: "FPGA"'] },
  { name: 'count below 1', doc: pool('bad-count-0', { carving: { mode: 'SRIOV', count: 0 } }), expect: ['spec.carving.count', 'greater than or equal to 1'] },
  { name: 'too many VFs per PF', doc: pool('bad-count-300', { carving: { mode: 'SRIOV', count: 300 } }), expect: ['spec.carving', 'at most 256'] },
  { name: 'Mediated without mdevType', doc: pool('bad-mdev-1', { class: 'GPU', carving: { mode: 'Mediated', count: 2 } }), expect: ['spec.carving', 'mdevType is required'] },
  { name: 'mdevType on an SRIOV pool', doc: pool('bad-mdev-2', { carving: { mode: 'SRIOV', count: 2, mdevType: 'nvidia-746' } }), expect: ['spec.carving', 'mdevType is only allowed'] },
  { name: 'empty deviceSelector', doc: pool('bad-sel-1', { deviceSelector: {} }), expect: ['spec.deviceSelector'] },
  { name: 'deviceSelector with only empty lists', doc: pool('bad-sel-2', { deviceSelector: { vendorIDs: [], drivers: [] } }), expect: ['spec.deviceSelector', 'at least one non-empty field'] },
  { name: 'PCI address without a function', doc: pool('bad-pci', { deviceSelector: { pciAddresses: ['0000:81:00'] } }), expect: ['spec.deviceSelector.pciAddresses[0]', 'should match'] },
  { name: 'vendor ID with 0x', doc: pool('bad-vendor-1', { deviceSelector: { vendorIDs: ['0x10de'] } }), expect: ['spec.deviceSelector.vendorIDs[0]', 'may not be more than 4'] },
  { name: 'upper-case vendor ID', doc: pool('bad-vendor-2', { deviceSelector: { vendorIDs: ['10DE'] } }), expect: ['spec.deviceSelector.vendorIDs[0]', 'should match'] },
  { name: 'NPIV on a GPU pool', doc: pool('bad-npiv-1', { class: 'GPU', carving: { mode: 'NPIV', count: 2, wwnPrefix: 'c05076' } }), expect: ['spec', 'NPIV is only for spec.class Storage'] },
  { name: 'NPIV without wwnPrefix', doc: pool('bad-npiv-2', { class: 'Storage', carving: { mode: 'NPIV', count: 2 } }), expect: ['spec.carving', 'wwnPrefix is required'] },
  { name: 'VF range backwards', doc: pool('bad-range', { deviceSelector: { interfaceNames: ['ens1f0#7-0'] } }), expect: ['spec.deviceSelector.interfaceNames[0]', 'first <= last'] },
  { name: 'interfaceNames on a Storage pool', doc: pool('bad-ifname', { class: 'Storage', deviceSelector: { interfaceNames: ['ens1f0'] }, carving: { mode: 'Passthrough' } }), expect: ['spec', 'interfaceNames only applies to spec.class NIC'] },
  { name: 'SRIOVNetwork consumption for a GPU', doc: pool('bad-consume', { class: 'GPU', kubevirt: { consumption: 'SRIOVNetwork' } }), expect: ['spec', 'SRIOVNetwork needs spec.class NIC'] },
  { name: 'Passthrough with count 2', doc: pool('bad-pt', { class: 'Storage', carving: { mode: 'Passthrough', count: 2 } }), expect: ['spec.carving', 'count must be 1'] },
  { name: 'In expression without values', doc: pool('bad-nodesel', { nodeSelector: { matchExpressions: [{ key: 'gpu', operator: 'In' }] } }), expect: ['spec.nodeSelector.matchExpressions[0]', 'values must be set'] },
  { name: 'unknown allocation policy', doc: pool('bad-policy', { allocation: { policy: 'Random' } }), expect: ['spec.allocation.policy', 'Unsupported value: "Random"'] },
  { name: 'gpuVf on a Mediated pool', doc: pool('bad-gpuvf-1', { class: 'GPU', carving: { mode: 'Mediated', count: 1, mdevType: 'i915-GVTg_V5_4', gpuVf: { contexts: 64 } } }), expect: ['spec.carving', 'gpuVf is only allowed on SRIOV pools without vgpu or onDemand'] },
  { name: 'gpuVf LMEM not in 2 MiB', doc: pool('bad-gpuvf-2', { class: 'GPU', carving: { mode: 'SRIOV', count: 2, gpuVf: { lmemBytes: 3000000 } } }), expect: ['spec.carving.gpuVf', 'multiple of 2 MiB'] },
  { name: 'empty gpuVf', doc: pool('bad-gpuvf-3', { class: 'GPU', carving: { mode: 'SRIOV', count: 2, gpuVf: {} } }), expect: ['spec.carving.gpuVf', 'should have at least 1 properties'] },
  { name: 'vgpu on a Mediated pool', doc: pool('bad-vgpu-1', { class: 'GPU', carving: { mode: 'Mediated', count: 1, mdevType: 'nvidia-746', vgpu: { profile: 'L40S-12Q' } } }), expect: ['spec.carving', 'vgpu is only allowed when spec.carving.mode is SRIOV'] },
  { name: 'vgpu on a NIC pool', doc: pool('bad-vgpu-2', { carving: { mode: 'SRIOV', count: 1, vgpu: { profile: 'L40S-12Q' } } }), expect: ['spec', 'vgpu is only for spec.class GPU'] },
  { name: 'vgpu with vfDriver vfio-pci', doc: pool('bad-vgpu-3', { class: 'GPU', carving: { mode: 'SRIOV', count: 1, vfDriver: 'vfio-pci', vgpu: { profile: 'L40S-12Q' } } }), expect: ['spec.carving', 'VFs stay on the nvidia driver'] },
  { name: 'vgpu through DRA', doc: pool('bad-vgpu-4', { class: 'GPU', frontEnd: 'DRA', carving: { mode: 'SRIOV', count: 1, vgpu: { profile: 'L40S-12Q' } } }), expect: ['spec', 'spec.carving.vgpu is served through frontEnd DevicePlugin; with frontEnd DRA use spec.carving.onDemand.vgpuProfiles'] },
  { name: 'vgpu without a profile', doc: pool('bad-vgpu-5', { class: 'GPU', carving: { mode: 'SRIOV', count: 1, vgpu: { heterogeneous: true } } }), expect: ['spec.carving.vgpu.profile', 'Required value'] },
  { name: 'pool name too long for a socket name', doc: pool(`a${'b'.repeat(45)}`, {}), expect: ['metadata.name', 'may not be more than 40'] },
  {
    name: 'node plan: Mediated pool without mdevType',
    doc: YAML.stringify({
      apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'bad-plan' },
      spec: { pools: [{ name: 'p', resourceName: 'virtualio.dev/p', class: 'GPU', mode: 'Mediated', consumption: 'MediatedDevice', count: 1, devices: [{ pciAddress: '0000:08:00.0' }] }] },
    }),
    expect: ['spec.pools[0]', 'mdevType is required'],
  },
  {
    // Non-PCI mdev parents (/sys/class/mdev_bus names such as the mtty sample's) are for Mediated pools only.
    name: 'node plan: an SRIOV pool naming a device that is not a PCI function',
    doc: YAML.stringify({
      apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'bad-parent' },
      spec: { pools: [{ name: 'p', resourceName: 'virtualio.dev/p', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: 1, devices: [{ pciAddress: 'mtty' }] }] },
    }),
    expect: ['spec.pools[0]', 'only Mediated pools may name an mdev parent that is not a PCI function'],
  },
];

describe('invalid objects are rejected at admission', () => {
  test('there are at least 12 cases', () => {
    expect(invalid.length).toBeGreaterThanOrEqual(12);
  });

  test.each(invalid.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const r = await kubectl(['create', '--dry-run=server', '-f', '-'], { input: c.doc });
    expect(r.code).not.toBe(0);
    for (const s of c.expect) expect(r.stderr).toContain(s);
  });
});

describe('immutable fields', () => {
  beforeAll(async () => {
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: pool('immutable', { resourceName: 'virtualio.dev/immutable' }) });
  });

  test('class cannot change', async () => {
    const r = await kubectl(['patch', 'virtualiodevice', 'immutable', '--type=merge', '-p', '{"spec":{"class":"Storage","carving":{"mode":"Passthrough","count":null}}}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('spec.class is immutable');
  });

  test('resourceName cannot change', async () => {
    const r = await kubectl(['patch', 'virtualiodevice', 'immutable', '--type=merge', '-p', '{"spec":{"resourceName":"virtualio.dev/other"}}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('spec.resourceName is immutable');
  });

  test('other fields can change', async () => {
    await kubectlOk(['patch', 'virtualiodevice', 'immutable', '--type=merge', '-p', '{"spec":{"carving":{"count":4}}}']);
    const obj = JSON.parse(await kubectlOk(['get', 'virtualiodevice', 'immutable', '-o', 'json']));
    expect(obj.spec.carving.count).toBe(4);
    expect(obj.metadata.generation).toBe(2);
  });
});

test('printer columns show through kubectl get', async () => {
  await kubectlOk(['patch', 'virtualiodevice', 'a16-vgpu', '--subresource=status', '--type=merge', '-p', JSON.stringify({
    status: {
      resourceName: 'virtualio.dev/a16-vgpu', nodes: 2, capacity: 8, allocatable: 8, allocated: 3,
      conditions: [{ type: 'Ready', status: 'True', reason: 'AllNodesReady', message: 'ok', lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') }],
    },
  })]);
  const out = await kubectlOk(['get', 'viod', 'a16-vgpu']);
  const [header, row] = out.trim().split('\n');
  expect(header!.split(/\s+/)).toEqual(['NAME', 'CLASS', 'RESOURCE', 'MODE', 'NODES', 'CAPACITY', 'ALLOCATED', 'READY', 'AGE']);
  expect(row!.split(/\s+/).slice(0, 8)).toEqual(['a16-vgpu', 'GPU', 'virtualio.dev/a16-vgpu', 'Mediated', '2', '8', '3', 'True']);

  await kubectlOk(['patch', 'virtualionode', 'worker-1', '--subresource=status', '--type=merge', '-p', JSON.stringify({
    status: { summary: { pools: 2, devices: 40, slices: 12, healthy: 11, allocated: 5 } },
  })]);
  const nodes = await kubectlOk(['get', 'vionode', 'worker-1']);
  const [nh, nr] = nodes.trim().split('\n');
  expect(nh!.split(/\s+/)).toEqual(['NAME', 'POOLS', 'DEVICES', 'SLICES', 'HEALTHY', 'ALLOCATED', 'CARVED', 'READY', 'AGE']);
  expect(nr!.split(/\s+/).slice(0, 6)).toEqual(['worker-1', '2', '40', '12', '11', '5']);
});
