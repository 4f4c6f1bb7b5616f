// The front-end field against a real kube-apiserver: DevicePlugin is the default, DRA is accepted for
// every mode KubeVirt can consume through a claim, and nonsense (NPIV through DRA, an unknown front
// end) is rejected at admission with a message that names the field. On-demand mediated pools
// (carving.onDemand) are accepted with DRA only, without mdevType/count, and refused otherwise; so
// are on-demand vGPU profile pools (carving.onDemand.vgpuProfiles: mode SRIOV, class GPU, nvidia)
// and on-demand NVMe queue pools (carving.onDemand.nvmeQueues: mode SRIOV with count, class Storage).
import YAML from 'yaml';
import { installCrds, kubectl, kubectlOk } from '../support/cluster.js';

function pool(name: string, spec: Record<string, unknown>): string {
  return YAML.stringify({
    apiVersion: 'virtualio.dev/v1alpha1',
    kind: 'VirtualIODevice',
    metadata: { name },
    spec: { class: 'NIC', deviceSelector: { vendorIDs: ['8086'] }, carving: { mode: 'SRIOV', count: 8 }, ...spec },
  });
}

function nodePlan(name: string, pool: Record<string, unknown>): string {
  return YAML.stringify({
    apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name },
    spec: { pools: [{ name: 'p', resourceName: 'virtualio.dev/p', class: 'NIC', mode: 'SRIOV', consumption: 'HostDevice', count: 1, devices: [{ pciAddress: '0000:81:00.0' }], ...pool }] },
  });
}

beforeAll(async () => {
  await installCrds();
});

afterAll(async () => {
  await kubectl(['delete', 'virtualiodevice', 'dra-default', 'dra-vf', 'dra-vgpu', 'dra-nvme', 'dra-ondemand', 'dra-ondemand-vgpu', 'dra-ondemand-nvme', '--ignore-not-found']);
});

test('frontEnd defaults to DevicePlugin', async () => {
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: pool('dra-default', {}) });
  const obj = JSON.parse(await kubectlOk(['get', 'virtualiodevice', 'dra-default', '-o', 'json']));
  expect(obj.spec.frontEnd).toBe('DevicePlugin');
});

test.each([
  ['dra-vf', { frontEnd: 'DRA' }],
  ['dra-vgpu', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } }],
  ['dra-ondemand', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', onDemand: { mdevTypes: ['nvidia-745', 'NVIDIA_A16-4Q'] } } }],
  ['dra-ondemand-vgpu', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q', 'NVIDIA L40S-24Q', '1156'], heterogeneous: true } } }],
  ['dra-nvme', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'Passthrough' } }],
  ['dra-ondemand-nvme', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'SRIOV', count: 4, onDemand: { nvmeQueues: [2, 4, 8] } } }],
])('DRA is accepted for %s', async (name, spec) => {
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: pool(name, spec) });
  const obj = JSON.parse(await kubectlOk(['get', 'virtualiodevice', name, '-o', 'json']));
  expect(obj.spec.frontEnd).toBe('DRA');
});

test('kubectl get -o wide shows the front end', async () => {
  const out = await kubectlOk(['get', 'viod', 'dra-vgpu', 'dra-default', '-o', 'wide']);
  const [header, ...rows] = out.trim().split('\n');
  // Columns without a status value are blank, so cut at the header's offset instead of splitting.
  const at = header!.indexOf('FRONTEND');
  expect(at).toBeGreaterThan(0);
  expect(rows.map((r) => [r.split(/\s+/)[0], r.slice(at).split(/\s+/)[0]]).sort()).toEqual([['dra-default', 'DevicePlugin'], ['dra-vgpu', 'DRA']]);
});

