// The Helm chart against the real kube-apiserver: lint is clean (Helm 3 and Helm 4), rendering is
// deterministic and GitOps-safe, bad values fail with the schema's message, `helm install` creates every
// object it renders (no kubelet here: pods never run, so objects are asserted, not pods), the workloads
// have the security settings and host paths the design asks for, and the RBAC of the operator and the
// agent is exactly the least-privilege matrix below (`kubectl auth can-i --as=<service account>`).
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { jest } from '@jest/globals';
import { eventually, installCrds, kubectl, kubectlOk } from '../support/cluster.js';
import {
  CHART_DIR, ensureHelm4, ensureNamespace, helm, helmOk, kubevirtCrdDir, only, parseObjects, renderChart, tokenFor, WITHOUT_CRDS, type KubeObject,
} from './chart-support.js';
import { waitCrdsEstablished } from '../support/crd-wait.js';

jest.setTimeout(180_000);

const run = promisify(execFile);
const NS = 'vio-chart';
const RELEASE = 'vio-chart';
const OPERATOR_SA = `${RELEASE}-virtualio-operator`;
const AGENT_SA = `${RELEASE}-virtualio-agent`;

/* eslint-disable @typescript-eslint/no-explicit-any -- rendered manifests are plain JSON trees */
type Any = any;

const ALL_FEATURES = [
  'cdi.enabled=true', 'kubevirt.managePermittedHostDevices=true', 'serviceMonitor.enabled=true', 'agent.privileged=true',
  'kubevirt.extraPermittedHostDevices.pciHostDevices[0].pciVendorSelector=10de:2236',
  'kubevirt.extraPermittedHostDevices.pciHostDevices[0].resourceName=nvidia.com/A10',
  'agent.seLinuxOptions.type=spc_t', 'agent.nodeSelector.virtualio\\.dev/agent=enabled',
  'agent.tolerations[0].key=nvidia.com/gpu', 'agent.tolerations[0].operator=Exists', 'agent.tolerations[0].effect=NoSchedule',
  'image.digest=sha256:' + 'a'.repeat(64),
];

function podSpec(o: KubeObject): Any {
  return (o as Any).spec.template.spec;
}

