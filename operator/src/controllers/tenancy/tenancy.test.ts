// Tenancy: the CEL a pool's grant compiles to, and the controller through the whole operator on the
// fake API (policy and binding owned by the pool, the TenancyEnforced condition, a failed write as a
// False condition and a Warning Event, removal when spec.tenancy goes). Whether the API server
// refuses what the CEL says is proven on a real kube-apiserver (test/integration/operator-tenancy.test.ts).
import pino from 'pino';
import type { Pool } from '../../api/types.js';
import { FakeKube } from '../../../../test/fakes/kube-api.js';
import { poolObj, waitFor } from '../../../../test/support/operator-fixtures.js';
import { KubeError } from '../../kube/errors.js';
import type { KubeObject } from '../../kube/ports.js';
import { VirtualIODevices } from '../../kube/resources.js';
import { Operator } from '../../operator.js';
import { systemClock } from '../../runtime/clock.js';
import { EventRecorder } from '../../runtime/events.js';
import { AdmissionPolicies, AdmissionPolicyBindings, desiredPolicy, grantCel, selectorToCel, usesCel } from './policy.js';
import { contains } from './reconciler.js';

const log = pino({ level: 'silent' });

describe('CEL', () => {
  test('a label selector: matchLabels by key order, then each expression; no term grants everything', () => {
    expect(selectorToCel({
      matchLabels: { 'team': 'a', 'env': 'prod' },
      matchExpressions: [
        { key: 'tier', operator: 'In', values: ['gold', 'silver'] }, { key: 'quarantine', operator: 'DoesNotExist' },
        { key: 'x', operator: 'NotIn', values: ['y'] }, { key: 'vio.example.com/ok', operator: 'Exists' },
      ],
    }, 'L')).toBe([
      '("env" in L && L["env"] == "prod")', '("team" in L && L["team"] == "a")',
      '("tier" in L && L["tier"] in ["gold", "silver"])', '!("quarantine" in L)', '!("x" in L && L["x"] in ["y"])',
      '("vio.example.com/ok" in L)',
    ].join(' && '));
    expect(selectorToCel({}, 'L')).toBe('true');
    expect(selectorToCel({ matchExpressions: [{ key: 'a', operator: 'Bogus' as 'In' }] }, 'L')).toBe('false');
  });

  test('the grant is the union of names and selector; a quote in a value cannot end the literal', () => {
    expect(grantCel({ namespaces: ['b', 'a'] })).toBe('request.namespace in ["a", "b"]');
    expect(grantCel({ namespaces: ['a'], namespaceSelector: { matchLabels: { t: 'x"y' } } }))
      .toBe('request.namespace in ["a"] || (("t" in variables.namespaceLabels && variables.namespaceLabels["t"] == "x\\"y"))');
    expect(grantCel({ namespaces: [] })).toBe('false');
  });

  test('uses: pod containers and init containers, VM and VMI host devices and GPUs by resource name, claims and templates by class, exactly or firstAvailable', () => {
    const cel = usesCel('virtualio.dev/nics', 'nics.virtualio.dev');
    expect(cel).toContain('object.spec.initContainers.exists(c, ');
    expect(cel).toContain('"virtualio.dev/nics" in c.resources.limits');
    expect(cel).toContain('r.exactly.deviceClassName == "nics.virtualio.dev"');
    expect(cel).toContain('r.firstAvailable.exists(s, s.deviceClassName == "nics.virtualio.dev")');
    expect(cel).toContain('object.spec.spec.devices.requests');
    expect(cel).toContain('object.spec.domain.devices.hostDevices.exists(d, has(d.deviceName) && d.deviceName == "virtualio.dev/nics")');
    expect(cel).toContain('object.spec.template.spec.domain.devices.gpus.exists(d, ');
  });

  test('the policy checks a pool with spec.resourceName under that name', () => {
    const pool = poolObj('vgpu', { class: 'GPU', resourceName: 'nvidia.com/a16', tenancy: { namespaces: ['a'] } });
    const spec = desiredPolicy(pool, pool.spec.tenancy!).spec as { variables: { expression: string }[] };
    expect(spec.variables[0]!.expression).toContain('"nvidia.com/a16" in c.resources.limits');
  });

  test('contains: what we set must be there; what the API server adds does not count', () => {
    expect(contains({ a: 1, b: [{ c: 2, d: 3 }], e: 'x' }, { a: 1, b: [{ c: 2 }] })).toBe(true);
    expect(contains({ a: 1, b: [{ c: 2 }, { c: 3 }] }, { b: [{ c: 2 }] })).toBe(false);
    expect(contains({ a: 2 }, { a: 1 })).toBe(false);
    expect(contains(undefined, {})).toBe(false);
  });
});

type Condition = { type: string; status: string; reason: string; message: string };

