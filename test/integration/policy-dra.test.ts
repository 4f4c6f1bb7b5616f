// The chart's DRA policies on the real kube-apiserver. ResourceSlices: an agent's pod-bound token may create,
// update and delete ResourceSlices of driver virtualio.dev on its own node only — never another
// node's, never another driver's, never by moving a slice — and RBAC lets it read claims but not
// write them. Tokens come from the TokenRequest API bound to Pods on real Node objects, so the API
// server itself adds authentication.kubernetes.io/node-name, as for an agent pod the kubelet started.
// VF network settings: opaque parameters of driver virtualio.dev in claims, claim templates and
// DeviceClasses are refused when malformed, with the message, for anyone; other drivers' are not read.
import { jest } from '@jest/globals';
import { eventually, installCrds, kubectl, kubectlOk } from '../support/cluster.js';
import { apiRequest, CHART_DIR, ensureNamespace, helmOk, tokenFor, WITHOUT_CRDS, type ApiResponse } from './chart-support.js';

jest.setTimeout(120_000);

const NS = 'vio-policy-dra';
const RELEASE = 'vio-pdra';
const AGENT_SA = `${RELEASE}-virtualio-agent`;
const NODE_A = 'pdra-node-a';
const NODE_B = 'pdra-node-b';
const SLICES = '/apis/resource.k8s.io/v1/resourceslices';
const tokens = { agentA: '', agentUnbound: '' };

function slice(name: string, node: string, driver = 'virtualio.dev'): Record<string, unknown> {
  return {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceSlice', metadata: { name },
    spec: { driver, nodeName: node, pool: { name: `${node}/nics`, generation: 1, resourceSliceCount: 1 }, devices: [{ name: 'vf-0000-81-02-0', attributes: { pool: { string: 'nics' } } }] },
  };
}

function expectPolicyDenial(res: ApiResponse, text: string): void {
  expect(res.status).toBe(403);
  expect(res.body.message).toContain(`ValidatingAdmissionPolicy '${RELEASE}-virtualio-resourceslice-writers'`);
  expect(res.body.message).toContain(text);
}

beforeAll(async () => {
  await ensureNamespace(NS);
  await installCrds();
  await helmOk(['upgrade', '--install', RELEASE, CHART_DIR, '--namespace', NS, ...WITHOUT_CRDS]);
  for (const node of [NODE_A, NODE_B]) {
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }) });
  }
  await kubectlOk(['-n', NS, 'apply', '--server-side', '-f', '-'], {
    input: JSON.stringify({
      apiVersion: 'v1', kind: 'Pod', metadata: { name: 'agent-a', namespace: NS },
      spec: { nodeName: NODE_A, serviceAccountName: AGENT_SA, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'virtualio:test' }] },
    }),
  });
  const uid = (await kubectlOk(['-n', NS, 'get', 'pod', 'agent-a', '-o', 'jsonpath={.metadata.uid}'])).trim();
  tokens.agentA = await tokenFor(NS, AGENT_SA, { name: 'agent-a', uid });
  tokens.agentUnbound = await tokenFor(NS, AGENT_SA);
  // The admin's slice on node B, for the agent to try to change.
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify(slice('pdra-b', NODE_B)) });
  await eventually('the ResourceSlice policy and RBAC to be in force', async () => {
    const r = await apiRequest(tokens.agentA, 'POST', `${SLICES}?dryRun=All`, slice('probe', NODE_B));
    return r.status === 403 && r.body.message?.includes('resourceslice-writers') ? true : undefined;
  }, 60_000);
});

afterAll(async () => {
  await kubectl(['delete', 'resourceslice', 'pdra-a', 'pdra-b', '--ignore-not-found']);
});

test("the agent creates, updates and deletes its own node's slices", async () => {
  const created = await apiRequest(tokens.agentA, 'POST', SLICES, slice('pdra-a', NODE_A));
  expect(created.status).toBe(201);
  const obj = created.body as { metadata: { resourceVersion: string } } & Record<string, unknown>;
  const next = slice('pdra-a', NODE_A);
  (next.metadata as Record<string, unknown>).resourceVersion = obj.metadata.resourceVersion;
  (next.spec as { pool: { generation: number } }).pool.generation = 2;
  expect((await apiRequest(tokens.agentA, 'PUT', `${SLICES}/pdra-a`, next)).status).toBe(200);
  expect((await apiRequest(tokens.agentA, 'DELETE', `${SLICES}/pdra-a?dryRun=All`)).status).toBe(200);
});