describe('lint and render', () => {
  test.each([
    ['defaults', [] as string[]],
    ['every feature on', ALL_FEATURES],
  ])('helm 3 lint --strict is clean with %s', async (_name, set) => {
    const r = await helm(['lint', '--strict', CHART_DIR, ...set.flatMap((s) => ['--set', s])]);
    expect(r.stderr).toBe('');
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(r.code).toBe(0);
  });

  test('helm 4 lints and renders the same objects as helm 3', async () => {
    const helm4 = ensureHelm4();
    expect((await helmOk(['version', '--short'], { binary: helm4 })).trim()).toMatch(/^v4\./);
    const lint = await helm(['lint', '--strict', CHART_DIR], { binary: helm4 });
    expect(lint.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(lint.code).toBe(0);
    const args = ['template', 'same', CHART_DIR, '--namespace', NS];
    const h3 = parseObjects(await helmOk(args));
    const h4 = parseObjects(await helmOk(args, { binary: helm4 }));
    expect(h4).toEqual(h3);
  });

  test('rendering is deterministic and uses no cluster lookups or random values (Argo CD, Flux)', async () => {
    const a = await helmOk(['template', 'x', CHART_DIR, '--namespace', NS, ...ALL_FEATURES.flatMap((s) => ['--set', s])]);
    const b = await helmOk(['template', 'x', CHART_DIR, '--namespace', NS, ...ALL_FEATURES.flatMap((s) => ['--set', s])]);
    expect(a).toBe(b);
    const templates = join(CHART_DIR, 'templates');
    const files = readdirSync(templates, { recursive: true, withFileTypes: true }).filter((d) => d.isFile());
    for (const f of files) {
      // Template actions only ({{ ... }}), without template comments ({{/* ... */}}).
      const text = (readFileSync(join(f.parentPath, f.name), 'utf8').match(/\{\{(?!-?\s*\/\*)[\s\S]*?\}\}/g) ?? []).join('\n');
      expect({ file: f.name, hits: text.match(/\b(lookup|randAlphaNum|randAlpha|randNumeric|randAscii|randBytes|uuidv4|genCA|genPrivateKey|genSelfSignedCert|genSignedCert|now)\b/g) })
        .toEqual({ file: f.name, hits: null });
    }
  });

  test('the chart renders the CRDs of crds/ unchanged but for the keep annotations, and none with crds.install=false', async () => {
    const rendered = (await renderChart('r', NS)).filter((o) => o.kind === 'CustomResourceDefinition');
    const files = readdirSync(join(CHART_DIR, '..', '..', 'crds')).filter((x) => x.endsWith('.yaml')).sort();
    expect(rendered.map((o) => o.metadata.name).sort()).toEqual(files.map((f) => parseObjects(readFileSync(join(CHART_DIR, '..', '..', 'crds', f), 'utf8'))[0]!.metadata.name).sort());
    for (const crd of rendered) {
      const { annotations, ...metadata } = crd.metadata;
      expect(annotations).toEqual({
        'helm.sh/resource-policy': 'keep',
        'argocd.argoproj.io/sync-options': 'ServerSideApply=true,Prune=false,Delete=false',
      });
      const source = files.map((f) => parseObjects(readFileSync(join(CHART_DIR, '..', '..', 'crds', f), 'utf8'))[0]!).find((o) => o.metadata.name === crd.metadata.name);
      expect({ ...crd, metadata }).toEqual(source);
    }
    expect((await renderChart('r', NS, ['crds.install=false'])).filter((o) => o.kind === 'CustomResourceDefinition')).toEqual([]);
  });

  test('optional objects: ServiceMonitors only on request, kubevirts patch only when the operator owns permittedHostDevices', async () => {
    const plain = await renderChart('r', NS);
    expect(plain.filter((o) => o.kind === 'ServiceMonitor')).toEqual([]);
    const plainRole = only(plain, 'ClusterRole', '-operator') as Any;
    expect(plainRole.rules.find((r: Any) => r.apiGroups.includes('kubevirt.io')).verbs).toEqual(['get', 'list', 'watch']);

    const all = await renderChart('r', NS, ALL_FEATURES);
    const monitors = all.filter((o) => o.kind === 'ServiceMonitor') as Any[];
    expect(monitors.map((m) => m.apiVersion)).toEqual(['monitoring.coreos.com/v1', 'monitoring.coreos.com/v1']);
    // Each ServiceMonitor selects exactly one of the chart's metrics Services, on its named port.
    const services = all.filter((o) => o.kind === 'Service') as Any[];
    for (const m of monitors) {
      const matching = services.filter((s) => Object.entries(m.spec.selector.matchLabels).every(([k, v]) => s.metadata.labels[k] === v));
      expect(matching).toHaveLength(1);
      expect(matching[0].spec.ports.map((p: Any) => p.name)).toContain(m.spec.endpoints[0].port);
    }
    const role = only(all, 'ClusterRole', '-operator') as Any;
    expect(role.rules.find((r: Any) => r.apiGroups.includes('kubevirt.io')).verbs).toEqual(['get', 'list', 'watch', 'patch']);
    const cm = only(all, 'ConfigMap', '-extra-permitted') as Any;
    expect(cm.data['extra-permitted-host-devices.yaml']).toContain('nvidia.com/A10');
    const op = podSpec(only(all, 'Deployment'));
    expect(op.containers[0].args).toContain('--extra-permitted-host-devices=/etc/virtualio/extra-permitted-host-devices.yaml');
  });
});

describe('values schema', () => {
  test.each([
    ['operator.replicas=-1', "at '/operator/replicas': minimum"],
    ['logLevel=loud', "at '/logLevel': value must be one of"],
    ['agent.hostPaths.sys=sys', "at '/agent/hostPaths/sys': 'sys' does not match pattern"],
    ['agent.nodeSelectr.role=gpu', "at '/agent': additional properties 'nodeSelectr' not allowed"],
    ['image.digest=sha1:abc', "at '/image/digest'"],
    ['admissionPolicy.validationActions={Block}', "at '/admissionPolicy/validationActions/0': value must be one of 'Deny', 'Warn', 'Audit'"],
    ['agent.rescanInterval=soon', "at '/agent/rescanInterval'"],
    ['metricsPort=80', "at '/metricsPort': minimum"],
    ['agent.devicePluginRegistration=grpc', "at '/agent/devicePluginRegistration': value must be one of 'auto', 'plugin-watcher', 'kubelet-sock'"],
    ['agent.dra.kubeletDir=/var/lib/kubelet', "at '/agent/dra': additional properties 'kubeletDir' not allowed"],
  ])('helm install rejects %s with the schema message', async (set, message) => {
    const r = await helm(['install', 'bad-values', CHART_DIR, '--namespace', NS, '--dry-run=server', '--set', set]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("values don't meet the specifications of the schema(s)");
    expect(r.stderr).toContain(message);
  });

  test.each([
    [['operator.leaderElection.enabled=false'], 'operator.leaderElection.enabled=false needs operator.replicas <= 1'],
    [['kubevirt.extraPermittedHostDevices.mediatedDevices[0].mdevNameSelector=NVIDIA_A16-4Q', 'kubevirt.extraPermittedHostDevices.mediatedDevices[0].resourceName=x/y'],
      'kubevirt.extraPermittedHostDevices needs kubevirt.managePermittedHostDevices=true'],
  ])('combinations the schema cannot express fail with a message: %s', async (set, message) => {
    const r = await helm(['install', 'bad-values', CHART_DIR, '--namespace', NS, '--dry-run=server', ...set.flatMap((s) => ['--set', s])]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(message);
  });
});

describe('workload settings', () => {
  let objs: KubeObject[];
  beforeAll(async () => {
    objs = await renderChart(RELEASE, NS);
  });

  test('the agent mounts only the host directories it uses, never a socket', () => {
    const spec = podSpec(only(objs, 'DaemonSet'));
    const volumes = Object.fromEntries(spec.volumes.map((v: Any) => [v.name, v.hostPath ?? v.emptyDir]));
    expect(volumes).toEqual({
      sys: { path: '/sys', type: 'Directory' },
      'dev-vfio': { path: '/dev/vfio', type: 'DirectoryOrCreate' },
      'device-plugins': { path: '/var/lib/kubelet/device-plugins', type: 'Directory' },
      'pod-resources': { path: '/var/lib/kubelet/pod-resources', type: 'Directory' },
      devinfo: { path: '/var/run/k8s.cni.cncf.io/devinfo/dp', type: 'DirectoryOrCreate' },
      state: { path: '/var/lib/virtualio', type: 'DirectoryOrCreate' },
      'kubelet-plugin': { path: '/var/lib/kubelet/plugins/virtualio.dev', type: 'DirectoryOrCreate' },
      'kubelet-registry': { path: '/var/lib/kubelet/plugins_registry', type: 'DirectoryOrCreate' },
      tmp: { sizeLimit: '16Mi' },
    });
    const c = spec.containers[0];
    const mounts = Object.fromEntries(c.volumeMounts.map((m: Any) => [m.name, `${m.mountPath}${m.readOnly ? ' ro' : ''}`]));
    expect(mounts).toEqual({
      sys: '/host/sys', 'dev-vfio': '/host/dev/vfio ro', 'device-plugins': '/var/lib/kubelet/device-plugins',
      'pod-resources': '/var/lib/kubelet/pod-resources ro', devinfo: '/var/run/k8s.cni.cncf.io/devinfo/dp', state: '/var/lib/virtualio', tmp: '/tmp',
      'kubelet-plugin': '/var/lib/kubelet/plugins/virtualio.dev', 'kubelet-registry': '/var/lib/kubelet/plugins_registry',
    });
    expect(c.args).toEqual(expect.arrayContaining([
      '/app/agent/main.js', '--sysfs-root=/host/sys', '--dev-root=/host/dev',
      '--plugin-dir=/var/lib/kubelet/device-plugins', '--pod-resources-socket=/var/lib/kubelet/pod-resources/kubelet.sock',
      '--devinfo-dir=/var/run/k8s.cni.cncf.io/devinfo/dp', '--state-dir=/var/lib/virtualio', '--cdi=false', '--metrics-address=0.0.0.0:8080',
      '--kubelet-dir=/var/lib/kubelet', '--device-plugin-registration=auto',
    ]));
    expect(c.args).not.toContain('--dra');
    expect(c.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    // Upgrades: the new agent starts beside the old one, which hands the node over (docs/upgrade.md).
    expect(c.args).toContain('--handover=true');
    expect((only(objs, 'DaemonSet') as Any).spec.updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } });
    expect((only(objs, 'Deployment') as Any).spec.strategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } });
    expect(spec.hostNetwork).toBeUndefined();
    expect(spec.hostPID).toBeUndefined();
  });

  test('with cdi.enabled the agent also mounts the CDI spec directory', async () => {
    const spec = podSpec(only(await renderChart(RELEASE, NS, ['cdi.enabled=true']), 'DaemonSet'));
    expect(spec.volumes).toContainEqual({ name: 'cdi', hostPath: { path: '/var/run/cdi', type: 'DirectoryOrCreate' } });
    expect(spec.containers[0].volumeMounts).toContainEqual({ name: 'cdi', mountPath: '/var/run/cdi' });
    expect(spec.containers[0].args).toEqual(expect.arrayContaining(['--cdi=true', '--cdi-dir=/var/run/cdi']));
  });

  test('agent.hostPaths.kubelet moves the plugin folders (same path inside), devicePluginRegistration and agent.dra.enabled reach the flags', async () => {
    const spec = podSpec(only(await renderChart(RELEASE, NS, ['agent.hostPaths.kubelet=/data/kubelet', 'agent.devicePluginRegistration=kubelet-sock', 'agent.dra.enabled=true']), 'DaemonSet'));
    expect(spec.volumes).toEqual(expect.arrayContaining([
      { name: 'kubelet-plugin', hostPath: { path: '/data/kubelet/plugins/virtualio.dev', type: 'DirectoryOrCreate' } },
      { name: 'kubelet-registry', hostPath: { path: '/data/kubelet/plugins_registry', type: 'DirectoryOrCreate' } },
      { name: 'cdi', hostPath: { path: '/var/run/cdi', type: 'DirectoryOrCreate' } },
    ]));
    expect(spec.containers[0].volumeMounts).toEqual(expect.arrayContaining([
      { name: 'kubelet-plugin', mountPath: '/data/kubelet/plugins/virtualio.dev' },
      { name: 'kubelet-registry', mountPath: '/data/kubelet/plugins_registry' },
    ]));
    expect(spec.containers[0].args).toEqual(expect.arrayContaining(['--kubelet-dir=/data/kubelet', '--device-plugin-registration=kubelet-sock', '--dra', '--cdi-dir=/var/run/cdi']));
  });

  test('the agent runs as uid 0 with no capabilities, not privileged, read-only root, RuntimeDefault seccomp', () => {
    const spec = podSpec(only(objs, 'DaemonSet'));
    expect(spec.containers[0].securityContext).toEqual({
      privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] },
      runAsUser: 0, runAsGroup: 0, runAsNonRoot: false, readOnlyRootFilesystem: true, seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(spec.automountServiceAccountToken).toBe(true);
    expect(spec.priorityClassName).toBe('system-node-critical');
  });

  test('agent.dra.vfNetworkConfig (with DRA): host network and CAP_NET_ADMIN, nothing else; without DRA it changes nothing', async () => {
    const spec = podSpec(only(await renderChart(RELEASE, NS, ['agent.dra.enabled=true', 'agent.dra.vfNetworkConfig=true']), 'DaemonSet'));
    expect(spec.hostNetwork).toBe(true);
    expect(spec.dnsPolicy).toBe('ClusterFirstWithHostNet');
    expect(spec.hostPID).toBeUndefined();
    expect(spec.containers[0].securityContext).toEqual({
      privileged: false, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] },
      runAsUser: 0, runAsGroup: 0, runAsNonRoot: false, readOnlyRootFilesystem: true, seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(spec.containers[0].args).toEqual(expect.arrayContaining(['--dra', '--vf-net-config']));
    const withoutDra = podSpec(only(await renderChart(RELEASE, NS, ['agent.dra.vfNetworkConfig=true']), 'DaemonSet'));
    expect(withoutDra.hostNetwork).toBeUndefined();
    expect(withoutDra.containers[0].securityContext.capabilities).toEqual({ drop: ['ALL'] });
    expect(withoutDra.containers[0].args).not.toContain('--vf-net-config');
    const draOnly = podSpec(only(await renderChart(RELEASE, NS, ['agent.dra.enabled=true']), 'DaemonSet'));
    expect(draOnly.hostNetwork).toBeUndefined();
    expect(draOnly.containers[0].securityContext.capabilities).toEqual({ drop: ['ALL'] });
  });

  test('agent.privileged switches to a privileged container (documented escape hatch)', async () => {
    const sc = podSpec(only(await renderChart(RELEASE, NS, ['agent.privileged=true']), 'DaemonSet')).containers[0].securityContext;
    expect(sc.privileged).toBe(true);
    expect(sc.allowPrivilegeEscalation).toBe(true);
    expect(sc.readOnlyRootFilesystem).toBe(true);
  });

  test('the operator: 2 replicas, leader election, probes on 8080, resources, restricted security context', () => {
    const dep = only(objs, 'Deployment') as Any;
    expect(dep.spec.replicas).toBe(2);
    const c = dep.spec.template.spec.containers[0];
    expect(c.args).toEqual(expect.arrayContaining(['/app/operator/main.js', '--leader-elect=true', '--lease-duration=15s',
      '--manage-permitted-host-devices=false', '--metrics-address=0.0.0.0:8080']));
    expect(c.env).toEqual(expect.arrayContaining([
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    ]));
    expect(c.ports).toEqual([{ name: 'metrics', containerPort: 8080, protocol: 'TCP' }]);
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'metrics' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'metrics' });
    expect(c.resources.requests).toEqual({ cpu: '50m', memory: '128Mi' });
    expect(c.resources.limits.memory).toBe('512Mi');
    expect(c.securityContext).toEqual({
      runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(dep.spec.template.spec.volumes.filter((v: Any) => v.hostPath)).toEqual([]);
    const pdb = only(objs, 'PodDisruptionBudget') as Any;
    expect(pdb.spec.minAvailable).toBe(1);
    expect(pdb.spec.selector.matchLabels).toEqual(dep.spec.selector.matchLabels);
    for (const [k, v] of Object.entries(dep.spec.selector.matchLabels)) expect(dep.spec.template.metadata.labels[k]).toBe(v);
  });

  test('only the operator and agent pods mount an API token', () => {
    for (const sa of objs.filter((o) => o.kind === 'ServiceAccount')) expect((sa as Any).automountServiceAccountToken).toBe(false);
  });

  test('a single operator replica gets no PodDisruptionBudget (it would block every drain)', async () => {
    const single = await renderChart(RELEASE, NS, ['operator.replicas=1']);
    expect(single.filter((o) => o.kind === 'PodDisruptionBudget')).toEqual([]);
  });
});