async function withOperator(kube: FakeKube, body: () => Promise<void>): Promise<void> {
  kube.install(AdmissionPolicies);
  kube.install(AdmissionPolicyBindings);
  const ac = new AbortController();
  const events = new EventRecorder({ kube, namespace: 'default', component: 'virtualio-operator', instance: 'test', clock: systemClock, log });
  const run = new Operator({
    kube, clock: systemClock, log, events, tuning: { debounceMs: 1, kubevirtRecheckMs: 20 },
    kubevirt: { namespace: 'kubevirt', name: 'kubevirt', manage: false, extra: { pciHostDevices: [], mediatedDevices: [] } },
  }).run(ac.signal);
  try {
    await body();
  } finally {
    ac.abort();
    await run;
  }
}

async function createPool(kube: FakeKube, pool: Pool): Promise<Pool> {
  const { metadata, ...rest } = pool;
  return kube.create(VirtualIODevices, { ...rest, metadata: { name: metadata.name } } as Pool);
}

const condition = async (kube: FakeKube, pool: string, type: string) =>
  ((await kube.get<Pool>(VirtualIODevices, pool))?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);

test('a pool with spec.tenancy gets its policy and binding, owned by it; TenancyEnforced; a pool without gets neither', async () => {
  const kube = new FakeKube();
  const created = await createPool(kube, poolObj('nics', { class: 'NIC', tenancy: { namespaceSelector: { matchLabels: { team: 'a' } } } }));
  await createPool(kube, poolObj('open', { class: 'NIC', deviceSelector: { vendorIDs: ['15b3'] } }));
  await withOperator(kube, async () => {
    const policy = await waitFor('policy', () => kube.get<KubeObject>(AdmissionPolicies, 'nics.tenancy.virtualio.dev'));
    const binding = await waitFor('binding', () => kube.get<KubeObject & { spec: unknown }>(AdmissionPolicyBindings, 'nics.tenancy.virtualio.dev'));
    const owner = [{ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIODevice', name: 'nics', uid: created.metadata.uid }];
    expect(policy.metadata.ownerReferences).toEqual(owner);
    expect(binding.metadata.ownerReferences).toEqual(owner);
    expect(binding.spec).toEqual({ policyName: 'nics.tenancy.virtualio.dev', validationActions: ['Deny'] });
    expect(kube.managers(AdmissionPolicies, 'nics.tenancy.virtualio.dev')).toHaveProperty('virtualio-operator');
    const cond = await waitFor('TenancyEnforced', () => condition(kube, 'nics', 'TenancyEnforced'));
    expect(cond).toMatchObject({ status: 'True', reason: 'PolicyInForce' });

    await waitFor('open has status', async () => (await kube.get<Pool>(VirtualIODevices, 'open'))?.status?.conditions);
    expect(await condition(kube, 'open', 'TenancyEnforced')).toBeUndefined();
    expect(await kube.get(AdmissionPolicies, 'open.tenancy.virtualio.dev')).toBeUndefined();

    // Dropping spec.tenancy deletes both and the condition.
    const cur = (await kube.get<Pool>(VirtualIODevices, 'nics'))!;
    const { tenancy: _t, ...spec } = cur.spec;
    await kube.replace(VirtualIODevices, { ...cur, spec, metadata: { ...cur.metadata, generation: (cur.metadata.generation ?? 1) + 1 } });
    await waitFor('policy deleted', async () => (await kube.get(AdmissionPolicies, 'nics.tenancy.virtualio.dev')) === undefined);
    expect(await kube.get(AdmissionPolicyBindings, 'nics.tenancy.virtualio.dev')).toBeUndefined();
    await waitFor('condition removed', async () => (await condition(kube, 'nics', 'TenancyEnforced')) === undefined);
  });
});

test('a policy that cannot be written: TenancyEnforced False and a Warning Event naming the cause; retried until it can', async () => {
  const kube = new FakeKube();
  const stop = kube.inject((op, res) => (op === 'apply' && res?.plural === 'validatingadmissionpolicies'
    ? new KubeError('Forbidden', 403, 'validatingadmissionpolicies is forbidden: User cannot patch') : undefined));
  await createPool(kube, poolObj('nics', { class: 'NIC', tenancy: { namespaces: ['team-a'] } }));
  await withOperator(kube, async () => {
    const cond = await waitFor('TenancyEnforced False', async () => {
      const c = await condition(kube, 'nics', 'TenancyEnforced');
      return c?.status === 'False' ? c : undefined;
    });
    expect(cond.reason).toBe('PolicyWriteFailed');
    expect(cond.message).toContain('Cannot write ValidatingAdmissionPolicy nics.tenancy.virtualio.dev');
    expect(cond.message).toContain('User cannot patch');
    expect(kube.events.find((e) => e.reason === 'PolicyWriteFailed')).toMatchObject({ type: 'Warning', involvedObject: { name: 'nics' } });
    stop();
    await waitFor('TenancyEnforced True', async () => (await condition(kube, 'nics', 'TenancyEnforced'))?.status === 'True', 20_000);
    expect(await kube.get(AdmissionPolicies, 'nics.tenancy.virtualio.dev')).toBeDefined();
  });
});
