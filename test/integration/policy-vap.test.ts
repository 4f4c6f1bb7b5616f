// The chart's ValidatingAdmissionPolicy on the real kube-apiserver: an agent's pod-bound token may
// create and write the status of the VirtualIONode named after its own node only, never spec; the
// operator writes spec only. Tokens come from the TokenRequest API bound to Pods on real Node
// objects, so the API server itself adds authentication.kubernetes.io/node-name, exactly as for an
// agent pod the kubelet started. Each "RBAC widened" case grants the verb through extra RBAC first, so
// the denial proven there is the policy's, not RBAC's.
import { jest } from '@jest/globals';
import { eventually, installCrds, kubectlOk } from '../support/cluster.js';
import { apiRequest, CHART_DIR, ensureNamespace, helmOk, tokenFor, WITHOUT_CRDS, type ApiResponse } from './chart-support.js';

jest.setTimeout(120_000);

const NS = 'vio-policy';
const RELEASE = 'vio-policy';
const AGENT_SA = `${RELEASE}-virtualio-agent`;
const OPERATOR_SA = `${RELEASE}-virtualio-operator`;
const NODE_A = 'policy-node-a';
const NODE_B = 'policy-node-b';
const NODE_C = 'policy-node-c';
const VION = '/apis/virtualio.dev/v1alpha1/virtualionodes';
const APPLY = 'application/apply-patch+yaml';
const MERGE = 'application/merge-patch+json';

const tokens = { agentA: '', agentB: '', agentUnbound: '', operator: '' };

function vionode(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name }, ...extra };
}

const PLAN = {
  pools: [{
    name: 'x520-vfs', resourceName: 'virtualio.dev/x520-vfs', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork',
    count: 8, devices: [{ pciAddress: '0000:3b:00.0' }],
  }],
};

const STATUS = { agentVersion: 'policy-test', summary: { pools: 0, devices: 0, slices: 0, healthy: 0, allocated: 0 } };

async function applyStatus(token: string, node: string, manager = 'virtualio-agent'): Promise<ApiResponse> {
  return apiRequest(token, 'PATCH', `${VION}/${node}/status?fieldManager=${manager}&force=true`, vionode(node, { status: STATUS }), APPLY);
}

async function podUid(name: string): Promise<string> {
  return (await kubectlOk(['-n', NS, 'get', 'pod', name, '-o', 'jsonpath={.metadata.uid}'])).trim();
}

/** A denial by our policy: 403 naming the policy, with the given text in the message. */
function expectPolicyDenial(res: ApiResponse, text: string): void {
  expect(res.status).toBe(403);
  expect(res.body.message).toContain(`ValidatingAdmissionPolicy '${RELEASE}-virtualio-virtualionode-writers'`);
  expect(res.body.message).toContain(text);
}

/** A denial by RBAC (the request never reached admission). */
function expectRbacDenial(res: ApiResponse, verbResource: string): void {
  expect(res.status).toBe(403);
  expect(res.body.message).toContain(`cannot ${verbResource}`);
  expect(res.body.message).not.toContain('ValidatingAdmissionPolicy');
}

async function widenRbac(name: string, sa: string, resource: string, verbs: string[]): Promise<void> {
  const objs = [
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name }, rules: [{ apiGroups: ['virtualio.dev'], resources: [resource], verbs }] },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name }, subjects: [{ kind: 'ServiceAccount', name: sa, namespace: NS }],
    },
  ];
  await kubectlOk(['apply', '--server-side', '-f', '-'], { input: objs.map((o) => JSON.stringify(o)).join('\n') });
}

beforeAll(async () => {
  await ensureNamespace(NS);
  await installCrds();
  await helmOk(['upgrade', '--install', RELEASE, CHART_DIR, '--namespace', NS, ...WITHOUT_CRDS]);
  // Two Nodes and one agent Pod bound to each (no kubelet: they stay Pending, which is all we need).
  for (const [node, pod] of [[NODE_A, 'agent-a'], [NODE_B, 'agent-b']] as const) {
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: node } }) });
    await kubectlOk(['-n', NS, 'apply', '--server-side', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1', kind: 'Pod', metadata: { name: pod, namespace: NS },
        spec: { nodeName: node, serviceAccountName: AGENT_SA, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'virtualio:test' }] },
      }),
    });
  }
  tokens.agentA = await tokenFor(NS, AGENT_SA, { name: 'agent-a', uid: await podUid('agent-a') });
  tokens.agentB = await tokenFor(NS, AGENT_SA, { name: 'agent-b', uid: await podUid('agent-b') });
  tokens.agentUnbound = await tokenFor(NS, AGENT_SA);
  tokens.operator = await tokenFor(NS, OPERATOR_SA);
  // Admission policies and RBAC reach the API server's caches shortly after creation; wait until a
  // dry-run shows both in force before asserting anything.
  await eventually('the admission policy and RBAC to be in force', async () => {
    const r = await apiRequest(tokens.agentA, 'POST', `${VION}?dryRun=All`, vionode(NODE_B));
    return r.status === 403 && r.body.message?.includes('ValidatingAdmissionPolicy') ? true : undefined;
  }, 60_000);
});

