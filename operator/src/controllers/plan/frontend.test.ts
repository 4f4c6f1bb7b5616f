// The pool's front end travels from VirtualIODevice.spec.frontEnd into the node plan: DRA is written
// out, DevicePlugin (explicit or defaulted) is left out so plans of existing pools do not change.
import { gpu, nodeObj, poolObj, vioNodeObj } from '../../../../test/support/operator-fixtures.js';
import { planNode, preparePools } from './plan.js';

describe('planNode frontEnd', () => {
  const node = nodeObj('n1', {});
  const vio = vioNodeObj('n1', { devices: [gpu('0000:c1:00.0', { mdevTypes: [{ id: 'nvidia-754', name: 'NVIDIA A16-4Q' }] }), gpu('0000:c2:00.0')] });

  test('DRA is carried into the plan entry; DevicePlugin and absent are not', () => {
    const pools = preparePools([
      poolObj('dra', { class: 'GPU', frontEnd: 'DRA', deviceSelector: { pciAddresses: ['0000:c1:00.0'] }, carving: { mode: 'Mediated', count: 4, mdevType: 'nvidia-754' } }),
      poolObj('dp', { class: 'GPU', frontEnd: 'DevicePlugin', deviceSelector: { pciAddresses: ['0000:c2:00.0'] }, carving: { mode: 'Passthrough' } }),
    ]);
    const plans = planNode(node, vio, pools).pools;
    expect(plans.map((p) => [p.name, p.frontEnd])).toEqual([['dp', undefined], ['dra', 'DRA']]);
    expect(plans.find((p) => p.name === 'dp')).not.toHaveProperty('frontEnd');
  });
});