describe('helm install on the real API server', () => {
  let manifest: KubeObject[];
  beforeAll(async () => {
    await ensureNamespace(NS);
    // KubeVirt's own CRD (generated from its Go modules), so can-i resolves kubevirts.kubevirt.io.
    await kubectlOk(['apply', '--server-side', '-f', join(kubevirtCrdDir(), 'kubevirts.kubevirt.io.yaml')]);
    // The shared API server: crds/ applied directly, the chart without them (see WITHOUT_CRDS).
    await installCrds();
    await helmOk(['upgrade', '--install', RELEASE, CHART_DIR, '--namespace', NS, ...WITHOUT_CRDS]);
    manifest = parseObjects(await helmOk(['get', 'manifest', RELEASE, '--namespace', NS]));
  });

  test('every rendered object exists, and the CRDs are Established', async () => {
    expect(manifest.map((o) => o.kind).sort()).toEqual([
      // ConfigMap: the Grafana dashboard (grafanaDashboard.enabled); no PrometheusRule without the monitoring API.
      'ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Deployment', 'PodDisruptionBudget',
      'Role', 'Role', 'RoleBinding', 'RoleBinding', 'Service', 'Service', 'ServiceAccount', 'ServiceAccount', 'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding',
      'ValidatingAdmissionPolicyBinding', 'ValidatingAdmissionPolicyBinding', 'ValidatingAdmissionPolicyBinding',
    ]);
    for (const o of manifest) {
      const ns = o.metadata.namespace ? ['-n', o.metadata.namespace] : [];
      const group = o.apiVersion.includes('/') ? `.${o.apiVersion.split('/')[0]}` : '';
      const got = JSON.parse(await kubectlOk(['get', `${o.kind.toLowerCase()}${group}`, o.metadata.name, ...ns, '-o', 'json']));
      expect(got.metadata.labels['app.kubernetes.io/instance']).toBe(RELEASE);
    }
    await waitCrdsEstablished(kubectlOk, ['virtualiodevices.virtualio.dev', 'virtualionodes.virtualio.dev'], 60);
  });

  test('the release notes tell the admin what to do next', async () => {
    const notes = await helmOk(['get', 'notes', RELEASE, '--namespace', NS]);
    for (const text of ['vfio-pci', 'kubectl get vionode', 'KubeVirtPermitted', 'HostDevices feature gate', `helm test ${RELEASE}`]) {
      expect(notes).toContain(text);
    }
  });

  // [verb, resource (or resource/name), subresource, namespace ('' = cluster scope), allowed]
  type Row = [string, string, string, string, boolean];
  const operatorMatrix: Row[] = [
    ['get', 'virtualiodevices.virtualio.dev', '', '', true],
    ['watch', 'virtualiodevices.virtualio.dev', '', '', true],
    ['patch', 'virtualiodevices.virtualio.dev', 'status', '', true],
    ['update', 'virtualiodevices.virtualio.dev', 'finalizers', '', true],
    ['create', 'virtualiodevices.virtualio.dev', '', '', false],
    ['delete', 'virtualiodevices.virtualio.dev', '', '', false],
    ['create', 'virtualionodes.virtualio.dev', '', '', true],
    ['patch', 'virtualionodes.virtualio.dev', '', '', true],
    ['delete', 'virtualionodes.virtualio.dev', '', '', true],
    ['patch', 'virtualionodes.virtualio.dev', 'status', '', false],
    ['watch', 'virtualionodeacks.virtualio.dev', '', '', true],
    ['patch', 'virtualionodeacks.virtualio.dev', '', '', false],
    ['list', 'nodes', '', '', true],
    ['watch', 'nodes', '', '', true],
    ['patch', 'nodes', '', '', false],
    ['get', 'customresourcedefinitions.apiextensions.k8s.io', '', '', true],
    ['create', 'customresourcedefinitions.apiextensions.k8s.io', '', '', false],
    ['get', 'kubevirts.kubevirt.io', '', 'kubevirt', true],
    ['patch', 'kubevirts.kubevirt.io', '', 'kubevirt', false],
    ['create', 'leases.coordination.k8s.io', '', NS, true],
    ['update', 'leases.coordination.k8s.io/virtualio-operator', '', NS, true],
    ['update', 'leases.coordination.k8s.io/someone-else', '', NS, false],
    ['create', 'leases.coordination.k8s.io', '', 'default', false],
    ['create', 'events', '', 'default', true],
    ['create', 'events.events.k8s.io', '', 'default', true],
    ['update', 'events', '', 'default', true],
    ['list', 'events', '', 'default', false],
    ['create', 'events', '', NS, false],
    ['create', 'events', '', 'kube-system', false],
    ['get', 'pods', '', 'default', false],
    ['get', 'secrets', '', NS, false],
    ['list', 'secrets', '', 'kube-system', false],
    ['create', 'pods', '', NS, false],
    ['create', 'daemonsets.apps', '', NS, false],
    ['create', 'deviceclasses.resource.k8s.io', '', '', true],
    ['delete', 'deviceclasses.resource.k8s.io', '', '', true],
    ['list', 'deviceclasses.resource.k8s.io', '', '', true],
    ['watch', 'deviceclasses.resource.k8s.io', '', '', true],
    ['update', 'deviceclasses.resource.k8s.io', '', '', false],
    ['create', 'resourceslices.resource.k8s.io', '', '', false],
    ['create', 'validatingadmissionpolicies.admissionregistration.k8s.io', '', '', true],
    ['patch', 'validatingadmissionpolicybindings.admissionregistration.k8s.io', '', '', true],
    ['watch', 'validatingadmissionpolicybindings.admissionregistration.k8s.io', '', '', true],
    ['update', 'validatingadmissionpolicies.admissionregistration.k8s.io', '', '', false],
    ['create', 'validatingwebhookconfigurations.admissionregistration.k8s.io', '', '', false],
  ];
  const agentMatrix: Row[] = [
    ['get', 'virtualionodes.virtualio.dev', '', '', true],
    ['list', 'virtualionodes.virtualio.dev', '', '', true],
    ['watch', 'virtualionodes.virtualio.dev', '', '', true],
    ['create', 'virtualionodes.virtualio.dev', '', '', true],
    ['patch', 'virtualionodes.virtualio.dev', 'status', '', true],
    ['patch', 'virtualionodes.virtualio.dev', '', '', false],
    ['update', 'virtualionodes.virtualio.dev', '', '', false],
    ['delete', 'virtualionodes.virtualio.dev', '', '', false],
    ['update', 'virtualionodes.virtualio.dev', 'status', '', false],
    // Local planning (agent.localPlan, the chart's default): the pools, its Node's labels, its VirtualIONodeAck.
    ['get', 'virtualiodevices.virtualio.dev', '', '', true],
    ['list', 'virtualiodevices.virtualio.dev', '', '', true],
    ['watch', 'virtualiodevices.virtualio.dev', '', '', true],
    ['update', 'virtualiodevices.virtualio.dev', '', '', false],
    ['delete', 'virtualiodevices.virtualio.dev', '', '', false],
    ['create', 'virtualionodeacks.virtualio.dev', '', '', true],
    ['patch', 'virtualionodeacks.virtualio.dev', '', '', true],
    ['delete', 'virtualionodeacks.virtualio.dev', '', '', false],
    ['get', 'nodes', '', '', true],
    ['list', 'nodes', '', '', true],
    ['watch', 'nodes', '', '', true],
    ['patch', 'nodes', '', '', false],
    ['get', 'pods', '', 'tenant-a', true],
    ['list', 'pods', '', 'tenant-a', false],
    ['get', 'secrets', '', NS, false],
    ['get', 'secrets', '', 'tenant-a', false],
    ['create', 'events', '', NS, false],
    ['get', 'kubevirts.kubevirt.io', '', 'kubevirt', false],
    ['create', 'resourceslices.resource.k8s.io', '', '', true],
    ['delete', 'resourceslices.resource.k8s.io', '', '', true],
    ['get', 'resourceclaims.resource.k8s.io', '', 'tenant-a', true],
    ['list', 'resourceclaims.resource.k8s.io', '', 'tenant-a', true],
    ['watch', 'resourceclaims.resource.k8s.io', '', '', true],
    ['update', 'resourceclaims.resource.k8s.io', 'status', 'tenant-a', false],
    // On-demand pools set their devices' binding conditions (what they may change is narrowed per
    // driver and node by the API server: policy-dra.test.ts).
    ['patch', 'resourceclaims.resource.k8s.io', 'status', 'tenant-a', true],
    ['create', 'deviceclasses.resource.k8s.io', '', '', false],
    ['create', 'validatingadmissionpolicies.admissionregistration.k8s.io', '', '', false],
  ];

  async function canI(sa: string, [verb, resource, sub, ns]: Row): Promise<boolean> {
    const args = ['auth', 'can-i', verb, resource, `--as=system:serviceaccount:${NS}:${sa}`,
      ...(sub ? [`--subresource=${sub}`] : []), ...(ns ? ['-n', ns] : [])];
    const r = await kubectl(args);
    const answer = r.stdout.trim();
    if (answer !== 'yes' && answer !== 'no') throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
    return answer === 'yes';
  }

  test.each(operatorMatrix)('operator can-i %s %s (subresource "%s", namespace "%s") = %s', async (...row) => {
    await eventually('RBAC in force', async () => (await canI(OPERATOR_SA, ['list', 'nodes', '', '', true]) ? true : undefined));
    expect(await canI(OPERATOR_SA, row)).toBe(row[4]);
  });

  test.each(agentMatrix)('agent can-i %s %s (subresource "%s", namespace "%s") = %s', async (...row) => {
    await eventually('RBAC in force', async () => (await canI(AGENT_SA, ['get', 'nodes', '', '', true]) ? true : undefined));
    expect(await canI(AGENT_SA, row)).toBe(row[4]);
  });

  test('the helm test hook: its script passes against the real API server with the hook ServiceAccount, and fails when the operator is not ready', async () => {
    // No kubelet runs here, so `helm test` cannot run its Pod. The hook's own objects are applied
    // instead and its script is run with the hook ServiceAccount's token, exactly as in the Pod.
    const hooks = parseObjects(await helmOk(['template', RELEASE, CHART_DIR, '--namespace', NS, '--show-only', 'templates/tests/test-ready.yaml']));
    const pod = only(hooks, 'Pod') as Any;
    expect(pod.metadata.annotations['helm.sh/hook']).toBe('test');
    expect(pod.spec.containers[0].args).toEqual(['/etc/virtualio-test/helm-test.mjs']);
    const env = Object.fromEntries(pod.spec.containers[0].env.map((e: Any) => [e.name, e.value]));
    expect(env.VIO_READYZ_URL).toBe(`http://${RELEASE}-virtualio-operator-metrics.${NS}.svc:8080/readyz`);
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: hooks.filter((o) => o.kind !== 'Pod').map((o) => JSON.stringify(o)).join('\n') });
    const script = (only(hooks, 'ConfigMap') as Any).data['helm-test.mjs'] as string;
    expect(script).toBe(readFileSync(join(CHART_DIR, 'files/helm-test.mjs'), 'utf8'));

    const dir = mkdtempSync(join(tmpdir(), 'vio-helm-test-'));
    writeFileSync(join(dir, 'helm-test.mjs'), script);
    writeFileSync(join(dir, 'token'), await tokenFor(NS, pod.spec.serviceAccountName));
    // The operator's /readyz: a local stand-in (the operator itself does not run in this suite).
    let readyStatus = 200;
    const server: Server = createServer((req, res) => {
      res.statusCode = req.url === '/readyz' ? readyStatus : 404;
      res.end(readyStatus === 200 ? 'ok' : 'informers not synced');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const runScript = async (): Promise<{ code: number; out: string }> => {
      try {
        const { stdout } = await run(process.execPath, [join(dir, 'helm-test.mjs')], {
          env: {
            ...process.env, VIO_CRDS: env.VIO_CRDS, VIO_READYZ_URL: `http://127.0.0.1:${port}/readyz`,
            VIO_API_SERVER: process.env.VIO_APISERVER, VIO_TOKEN_FILE: join(dir, 'token'),
            VIO_CA_FILE: join(process.env.VIO_CP_DIR ?? '', 'ca.crt'), VIO_ATTEMPTS: '1', VIO_DELAY_MS: '0',
          },
        });
        return { code: 0, out: stdout };
      } catch (err) {
        const e = err as { code: number; stderr: string };
        return { code: e.code, out: e.stderr };
      }
    };
    try {
      const ok = await eventually('the hook RBAC to be in force', async () => {
        const r = await runScript();
        return r.code === 0 ? r : undefined;
      });
      expect(ok.out).toContain('virtualiodevices.virtualio.dev, virtualionodes.virtualio.dev Established; operator ready');
      readyStatus = 503;
      const bad = await runScript();
      expect(bad.code).toBe(1);
      expect(bad.out).toContain('/readyz: HTTP 503 informers not synced');
    } finally {
      server.close();
    }
    // The hook's ServiceAccount reads those two CRDs and nothing else.
    expect((await kubectl(['auth', 'can-i', 'get', 'customresourcedefinitions/kubevirts.kubevirt.io', `--as=system:serviceaccount:${NS}:${pod.spec.serviceAccountName}`])).stdout.trim()).toBe('no');
  });

  test('turning on kubevirt.managePermittedHostDevices grants patch on kubevirts and passes the flag', async () => {
    await helmOk(['upgrade', RELEASE, CHART_DIR, '--namespace', NS, '--reuse-values', '--set', 'kubevirt.managePermittedHostDevices=true']);
    await eventually('patch kubevirts allowed', async () => (await canI(OPERATOR_SA, ['patch', 'kubevirts.kubevirt.io', '', 'kubevirt', true]) ? true : undefined));
    const dep = JSON.parse(await kubectlOk(['-n', NS, 'get', 'deployment', `${RELEASE}-virtualio-operator`, '-o', 'json']));
    expect(dep.spec.template.spec.containers[0].args).toContain('--manage-permitted-host-devices=true');
  });
});
