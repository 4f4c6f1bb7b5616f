import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '../log.js';
import { FilePlanSource, parsePlanText, validatePlan } from './plan.js';

const good = {
  pools: [{ name: 'fast-net', resourceName: 'virtualio.dev/fast-net', class: 'NIC', mode: 'SRIOV', consumption: 'SRIOVNetwork', count: 4, devices: [{ pciAddress: '0000:81:00.0' }] }],
};

describe('plan validation', () => {
  test('a spec, a whole VirtualIONode, YAML and an empty file are accepted', () => {
    expect(validatePlan(good)).toStrictEqual({ ok: true, spec: good });
    expect(validatePlan({ apiVersion: 'virtualio.dev/v1alpha1', kind: 'VirtualIONode', metadata: { name: 'n' }, spec: good })).toStrictEqual({ ok: true, spec: good });
    expect(parsePlanText('pools:\n  - name: fast-net\n    resourceName: virtualio.dev/fast-net\n    class: NIC\n    mode: SRIOV\n    consumption: SRIOVNetwork\n    count: 4\n    devices:\n      - pciAddress: "0000:81:00.0"\n')).toStrictEqual({ ok: true, spec: good });
    expect(parsePlanText('')).toStrictEqual({ ok: true, spec: { pools: [] } });
  });

  test.each([
    ['not YAML', '{pools: [', /cannot parse plan/],
    ['pools not a list', 'pools: 3', /pools must be a list/],
    ['bad mode', JSON.stringify({ pools: [{ ...good.pools[0], mode: 'Magic' }] }), /pool fast-net\.mode: one of SRIOV/],
    ['bad address', JSON.stringify({ pools: [{ ...good.pools[0], devices: [{ pciAddress: '81:00.0' }] }] }), /devices\[0\]\.pciAddress/],
    ['duplicate names', JSON.stringify({ pools: [good.pools[0], good.pools[0]] }), /duplicate pool name/],
    ['mediated without type', JSON.stringify({ pools: [{ ...good.pools[0], mode: 'Mediated' }] }), /mdevType: required/],
    ['resource without domain', JSON.stringify({ pools: [{ ...good.pools[0], resourceName: 'fast' }] }), /resourceName/],
  ])('%s', (_n, text, message) => {
    const r = parsePlanText(text);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toMatch(message);
  });
});

describe('FilePlanSource', () => {
  test('missing → error, good → ok, bad → error, fixed → ok', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vio-plan-'));
    try {
      const file = join(dir, 'plan.yaml');
      const src = new FilePlanSource(file, silentLogger());
      expect(src.reload()).toBe(true);
      expect(src.current()).toMatchObject({ kind: 'error', message: expect.stringContaining('cannot read plan file') });
      writeFileSync(file, JSON.stringify(good));
      expect(src.reload()).toBe(true);
      expect(src.current()).toStrictEqual({ kind: 'ok', spec: good });
      expect(src.reload()).toBe(false);
      writeFileSync(file, 'pools: [ {name: 1} ]   ');
      expect(src.reload()).toBe(true);
      expect(src.current().kind).toBe('error');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