test("the agent may not create a slice for another node", async () => {
  expectPolicyDenial(await apiRequest(tokens.agentA, 'POST', SLICES, slice('pdra-x', NODE_B)), `the virtualio agent on node ${NODE_A} may only write ResourceSlices`);
});

test('the agent may not publish for another driver, even on its own node', async () => {
  expectPolicyDenial(await apiRequest(tokens.agentA, 'POST', SLICES, slice('pdra-y', NODE_A, 'gpu.example.com')), 'of driver virtualio.dev');
});

test("the agent may not delete or change another node's slice", async () => {
  expectPolicyDenial(await apiRequest(tokens.agentA, 'DELETE', `${SLICES}/pdra-b`), `spec.nodeName ${NODE_A}`);
  const b = JSON.parse(await kubectlOk(['get', 'resourceslice', 'pdra-b', '-o', 'json']));
  b.spec.devices = [];
  b.spec.pool.generation = 2;
  expectPolicyDenial(await apiRequest(tokens.agentA, 'PUT', `${SLICES}/pdra-b`, b), 'may only write ResourceSlices');
  // Moving a slice to its own node is not even valid: the API server keeps spec.nodeName immutable.
  b.spec.nodeName = NODE_A;
  const moved = await apiRequest(tokens.agentA, 'PUT', `${SLICES}/pdra-b`, b);
  expect(moved.status).toBe(422);
  expect(moved.body.message).toContain('immutable');
});

test('a token that names no node is refused', async () => {
  expectPolicyDenial(await apiRequest(tokens.agentUnbound, 'POST', `${SLICES}?dryRun=All`, slice('pdra-z', NODE_A)), 'names no node');
});

test('the agent reads claims but cannot write them (RBAC)', async () => {
  const r = await apiRequest(tokens.agentA, 'GET', '/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/none');
  expect(r.status).toBe(404);
  const w = await apiRequest(tokens.agentA, 'POST', '/apis/resource.k8s.io/v1/namespaces/default/resourceclaims?dryRun=All', { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'x' }, spec: {} });
  expect(w.status).toBe(403);
  expect(w.body.message).toContain('cannot create resource "resourceclaims"');
});

describe('claim status (on-demand pools: the Carved / CarveFailed binding conditions)', () => {
  // Kubernetes 1.36 authorizes status.devices per driver and node (KEP-4817); the chart grants the
  // agent only the associated-node verbs for driver virtualio.dev.
  const CLAIMS = '/apis/resource.k8s.io/v1/namespaces/default/resourceclaims';
  const condition = { type: 'virtualio.dev/Carved', status: 'True', reason: 'Carved', message: 'test', lastTransitionTime: '2026-01-01T00:00:00Z' };
  const apply = (name: string, node: string) => apiRequest(tokens.agentA, 'PATCH', `${CLAIMS}/${name}/status?fieldManager=virtualio-agent&force=true`, {
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: 'default' },
    status: { devices: [{ driver: 'virtualio.dev', pool: `${node}/a16`, device: 'mdev-1', conditions: [condition] }] },
  }, 'application/apply-patch+yaml');

  /** A claim the scheduler allocated on `node` (one device there; the allocation's node selector names it). */
  async function allocatedOn(name: string, node: string): Promise<void> {
    await kubectl(['delete', 'resourceclaim', name, '-n', 'default', '--ignore-not-found']);
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name, namespace: 'default' }, spec: { devices: { requests: [{ name: 'vgpu', exactly: { deviceClassName: 'x' } }] } } }) });
    await kubectlOk(['patch', 'resourceclaim', name, '-n', 'default', '--subresource=status', '--type=merge', '-p', JSON.stringify({
      status: { allocation: {
        devices: { results: [{ request: 'vgpu', driver: 'virtualio.dev', pool: `${node}/a16`, device: 'mdev-1' }] },
        nodeSelector: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }] },
      } },
    })]);
  }

  beforeAll(async () => {
    await allocatedOn('pdra-claim-a', NODE_A);
    await allocatedOn('pdra-claim-b', NODE_B);
  });
  afterAll(async () => {
    await kubectl(['delete', 'resourceclaim', 'pdra-claim-a', 'pdra-claim-b', '-n', 'default', '--ignore-not-found']);
  });

  test("the agent sets the condition of a device of a claim allocated on its node", async () => {
    const r = await apply('pdra-claim-a', NODE_A);
    expect([r.status, r.body.message]).toEqual([200, undefined]);
  });

  test("the agent may not touch a claim allocated on another node, nor the allocation of its own", async () => {
    const other = await apply('pdra-claim-b', NODE_B);
    expect(other.status).toBe(422);
    expect(other.body.message).toContain('changing status.devices requires resource="resourceclaims/driver"');
    const dealloc = await apiRequest(tokens.agentA, 'PATCH', `${CLAIMS}/pdra-claim-a/status`, { status: { allocation: null, devices: null } }, 'application/merge-patch+json');
    expect(dealloc.status).toBe(422);
    expect(dealloc.body.message).toContain('requires resource="resourceclaims/binding"');
  });
});

