// ClusterPlanSource: an object without spec.pools is "no plan yet" (keep everything), never "no pools".
import type { VirtualIONode } from '../../../crds/generated/types.js';
import { silentLogger } from '../log.js';
import { ClusterPlanSource, hasOperatorPlan, type KubeAgentPort } from './cluster.js';

const obj = (spec: VirtualIONode['spec'], uid = 'u1'): VirtualIONode => ({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n1', uid, generation: 1 }, spec });

describe('ClusterPlanSource', () => {
  const src = (): ClusterPlanSource => new ClusterPlanSource({} as KubeAgentPort, 'n1', silentLogger());

  test('created by an agent (no spec.pools): no plan, with the reason', () => {
    const s = src();
    s.observe(obj({}));
    expect(s.current()).toStrictEqual({ kind: 'none', message: 'VirtualIONode n1 has no plan from the operator yet' });
    expect(hasOperatorPlan(obj({}))).toBe(false);
  });

  test('an operator plan with no pools is a plan (the node is simply not selected)', () => {
    const s = src();
    s.observe(obj({ pools: [] }));
    expect(s.current()).toStrictEqual({ kind: 'ok', spec: { pools: [] }, generation: 1 });
  });

  test('deleted, then re-created by the agent: error, then none; the last plan stays the caller\'s to serve', () => {
    const s = src();
    s.observe(obj({ pools: [] }));
    s.observe(undefined);
    expect(s.current().kind).toBe('error');
    s.observe(obj({}, 'u2'));
    expect(s.current().kind).toBe('none');
  });
});