test.each([
  ['NPIV through DRA', pool('bad-dra-npiv', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'NPIV', count: 2, wwnPrefix: 'c05076' } }), ['spec', 'frontEnd DRA cannot serve spec.carving.mode NPIV']],
  ['unknown front end', pool('bad-dra-fe', { frontEnd: 'CSI' }), ['spec.frontEnd', 'Unsupported value: "CSI"']],
  ['node plan: NPIV pool with DRA', nodePlan('bad-dra-plan', { class: 'Storage', mode: 'NPIV', wwnPrefix: 'c05076', frontEnd: 'DRA' }), ['spec.pools[0]', 'NPIV pools cannot use the DRA front end']],
  ['node plan: unknown front end', nodePlan('bad-dra-plan2', { frontEnd: 'Both' }), ['spec.pools[0].frontEnd', 'Unsupported value: "Both"']],
  ['onDemand without DRA', pool('bad-od-fe', { class: 'GPU', carving: { mode: 'Mediated', onDemand: { mdevTypes: ['nvidia-745'] } } }), ['spec.carving.onDemand needs spec.frontEnd DRA']],
  ['onDemand with mdevType and count', pool('bad-od-count', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-745', onDemand: { mdevTypes: ['nvidia-745'] } } }), ['spec.carving.onDemand replaces mdevType and count']],
  ['onDemand for SR-IOV', pool('bad-od-sriov', { frontEnd: 'DRA', carving: { mode: 'SRIOV', count: 4, onDemand: { mdevTypes: ['nvidia-745'] } } }), ['spec.carving.onDemand.mdevTypes is only allowed when spec.carving.mode is Mediated']],
  ['vgpuProfiles on a Mediated pool', pool('bad-odv-mode', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['spec.carving.onDemand.vgpuProfiles is only allowed when spec.carving.mode is SRIOV']],
  ['vgpuProfiles and mdevTypes', pool('bad-odv-both', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q'], mdevTypes: ['nvidia-745'] } } }), ['spec.carving.onDemand needs exactly one of mdevTypes (mode Mediated), vgpuProfiles (mode SRIOV, GPU) and nvmeQueues (mode SRIOV, Storage)']],
  ['vgpuProfiles on a NIC pool', pool('bad-odv-nic', { frontEnd: 'DRA', carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['spec.carving.onDemand.vgpuProfiles is only for spec.class GPU']],
  ['vgpuProfiles with vgpu and count', pool('bad-odv-vgpu', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', count: 2, vgpu: { profile: 'L40S-12Q' }, onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['spec.carving.onDemand.vgpuProfiles replaces spec.carving.vgpu', 'spec.carving.onDemand replaces mdevType and count']],
  ['vgpuProfiles on vfio-pci', pool('bad-odv-drv', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', vfDriver: 'vfio-pci', onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['the VFs stay on the nvidia driver']],
  ['vgpuProfiles without DRA', pool('bad-odv-fe', { class: 'GPU', carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['spec.carving.onDemand needs spec.frontEnd DRA']],
  ['vgpuProfiles as a mediated device', pool('bad-odv-cons', { frontEnd: 'DRA', class: 'GPU', kubevirt: { consumption: 'MediatedDevice' }, carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: ['L40S-12Q'] } } }), ['consumed as spec.kubevirt.consumption HostDevice']],
  ['heterogeneous with mdevTypes', pool('bad-odv-het', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', onDemand: { mdevTypes: ['nvidia-745'], heterogeneous: true } } }), ['spec.carving.onDemand.heterogeneous applies only to vgpuProfiles']],
  ['vgpuProfiles without profiles', pool('bad-odv-empty', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', onDemand: { vgpuProfiles: [] } } }), ['spec.carving.onDemand.vgpuProfiles']],
  ['node plan: vgpuProfiles on a Mediated pool', nodePlan('bad-odv-plan', { class: 'GPU', mode: 'Mediated', count: undefined, frontEnd: 'DRA', onDemand: { vgpuProfiles: ['L40S-12Q'] } }), ['onDemand needs frontEnd DRA and exactly one of mdevTypes (mode Mediated), vgpuProfiles and nvmeQueues (mode SRIOV)']],
  ['nvmeQueues without count', pool('bad-odn-count', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'SRIOV', onDemand: { nvmeQueues: [4] } } }), ['spec.carving.onDemand.nvmeQueues needs spec.carving.mode SRIOV and spec.carving.count']],
  ['nvmeQueues on a GPU pool', pool('bad-odn-gpu', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'SRIOV', count: 2, onDemand: { nvmeQueues: [4] } } }), ['spec.carving.onDemand.nvmeQueues is only for spec.class Storage']],
  ['nvmeQueues on a Mediated pool', pool('bad-odn-mode', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'Mediated', onDemand: { nvmeQueues: [4] } } }), ['spec.carving.onDemand.nvmeQueues needs spec.carving.mode SRIOV']],
  ['nvmeQueues of 1', pool('bad-odn-one', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'SRIOV', count: 2, onDemand: { nvmeQueues: [1, 4] } } }), ['spec.carving.onDemand.nvmeQueues[0]', 'greater than or equal to 2']],
  ['nvmeQueues and mdevTypes', pool('bad-odn-both', { frontEnd: 'DRA', class: 'Storage', carving: { mode: 'SRIOV', count: 2, onDemand: { nvmeQueues: [4], mdevTypes: ['nvidia-745'] } } }), ['spec.carving.onDemand needs exactly one of']],
  ['nvmeQueues without DRA', pool('bad-odn-fe', { class: 'Storage', carving: { mode: 'SRIOV', count: 2, onDemand: { nvmeQueues: [4] } } }), ['spec.carving.onDemand needs spec.frontEnd DRA']],
  ['onDemand without types', pool('bad-od-empty', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', onDemand: { mdevTypes: [] } } }), ['spec.carving.onDemand.mdevTypes']],
  ['Mediated with neither mdevType nor onDemand', pool('bad-od-none', { frontEnd: 'DRA', class: 'GPU', carving: { mode: 'Mediated', count: 1 } }), ['spec.carving.mdevType is required when spec.carving.mode is Mediated (or spec.carving.onDemand']],
  ['node plan: onDemand without DRA', nodePlan('bad-od-plan', { class: 'GPU', mode: 'Mediated', count: undefined, onDemand: { mdevTypes: ['nvidia-745'] } }), ['onDemand needs frontEnd DRA']],
])('rejected at admission: %s', async (_name, doc, want) => {
  const r = await kubectl(['create', '--dry-run=server', '-f', '-'], { input: doc as string });
  expect(r.code).not.toBe(0);
  for (const s of want as string[]) expect(r.stderr).toContain(s);
});

test('switching an existing DRA pool to NPIV is rejected too', async () => {
  const r2 = await kubectl(['patch', 'virtualiodevice', 'dra-nvme', '--type=merge', '-p', '{"spec":{"carving":{"mode":"NPIV","count":2,"wwnPrefix":"c05076"}}}']);
  expect(r2.code).not.toBe(0);
  expect(r2.stderr).toContain('frontEnd DRA cannot serve spec.carving.mode NPIV');
});
