// The chart's ResourceSlice policy on the real kube-apiserver: an agent's pod-bound token may create,
// update and delete ResourceSlices of driver virtualio.dev on its own node only — never another
// node's, never another driver's, never by moving a slice — and RBAC lets it read claims but not
// write them. Tokens come from the TokenRequest API bound to Pods on real Node objects, so the API
// server itself adds authentication.kubernetes.io/node-name, as for an agent pod the kubelet started.
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

test('the admin is not affected by the policy', async () => {
  expect(await kubectlOk(['label', 'resourceslice', 'pdra-b', 'checked=yes'])).toContain('labeled');
});