test('the agent token carries its node (added by the API server from the bound Pod)', async () => {
  const review = await apiRequest(tokens.agentA, 'POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', {
    apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview',
  });
  expect(review.status).toBe(201);
  const user = (review.body.status as { userInfo: { username: string; extra: Record<string, string[]> } }).userInfo;
  expect(user.username).toBe(`system:serviceaccount:${NS}:${AGENT_SA}`);
  expect(user.extra['authentication.kubernetes.io/node-name']).toEqual([NODE_A]);
});

describe('agent', () => {
  test('may not create its VirtualIONode with a plan in spec', async () => {
    expectPolicyDenial(await apiRequest(tokens.agentA, 'POST', VION, vionode(NODE_A, { spec: PLAN })), 'may not write VirtualIONode spec');
  });

  test("creates its own node's VirtualIONode", async () => {
    const res = await apiRequest(tokens.agentA, 'POST', VION, vionode(NODE_A));
    expect(res.status).toBe(201);
  });

  test("may not create another node's VirtualIONode", async () => {
    expectPolicyDenial(await apiRequest(tokens.agentA, 'POST', VION, vionode(NODE_B)),
      `the virtualio agent on node ${NODE_A} may only write VirtualIONode ${NODE_A}, not ${NODE_B}`);
  });

  test("writes its own node's status with server-side apply as virtualio-agent", async () => {
    const res = await applyStatus(tokens.agentA, NODE_A);
    expect(res.status).toBe(200);
    const obj = JSON.parse(await kubectlOk(['get', 'virtualionode', NODE_A, '-o', 'json', '--show-managed-fields'])) as {
      status: typeof STATUS; metadata: { managedFields: { manager: string; subresource?: string }[] };
    };
    expect(obj.status.agentVersion).toBe('policy-test');
    expect(obj.metadata.managedFields).toContainEqual(expect.objectContaining({ manager: 'virtualio-agent', subresource: 'status' }));
  });

  test("may not write another node's status", async () => {
    await kubectlOk(['apply', '--server-side', '-f', '-'], { input: JSON.stringify(vionode(NODE_B)) });
    expectPolicyDenial(await applyStatus(tokens.agentA, NODE_B), `may only write VirtualIONode ${NODE_A}, not ${NODE_B}`);
    // ...while node B's own agent may.
    expect((await applyStatus(tokens.agentB, NODE_B)).status).toBe(200);
  });

  test('a spec change sent through the status subresource is dropped by the API server', async () => {
    const res = await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_A}/status`, { spec: PLAN, status: { agentVersion: 'via-status' } }, MERGE);
    expect(res.status).toBe(200);
    const obj = JSON.parse(await kubectlOk(['get', 'virtualionode', NODE_A, '-o', 'json'])) as { spec?: unknown; status: { agentVersion: string } };
    expect(obj.spec).toBeUndefined();
    expect(obj.status.agentVersion).toBe('via-status');
  });

  test('has no RBAC to patch spec (the main resource)', async () => {
    expectRbacDenial(await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_A}`, { spec: PLAN }, MERGE), 'patch resource "virtualionodes"');
  });

  test('a token that names no node is refused', async () => {
    expectPolicyDenial(await applyStatus(tokens.agentUnbound, NODE_A), 'names no node');
  });
});

describe('operator', () => {
  test('applies spec (the plan) as virtualio-operator, creating the object when needed', async () => {
    const res = await apiRequest(tokens.operator, 'PATCH', `${VION}/${NODE_C}?fieldManager=virtualio-operator&force=true`, vionode(NODE_C, { spec: PLAN }), APPLY);
    expect(res.status).toBe(201);
    const upd = await apiRequest(tokens.operator, 'PATCH', `${VION}/${NODE_A}?fieldManager=virtualio-operator&force=true`, vionode(NODE_A, { spec: PLAN }), APPLY);
    expect(upd.status).toBe(200);
    const obj = JSON.parse(await kubectlOk(['get', 'virtualionode', NODE_A, '-o', 'json'])) as { spec: typeof PLAN; status: { agentVersion: string } };
    expect(obj.spec.pools[0]?.name).toBe('x520-vfs');
    expect(obj.status.agentVersion).toBe('via-status'); // the agent's status is untouched
  });

  test('has no RBAC to write status', async () => {
    expectRbacDenial(await applyStatus(tokens.operator, NODE_A, 'virtualio-operator'), 'patch resource "virtualionodes/status"');
  });
});