test('the admin is not affected by the policy', async () => {
  expect(await kubectlOk(['label', 'resourceslice', 'pdra-b', 'checked=yes'])).toContain('labeled');
});

describe('VF network settings in claims, templates and classes', () => {
  const params = (o: Record<string, unknown>) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VfNetworkConfig', ...o });
  const claim = (parameters: unknown, driver = 'virtualio.dev') => JSON.stringify({
    apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { name: 'vfcfg', namespace: NS },
    spec: { devices: { requests: [{ name: 'nic', exactly: { deviceClassName: 'nics.virtualio.dev' } }], config: [{ requests: ['nic'], opaque: { driver, parameters } }] } },
  });
  const create = (body: string) => kubectl(['create', '--dry-run=server', '-f', '-'], { input: body });

  beforeAll(async () => {
    await eventually('the VF settings policy to be in force', async () => ((await create(claim(params({ vlan: 5000 })))).code !== 0 ? true : undefined), 60_000);
  });

  test('a valid claim passes', async () => {
    const r = await create(claim(params({ mac: '02:00:5e:10:00:01', vlan: 100, qos: 3, vlanProtocol: '802.1ad', trust: false, spoofCheck: true, minTxRateMbps: 0, maxTxRateMbps: 1000 })));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  test.each([
    ['another kind', { apiVersion: 'virtualio.dev/v1alpha1', kind: 'NicConfig' }, 'must have apiVersion virtualio.dev/v1alpha1 and kind VfNetworkConfig'],
    ['a typo', params({ vlanid: 100 }), 'knows only the fields mac, vlan'],
    ['a multicast MAC', params({ mac: '01:00:5e:00:00:01' }), 'mac must be a unicast MAC address'],
    ['VLAN 4095', params({ vlan: 4095 }), 'vlan must be a whole number from 0 (none) to 4094'],
    ['a VLAN as text', params({ vlan: '100' }), 'vlan must be a whole number'],
    ['qos 8', params({ vlan: 5, qos: 8 }), 'qos must be a whole number from 0 to 7'],
    ['protocol QinQ', params({ vlan: 5, vlanProtocol: 'QinQ' }), 'vlanProtocol must be 802.1Q or 802.1ad'],
    ['trust as text', params({ trust: 'yes' }), 'trust and spoofCheck must be true or false'],
    ['a negative rate', params({ maxTxRateMbps: -1 }), 'minTxRateMbps and maxTxRateMbps must be whole numbers'],
  ])('a claim with %s is refused with the reason', async (_n, p, text) => {
    const r = await create(claim(p));
    expect(r.code).not.toBe(0);
    // This release's policy or another suite's release of the same chart on the shared API server: both refuse.
    expect(r.stderr).toMatch(/ValidatingAdmissionPolicy '[a-z0-9-]+-virtualio-vf-network-config' with binding/);
    expect(r.stderr).toContain(text);
  });

  test('templates and DeviceClasses are checked too; other drivers\' parameters are not read', async () => {
    const tpl = await create(JSON.stringify({
      apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaimTemplate', metadata: { name: 'vfcfg', namespace: NS },
      spec: { spec: { devices: { requests: [{ name: 'nic', exactly: { deviceClassName: 'nics.virtualio.dev' } }], config: [{ opaque: { driver: 'virtualio.dev', parameters: params({ vlan: -1 }) } }] } } },
    }));
    expect(tpl.stderr).toContain('vlan must be a whole number');
    const cls = await create(JSON.stringify({
      apiVersion: 'resource.k8s.io/v1', kind: 'DeviceClass', metadata: { name: 'tenant-a-vlan' },
      spec: { selectors: [{ cel: { expression: 'device.driver == "virtualio.dev"' } }], config: [{ opaque: { driver: 'virtualio.dev', parameters: params({ vlan: 100, spoofcheck: true }) } }] },
    }));
    expect(cls.stderr).toContain('knows only the fields');
    const other = await create(claim({ anything: 'goes' }, 'gpu.example.com'));
    expect(other.stderr).toBe('');
    expect(other.code).toBe(0);
  });
});