describe('with RBAC widened on purpose, the policy still holds', () => {
  beforeAll(async () => {
    await widenRbac('vio-policy-test-agent-widened', AGENT_SA, 'virtualionodes', ['patch', 'update']);
    await widenRbac('vio-policy-test-operator-widened', OPERATOR_SA, 'virtualionodes/status', ['patch']);
    await eventually('the widened RBAC to be in force', async () => {
      const r = await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_A}?dryRun=All`, { metadata: { labels: { probe: 'x' } } }, MERGE);
      return r.status === 200 ? true : undefined;
    }, 30_000);
  });

  afterAll(async () => {
    await kubectlOk(['delete', 'clusterrolebinding,clusterrole', 'vio-policy-test-agent-widened', 'vio-policy-test-operator-widened', '--ignore-not-found']);
  });

  test('the agent may still not change spec on its own node', async () => {
    expectPolicyDenial(await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_A}`, { spec: { pools: [] } }, MERGE), 'may not write VirtualIONode spec');
  });

  test('the agent may change metadata of its own node but nothing on another node', async () => {
    expect((await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_A}`, { metadata: { labels: { 'virtualio.dev/agent-seen': 'true' } } }, MERGE)).status).toBe(200);
    expectPolicyDenial(await apiRequest(tokens.agentA, 'PATCH', `${VION}/${NODE_B}`, { metadata: { labels: { x: 'y' } } }, MERGE), `not ${NODE_B}`);
  });

  test('the operator may still not write status', async () => {
    expectPolicyDenial(await applyStatus(tokens.operator, NODE_A, 'virtualio-operator'), 'may not write VirtualIONode status');
  });
});

test('people and other clients are not affected by the policy', async () => {
  // The admin (client certificate, system:masters) writes any status, e.g. to repair an object.
  const out = await kubectlOk(['patch', 'virtualionode', NODE_B, '--subresource=status', '--type=merge', '-p', '{"status":{"agentVersion":"admin"}}']);
  expect(out).toContain('patched');
});

describe('VirtualIONodeAck (agent.localPlan grants the verbs; granted here through extra RBAC)', () => {
  const ACKS = '/apis/virtualio.dev/v1alpha1/virtualionodeacks';
  const ack = (node: string) => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONodeAck', metadata: { name: node }, status: { pools: [{ name: 'x520-vfs', digest: 'd', state: 'Ready' }] } });
  const applyAck = (token: string, node: string) => apiRequest(token, 'PATCH', `${ACKS}/${node}?fieldManager=virtualio-agent&force=true`, ack(node), APPLY);

  beforeAll(async () => {
    await widenRbac('vio-policy-test-agent-acks', AGENT_SA, 'virtualionodeacks', ['get', 'create', 'patch']);
    await eventually('the ack RBAC and policy to be in force', async () => {
      const r = await apiRequest(tokens.agentA, 'PATCH', `${ACKS}/${NODE_B}?fieldManager=virtualio-agent&force=true&dryRun=All`, ack(NODE_B), APPLY);
      return r.status === 403 && r.body.message?.includes('virtualionodeack-writers') ? true : undefined;
    }, 60_000);
  });

  afterAll(async () => {
    await kubectlOk(['delete', 'clusterrolebinding,clusterrole', 'vio-policy-test-agent-acks', '--ignore-not-found']);
  });

  test("the agent applies its own node's ack, never another node's, and a token without a node none", async () => {
    const own = await applyAck(tokens.agentA, NODE_A);
    expect([200, 201]).toContain(own.status);
    const other = await applyAck(tokens.agentA, NODE_B);
    expect(other.status).toBe(403);
    expect(other.body.message).toContain(`ValidatingAdmissionPolicy '${RELEASE}-virtualio-virtualionodeack-writers'`);
    expect(other.body.message).toContain(`may only write VirtualIONodeAck ${NODE_A}, not ${NODE_B}`);
    expect((await applyAck(tokens.agentUnbound, NODE_C)).status).toBe(403);
  });
});
